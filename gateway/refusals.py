"""Error replies, and refusals rendered once: under overload most requests end in a 429 (or a 503)
whose body differs from the last one's only by its request id, so the dialect renders each such
refusal once and later replies splice the request id into the cached bytes."""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from gateway.dialects.contract import ErrorRenderer
from gateway.errors import GatewayError
from gateway.limiters.retry_after import MAX_S, MIN_S, retry_after_header

# Stands in for the request id when a refusal is rendered for the cache. Request ids are
# [A-Za-z0-9._:-] (gateway.middleware), which every dialect's JSON writes as they are.
_MARK = "rid-7f1c0e9a5b3d4c2e8a6f0b1d9e7c5a3b"
_MARK_BYTES = _MARK.encode()
CACHE_SIZE = 512  # (dialect, refusal, Retry-After) triples; streams x causes x 60 s at most


class _Canned:
    """A refusal rendered once: its status, its headers and its body around the request id."""

    __slots__ = ("after", "before", "headers", "status")

    def __init__(self, status: int, headers: CIMultiDict[str], before: bytes, after: bytes) -> None:
        self.status = status
        self.headers = headers
        self.before = before
        self.after = after

    def reply(self, request_id: str) -> web.Response:
        return web.Response(
            body=self.before + request_id.encode() + self.after, status=self.status, headers=self.headers
        )


_cache: OrderedDict[tuple[Any, ...], _Canned | None] = OrderedDict()
_UNSEEN: Any = object()


def _retry_s(seconds: float | None) -> int | None:
    return None if seconds is None else min(MAX_S, max(MIN_S, math.ceil(seconds)))


def _render(render: ErrorRenderer, err: GatewayError, request_id: str) -> web.Response:
    """The dialect's reply to `err`, with its Retry-After and the error's own headers."""
    response = render(err, request_id)
    if err.retry_after is not None:
        response.headers.update(retry_after_header(err.retry_after))
    response.headers.update(err.headers)
    return response


def _canned(render: ErrorRenderer, err: GatewayError) -> _Canned | None:
    """`err` rendered by `render` around the request id mark; None when the body does not hold
    the mark exactly once (that dialect's reply is then rendered per request)."""
    response = _render(render, err, _MARK)
    body = response.body
    if not isinstance(body, bytes) or body.count(_MARK_BYTES) != 1:
        return None
    before, after = body.split(_MARK_BYTES)
    headers = CIMultiDict(response.headers)
    headers.popall("Content-Length", None)
    return _Canned(response.status, headers, before, after)


def error_reply(render: ErrorRenderer, err: GatewayError, request_id: str) -> web.Response:
    """The reply to `err` in a route's dialect (`render`), with `Retry-After` and the error's
    headers. 429s and 503s (they come in floods) are rendered once per dialect, error type,
    message and Retry-After, then reused (the oldest of CACHE_SIZE forgotten first); any other
    error, or one with headers of its own, is rendered per request."""
    if err.status not in (429, 503) or err.headers or err.row is not None:
        return _render(render, err, request_id)  # per-request headers (X-RateLimit-*): not cached
    key = (render, type(err), err.message, _retry_s(err.retry_after))
    canned: _Canned | None = _cache.get(key, _UNSEEN)
    if canned is _UNSEEN:
        canned = _cache[key] = _canned(render, err)
        if len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    if canned is None:
        return _render(render, err, request_id)
    return canned.reply(request_id)
