"""Cross-cutting HTTP concerns: request ids, metrics, and turning errors into each dialect's body."""

from __future__ import annotations

import itertools
import logging
import os
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from http import HTTPStatus

from aiohttp import web

from gateway import cors
from gateway.context import GATEWAY
from gateway.context import REQUEST_ID as REQUEST_ID_KEY
from gateway.errors import GatewayError, NotFound, RequestTimeout, Unavailable
from gateway.logs import REQUEST_ID
from gateway.refusal_log import RefusalLog
from gateway.refusals import error_reply
from gateway.replies import SERVER_NAME, FastReply, Frame
from gateway.routes import ROUTES

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_id_prefix = ""
_id_counter = itertools.count()
_refusals = RefusalLog()


def _new_id_source() -> None:
    """A random 64-bit prefix per process (again in a forked child) and a counter after it."""
    global _id_prefix, _id_counter
    _id_prefix, _id_counter = secrets.token_hex(8), itertools.count()


_new_id_source()
os.register_at_fork(after_in_child=_new_id_source)


def new_request_id() -> str:
    """A fresh request id: 32 hex digits, unique per process by its counter and across processes
    by its random prefix (a uuid4 costs a getrandom() system call per request)."""
    return f"{_id_prefix}{next(_id_counter):016x}"


def _from_http_exception(request: web.Request, exc: web.HTTPException) -> GatewayError:
    if exc.status == 404:
        return NotFound(f"no route {request.method} {request.path}")
    err = GatewayError(exc.reason)
    err.status = exc.status
    err.code = exc.reason.lower().replace(" ", "_")
    return err


def _log_refusal(request: web.Request, status: int, refusal: tuple[str, str] | None, request_id: str) -> None:
    """The refused request's line (sampled per cause and stream: gateway.refusal_log)."""
    info = request.match_info
    stream = info.get("name") or info.get("topic") or request.query.get("name", "")
    cause, message = refusal or (f"http_{status}", response_reason(status))
    _refusals.refused(request.method, request.path, status, cause, stream, message, request_id)


def response_reason(status: int) -> str:
    """The HTTP reason phrase of a status (for replies made without an error)."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "error"


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one middleware: request id, CORS, latency and status metrics, JSON errors in the
    route's dialect. CORS costs nothing but a header lookup for requests without `Origin`."""
    app = request.app
    gw = app[GATEWAY]
    match = request.match_info
    route = app[ROUTES].of(match.route if match.http_exception is None else None, request.path)
    request_id = request.headers.get("X-Request-ID")
    if request_id is None or not _REQUEST_ID.fullmatch(request_id):  # absent, or unsafe to echo
        request_id = new_request_id()
    request[REQUEST_ID_KEY] = request_id
    token = REQUEST_ID.set(request_id)  # log records made while handling carry the id
    started = time.perf_counter()
    origin = request.headers.get("Origin")
    # (code, message) of the error, not the error itself: a raised one holds this frame through
    # its traceback, a cycle only the garbage collector would free (+7% instructions per 429)
    refusal: tuple[str, str] | None = None
    try:
        if gw.lifecycle.draining and route.kind != cors.OPS:
            raise Unavailable("the gateway is shutting down; retry on another replica", retry_after=1.0)
        preflight = (
            cors.check(request, route.kind, origin)
            if origin is not None or request.method == "OPTIONS"
            else None
        )
        response = preflight if preflight is not None else await handler(request)
    except GatewayError as err:
        refusal = err.code, err.message
        response = error_reply(route.render, err, request_id)
        if isinstance(err, RequestTimeout):  # a stalled body: drop the client, no lingering read
            request.content.feed_eof()
            response.force_close()
    except web.HTTPException as exc:
        error = _from_http_exception(request, exc)
        refusal = error.code, error.message
        response = gw.renderers["default"](error, request_id)
        if "Allow" in exc.headers:  # a 405 names the methods the route takes
            response.headers["Allow"] = exc.headers["Allow"]
    except Exception:
        log.exception("unhandled error in %s %s (request %s)", request.method, request.path, request_id)
        refusal = "internal_error", "internal error"
        response = route.render(GatewayError("internal error"), request_id)
    finally:
        REQUEST_ID.reset(token)
    if isinstance(response, FastReply):  # its header lines made once per route
        response.stamp(
            request_id,
            route.frame
            if origin is None or route.kind != cors.INGEST
            else Frame((("X-Gateway-Worker", gw.worker), *cors.reply_headers(app[cors.POLICY], origin))),
        )
    else:
        headers = response.headers
        headers["X-Request-ID"] = request_id
        headers["X-Gateway-Worker"] = gw.worker
        headers["Server"] = SERVER_NAME  # not aiohttp's default, which names versions
        if route.kind == cors.INGEST:
            headers.extend(cors.reply_headers(app[cors.POLICY], origin))
    status = response.status
    if status >= 400:
        _log_refusal(request, status, refusal, request_id)
    route.latency.observe(time.perf_counter() - started)
    route.count(request.method, status).inc()
    return response
