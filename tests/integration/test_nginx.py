"""The real nginx (deploy/nginx/nginx.conf, unchanged) in front of two gateway processes and the real
broker: large streamed and gzip bodies, spreading, request ids, 413 and 429 passed through,
/metrics hidden."""

from __future__ import annotations

import gzip
import json
import re
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

import pytest

from tests.integration.deploy_helpers import (
    scrape,
    send_rows,
    stopped_at_exit,
    stream_columns,
    value,
)
from tests.integration.harness import (
    ADMIN_KEY,
    ROOT,
    Gateway,
    Reply,
    free_port,
    http,
    read_topic,
    unique_name,
    wait_until,
)

NGINX_DIR = ROOT / "deploy" / "nginx"
GATEWAY_TOML = ROOT / "deploy" / "gateway" / "gateway.toml"
QUEUE_MAX_ROWS = 150_000  # the 20 MB body fits; the 413 test sends one row more than this


@dataclass
class Nginx:
    """A foreground nginx on a free port with the project's nginx.conf."""

    proc: subprocess.Popen[bytes]
    port: int
    directory: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def error_log(self) -> str:
        return (self.directory / "error.log").read_text(errors="replace")

    def access_log(self) -> list[dict[str, Any]]:
        text = (self.directory / "stdout.log").read_text(errors="replace")
        return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def nginx_binary() -> str:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    assert found, "nginx is not installed: deploy/dev/setup-system installs it (deploy/dev/test runs it)"
    return found


