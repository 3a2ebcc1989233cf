"""FastReply writes the bytes aiohttp's web.Response writes for the same headers (keep-alive and
close, HTTP/1.0 and 1.1, HEAD, 204), takes aiohttp's own path once its headers are asked for, and
refuses control characters in headers."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.replies import FastReply, Frame, fast_json

FRAME = Frame((("X-Gateway-Worker", "0"), ("Vary", "Origin")))
OWN = {"X-RateLimit-Limit": "5", "X-RateLimit-Remaining": "4"}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _reply(request: web.Request, fast: bool) -> web.StreamResponse:
    status = int(request.query.get("status", "200"))
    own = OWN if "own" in request.query else None
    if status == 204:
        return FastReply(b"", 204, headers=own) if fast else web.Response(status=204, headers=own)
    body = b'{"rows":1}'
    if fast:
        return FastReply(body, status, content_type="application/json", headers=own)
    return web.Response(body=body, status=status, headers=own, content_type="application/json")


def _app(seen: list[web.StreamResponse], *, touch: bool = False, signal: bool = False) -> web.Application:
    """/fast and /slow answer the same reply; the middleware adds what the gateway's adds."""

    @web.middleware
    async def stamp(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        if "close" in request.query:
            response.force_close()
        if touch:
            response.headers["X-Touched"] = "1"
        if isinstance(response, FastReply):
            response.stamp("rid-1", FRAME)
        else:
            response.headers["X-Request-ID"] = "rid-1"
            response.headers.extend(FRAME.pairs)
            response.headers["Server"] = "ingest-gateway"  # as the gateway's middleware does
        seen.append(response)
        return response

    async def fast(request: web.Request) -> web.StreamResponse:
        return _reply(request, True)

    async def slow(request: web.Request) -> web.StreamResponse:
        return _reply(request, False)

    app = web.Application(middlewares=[stamp])
    app.router.add_route("*", "/fast", fast)
    app.router.add_route("*", "/slow", slow)
    if signal:

        async def add(request: web.Request, response: web.StreamResponse) -> None:
            response.headers["X-Signal"] = "yes"

        app.on_response_prepare.append(add)
    return app


async def _exchange(port: int, head: str) -> tuple[bytes, bool]:
    """One request; the reply's bytes (Date masked) and whether the server then closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head.encode())
    reply = await reader.readuntil(b"\r\n\r\n")
    m = re.search(rb"Content-Length: (\d+)", reply)
    if m is not None and not head.startswith("HEAD"):
        reply += await reader.readexactly(int(m.group(1)))
    try:  # a second request: answered on a kept-alive connection, EOF on a closed one
        writer.write(head.encode())
        closed = await reader.read(1) == b""
    except ConnectionError:
        closed = True
    writer.close()
    return re.sub(rb"Date: [^\r]*", b"Date: X", reply), closed


CASES = [
    ("POST", "?", "1.1", ""),
    ("POST", "?status=202&own", "1.1", ""),
    ("POST", "?", "1.1", "Connection: close\r\n"),
    ("POST", "?close", "1.1", ""),
    ("POST", "?", "1.0", ""),
    ("POST", "?own", "1.0", "Connection: keep-alive\r\n"),
    ("POST", "?close", "1.0", "Connection: keep-alive\r\n"),
    ("HEAD", "?", "1.1", ""),
    ("HEAD", "?", "1.0", ""),
    ("POST", "?status=204", "1.1", ""),
    ("POST", "?status=204&own", "1.0", "Connection: keep-alive\r\n"),
    ("HEAD", "?status=204", "1.1", ""),
    ("POST", "?status=400", "1.1", "Accept-Encoding: gzip\r\n"),
]


@pytest.mark.parametrize(("touch", "signal"), [(False, False), (True, False), (False, True)])
async def test_same_bytes_as_web_response(touch: bool, signal: bool) -> None:
    seen: list[web.StreamResponse] = []
    async with TestServer(_app(seen, touch=touch, signal=signal)) as server:
        assert server.port is not None
        for method, query, version, extra in CASES:
            replies = []
            for path in ("/fast", "/slow"):
                head = f"{method} {path}{query} HTTP/{version}\r\nHost: x\r\nContent-Length: 0\r\n{extra}\r\n"
                replies.append(await _exchange(server.port, head))
            assert replies[0] == replies[1], (method, query, version, extra)
            assert b"X-Request-ID: rid-1\r\nX-Gateway-Worker: 0\r\nVary: Origin\r\n" in replies[0][0]
            assert (b"X-Signal: yes" in replies[0][0]) == signal
            assert (b"X-Touched: 1" in replies[0][0]) == touch
    fast = [r for r in seen if isinstance(r, FastReply)]
    assert len(fast) >= len(CASES)  # and the second requests of kept-alive connections
    # Without a header change or a signal, no header multidict was made: the fast path ran.
    assert all((r._materialized is None) != (touch or signal) for r in fast)
    assert all(r.body_length > 0 and r.prepared for r in fast)


def test_headers_show_everything_stamped() -> None:
    reply = fast_json({"a": 1}, 202, {"X-RateLimit-Limit": "5"})
    reply.stamp("rid-2", FRAME)
    assert list(reply.headers.items()) == [
        ("X-RateLimit-Limit", "5"),
        ("Content-Type", "application/json"),
        ("X-Request-ID", "rid-2"),
        ("X-Gateway-Worker", "0"),
        ("Vary", "Origin"),
    ]
    assert reply.content_type == "application/json" and reply.status == 202
    assert reply.body == b'{"a":1}'


@pytest.mark.parametrize("bad", ["a\r\nSet-Cookie: x=1", "a\nb", "a\x00b", "a\x7f"])
def test_control_characters_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        FastReply(b"x", content_type="text/plain", headers={"X-Own": bad})
    with pytest.raises(ValueError):
        FastReply(b"x", content_type=bad)
    with pytest.raises(ValueError):
        Frame((("X-Frame", bad),))
    with pytest.raises(ValueError):
        FastReply(b"x", content_type="text/plain").stamp(bad, FRAME)


def test_body_and_type_rules() -> None:
    with pytest.raises(ValueError):
        FastReply(b"x", 204)
    with pytest.raises(ValueError):
        FastReply(b"x", 200)
    assert FastReply(b"", 204, content_type="application/json").headers.get("Content-Type") is None
