"""The ingest path every dialect shares: decode → validate → encode → admit to the queue → (wait)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable
from dataclasses import dataclass

from gateway import metrics
from gateway.catalog.model import Stream
from gateway.catalog.store import Catalog
from gateway.errors import (
    NotConfirmed,
    NotDurable,
    NotFound,
    PayloadTooLarge,
    TooManyRequests,
    Unavailable,
)
from gateway.ingest.formats import Format, decode
from gateway.ingest.schema import CompiledSchema, SchemaCache
from gateway.limiters.stream_bytes import StreamByteRate
from gateway.queues import Discarded, Entry, QueueFull, Queues
from gateway.sinks.base import Sink
from gateway.spool import Spool, SpoolError, SpoolRecord

RETRY_AFTER_S = 1.0
log = logging.getLogger(__name__)


@dataclass(slots=True)
class Accepted:
    """What an accepted request did: rows queued, and whether Kafka has acknowledged them."""

    rows: int
    acknowledged: bool


class Pipeline:
    """Admits requests' rows into the queues; refuses them whole (429/503) when it cannot."""

    def __init__(self, sink: Sink, queues: Queues, schemas: SchemaCache, *, wait_timeout_s: float,
                 max_record_bytes: int, catalog: Catalog | None = None,
                 accept_during_outage: bool = False, spool: Spool | None = None,
                 byte_rate: StreamByteRate | None = None) -> None:
        self.sink = sink
        self.queues = queues
        self.schemas = schemas
        self.wait_timeout_s = wait_timeout_s
        self.max_record_bytes = max_record_bytes
        self.catalog = catalog
        self.accept_during_outage = accept_during_outage
        self.spool = spool
        self.byte_rate = byte_rate
        self.draining = False
        self.sink_started = False  # set once the sink first connected

    def check_open(self) -> None:
        """503 (nothing written, safe to retry) while draining, before the sink first connected,
        and while it is unreachable unless wait=false rows are queued during outages."""
        if self.draining:
            metrics.THROTTLED.labels(status="503", cause="draining").inc()
            raise Unavailable("the gateway is shutting down; retry on another replica",
                              retry_after=RETRY_AFTER_S)
        if self.spool is not None and self.spool.failed is not None:
            metrics.THROTTLED.labels(status="503", cause="spool_failed").inc()
            raise Unavailable("the durable spool failed (see the gateway's log); nothing was "
                              "written", retry_after=RETRY_AFTER_S)
        if not self.sink.available() and not (self.accept_during_outage and self.sink_started):
            self._sink_unavailable()

    def _sink_unavailable(self) -> None:
        metrics.THROTTLED.labels(status="503", cause="sink_unavailable").inc()
        raise Unavailable("Kafka is unreachable; nothing was written, retry later",
                          retry_after=RETRY_AFTER_S)

    async def decode(self, stream: Stream, fmt: Format, chunks: AsyncIterable[bytes]) -> list[object]:
        """Decode and validate a body into rows of the stream's schema."""
        return await decode(fmt, chunks, self.schemas.get(stream))

    async def admit(self, stream: Stream, rows: list[object], *, wait: bool) -> Accepted:
        """Queue validated rows whole; with `wait`, return once the sink has acknowledged them."""
        self.check_open()
        if wait and not self.sink.available():  # it would only time out: say so now
            self._sink_unavailable()
        if self.catalog is not None:
            current = self.catalog.stream(stream.name)
            if current is None or current.topic != stream.topic:
                raise NotFound(f"stream {stream.name!r} was deleted while the request was read; "
                               "nothing was written")
        schema: CompiledSchema = self.schemas.get(stream)
        encoded = schema.encode(rows)
        if encoded.values and max(map(len, encoded.values)) > self.max_record_bytes:
            big = next(i for i, v in enumerate(encoded.values) if len(v) > self.max_record_bytes)
            raise PayloadTooLarge(f"row {big} is {len(encoded.values[big])} bytes as JSON; the "
                                  f"largest row is {self.max_record_bytes} bytes", row=big)
        if self.byte_rate is not None:
            wait_s = self.byte_rate.take(stream.name, encoded.nbytes)
            if wait_s is not None:
                metrics.THROTTLED.labels(status="429", cause="stream_byte_rate").inc()
                metrics.ROWS_REJECTED.labels(stream=stream.name,
                                             cause="stream_byte_rate").inc(len(encoded.values))
                raise TooManyRequests(f"stream {stream.name!r} is over its byte-rate limit of "
                                      f"{self.byte_rate.rate:g} bytes/s; nothing was written",
                                      retry_after=max(wait_s, RETRY_AFTER_S))
        done = asyncio.get_running_loop().create_future() if wait else None
        entry = Entry(encoded.values, encoded.keys, encoded.nbytes, done)
        try:
            self.queues.queue(stream.name, stream.topic).offer(entry)
        except QueueFull as full:
            if self.byte_rate is not None:
                self.byte_rate.refund(stream.name, encoded.nbytes)
            metrics.THROTTLED.labels(status="429", cause=full.cause).inc()
            metrics.ROWS_REJECTED.labels(stream=stream.name, cause=full.cause).inc(entry.rows)
            raise TooManyRequests(f"the queue of stream {stream.name!r} is full ({full.cause}); "
                                  "nothing was written, retry later",
                                  retry_after=RETRY_AFTER_S) from None
        metrics.ROWS_ACCEPTED.labels(stream=stream.name).inc(entry.rows)
        metrics.BYTES_ACCEPTED.labels(stream=stream.name).inc(entry.nbytes)
        if done is None:
            if self.spool is not None:
                # Logged in the same step as queued (no await in between): the flusher cannot
                # acknowledge the entry before it knows its spool position.
                entry.spool_pos, committed = self.spool.append(stream.name, stream.topic,
                                                               entry.values, entry.keys)
                try:
                    await committed
                except SpoolError as exc:
                    raise NotDurable(f"the rows are queued but the durable spool failed ({exc}); "
                                     "they will probably be written, retrying may duplicate them"
                                     ) from None
            return Accepted(entry.rows, acknowledged=False)
        try:
            async with asyncio.timeout(self.wait_timeout_s):
                await asyncio.shield(done)
        except Discarded:
            raise NotFound(f"stream {stream.name!r} was deleted before Kafka acknowledged the "
                           "rows; they were discarded with it") from None
        except TimeoutError:
            raise NotConfirmed(f"Kafka did not acknowledge the rows within {self.wait_timeout_s:g}"
                               " s; they stay queued and will be written when it does") from None
        return Accepted(entry.rows, acknowledged=True)

    async def replay_spool(self) -> None:
        """Queue again the rows the durable spool holds from a previous run (after a crash)."""
        if self.spool is None or self.catalog is None:
            return
        catalog, queues = self.catalog, self.queues

        async def requeue(rec: SpoolRecord, pos: int) -> bool:
            stream = catalog.stream(rec.stream)
            if stream is None or stream.topic != rec.topic:
                log.warning("spool: dropping %d rows of deleted stream %r", len(rec.values),
                            rec.stream)
                return False
            entry = Entry(rec.values, rec.keys, sum(map(len, rec.values)) + len(rec.values),
                          None, pos)
            while True:
                try:
                    queues.queue(stream.name, stream.topic).offer(entry)
                except QueueFull:
                    await asyncio.sleep(0.05)  # wait for the flusher to make room
                    continue
                return True

        rows = await self.spool.replay(requeue)
        if rows:
            log.warning("spool: %d rows from a previous run queued again", rows)
