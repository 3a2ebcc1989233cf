"""Fast replies: the status line and the headers that never change are rendered once, and a reply's
head and body leave in one transport write.

aiohttp's `web.Response` builds a header multidict per reply, checks it for conflicts (length,
type, chunking), serializes it, and hands head and body to its writer in several steps. A
`FastReply` keeps its headers as text: what varies per reply (the handler's own headers, the
request id, Content-Length, Date, Connection) is formatted into blocks made once (`Frame`). The
bytes are the ones aiohttp would send for the same headers, in the same order.

It stays a `web.Response`: whatever asks for its `headers` gets a real multidict holding every
header, and from then on the reply is written by aiohttp's own path, so code that changes headers
(an error path, a signal, compression) keeps working. `stamp()` (the middleware) adds the request
id and the route's fixed headers without building that multidict.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec
from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.compression_utils import MAX_SYNC_CHUNK_SIZE
from aiohttp.helpers import EMPTY_BODY_STATUS_CODES, rfc822_formatted_time
from aiohttp.web_response import REASON_PHRASES
from multidict import CIMultiDict

# Characters a header must not hold (aiohttp's serializer refuses the same: header injection).
_FORBIDDEN = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# Every reply's `Server` header: no Python or aiohttp version (aiohttp's default names both).
# Set where a handler would set it (after the route's frame), so the fast head and aiohttp's own
# path give the same bytes; other replies get it from the middleware and GuardedHandler.
SERVER_NAME = "ingest-gateway"
_SERVER_LINE = f"Server: {SERVER_NAME}\r\n"
_status_lines: dict[tuple[int, int, int], str] = {}


def _safe(text: str) -> str:
    if _FORBIDDEN.search(text) is not None:
        raise ValueError(f"control character in a reply header: {text[:100]!r}")
    return text


def header_lines(pairs: Iterable[tuple[str, str]]) -> str:
    """`Name: value\\r\\n` for each pair; ValueError for a control character in either."""
    return "".join(f"{_safe(k)}: {_safe(v)}\r\n" for k, v in pairs)


_lines_cache: dict[tuple[tuple[str, str], ...], str] = {}
LINES_CACHE_SIZE = 4096  # handlers' header sets (rate limits: remaining x reset x limit)


def _handler_lines(headers: Mapping[str, str]) -> str:
    """`header_lines` of a handler's headers, rendered once per distinct set: they repeat (the
    rate-limit headers of admitted requests take few values)."""
    pairs = tuple(headers.items())
    lines = _lines_cache.get(pairs)
    if lines is None:
        lines = header_lines(pairs)
        if len(_lines_cache) < LINES_CACHE_SIZE:
            _lines_cache[pairs] = lines
    return lines


class Frame:
    """Headers that every reply of a kind carries after its request id (worker, CORS), as the
    pairs and their rendered lines."""

    __slots__ = ("lines", "pairs")

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self.pairs = tuple(pairs)
        self.lines = header_lines(self.pairs)


def _status_line(major: int, minor: int, status: int, reason: str) -> str:
    key = (major, minor, status)
    line = _status_lines.get(key)
    if line is None:
        line = _status_lines[key] = _safe(f"HTTP/{major}.{minor} {status} {reason}")
    return line


class FastReply(web.Response):
    """A complete reply: `body` (bytes), its status and content type, and the handler's own
    `headers` (rate limits; not Content-Length, Date, Server or Connection, which it works out).

    StreamResponse.__init__ is not called on purpose: the multidict it makes is what this class
    avoids; `_headers` makes it when first asked for."""

    _stamp_id: str | None = None
    _frame: Frame | None = None
    _materialized: CIMultiDict[str] | None = None
    _head: bytes | None = None

    def __init__(
        self,
        body: bytes,
        status: int = 200,
        *,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self._state: dict[Any, Any] = {}
        self._status = status
        self._reason = REASON_PHRASES.get(status, "")
        self._body = body
        self._zlib_executor_size = MAX_SYNC_CHUNK_SIZE  # as web.Response (if compression is on)
        self._zlib_executor = None
        if status in EMPTY_BODY_STATUS_CODES:
            if body:
                raise ValueError(f"a {status} reply has no body")
            content_type = None
        elif content_type is None:
            raise ValueError("a reply with a body needs a content type")
        self._media = content_type
        lead = "" if content_type is None else f"Content-Type: {_safe(content_type)}\r\n"
        self._own = headers
        # the order web.Response(headers=…, content_type=…) gives: the handler's, then the type
        self._lead = _handler_lines(headers) + lead if headers else lead

    # ---- the header multidict, made only when something asks for it ----------------------
    @property  # type: ignore[override]
    def _headers(self) -> CIMultiDict[str]:
        headers = self._materialized
        if headers is None:
            headers = self._materialized = CIMultiDict()
            if self._own:
                headers.extend(self._own)
            if self._media is not None:
                headers["Content-Type"] = self._media
            if self._stamp_id is not None:
                headers["X-Request-ID"] = self._stamp_id
            if self._frame is not None:
                headers.extend(self._frame.pairs)
        return headers

    @_headers.setter
    def _headers(self, value: CIMultiDict[str]) -> None:
        self._materialized = value

    def stamp(self, request_id: str, frame: Frame) -> None:
        """Add the request id and the route's fixed headers (what the middleware adds to every
        reply), without making the multidict when nobody has asked for it yet."""
        headers = self._materialized
        if headers is not None:
            headers["X-Request-ID"] = request_id
            headers.extend(frame.pairs)
            return
        self._stamp_id = _safe(request_id)
        self._frame = frame

    @property
    def _fast(self) -> bool:
        """True while nothing asked for the multidict or for a feature the head cannot encode."""
        return (
            self._materialized is None
            and self._frame is not None
            and not (self._compression or self._chunked or self._cookies)
        )

    # ---- writing ---------------------------------------------------------------------------
    async def _slow_prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if self._payload_writer is None and not self._eof_sent:
            self._headers.setdefault("Server", SERVER_NAME)  # not aiohttp's, which names versions
        return await super().prepare(request)

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if not self._fast or self._eof_sent or self._payload_writer is not None:
            return await self._slow_prepare(request)
        match_info = getattr(request, "_match_info", None)
        if match_info is not None:
            for app in match_info.apps:  # response signals may change headers: aiohttp's path
                if app.on_response_prepare:
                    return await self._slow_prepare(request)
        method = request.method
        status = self._status
        empty = status in EMPTY_BODY_STATUS_CODES
        self._must_be_empty_body = empty or method == "HEAD"
        keep_alive = self._keep_alive
        if keep_alive is None:
            keep_alive = self._keep_alive = request.keep_alive
        major, minor = request.version
        if keep_alive:
            connection = "Connection: keep-alive\r\n" if (major, minor) == (1, 0) else ""
        else:
            connection = "Connection: close\r\n" if (major, minor) == (1, 1) else ""
        length = "" if empty else f"Content-Length: {len(self._body)}\r\n"  # type: ignore[arg-type]
        assert self._frame is not None
        self._head = (
            f"{_status_line(major, minor, status, self._reason)}\r\n{self._lead}"
            f"X-Request-ID: {self._stamp_id}\r\n{self._frame.lines}{_SERVER_LINE}"
            f"{length}Date: {rfc822_formatted_time()}\r\n{connection}\r\n"
        ).encode()
        self._req = request
        writer = self._payload_writer = request.writer
        return writer

    async def write_eof(self, data: bytes = b"") -> None:
        head = self._head
        if head is None or self._eof_sent:
            return await super().write_eof(data)
        self._head = None
        body = self._body
        # one write: head and body (aiohttp's writer adds nothing: no headers of its own queued)
        whole = head if self._must_be_empty_body or not body else head + body  # type: ignore[operator]
        await web.StreamResponse.write_eof(self, whole)


_encoder = msgspec.json.Encoder()


def fast_json(
    body: Any,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    *,
    content_type: str = "application/json",
) -> FastReply:
    """`body` encoded as JSON (msgspec) in a FastReply."""
    return FastReply(_encoder.encode(body), status, content_type=content_type, headers=headers)
