"""Operational routes that need no key: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from gateway import metrics as gateway_metrics
from gateway.context import gateway_of
from gateway.dialects.common import json_reply


async def healthz(request: web.Request) -> web.Response:
    """200 while the process is alive."""
    return json_reply({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """200 once the catalog is loaded and the sink reachable; 503 otherwise and while draining."""
    gw = gateway_of(request)
    body = {"catalog_loaded": gw.catalog.loaded, "sink": gw.sink.name,
            "sink_available": gw.sink_ready and gw.sink.available(),
            "draining": gw.pipeline.draining}
    return json_reply({"status": "ready" if gw.ready else "not ready", **body},
                      status=200 if gw.ready else 503)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition (the totals over every worker when there are several)."""
    resp = web.Response(body=gateway_metrics.exposition())
    resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return resp


def routes() -> list[tuple[str, str, Any]]:
    """(method, path, handler) of the operational routes."""
    return [("GET", "/healthz", healthz), ("GET", "/readyz", readyz), ("GET", "/metrics", metrics)]
