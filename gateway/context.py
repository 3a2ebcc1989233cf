"""The running gateway's parts, reachable from handlers through one typed application key."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from gateway.auth import Authenticator
from gateway.catalog.store import Catalog
from gateway.config import Settings
from gateway.dialects.contract import ErrorRenderer
from gateway.evolution.replay import Replayer
from gateway.ingest.service import IngestService
from gateway.lifecycle import Lifecycle
from gateway.pipeline import Pipeline
from gateway.queues import Queues
from gateway.sinks.base import Sink, TopicStatsReader
from gateway.streams import StreamService


@dataclass(eq=False)
class Gateway:
    """Settings, catalog, sink, queues and services of one gateway process."""

    settings: Settings
    catalog: Catalog
    sink: Sink
    queues: Queues
    pipeline: Pipeline
    streams: StreamService
    auth: Authenticator
    ingest: IngestService
    lifecycle: Lifecycle
    stats: TopicStatsReader
    renderers: dict[str, ErrorRenderer] = field(default_factory=dict)
    replayer: Replayer | None = None  # reads and replays quarantined rows
    worker: str = "0"  # index of this worker process (X-Gateway-Worker), "0" when there is one

    @property
    def ready(self) -> bool:
        """Catalog loaded, sink connected and reachable, and not draining."""
        return (
            self.catalog.loaded
            and self.lifecycle.sink_started
            and self.sink.available()
            and not self.lifecycle.draining
        )


GATEWAY = web.AppKey("gateway", Gateway)
REQUEST_ID = web.RequestKey("request_id", str)  # set by the middleware for every request


def gateway_of(request: web.Request) -> Gateway:
    """The gateway serving `request`."""
    return request.app[GATEWAY]


def request_id_of(request: web.Request) -> str:
    """The id of `request` (the client's X-Request-ID when safe to echo, else a fresh one)."""
    return request[REQUEST_ID]
