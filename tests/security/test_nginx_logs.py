"""Issue 20 item 10, with the real Debian nginx and deploy/nginx/nginx.conf as shipped: no key
reaches nginx's error or access log after hostile requests that carry it in `?token=` (an
oversized body, a request line nginx cannot parse, a request no upstream can take), and the
gateway sees the connection's address in X-Forwarded-For, not the client's claim."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import ADMIN_KEY, Gateway, free_port, unique_name, wait_until
from tests.integration.test_nginx import Nginx, start_nginx
from tests.reliability.rawhttp import exchange, request_bytes
from tests.security.conftest import COLUMNS, start_embedded

KEY_PATTERN = "tok"  # every key below starts with it; none may be in any log


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Nginx, Nginx, Gateway]]:
    """nginx → an embedded gateway (access log on), and a second nginx whose upstream is dead."""
    gw = start_embedded(Path(tmp_path_factory.mktemp("ngx-gw")), ["--access-log", "--log-format", "json"])
    live = start_nginx(Path(tmp_path_factory.mktemp("ngx-live")), [f"127.0.0.1:{gw.port}"])
    dead = start_nginx(Path(tmp_path_factory.mktemp("ngx-dead")), [f"127.0.0.1:{free_port()}"])
    yield live, dead, gw
    for ngx in (live, dead):
        ngx.proc.send_signal(signal.SIGQUIT)
        ngx.proc.wait(30)
    assert gw.stop() == 0, gw.log()[-3000:]


def logs_of(ngx: Nginx) -> str:
    return ngx.error_log() + (ngx.directory / "stdout.log").read_text(errors="replace")


def test_no_key_in_nginx_logs_after_hostile_requests(stack: tuple[Nginx, Nginx, Gateway]) -> None:
    live, dead, gw = stack
    name = unique_name("ngx")
    gw.create_stream(name, COLUMNS)
    keys = {
        what: f"{KEY_PATTERN}{what}{'Q' * 40}" for what in ("oversized", "badline", "dead", "ok", "badheader")
    }
    oversized = exchange(
        live.port,
        request_bytes(
            "POST",
            f"/v0/events?name={name}&token={keys['oversized']}",
            {},
            b"",
            content_length=100 * 1024 * 1024,
        ),
    )
    assert oversized.status == 413
    bad_line = exchange(
        live.port,
        f"POST /v0/events?name={name}&token={keys['badline']} HTTP/1.1 junk\r\nHost: x\r\n\r\n".encode(),
    )
    assert bad_line.status == 400
    bad_header = exchange(
        live.port,
        (
            f"POST /v0/events?name={name}&token={keys['badheader']} "
            "HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n"
        ).encode(),
    )
    assert bad_header.status == 400
    no_upstream = exchange(
        dead.port,
        request_bytes("POST", f"/v0/events?name={name}&token={keys['dead']}", {}, b'{"id":"a","n":1}\n'),
    )
    assert no_upstream.status == 502
    ok = exchange(
        live.port,
        request_bytes(
            "POST", f"/v0/events?name={name}&token={ADMIN_KEY}&wait=true", {}, b'{"id":"a","n":1}\n'
        ),
    )
    assert ok.status == 200, ok.body
    # nginx writes an access line after its reply: wait for them, then read every log it wrote
    wait_until(lambda: logs_of(live).count('"status":') >= 4, 15, "nginx's access log lines")
    for ngx in (live, dead):
        text = logs_of(ngx)
        for key in (*keys.values(), ADMIN_KEY):
            assert key not in text, (key, text[-2000:])
        assert "token=" not in text, text[-2000:]


def test_forwarded_for_is_the_connection(stack: tuple[Nginx, Nginx, Gateway]) -> None:
    live, _, gw = stack
    reply = exchange(
        live.port,
        request_bytes(
            "GET",
            "/api/v1beta2/streams",
            {"X-Api-Key": ADMIN_KEY, "X-Request-ID": "xff-probe-1", "X-Forwarded-For": "203.0.113.9"},
        ),
    )
    assert reply.status == 200

    def line() -> dict[str, object] | None:
        for text in gw.log().splitlines():
            if text.startswith("{") and "xff-probe-1" in text and "gateway.access" in text:
                entry: dict[str, object] = json.loads(text)
                return entry
        return None

    entry = wait_until(line, 15, "the gateway's access log line")
    assert entry["http"]["forwarded_for"] == "127.0.0.1", entry  # type: ignore[index]
