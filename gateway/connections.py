"""Connection-level guards of the HTTP server: a cap on open connections and a fair share of them
per client address, a deadline for request heads from the moment a connection is accepted
(slowloris, silent connections), a bound on a head's bytes, counted against the memory cap while
the head is unfinished, and JSON bodies for the errors aiohttp answers itself (malformed or
oversized request heads), so that every refusal looks like the API's other errors."""

from __future__ import annotations

import asyncio
import logging
import resource
import uuid
from typing import Any

import msgspec
from aiohttp import web
from aiohttp.http_exceptions import LineTooLong
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler, _ErrInfo
from aiohttp.web_request import BaseRequest

from gateway import metrics
from gateway.limiters.address_share import AddressShares
from gateway.queues import MemoryBudget
from gateway.replies import SERVER_NAME

log = logging.getLogger(__name__)
# Liveness probes are served even over the connection cap: refusing them would get a gateway that
# is merely busy killed by its orchestrator. Only this exact request-line start is let through.
_LIVENESS = (b"GET /healthz HTTP/", b"GET /healthz?", b"HEAD /healthz HTTP/")
# What an unfinished head costs per byte received: aiohttp's parser keeps the raw bytes and the
# decoded header strings (issue 20 measured RSS +284 MB for 146 MB of unfinished heads).
HEAD_COPIES = 2


def canned_reply(status: int, reason: str, code: str, message: str, retry_after: int | None = None) -> bytes:
    """A complete HTTP/1.1 reply that closes the connection, for answers given outside a handler."""
    body = msgspec.json.encode(
        {"code": status, "message": message, "error": code, "request_id": uuid.uuid4().hex}
    )
    after = "" if retry_after is None else f"Retry-After: {retry_after}\r\n"
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n{after}"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    return head + body


class HeadTooLarge(Exception):
    """A request head larger than --max-head-bytes (answered 431)."""


