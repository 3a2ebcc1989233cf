"""Refusals rendered once (gateway.refusals): a cached 429/503 is byte for byte the reply the
dialect renders for that request, for every dialect, with its Retry-After; errors that carry
per-request headers or rows are rendered per request."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway import refusals
from gateway.app import build_app
from gateway.config import Settings
from gateway.context import GATEWAY
from gateway.dialects import datasources, restproxy, timeplus, tinybird
from gateway.dialects.contract import ErrorRenderer
from gateway.errors import (
    BadRequest,
    GatewayError,
    Overloaded,
    RateLimited,
    TooManyRequests,
    Unavailable,
)
from gateway.limiters.retry_after import retry_after_header
from tests.unit.test_dialect_errors import _started

RENDERERS: list[ErrorRenderer] = [
    timeplus.render_error,
    tinybird.render_error,
    restproxy.render_error,
    datasources.render_error,
]
FLOODS: list[GatewayError] = [
    TooManyRequests("the queue of stream 'a' is full (stream_rows); nothing was written", retry_after=2.4),
    Overloaded("decoding 8 requests at once", retry_after=1.0),
    Unavailable("the gateway is shutting down", retry_after=1.0),
    TooManyRequests('the queue of stream "q\\u00e9" is full', retry_after=75.0),
]


def _per_request(render: ErrorRenderer, err: GatewayError, request_id: str) -> web.Response:
    """What the middleware sent before refusals were cached."""
    response = render(err, request_id)
    if err.retry_after is not None:
        response.headers.update(retry_after_header(err.retry_after))
    response.headers.update(err.headers)
    return response


def _same(a: web.Response, b: web.Response) -> None:
    assert (a.status, a.body) == (b.status, b.body)
    assert sorted(a.headers.items()) == sorted(b.headers.items())


def test_cached_refusals_are_the_dialects_reply_with_each_request_id() -> None:
    for render in RENDERERS:
        for err in FLOODS:
            for request_id in ("0123456789abcdef0123456789abcdef", "req-1", "a.b:c_d-e"):
                _same(refusals.error_reply(render, err, request_id), _per_request(render, err, request_id))


def test_retry_after_is_whole_seconds_bounded_and_keys_the_cache() -> None:
    err = TooManyRequests("queue full (retry-after test)", retry_after=2.1)
    assert refusals.error_reply(timeplus.render_error, err, "r1").headers["Retry-After"] == "3"
    err.retry_after = 0.2
    assert refusals.error_reply(timeplus.render_error, err, "r2").headers["Retry-After"] == "1"
    err.retry_after = 600
    assert refusals.error_reply(timeplus.render_error, err, "r3").headers["Retry-After"] == "60"


def test_errors_with_their_own_headers_or_rows_are_rendered_per_request() -> None:
    limited = RateLimited(
        "over the key's rate",
        retry_after=1.0,
        headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Limit": "5"},
    )
    reply = refusals.error_reply(tinybird.render_error, limited, "rid")
    _same(reply, _per_request(tinybird.render_error, limited, "rid"))
    assert reply.headers["X-RateLimit-Limit"] == "5"
    bad = BadRequest("row 3 is bad", row=3)
    _same(
        refusals.error_reply(timeplus.render_error, bad, "rid"),
        _per_request(timeplus.render_error, bad, "rid"),
    )


def test_a_reply_may_be_changed_without_changing_the_cached_one() -> None:
    err = Overloaded("decoding 8 requests at once (mutation test)", retry_after=1.0)
    first = refusals.error_reply(timeplus.render_error, err, "r1")
    first.headers["X-Request-ID"] = "r1"
    first.headers.extend({"Access-Control-Allow-Origin": "*"})
    second = refusals.error_reply(timeplus.render_error, err, "r2")
    assert "X-Request-ID" not in second.headers
    assert "Access-Control-Allow-Origin" not in second.headers


# ---- over HTTP: a full queue's refusals, each with its own request id ------------------------
ADMIN = "unit-admin-key"


async def test_a_full_queues_refusals_carry_each_requests_id(tmp_path: Path, aiohttp_client: Any) -> None:
    app = build_app(Settings(data_dir=tmp_path, cors_allow_origins="https://app.example"), ADMIN)
    client: TestClient[Any, Any] = await aiohttp_client(app)
    await _started(app)
    key = {"X-Api-Key": ADMIN}
    reply = await client.post(
        "/api/v1beta2/streams",
        headers=key,
        json={"name": "full", "columns": [{"name": "id", "type": "string"}]},
    )
    assert reply.status == 201, await reply.text()
    gw = app[GATEWAY]
    stream = gw.catalog.stream("full")
    assert stream is not None
    queue = gw.queues.queue(stream.name, stream.topic)
    queue.rows = queue.limits.max_rows + 1  # held over its bound: nothing can be queued
    seen = set()
    for origin in (None, "https://app.example", None):
        headers = {**key, "Content-Type": "application/x-ndjson", **({"Origin": origin} if origin else {})}
        reply = await client.post("/api/v1beta2/streams/full/ingest", headers=headers, data=b'{"id": "a"}\n')
        body = await reply.json()
        assert reply.status == 429 and 1 <= int(reply.headers["Retry-After"]) <= 60
        assert body == {
            "code": 429,
            "error": "queue_full",
            "request_id": body["request_id"],
            "message": "the queue of stream 'full' is full (stream_rows); nothing was written, retry later",
        }
        assert body["request_id"] == reply.headers["X-Request-ID"]
        seen.add(body["request_id"])
        if origin:
            assert reply.headers["Access-Control-Allow-Origin"] == origin
        else:
            assert "Access-Control-Allow-Origin" not in reply.headers
    assert len(seen) == 3
    queue.rows = 0
    reply = await client.post(
        "/api/v1beta2/streams/full/ingest",
        headers={**key, "Content-Type": "application/x-ndjson"},
        data=b'{"id": "a"}\n',
    )
    assert reply.status == 202, await reply.text()