def start_nginx(directory: Path, upstreams: list[str]) -> Nginx:
    """nginx with deploy/nginx/nginx.conf as it is, and generated upstream.conf and listen.conf."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(NGINX_DIR / "nginx.conf", directory / "nginx.conf")
    (directory / "upstream.conf").write_text(
        "".join(f"server {u} max_fails=2 fail_timeout=5s;\n" for u in upstreams)
    )
    port = free_port()
    (directory / "listen.conf").write_text(f"listen 127.0.0.1:{port};\n")
    globals_ = f"daemon off; pid {directory}/nginx.pid; error_log {directory}/error.log info;"
    cmd = [nginx_binary(), "-p", str(directory), "-c", str(directory / "nginx.conf"), "-g", globals_]
    check = subprocess.run([*cmd, "-t"], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr
    out = open(directory / "stdout.log", "wb")  # noqa: SIM115 - handed to the child process
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    out.close()
    ngx = Nginx(proc, port, directory)

    def listening() -> bool:
        assert proc.poll() is None, (directory / "stdout.log").read_text()
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    wait_until(listening, 15, "nginx to listen")
    return ngx


@pytest.fixture(scope="module")
def stack(kafka: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Nginx, list[Gateway]]]:
    """nginx → two gateway processes (configured by deploy/gateway/gateway.toml plus flags)."""
    gws = [
        Gateway(
            tmp_path_factory.mktemp(f"gw{i}"),
            kafka,
            extra=[
                "--config",
                str(GATEWAY_TOML),
                "--host",
                "127.0.0.1",
                "--queue-max-rows",
                str(QUEUE_MAX_ROWS),
                "--access-log-sample",
                "1",
                "--default-shards",
                "2",
            ],
        )
        for i in range(2)
    ]
    procs: list[Any] = list(gws)
    with stopped_at_exit(procs):
        for gw in gws:
            gw.start(wait_ready=False)
        for gw in gws:
            gw.wait_ready()
        ngx = start_nginx(tmp_path_factory.mktemp("nginx"), [f"127.0.0.1:{gw.port}" for gw in gws])
        procs.append(ngx.proc)
        yield ngx, gws
        ngx.proc.send_signal(signal.SIGQUIT)  # graceful stop
        ngx.proc.wait(30)
        for gw in gws:
            assert gw.stop() == 0, gw.log()


def create_everywhere(gws: list[Gateway], columns: list[dict[str, Any]]) -> tuple[str, str]:
    """A stream known to both instances (201 on the first; 201, or 409 once the catalog is shared,
    on the second)."""
    name = unique_name("ngx")
    topic: str = gws[0].create_stream(name, columns)["topic"]
    reply = gws[1].request("POST", "/api/v1beta2/streams", {"name": name, "columns": columns})
    assert reply.status in (201, 409), reply.body
    return name, topic


def post_chunked(port: int, path: str, chunks: Iterator[bytes], headers: dict[str, str]) -> Reply:
    """POST with Transfer-Encoding: chunked, one HTTP chunk per item of `chunks`."""
    conn = HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("POST", path, body=chunks, headers=headers, encode_chunked=True)
        resp = conn.getresponse()
        return Reply(resp.status, dict(resp.headers), resp.read())
    finally:
        conn.close()


async def test_large_chunked_body_streams_through(stack: tuple[Nginx, list[Gateway]], kafka: str) -> None:
    ngx, gws = stack
    name, topic = create_everywhere(gws, [*stream_columns(), {"name": "pad", "type": "string"}])
    pad = "x" * 150
    rows, size = 0, 0
    ids: list[str] = []

    def body() -> Iterator[bytes]:
        nonlocal rows, size
        while size < 20_000_000:
            lines = []
            for _ in range(1000):
                rid = f"big-{rows}"
                ids.append(rid)
                lines.append(json.dumps({"id": rid, "n": rows, "pad": pad}))
                rows += 1
            chunk = ("\n".join(lines) + "\n").encode()
            size += len(chunk)
            yield chunk

    reply = post_chunked(
        ngx.port,
        f"/api/v1beta2/streams/{name}/ingest?wait=true",
        body(),
        {"X-Api-Key": ADMIN_KEY, "Content-Type": "application/x-ndjson"},
    )
    assert reply.status == 200, reply.body[:500]
    assert reply.json()["rows"] == rows and size >= 20_000_000
    # Streamed, not spooled: nginx never wrote the body to a temporary file first.
    assert "buffered to a temporary file" not in ngx.error_log()
    got = [r.json()["id"] for r in await read_topic(kafka, topic)]
    assert len(got) == rows and set(got) == set(ids)


def test_body_reaches_the_gateway_before_it_ends(stack: tuple[Nginx, list[Gateway]]) -> None:
    # proxy_request_buffering off: the gateway answers 404 (unknown stream) while the client is
    # still sending; a buffering proxy would wait for the end of a body that never comes.
    ngx, _ = stack
    with socket.create_connection(("127.0.0.1", ngx.port), timeout=15) as s:
        s.sendall(
            b"POST /api/v1beta2/streams/no_such_stream/ingest HTTP/1.1\r\nHost: t\r\n"
            b"X-Api-Key: " + ADMIN_KEY.encode() + b"\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: application/x-ndjson\r\n\r\n"
        )
        chunk = b'{"id": "a", "n": 1}\n' * 100
        s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        head = s.recv(4096)
    assert head.startswith(b"HTTP/1.1 404"), head[:200]
    assert b'"code":404' in head or b'"code": 404' in head


async def test_gzip_bodies_pass_through_and_spread(stack: tuple[Nginx, list[Gateway]], kafka: str) -> None:
    ngx, gws = stack
    name, topic = create_everywhere(gws, stream_columns())
    ids: list[str] = []
    for i in range(30):
        batch = [f"gz-{i}-{j}" for j in range(200)]
        ids += batch
        raw = "".join(json.dumps({"id": rid, "n": j}) + "\n" for j, rid in enumerate(batch))
        reply = http(
            "POST",
            f"{ngx.url}/api/v1beta2/streams/{name}/ingest?wait=true",
            gzip.compress(raw.encode()),
            headers={
                "X-Api-Key": ADMIN_KEY,
                "Content-Encoding": "gzip",
                "Content-Type": "application/x-ndjson",
            },
        )
        assert reply.status == 200, reply.body
        assert reply.json()["rows"] == 200
    got = {r.json()["id"] for r in await read_topic(kafka, topic)}
    assert got == set(ids)
    # Both instances took part, and together they counted exactly the rows sent.
    per_instance = [value(scrape(gw.url)[0], "gateway_rows_accepted_total", stream=name) for gw in gws]
    assert all(n > 0 for n in per_instance), per_instance
    assert sum(per_instance) == len(ids)
    upstreams = {e["upstream_addr"] for e in ngx.access_log() if name in e["uri"]}
    assert upstreams == {f"127.0.0.1:{gw.port}" for gw in gws}


def test_request_id_and_forwarded_for_reach_the_gateway(stack: tuple[Nginx, list[Gateway]]) -> None:
    ngx, gws = stack
    name, _ = create_everywhere(gws, stream_columns())
    sent = send_rows(
        ngx.url,
        name,
        requests=1,
        rows_per_request=5,
        headers={"X-Request-ID": "client-id-42", "X-Forwarded-For": "203.0.113.9"},
    )
    assert sent.statuses == {200: 1}
    generated = http(
        "GET",
        ngx.url + "/api/v1beta2/streams/" + name,
        headers={"X-Api-Key": ADMIN_KEY, "X-Request-ID": "bad id with spaces"},
    )
    assert generated.status == 200
    nginx_id = generated.headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", nginx_id), nginx_id

    def access_lines() -> list[dict[str, Any]]:
        found = []
        for gw in gws:
            for line in gw.log().splitlines():
                if line.startswith("{") and '"gateway.access"' in line:
                    found.append(json.loads(line))
        return found

    def logged() -> dict[str, dict[str, Any]]:
        by_id = {e.get("request_id"): e for e in access_lines()}
        return by_id if {"client-id-42", nginx_id} <= by_id.keys() else {}

    by_id = wait_until(logged, 10, "the gateways' access log lines")
    # the connection's address only: a client-chosen X-Forwarded-For is not passed on (issue 20)
    assert by_id["client-id-42"]["http"]["forwarded_for"] == "127.0.0.1"
    assert by_id["client-id-42"]["http"]["status"] == 200
    assert by_id[nginx_id]["http"]["path"] == f"/api/v1beta2/streams/{name}"


def test_refusal_is_passed_through_and_not_retried(stack: tuple[Nginx, list[Gateway]]) -> None:
    # One row more than a queue can ever hold: a 413 from the gateway (a 429 before issue 9).
    ngx, gws = stack
    name, _ = create_everywhere(gws, [{"name": "n", "type": "int64"}])
    before = [value(scrape(gw.url)[0], "gateway_http_requests_total", status="413") for gw in gws]
    body = json.dumps({"columns": ["n"], "data": [[i] for i in range(QUEUE_MAX_ROWS + 1)]})
    reply = http(
        "POST",
        f"{ngx.url}/api/v1beta2/streams/{name}/ingest",
        body,
        headers={"X-Api-Key": ADMIN_KEY, "Content-Type": "application/json"},
    )
    assert reply.status == 413, reply.body
    error = reply.json()
    assert error["code"] == 413 and "--queue-max-rows" in error["message"]
    assert error["request_id"] == reply.headers["X-Request-ID"]
    after = [value(scrape(gw.url)[0], "gateway_http_requests_total", status="413") for gw in gws]
    assert sum(after) - sum(before) == 1, "nginx retried the 413 on the other instance"


def test_rate_limit_429_and_retry_after_pass_through(kafka: str, tmp_path: Path) -> None:
    """A 429 from a gateway reaches the client through nginx with its Retry-After and
    X-RateLimit-* headers, and is not retried on another instance. One request per 1000 s per key
    (a bucket of one token): the second request is refused on any machine, however slow."""
    gw = Gateway(
        tmp_path / "gw",
        kafka,
        extra=["--config", str(GATEWAY_TOML), "--host", "127.0.0.1", "--rate-limit-per-key", "0.001"],
    )
    procs: list[Any] = [gw]
    with stopped_at_exit(procs):
        gw.start()
        ngx = start_nginx(tmp_path / "nginx", [f"127.0.0.1:{gw.port}"])
        procs.append(ngx.proc)
        name = unique_name("ngx_rate")
        gw.create_stream(name, [{"name": "n", "type": "int64"}])
        url = f"{ngx.url}/v0/events?name={name}"
        headers = {"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "application/x-ndjson"}
        accepted = http("POST", url, '{"n": 1}\n', headers=headers)
        refused = http("POST", url, '{"n": 2}\n', headers=headers)
        assert (accepted.status, refused.status) == (202, 429), (accepted.body, refused.body)
        got = {k.lower(): v for k, v in refused.headers.items()}
        assert got["retry-after"] == "60", got  # the wait (1000 s) bounded to 60 s
        assert got["x-ratelimit-limit"] == "0.001" and got["x-ratelimit-remaining"] == "0", got
        error = refused.json()
        assert error["code"] == "rate_limited" and error["request_id"] == got["x-request-id"], error
        counted = value(scrape(gw.url)[0], "gateway_http_requests_total", status="429")
        assert counted == 1, "the 429 was not the gateway's own, or nginx sent the request twice"
        ngx.proc.send_signal(signal.SIGQUIT)
        ngx.proc.wait(30)
        assert gw.stop() == 0, gw.log()[-3000:]


def test_metrics_are_not_public(stack: tuple[Nginx, list[Gateway]]) -> None:
    ngx, gws = stack
    for path in ("/metrics", "//metrics", "/%6Detrics", "/metrics?x=1"):
        reply = http("GET", ngx.url + path)
        assert reply.status == 404, (path, reply.status)
        assert b"gateway_" not in reply.body
        assert reply.json()["request_id"] == reply.headers["X-Request-ID"]
    assert http("GET", gws[0].url + "/metrics").status == 200  # the instances still serve it
    assert http("GET", ngx.url + "/readyz").status == 200


def test_oversized_body_gets_413_from_nginx(stack: tuple[Nginx, list[Gateway]]) -> None:
    ngx, _ = stack
    with socket.create_connection(("127.0.0.1", ngx.port), timeout=15) as s:
        s.sendall(
            b"POST /api/v1beta2/streams/x/ingest HTTP/1.1\r\nHost: t\r\n"
            b"Origin: http://page.example\r\n"
            b"Content-Length: %d\r\n\r\n" % (64 * 1024 * 1024 + 1)
        )
        answer = b""
        while b"}" not in answer:
            data = s.recv(4096)
            if not data:
                break
            answer += data
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), head
    assert b"\r\nAccess-Control-Allow-Origin: *\r\n" in head, head  # a web page sees the 413
    assert json.loads(body)["code"] == 413


def test_cors_passes_through(stack: tuple[Nginx, list[Gateway]]) -> None:
    """Preflights reach the gateways and their CORS headers reach the browser, errors included; the
    management API stays closed to other origins behind nginx too."""
    ngx, gws = stack
    name, _ = create_everywhere(gws, [{"name": "n", "type": "int64"}])
    origin = "http://page.example:8080"
    path = f"/v0/events?name={name}"
    pre = http(
        "OPTIONS",
        ngx.url + path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, x-api-key",
        },
    )
    headers = {k.lower(): v for k, v in pre.headers.items()}
    assert pre.status == 204, pre.body
    assert headers["access-control-allow-origin"] == "*"
    assert "x-api-key" in headers["access-control-allow-headers"].lower()
    assert headers["access-control-max-age"]
    accepted = http(
        "POST",
        f"{ngx.url}{path}&token={ADMIN_KEY}",
        '{"n": 1}',
        headers={"Origin": origin, "Content-Type": "text/plain;charset=UTF-8"},
    )
    body = json.dumps({"columns": ["n"], "data": [[i] for i in range(QUEUE_MAX_ROWS + 1)]})
    refused = http(
        "POST",
        f"{ngx.url}/api/v1beta2/streams/{name}/ingest",
        body,
        headers={"Origin": origin, "X-Api-Key": ADMIN_KEY, "Content-Type": "application/json"},
    )
    # one row more than the queue can ever hold: a 413 since issue 9 (it was a 429)
    assert (accepted.status, refused.status) == (202, 413), (accepted.body, refused.body)
    for reply in (accepted, refused):
        got = {k.lower(): v for k, v in reply.headers.items()}
        assert got["access-control-allow-origin"] == "*"
        assert "retry-after" in got["access-control-expose-headers"].lower()
    closed = http(
        "OPTIONS",
        ngx.url + "/api/v1beta2/streams",
        headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
    )
    assert closed.status == 403
    assert not any(k.lower().startswith("access-control-") for k in closed.headers)