class GuardedHandler(RequestHandler):
    """aiohttp's per-connection protocol with a connection cap, a per-address share of it, a
    request-head deadline and the head's bytes bounded and held against the memory cap."""

    def __init__(
        self,
        manager: web.Server,
        *,
        max_connections: int,
        header_timeout: float,
        shares: AddressShares | None = None,
        budget: MemoryBudget | None = None,
        max_head_bytes: int = 1 << 62,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, **kwargs)
        self._max_connections = max_connections
        self._header_timeout = header_timeout
        self._head_timer: asyncio.TimerHandle | None = None
        self._over_cap: bytes | None = None  # over the cap: the head so far, until judged
        self._over_share = False  # over the cap because its address holds its share
        self._shares = shares
        self._address: str | None = None  # what `shares` counts this connection under
        self._budget = budget
        self._max_head_bytes = max_head_bytes
        self._head_held = 0  # what an unfinished head holds of `budget` (HEAD_COPIES per byte)
        self._last_payload: StreamReader | None = None  # the body of the last request parsed here

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        shares = self._shares
        if shares is not None:
            self._address = shares.opened(transport.get_extra_info("peername"))
        if self._manager is not None and len(self._manager.connections) > self._max_connections:
            self._over_cap = b""
        elif self._address is not None and shares is not None and shares.over(self._address):
            self._over_cap, self._over_share = b"", True
        # Over the cap (or the address's share) a connection is judged on the first bytes of its
        # head (a liveness probe is served), refused otherwise. The head deadline runs from now:
        # a client that sends nothing is answered and closed when it passes.
        self._head_timer = self._loop.call_later(self._header_timeout, self._head_too_slow)

    def _refuse_over_cap(self) -> None:
        self._over_cap = None
        if self._over_share and self._shares is not None:
            metrics.THROTTLED.labels(status="429", cause="address_share").inc()
            self._refuse(
                429,
                "Too Many Requests",
                "too_many_connections",
                f"this client address already holds {self._shares.limit} connections, "
                "its share of the gateway's (--address-share); close idle ones or "
                "retry later",
                retry_after=1,
            )
            return
        metrics.THROTTLED.labels(status="503", cause="max_connections").inc()
        self._refuse(
            503,
            "Service Unavailable",
            "too_many_connections",
            f"the gateway already holds {self._max_connections} connections; retry later",
        )

    def _judge_over_cap(self, data: bytes) -> bytes | None:
        """Over the cap: the data to parse once the head starts as a liveness probe (served, then
        closed), None while undecided or when refused (503)."""
        head = (self._over_cap or b"") + data
        if any(head.startswith(p) for p in _LIVENESS):
            self._over_cap = None
            return head
        if any(p.startswith(head) for p in _LIVENESS):
            self._over_cap = head
            return None
        self._refuse_over_cap()
        return None

    def _refuse(
        self, status: int, reason: str, code: str, message: str, retry_after: int | None = None
    ) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(canned_reply(status, reason, code, message, retry_after))
        self.force_close()
        self._release_head()

    def _between_requests(self) -> bool:
        return self._current_request is None and not self._messages and not self._request_in_progress

    def data_received(self, data: bytes) -> None:
        if self._close or self._force_close:  # refused, closed, or the server is draining
            self._finish_body(data)
            return
        # A head starting in this data gets header_timeout from now; the timer is only armed when
        # the data did not complete it (most requests arrive whole: no timer made and cancelled).
        starts_head = bool(data) and self._head_timer is None and self._between_requests()
        if self._over_cap is not None:
            if self._force_close:
                return
            judged = self._judge_over_cap(data)
            if judged is None:
                if starts_head and not self._force_close:
                    self._arm_head_timer()
                return
            super().data_received(judged)
            self.close()  # serve this probe only, then close (after the parser queued it)
        elif self._budget is not None and data:  # b"": aiohttp re-parsing after a pause
            # Inline (one call per read): a head this data leaves unfinished is held against the
            # memory cap and bounded (431). Bytes that come while a body is unfinished are the
            # body's (bounded by aiohttp's read buffer until the handler reads them, then held).
            payload = self._last_payload
            in_head = payload is None or payload.is_eof()
            if in_head:
                self._last_payload = None  # read to its end: nothing of the last body is kept
            parsed = self._request_count
            super().data_received(data)
            if self._request_count != parsed:  # a head (or more) is complete
                self._last_payload = self._messages[-1][1] if self._messages else None
                if self._head_held + len(data) * HEAD_COPIES > self._max_head_bytes * HEAD_COPIES:
                    self._check_head_size()
                if self._head_held:
                    self._release_head()
            elif in_head and not self._force_close:
                self._hold_head(len(data))
        else:
            super().data_received(data)
            if self._messages:
                self._last_payload = self._messages[-1][1]
        if self._between_requests():
            if starts_head and not self._force_close:
                self._arm_head_timer()
        elif self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _check_head_size(self) -> None:
        """Heads that arrived whole are measured only when the data was larger than the bound
        (a head too large is answered 431 in place of the request)."""
        for i, (message, payload) in enumerate(self._messages):
            if isinstance(message, _ErrInfo):
                continue
            size = len(message.path) + sum(len(k) + len(v) + 4 for k, v in message.raw_headers) + 16
            if size > self._max_head_bytes:
                self._messages[i] = (
                    _ErrInfo(status=431, exc=HeadTooLarge(), message="request head too large"),
                    payload,
                )

    def _hold_head(self, n: int) -> None:
        cost = n * HEAD_COPIES
        held = self._head_held + cost
        if held > self._max_head_bytes * HEAD_COPIES:
            metrics.THROTTLED.labels(status="431", cause="head_bytes").inc()
            self._refuse(
                431,
                "Request Header Fields Too Large",
                "request_header_fields_too_large",
                f"the request head is larger than {self._max_head_bytes} bytes (--max-head-bytes)",
            )
            return
        budget = self._budget
        assert budget is not None
        if budget.used + cost > budget.cap:
            metrics.THROTTLED.labels(status="503", cause="memory").inc()
            self._refuse(
                503,
                "Service Unavailable",
                "unavailable",
                "the gateway's memory cap is in use; retry later",
                retry_after=1,
            )
            return
        budget.used += cost
        self._head_held = held
        metrics.HEAD_BYTES.inc(cost)

    def _release_head(self) -> None:
        held = self._head_held
        if held and self._budget is not None:
            self._budget.used -= held
            self._head_held = 0
            metrics.HEAD_BYTES.dec(held)

    def _finish_body(self, data: bytes) -> None:
        """While draining, feed the rest of a body whose request arrived before the drain began.
        aiohttp drops every byte received once the server's shutdown marked the connection
        closing (`close()`, then `shutdown()` while it waits for the handler): the handler would
        wait for its body until the read timeout and answer 408 ("do not retry") to a request it
        must finish or refuse with 503 ("nothing written, retry")."""
        payload = self._last_payload
        if self.transport is None or payload is None or payload.is_eof():
            return  # really closed, or between requests: a new request is not taken any more
        closing = self._close, self._force_close
        self._close = self._force_close = False
        try:
            super().data_received(data)
        finally:
            self._close, self._force_close = closing

    def _arm_head_timer(self) -> None:
        self._head_timer = self._loop.call_later(self._header_timeout, self._head_too_slow)

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self._over_cap is not None:
            self._refuse_over_cap()
            return
        if self._between_requests() and not self._force_close:
            metrics.THROTTLED.labels(status="408", cause="header_timeout").inc()
            self._refuse(
                408,
                "Request Timeout",
                "request_timeout",
                f"the request head did not arrive within {self._header_timeout:g} s",
            )

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._release_head()
        self._last_payload = None
        if self._address is not None and self._shares is not None:
            self._shares.closed(self._address)
            self._address = None
        super().connection_lost(exc)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """JSON instead of aiohttp's text page; oversized heads get 431, quietly logged. Neither
        the reply nor the log quotes the parser's message: it carries request bytes (keys too)."""
        code = "bad_request" if status == 400 else "internal_error"
        text = "the request could not be parsed" if status == 400 else "internal error"
        said = (message or "").lower()
        if isinstance(exc, HeadTooLarge):
            status, code = 431, "request_header_fields_too_large"
            text = "the request head is too large (--max-head-bytes)"
        elif (
            isinstance(exc, LineTooLong)
            or "too long" in said
            or "too large" in said
            or "too many headers" in said
        ):
            status, code = 431, "request_header_fields_too_large"
            text = "the request line or a header is too long, or there are too many headers"
        elif status == 400 and exc is not None:
            text = f"malformed HTTP request ({type(exc).__name__})"
        log.info("refused a malformed HTTP request from %s: %d %s", request.remote, status, text)
        body = {"code": status, "message": text, "error": code, "request_id": uuid.uuid4().hex}
        resp = web.Response(
            body=msgspec.json.encode(body),
            status=status,
            content_type="application/json",
            headers={"Server": SERVER_NAME},
        )
        resp.force_close()
        return resp


