"""Cross-cutting HTTP concerns: request ids, metrics, and turning errors into each dialect's body."""

from __future__ import annotations

import functools
import itertools
import logging
import os
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from gateway import metrics
from gateway.context import REQUEST_ID as REQUEST_ID_KEY
from gateway.context import gateway_of
from gateway.errors import GatewayError, NotFound, RequestTimeout, Unavailable
from gateway.limiters.retry_after import retry_after_header
from gateway.logs import REQUEST_ID

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
OPS_PATHS = ("/healthz", "/readyz", "/metrics", "/openapi.json")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_id_prefix = ""
_id_counter = itertools.count()


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


@functools.lru_cache(maxsize=4096)
def _request_metrics(route: str, method: str, status: int) -> tuple[Any, Any]:
    """The labelled metric children of a (route, method, status): `labels()` costs a lock and a
    dict lookup per call, so each combination is looked up once."""
    return (metrics.REQUEST_LATENCY.labels(route=route),
            metrics.REQUESTS.labels(route=route, method=method, status=str(status)))


def route_name(request: web.Request) -> str:
    """The matched route's path template (bounded cardinality for metric labels)."""
    info = request.match_info
    resource = info.route.resource if info.http_exception is None else None
    return resource.canonical if resource is not None else "unmatched"


def _from_http_exception(request: web.Request, exc: web.HTTPException) -> GatewayError:
    if exc.status == 404:
        return NotFound(f"no route {request.method} {request.path}")
    err = GatewayError(exc.reason)
    err.status = exc.status
    err.code = exc.reason.lower().replace(" ", "_")
    return err


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id, latency and status metrics, JSON errors in the route's dialect."""
    request_id = request.headers.get("X-Request-ID")
    if request_id is None or not _REQUEST_ID.fullmatch(request_id):  # absent, or unsafe to echo
        request_id = new_request_id()
    request[REQUEST_ID_KEY] = request_id
    token = REQUEST_ID.set(request_id)  # log records made while handling carry the id
    route = route_name(request)
    started = time.perf_counter()
    gw = gateway_of(request)
    try:
        if gw.lifecycle.draining and request.path not in OPS_PATHS:
            raise Unavailable("the gateway is shutting down; retry on another replica",
                              retry_after=1.0)
        response = await handler(request)
    except GatewayError as err:
        response = gw.renderers.get(route, gw.renderers["default"])(err, request_id)
        if err.retry_after is not None:
            response.headers.update(retry_after_header(err.retry_after))
        response.headers.update(err.headers)
        if isinstance(err, RequestTimeout):  # a stalled body: drop the client, no lingering read
            request.content.feed_eof()
            response.force_close()
    except web.HTTPException as exc:
        response = gw.renderers["default"](_from_http_exception(request, exc), request_id)
        for name in ("Allow",):
            if name in exc.headers:
                response.headers[name] = exc.headers[name]
    except Exception:
        log.exception("unhandled error in %s %s (request %s)", request.method, request.path,
                      request_id)
        response = gw.renderers.get(route, gw.renderers["default"])(GatewayError("internal error"),
                                                                    request_id)
    finally:
        REQUEST_ID.reset(token)
    response.headers["X-Request-ID"] = request_id
    response.headers["X-Gateway-Worker"] = gw.worker
    if response.status >= 400 and response.status not in (429, 503):  # those two come in floods
        log.log(logging.WARNING if response.status >= 500 else logging.INFO,
                "%s %s -> %d (request %s)", request.method, request.path, response.status,
                request_id)
    latency, count = _request_metrics(route, request.method, response.status)
    latency.observe(time.perf_counter() - started)
    count.inc()
    return response
