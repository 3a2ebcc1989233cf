"""`Expect: 100-continue` answered late: aiohttp would send "100 Continue" as soon as the route
matches, before the handler has checked the key (401/403) or the declared size (413). Here the
"100 Continue" goes out only when the handler first waits for body bytes, i.e. after its checks."""

from __future__ import annotations

from aiohttp import web
from aiohttp.http import HttpVersion11
from aiohttp.streams import StreamReader

from gateway import cors

_PENDING = "gateway.expect.continue_pending"


async def defer_continue(request: web.Request) -> None:
    """The routes' expect handler: 417 for an unknown expectation; else remember the promise."""
    expect = request.headers.get("Expect", "")
    if request.version != HttpVersion11:
        return
    if expect.strip().lower() != "100-continue":
        # made before the middleware runs: a web page must still see it (CORS) on ingest routes
        headers = (
            cors.reply_headers(request.app[cors.POLICY], request.headers.get("Origin"))
            if cors.is_ingest(request.path)
            else ()
        )
        raise web.HTTPExpectationFailed(
            text="unknown Expect header; only 100-continue is supported", headers=headers
        )
    request[_PENDING] = True


class ContinueOnRead:
    """The request's body stream, sending the deferred "100 Continue" before the first wait."""

    def __init__(self, request: web.Request) -> None:
        self._request = request
        self._content = request.content
        self.read_nowait = self._content.read_nowait
        self.at_eof = self._content.at_eof

    async def readany(self) -> bytes:
        """Send "100 Continue" once (the client holds the body back until then), then read."""
        if self._request.get(_PENDING):
            self._request[_PENDING] = False
            writer = self._request.writer
            await writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            writer.output_size = 0  # as aiohttp's own handler: the 100 is not part of the reply
        return await self._content.readany()


def body_source(request: web.Request) -> ContinueOnRead | StreamReader:
    """What to read the body from: the stream itself, or a wrapper owing a "100 Continue"."""
    return ContinueOnRead(request) if request.get(_PENDING) else request.content
