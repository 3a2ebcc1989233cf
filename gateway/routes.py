"""What the middleware needs to know of each route, worked out once when the app is built: its
metric label, its CORS kind, its dialect's error renderer and its metric children."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from gateway import metrics
from gateway.cors import INGEST, Policy, kind_of
from gateway.dialects.contract import ErrorRenderer
from gateway.replies import Frame

UNMATCHED = "unmatched"  # the label of requests no route matched (404, 405)
_PLACEHOLDER = re.compile(r"\{([A-Za-z0-9_]+)\}")
# A value each path variable may take, to classify a route by one concrete path of it.
_SAMPLES = {"version": "v1beta2"}


@dataclass(slots=True)
class RouteInfo:
    """One route (or the unmatched requests of one path kind), as the middleware sees it."""

    name: str  # the path template: the metric label (bounded cardinality)
    kind: str  # gateway.cors: ops, ingest or manage
    render: ErrorRenderer  # the dialect's error body
    # the headers after X-Request-ID of its replies to requests without `Origin` (worker, CORS)
    frame: Frame
    latency: Any = field(init=False)  # the labelled histogram child
    _counts: dict[tuple[str, int], Any] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.latency = metrics.REQUEST_LATENCY.labels(route=self.name)

    def count(self, method: str, status: int) -> Any:
        """The labelled request counter of (method, status), looked up once (labels() locks)."""
        child = self._counts.get((method, status))
        if child is None:
            if len(self._counts) >= 256:  # methods and statuses are few; clients choose methods
                self._counts.clear()
            child = self._counts[(method, status)] = metrics.REQUESTS.labels(
                route=self.name, method=method, status=str(status)
            )
        return child


def template_of(path: str) -> str:
    """A route path without its variables' patterns (`/{v:a{1,2}}/x` → `/{v}/x`), as aiohttp's
    `canonical` gives it."""
    out: list[str] = []
    depth = 0
    in_pattern = False
    for ch in path:
        if depth == 0:
            out.append(ch)
            if ch == "{":
                depth, in_pattern = 1, False
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                out.append(ch)
                continue
        if depth == 1 and not in_pattern:
            if ch == ":":
                in_pattern = True
            else:
                out.append(ch)
    return "".join(out)


def is_ingest_route(path: str) -> bool:
    """True when a route path (patterns allowed) is one of the ingest routes."""
    return kind_of(sample_path(template_of(path))) == INGEST


def sample_path(template: str) -> str:
    """A concrete path of a route's template (`/api/{version}/streams/{name}` →
    `/api/v1beta2/streams/x`)."""
    return _PLACEHOLDER.sub(lambda m: _SAMPLES.get(m.group(1), "x"), template)


class Routes:
    """Every route's RouteInfo, and the unmatched ones by kind."""

    def __init__(
        self,
        routes: Iterable[Any],
        renderers: dict[str, ErrorRenderer],
        *,
        worker: str = "0",
        policy: Policy | None = None,
    ) -> None:
        default = renderers["default"]
        worker_header = ("X-Gateway-Worker", worker)
        cors = policy.plain_headers if policy is not None else ()
        frames = {
            kind: Frame((worker_header, *(cors if kind == INGEST else ())))
            for kind in ("ops", "ingest", "manage")
        }
        self._by_route: dict[Any, RouteInfo] = {}
        for route in routes:
            resource = route.resource
            name = resource.canonical if resource is not None else UNMATCHED
            kind = kind_of(sample_path(name))
            self._by_route[route] = RouteInfo(name, kind, renderers.get(name, default), frames[kind])
        self._unmatched = {
            kind: RouteInfo(UNMATCHED, kind, default, frames[kind]) for kind in ("ops", "ingest", "manage")
        }

    def of(self, route: Any, path: str) -> RouteInfo:
        """The info of a matched route; for unmatched requests, of their path's kind."""
        info = self._by_route.get(route)
        return info if info is not None else self._unmatched[kind_of(path)]


ROUTES: web.AppKey[Routes] = web.AppKey("routes", Routes)
