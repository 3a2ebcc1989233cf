"""A real browser (headless Chromium) on a page of another origin sends events to the gateway with
`fetch` (JSON), `XMLHttpRequest`, `fetch(…, {keepalive: true})` and `navigator.sendBeacon`; the rows
are read back from the real broker. A page on an origin the gateway does not allow, and a key whose
own origin allow-list excludes the page, land nothing.

Synchronisation: each page reports what it saw to the page server that served it (a same-origin
POST), and the test waits for that report; the refused beacons are awaited on the gateway's request
counter, the accepted rows on the topic itself."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import (
    ROOT,
    Gateway,
    end_offsets,
    free_port,
    http,
    read_topic,
    unique_name,
    wait_until,
)

COLUMNS = [{"name": "kind", "type": "string"}, {"name": "n", "type": "int32"}]
BROWSER_TIMEOUT = 120  # seconds for Chromium to start, load the page and report (a busy machine)

# What every page runs: each sender in turn, then a report of the outcomes to the page's own server.
SCRIPT = """
const cfg = %(config)s;
const out = {};
async function run(name, send) {
  try { out[name] = await send(); } catch (e) { out[name] = 'error:' + e.name; }
}
function xhr(url, body, headers) {
  return new Promise((resolve) => {
    const r = new XMLHttpRequest();
    r.open('POST', url);
    for (const [k, v] of Object.entries(headers)) r.setRequestHeader(k, v);
    r.onload = () => resolve(r.status);
    r.onerror = () => resolve('error:network');
    r.send(body);
  });
}
(async () => {
  const gw = cfg.gateway, s = cfg.stream, key = cfg.key;
  const events = `${gw}/v0/events?name=${s}&wait=true&token=${encodeURIComponent(key)}`;
  await run('fetch_json', async () => (await fetch(events, {method: 'POST',
    headers: {'Content-Type': 'application/json'},
    body: JSON.stringify({kind: 'fetch', n: 1})})).status);
  await run('xhr', () => xhr(`${gw}/api/v1beta2/streams/${s}/ingest?wait=true`,
    JSON.stringify({kind: 'xhr', n: 2}),
    {'Content-Type': 'application/x-ndjson', 'X-Api-Key': key}));
  await run('keepalive', async () => (await fetch(events, {method: 'POST', keepalive: true,
    body: JSON.stringify({kind: 'keepalive', n: 3})})).status);
  await run('beacon', () => navigator.sendBeacon(events, JSON.stringify({kind: 'beacon', n: 4})));
  await run('keepalive_timeplus', async () => (await fetch(
    `${gw}/api/v1beta2/streams/${s}/ingest?wait=true`, {method: 'POST', keepalive: true,
    headers: {'X-Api-Key': key}, body: JSON.stringify({kind: 'keepalive_timeplus', n: 5})})).status);
  if (cfg.foreign_key) {
    const denied = `${gw}/v0/events?name=${s}&wait=true&token=${encodeURIComponent(cfg.foreign_key)}`;
    await run('key_denied', async () => (await fetch(denied, {method: 'POST',
      body: JSON.stringify({kind: 'key_denied', n: 6})})).status);
  }
  await fetch('/report', {method: 'POST', body: JSON.stringify(out)});
})();
"""


@dataclass
class PageServer:
    """Serves one page (on its own port, hence its own origin) and takes its report."""

    html: str
    port: int = field(default_factory=free_port)
    report: dict[str, Any] = field(default_factory=dict)
    reported: threading.Event = field(default_factory=threading.Event)
    _server: ThreadingHTTPServer | None = None

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> PageServer:
        page = self.html.encode()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200 if self.path == "/" else 404)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.path == "/report":
                    owner.report = json.loads(body)
                    owner.reported.set()
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "chromium is not installed: deploy/dev/setup-system installs it"
    return found


@contextlib.contextmanager
def browser(url: str, profile: Path) -> Iterator[None]:
    """Headless Chromium showing `url` for the duration of the block."""
    profile.mkdir(parents=True, exist_ok=True)
    # Chromium leaves org.chromium.Chromium.* folders in TMPDIR: give it one of its own, removed
    # afterwards (short: its singleton socket's path must fit a Unix socket address, 108 bytes)
    own_tmp = tempfile.mkdtemp(prefix="chr-")
    with open(profile / "chromium.log", "wb") as log:
        proc = subprocess.Popen(
            [
                chromium(),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                f"--user-data-dir={profile}",
                url,
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
            env={**os.environ, "TMPDIR": own_tmp},
        )
    try:
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(own_tmp, ignore_errors=True)


def browse(page: PageServer, profile: Path) -> dict[str, Any]:
    """Load the page in headless Chromium and return the page's report."""
    with browser(page.origin + "/", profile):
        if not page.reported.wait(BROWSER_TIMEOUT):
            log = (profile / "chromium.log").read_text(errors="replace")[-3000:]
            raise AssertionError(f"the page did not report within {BROWSER_TIMEOUT} s:\n{log}")
        return page.report


async def rows_until(kafka: str, topic: str, want: list[Any], row: Any) -> None:
    """Read the topic until its rows (mapped by `row`, sorted) are `want`; fail on a row not in
    `want` or after a bounded wait (a beacon is sent after the page has moved on)."""
    deadline = time.monotonic() + BROWSER_TIMEOUT
    while True:
        got = sorted(row(r.json()) for r in await read_topic(kafka, topic))
        if got == want:
            return
        assert all(g in want for g in got) and len(got) < len(want), got
        assert time.monotonic() < deadline, f"rows never all landed: {got}"
        await asyncio.sleep(0.2)  # polling interval while waiting for the rows, not a timing