class GuardedSite(web.TCPSite):
    """A TCP site whose connections are served by GuardedHandler."""

    def __init__(
        self,
        runner: web.AppRunner,
        host: str,
        port: int,
        *,
        max_connections: int,
        header_timeout: float,
        backlog: int = 1024,
        reuse_port: bool | None = None,
        shares: AddressShares | None = None,
        budget: MemoryBudget | None = None,
        max_head_bytes: int = 1 << 62,
    ) -> None:
        super().__init__(runner, host, port, backlog=backlog, reuse_port=reuse_port)
        self._guard: dict[str, Any] = {
            "max_connections": max_connections,
            "header_timeout": header_timeout,
            "shares": shares,
            "budget": budget,
            "max_head_bytes": max_head_bytes,
        }

    async def start(self) -> None:
        """Listen, creating a GuardedHandler per connection (with the runner's handler options)."""
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        options = {**server._kwargs, **self._guard}  # what web.Server passes to RequestHandler

        def factory() -> GuardedHandler:
            return GuardedHandler(server, loop=loop, **options)

        self._server = await loop.create_server(
            factory,
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=True,
            reuse_port=self._reuse_port,
        )
        self._bound_port = self._server.sockets[0].getsockname()[1]


def head_limits(max_head_bytes: int, max_headers: int) -> dict[str, int]:
    """aiohttp's own head limits (its parser's; the handler's options): a request line or a header
    field of at most 8190 bytes (nginx's default buffer), as many fields as `max_headers`;
    beyond either, 431. The head as a whole is bounded by GuardedHandler (`max_head_bytes`)."""
    line = min(8190, max_head_bytes)
    return {"max_line_size": line, "max_field_size": line, "max_headers": max_headers}


def raise_open_files_limit(wanted: int) -> int:
    """Raise the soft RLIMIT_NOFILE towards `wanted` (capped by the hard limit); the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft
