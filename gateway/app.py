"""Builds the aiohttp application: routes of every dialect, middleware, and the parts' lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import web
from aiokafka.errors import KafkaError

from gateway import __version__, cors, metrics
from gateway.admission import Admission
from gateway.anonymous import anonymous_principal
from gateway.auth import Authenticator
from gateway.catalog.file import FileBackend
from gateway.catalog.kafka_log import KafkaLog
from gateway.catalog.model import Stream
from gateway.catalog.store import Backend, Catalog
from gateway.config import Settings
from gateway.context import GATEWAY, Gateway
from gateway.dialects import ops, timeplus
from gateway.dialects.registry import DIALECTS
from gateway.errors import Unavailable
from gateway.evolution.quarantine_log import (
    FileQuarantineLog,
    KafkaQuarantineLog,
    PartitionsOf,
    QuarantineLog,
)
from gateway.evolution.replay import Replayer
from gateway.expect import defer_continue
from gateway.ingest.schema import SchemaCache
from gateway.ingest.service import IngestService
from gateway.lifecycle import Lifecycle
from gateway.limiters.key_share import KeyShares
from gateway.limiters.rate_share import RateShare
from gateway.limiters.stream_bytes import StreamByteRate
from gateway.limiters.token_bucket import KeyRateLimiter
from gateway.limiters.usage_kafka import KafkaUsageBus
from gateway.middleware import observe
from gateway.openapi import build_spec
from gateway.pipeline import Pipeline
from gateway.queues import Entry, Limits, Queues
from gateway.routes import ROUTES, Routes, is_ingest_route
from gateway.sinks.base import Sink, SinkParts, SinkUnavailable
from gateway.sinks.kafka import KafkaSink, TopicOwner
from gateway.sinks.kafka_stats import KafkaStats
from gateway.sinks.kafka_topics import KafkaTopics
from gateway.sinks.local import LocalSink
from gateway.spool import Spool, spool_directory
from gateway.streams import StreamDefaults, StreamService

log = logging.getLogger(__name__)
RECORD_OVERHEAD = 1024  # room a record batch needs around one record
# Options for aiohttp's AppRunner. Bodies are decompressed by gateway.ingest.body, which caps the
# decompressed size as it goes; aiohttp's own decompression would bypass that cap.
RUNNER_OPTIONS: dict[str, Any] = {"auto_decompress": False, "access_log": None, "handle_signals": False}


def kafka_parts(settings: Settings, topic_owner: TopicOwner) -> SinkParts:
    """The Kafka sink, with topic administration and statistics over its clients."""
    sink = KafkaSink(
        settings.kafka_bootstrap,
        batch_max_bytes=settings.batch_max_bytes,
        probe_interval_s=settings.kafka_probe_interval_s,
        unreachable_after_s=settings.kafka_unreachable_after_s,
        max_unsettled_bytes=settings.kafka_max_unsettled_bytes,
        request_timeout_ms=settings.kafka_request_timeout_ms,
        topic_owner=topic_owner,
        replication_factor=settings.replication_factor,
        min_insync_replicas=settings.min_insync,
        partition_stall_s=settings.partition_stall_ms / 1000,
        partition_max_bytes=settings.partition_max_bytes,
    )
    return SinkParts(sink, KafkaTopics(sink), KafkaStats(sink))


def local_parts(settings: Settings, topic_owner: TopicOwner) -> SinkParts:
    """The embedded development sink (one NDJSON file per topic); it is its own admin and stats."""
    sink = LocalSink(settings.data_dir / "sink")
    return SinkParts(sink, sink, sink)


# Every sink, by the name `Settings.sink` gives: adding one is a module and a line here.
SINKS: dict[str, Callable[[Settings, TopicOwner], SinkParts]] = {"kafka": kafka_parts, "local": local_parts}


def make_catalog_backend(settings: Settings) -> Backend:
    """The compacted Kafka topic shared by every replica, else a local file (embedded mode)."""
    if settings.embedded:
        return FileBackend(settings.data_dir / "catalog.json")
    return KafkaLog(
        settings.kafka_bootstrap,
        settings.catalog_topic,
        replication_factor=settings.replication_factor,
        min_insync_replicas=settings.min_insync,
    )


def build_gateway(settings: Settings, admin_key: str, worker: int = 0) -> Gateway:
    """Wire the parts together (nothing is started yet; `worker`: index under --workers N)."""
    catalog = Catalog(make_catalog_backend(settings))
    # a topic deleted behind our back is recreated from the catalog
    parts = SINKS[settings.sink](
        settings, lambda topic: next((s for s in catalog.streams() if s.topic == topic), None)
    )
    sink = parts.sink
    if isinstance(sink, KafkaSink):  # before the catalog loads: it tells each stream's partitioner
        catalog.watch_streams(sink.stream_changed)
    spool = (
        Spool(
            spool_directory(Path(settings.spool_dir), worker, settings.worker_count),
            segment_bytes=settings.spool_segment_bytes,
        )
        if settings.spool_dir
        else None
    )
    queues = Queues(
        sink,
        Limits(
            max_rows=settings.queue_max_rows,
            max_bytes=settings.queue_max_bytes,
            memory_cap=settings.memory_cap_bytes,
            batch_max_bytes=settings.batch_max_bytes,
            linger_s=settings.linger_ms / 1000,
            max_in_flight=settings.max_in_flight_flushes,
            stall_s=settings.partition_stall_ms / 1000,
        ),
        on_release=None if spool is None else functools.partial(_release_spooled, spool),
    )
    for bound, value in (
        ("stream_rows", settings.queue_max_rows),
        ("stream_bytes", settings.queue_max_bytes),
        ("memory_bytes", settings.memory_cap_bytes),
    ):
        metrics.QUEUE_LIMIT.labels(bound=bound).set(value)
    schemas = SchemaCache(
        forbid_unknown=settings.reject_unknown_fields, max_row_bytes=settings.row_bytes_limit
    )
    lifecycle = Lifecycle()
    admission = Admission(
        sink,
        queues,
        lifecycle,
        accept_during_outage=settings.accept_during_outage,
        spool=spool,
        byte_rate=(
            StreamByteRate(settings.stream_max_bytes_per_s) if settings.stream_max_bytes_per_s else None
        ),
        key_limiter=KeyRateLimiter(settings.rate_limit_per_key, shared=shares_rates(settings)),
        max_decoding=settings.max_decoding_requests,
        max_loop_lag_s=settings.max_loop_lag_ms / 1000,
        key_shares=KeyShares(settings.key_share, settings.admin_reserve, settings.memory_cap_bytes),
    )
    pipeline = Pipeline(
        queues,
        schemas,
        admission,
        wait_timeout_s=settings.wait_timeout_s,
        max_record_bytes=settings.batch_max_bytes - RECORD_OVERHEAD,
        catalog=catalog,
        spool=spool,
    )
    streams = StreamService(
        catalog,
        parts.topics,
        queues,
        schemas,
        StreamDefaults(
            settings.topic_prefix,
            settings.default_shards,
            settings.replication_factor,
            max_shards=settings.max_shards,
            max_columns=settings.max_columns,
            max_schema_versions=settings.max_schema_versions,
            max_record_bytes=settings.max_stream_record_bytes,
        ),
    )
    streams.on_gone = functools.partial(_forget_stream, sink, admission, pipeline)
    ingest = IngestService(catalog, schemas, admission, pipeline, streams.ensure_quarantine)
    quarantine_log: QuarantineLog = (
        FileQuarantineLog(settings.data_dir / "sink")
        if isinstance(sink, LocalSink)
        else KafkaQuarantineLog(settings.kafka_bootstrap, _partitions_of(sink))
    )
    return Gateway(
        settings,
        catalog,
        sink,
        queues,
        pipeline,
        streams,
        Authenticator(
            catalog,
            admin_key,
            anonymous_principal(settings.anonymous_scopes, settings.anonymous_rate_limit),
        ),
        ingest,
        lifecycle,
        parts.stats,
        replayer=Replayer(catalog, schemas, pipeline, quarantine_log, claim_s=settings.replay_claim_s),
    )


def _forget_stream(sink: Sink, admission: Admission, pipeline: Pipeline, stream: Stream) -> None:
    """A deleted stream leaves nothing behind: its metric series, write rates, byte-rate bucket
    and what the sink keeps per topic (the Kafka producer's metadata interest)."""
    metrics.forget_stream(stream.name)
    pipeline.rates.forget(stream.name)
    if admission.byte_rate is not None:
        admission.byte_rate.forget(stream.name)
    sink.forget_topics([stream.topic, stream.quarantine_topic])


def shares_rates(settings: Settings) -> bool:
    """Whether keys' rates hold across replicas and workers (Kafka mode, an interval set)."""
    return not settings.embedded and settings.rate_share_interval_ms > 0


async def _share_rates(share: RateShare, app: web.Application) -> AsyncIterator[None]:
    """Announce this process's use of its keys' rates to the other replicas while it serves
    (each process limits on its own until the bus is connected). It connects once the catalog
    is loaded: Kafka is reachable then, and until then no key is known anyway."""

    async def run() -> None:
        await app[GATEWAY].lifecycle.wait_catalog()
        await _keep_trying(share.connect, KafkaError, "rate share (keys limited per process)")
        await share.announce()

    task = asyncio.create_task(run(), name="rate-share")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await share.close()


def _partitions_of(sink: Sink) -> PartitionsOf:
    """The partitions of a topic, from the Kafka sink producer's metadata."""

    async def partitions(topic: str) -> set[int] | None:
        producer = getattr(sink, "producer", None)
        if producer is None:
            raise Unavailable("Kafka is not connected yet", retry_after=1.0)
        parts: set[int] | None = await producer.partitions_for(topic)
        return parts

    return partitions


def _release_spooled(spool: Spool, entries: list[Entry]) -> None:
    spool.release(e.spool_pos for e in entries if e.spool_pos >= 0)


async def _keep_trying(start: Callable[[], Awaitable[None]], failure: type[Exception], what: str) -> None:
    """Await `start()` until it no longer raises `failure`, waiting 0.5 s, 1 s, … up to 5 s
    between attempts (readiness stays 503 meanwhile)."""
    delay = 0.5
    while True:
        try:
            return await start()
        except failure as exc:
            log.warning("%s: %s; retrying in %.1f s", what, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def _connect(gw: Gateway) -> None:
    """Start the sink, retrying until it is reachable."""
    await _keep_trying(gw.sink.start, SinkUnavailable, "sink")
    gw.lifecycle.connected()
    log.info("sink %s connected", gw.sink.name)


async def _load_catalog(gw: Gateway) -> None:
    """Read the catalog, retrying until its store is reachable."""
    await _keep_trying(gw.catalog.start, Unavailable, "catalog")
    gw.lifecycle.catalog_loaded()
    log.info("catalog loaded: %d streams, %d API keys", len(gw.catalog.streams()), len(gw.catalog.api_keys()))
    local = gw.settings.data_dir / "catalog.json"
    if not gw.settings.embedded and not gw.catalog.streams() and not gw.catalog.api_keys() and local.exists():
        log.warning(
            "the catalog in Kafka (topic %s) is empty, but %s holds the streams and keys "
            "of embedded mode; they are not carried over by themselves: copy them with "
            "`ingest-gateway catalog import` (see README, 'From the local sink to Kafka')",
            gw.settings.catalog_topic,
            local,
        )


async def _replay_after(loading: asyncio.Task[None], gw: Gateway) -> None:
    """Replay the durable spool once the catalog (which names the rows' topics) is loaded."""
    await asyncio.shield(loading)
    await gw.pipeline.replay_spool()


async def lifecycle(app: web.Application) -> AsyncIterator[None]:
    """Load the catalog and connect the sink; on shutdown drain the queues, then close the sink."""
    gw = app[GATEWAY]
    loading = asyncio.create_task(_load_catalog(gw), name="catalog-load")
    spool = gw.pipeline.spool
    if spool is not None:
        await spool.open()
    connecting = asyncio.create_task(_connect(gw), name="sink-connect")
    replaying = asyncio.create_task(_replay_after(loading, gw), name="spool-replay")
    yield
    begin_shutdown(app)
    for task in (loading, connecting, replaying):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    drained = await gw.queues.drain(gw.settings.drain_timeout_s)
    if not drained:
        log.error(
            "drain timed out after %.0f s: %d acknowledged rows were NOT written",
            gw.settings.drain_timeout_s,
            gw.queues.total_rows(),
        )
        app["drain_failed"] = True
    await gw.queues.stop()
    if not isinstance(gw.stats, LocalSink):  # the embedded sink is its own stats reader
        await gw.stats.close()
    if gw.lifecycle.sink_started:
        await gw.sink.close()
    await gw.catalog.close()
    if spool is not None:
        await spool.close()
    gw.lifecycle.stop()


def begin_shutdown(app: web.Application) -> None:
    """Refuse new requests and stop lingering in the queues (idempotent; SIGTERM or cleanup)."""
    gw = app[GATEWAY]
    gw.lifecycle.drain()
    gw.queues.flush_now()


def build_app(settings: Settings, admin_key: str, worker: int = 0) -> web.Application:
    """The aiohttp application with every dialect's routes (`worker`: index under --workers N)."""
    app = web.Application(middlewares=[observe], client_max_size=settings.max_body_bytes)
    cors.install(app, settings.cors_allow_origins)
    gw = build_gateway(settings, admin_key, worker)
    gw.worker = str(worker)
    app[GATEWAY] = gw
    gw.renderers["default"] = timeplus.render_error
    registered = list(ops.routes())
    for method, path, handler in registered:
        app.router.add_route(method, path, handler, expect_handler=defer_continue)
    routes = [(dialect, *route) for dialect in DIALECTS for route in dialect.routes()]
    # The ingest routes first: aiohttp tries the routes under one path prefix (`/api`) in the
    # order they were added, and no ingest route's paths overlap another route's.
    for dialect, method, path, handler in sorted(routes, key=lambda r: not is_ingest_route(r[2])):
        route = app.router.add_route(method, path, handler, expect_handler=defer_continue)
        canonical = route.resource.canonical if route.resource else path
        gw.renderers[canonical] = dialect.render_error
    registered += [(method, path, handler) for _, method, path, handler in routes]
    app[ROUTES] = Routes(app.router.routes(), gw.renderers, worker=gw.worker, policy=app[cors.POLICY])
    app[ops.OPENAPI_SPEC] = msgspec.json.encode(
        build_spec(
            registered,
            title="ingest-gateway",
            version=__version__,
            description="HTTP event ingestion into Apache Kafka, speaking the APIs of several vendors.",
        )
    )
    app.cleanup_ctx.append(lifecycle)
    if shares_rates(settings):
        topic = settings.rate_share_topic or f"{settings.catalog_topic}_rates"
        bus = KafkaUsageBus(settings.kafka_bootstrap, topic, replication_factor=settings.replication_factor)
        share = RateShare(gw.ingest.admission.key_limiter, bus, settings.rate_share_interval_ms / 1000)
        app.cleanup_ctx.append(functools.partial(_share_rates, share))
    return app