def refused_count(gw: Gateway, route: str) -> float:
    """gateway_http_requests_total{route, method="POST", status="403"}."""
    text = http("GET", gw.url + "/metrics").body.decode()
    pattern = (
        r'gateway_http_requests_total\{[^}]*route="'
        + re.escape(route)
        + r'"[^}]*status="403"[^}]*\} ([0-9.e+]+)'
    )
    found = [m for m in re.finditer(pattern, text) if 'method="POST"' in m.group(0)]
    return sum(float(m.group(1)) for m in found)


def senders_page(config: dict[str, Any]) -> str:
    """The page that runs every sender with `config` and reports the outcomes."""
    return (
        "<!doctype html><html><body><script>"
        + SCRIPT % {"config": json.dumps(config)}
        + "</script></body></html>"
    )


@pytest.fixture(scope="module")
def good_page() -> Iterator[PageServer]:
    page = PageServer("")
    yield page
    page.stop()


@pytest.fixture(scope="module")
def browser_gateway(
    kafka: str, tmp_path_factory: pytest.TempPathFactory, good_page: PageServer
) -> Iterator[Gateway]:
    """A gateway whose ingest routes allow the good page's origin only."""
    gw = Gateway(
        Path(tmp_path_factory.mktemp("gwbrowser")),
        kafka,
        extra=["--default-shards", "1"],
        env={"GATEWAY_CORS_ALLOW_ORIGINS": good_page.origin},
    )
    gw.start()
    yield gw
    assert gw.stop() == 0, gw.log()


def make_key(gw: Gateway, stream: str, origins: list[str]) -> str:
    reply = gw.request(
        "POST",
        "/api/v1beta2/apikeys",
        {
            "name": unique_name("web"),
            "permissions": [f"DATASOURCE:APPEND:{stream}"],
            "rate_limit": 100,
            "allowed_origins": origins,
        },
    )
    assert reply.status == 201, reply.body
    key: str = reply.json()["api_key"]
    return key


async def test_browser_sends_from_an_allowed_origin(
    browser_gateway: Gateway, kafka: str, good_page: PageServer, tmp_path: Path
) -> None:
    gw = browser_gateway
    name = unique_name("web")
    topic = gw.create_stream(name, COLUMNS)["topic"]
    key = make_key(gw, name, [good_page.origin])
    foreign_key = make_key(gw, name, ["https://somewhere-else.example"])
    good_page.html = senders_page({"gateway": gw.url, "stream": name, "key": key, "foreign_key": foreign_key})
    refused_before = refused_count(gw, "/v0/events")
    report = browse(good_page.start(), tmp_path / "profile")
    assert report == {
        "fetch_json": 200,
        "xhr": 200,
        "keepalive": 200,
        "beacon": True,
        "keepalive_timeplus": 200,
        "key_denied": 403,
    }, report
    want = [("beacon", 4), ("fetch", 1), ("keepalive", 3), ("keepalive_timeplus", 5), ("xhr", 2)]
    await rows_until(kafka, topic, want, lambda r: (r["kind"], r["n"]))
    assert refused_count(gw, "/v0/events") == refused_before + 1  # the foreign key's request


async def test_browser_on_a_disallowed_origin_lands_nothing(
    browser_gateway: Gateway, kafka: str, tmp_path: Path
) -> None:
    gw = browser_gateway
    name = unique_name("evil")
    topic = gw.create_stream(name, COLUMNS)["topic"]
    key = make_key(gw, name, [])
    page = PageServer(senders_page({"gateway": gw.url, "stream": name, "key": key})).start()
    try:
        before = refused_count(gw, "/v0/events")
        report = browse(page, tmp_path / "profile")
        # Preflighted requests (JSON fetch, XHR with a key header) are never sent; the simple ones
        # (text/plain keepalive fetch, beacon) are sent, refused with 403, and hidden from the page.
        assert report == {
            "fetch_json": "error:TypeError",
            "xhr": "error:network",
            "keepalive": "error:TypeError",
            "beacon": True,
            "keepalive_timeplus": "error:TypeError",
        }, report
        wait_until(
            lambda: refused_count(gw, "/v0/events") >= before + 2,
            60,
            "the gateway to refuse the keepalive fetch and the beacon",
        )
        assert await end_offsets(kafka, topic) in ({}, {0: 0})
    finally:
        page.stop()


def readme_snippet(gateway: str, stream: str, key: str) -> str:
    """The page of README.md's "Sending from a web page", constants filled in as a user would."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Sending from a web page", 1)[1].split("\n## ", 1)[0]
    html = section.split("```html\n", 1)[1].split("```", 1)[0]
    for name, value in (("GATEWAY", gateway), ("STREAM", stream), ("KEY", key)):
        html, n = re.subn(rf'const {name} = "[^"]*";', f"const {name} = {json.dumps(value)};", html)
        assert n == 1, f'README snippet: no `const {name} = "…";` to fill in'
    return html


async def test_readme_snippet_works_as_written(gateway: Gateway, kafka: str, tmp_path: Path) -> None:
    name = unique_name("web_events")
    topic = gateway.create_stream(
        name, [{"name": "event", "type": "string"}, {"name": "page", "type": "string"}]
    )["topic"]
    page = PageServer("")
    page.html = readme_snippet(gateway.url, name, make_key(gateway, name, [page.origin]))
    page.start()
    try:
        with browser(page.origin + "/", tmp_path / "profile"):
            await rows_until(kafka, topic, [("page_view", "/")], lambda r: (r["event"], r["page"]))
    finally:
        page.stop()
