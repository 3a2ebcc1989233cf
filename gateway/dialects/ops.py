"""Operational routes that need no key: liveness, readiness, Prometheus metrics, the OpenAPI document."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from gateway import metrics as gateway_metrics
from gateway.context import gateway_of
from gateway.dialects.common import json_reply
from gateway.dialects.contract import Route
from gateway.openapi import Doc, Reply, operation

OPENAPI_SPEC = web.AppKey("openapi_spec", bytes)  # the encoded document, built with the app
OPS = ("operations",)


class Health(Doc):
    """`/healthz`."""

    status: str


class Readiness(Doc):
    """`/readyz`: ready once the catalog is loaded and the sink reachable, and not draining."""

    status: str
    catalog_loaded: bool
    sink: str
    sink_available: bool
    draining: bool


@operation("Liveness", replies={200: Reply("The process is alive.", Health)}, security=(), tags=OPS)
async def healthz(request: web.Request) -> web.Response:
    """200 while the process is alive."""
    return json_reply(Health("ok"))


@operation(
    "Readiness",
    replies={
        200: Reply("Ready to take requests.", Readiness),
        503: Reply("Not ready: catalog loading, Kafka unreachable or draining.", Readiness),
    },
    security=(),
    tags=OPS,
)
async def readyz(request: web.Request) -> web.Response:
    """200 once the catalog is loaded and the sink reachable; 503 otherwise and while draining."""
    gw = gateway_of(request)
    ready = gw.ready
    return json_reply(
        Readiness(
            "ready" if ready else "not ready",
            gw.catalog.loaded,
            gw.sink.name,
            gw.lifecycle.sink_started and gw.sink.available(),
            gw.lifecycle.draining,
        ),
        status=200 if ready else 503,
    )


@operation(
    "Prometheus metrics",
    replies={200: Reply("Prometheus text exposition format.", str, media_type="text/plain")},
    security=(),
    tags=OPS,
)
async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition (the totals over every worker when there are several)."""
    gateway_of(request).queues.count_accepted()  # the accepted rows tallied since the last flush
    resp = web.Response(body=gateway_metrics.exposition())
    resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return resp


@operation(
    "This OpenAPI document",
    replies={200: Reply("OpenAPI 3.1 document.", dict[str, Any])},
    security=(),
    tags=OPS,
)
async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document of every route, generated from the routes themselves."""
    return web.Response(body=request.app[OPENAPI_SPEC], content_type="application/json")


def routes() -> list[Route]:
    """(method, path, handler) of the operational routes."""
    return [
        ("GET", "/healthz", healthz),
        ("GET", "/readyz", readyz),
        ("GET", "/metrics", metrics),
        ("GET", "/openapi.json", openapi),
    ]
