"""The ingest path every dialect shares: decode → validate → encode → admit to the queue → (wait)."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Any

from gateway import metrics
from gateway.catalog.model import Stream
from gateway.catalog.store import Catalog
from gateway.errors import (
    GatewayError,
    InvalidRow,
    NotConfirmed,
    NotDurable,
    NotFound,
    PayloadTooLarge,
    TooManyRequests,
    Unavailable,
)
from gateway.ingest.formats import Format, decode
from gateway.ingest.quarantine import KeptChunks, Split, split_rows
from gateway.ingest.schema import CompiledSchema, SchemaCache
from gateway.limiters.stream_bytes import StreamByteRate
from gateway.queues import Discarded, Entry, MemoryBudget, QueueFull, Queues, StreamQueue
from gateway.rates import WriteRates
from gateway.sinks.base import Sink
from gateway.spool import Spool, SpoolError, SpoolRecord

RETRY_AFTER_S = 1.0
log = logging.getLogger(__name__)


@dataclass(slots=True)
class Accepted:
    """What an accepted request did: rows queued, and whether Kafka has acknowledged them."""

    rows: int
    acknowledged: bool
    quarantined: int = 0


@functools.lru_cache(maxsize=65536)
def _accepted_metrics(stream: str) -> tuple[Any, Any]:
    """The stream's labelled accepted-rows and accepted-bytes counters (looked up once)."""
    return metrics.ROWS_ACCEPTED.labels(stream=stream), metrics.BYTES_ACCEPTED.labels(stream=stream)


# The setting behind each queue bound, named in a 413 so the operator or client knows what to change.
_BOUND_FLAG = {"stream_rows": "--queue-max-rows", "stream_bytes": "--queue-max-bytes",
               "memory": "--memory-cap-bytes"}


class _CountingChunks:
    """Passes chunks through, counting their bytes (for the rejected-bytes metric) and holding
    them against the memory budget (--memory-cap-bytes) until `release()`: a body being decoded
    is buffered too. 413 when the body alone outgrows the cap, 429 when the cap is in use."""

    def __init__(self, chunks: AsyncIterable[bytes], budget: MemoryBudget) -> None:
        self._chunks = chunks
        self._budget = budget
        self.nbytes = 0
        self._held = 0

    def _hold(self, n: int) -> None:
        budget = self._budget
        if self._held + n > budget.cap:
            raise PayloadTooLarge(f"the body is larger than the memory cap of {budget.cap} bytes "
                                  "(--memory-cap-bytes) once decompressed; split it into smaller "
                                  "requests; nothing was written")
        if budget.used + n > budget.cap:
            metrics.THROTTLED.labels(status="429", cause="memory").inc()
            raise TooManyRequests("the gateway's memory cap is in use by other requests and "
                                  "queued rows; nothing was written, retry later",
                                  retry_after=RETRY_AFTER_S)
        budget.used += n
        self._held += n

    def release(self) -> None:
        """Give the held bytes back to the budget (once the body is decoded or refused)."""
        self._budget.used -= self._held
        self._held = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._chunks:
            self.nbytes += len(chunk)
            self._hold(len(chunk))
            yield chunk


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
        self.rates = WriteRates()

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

    def check_room(self, stream: Stream) -> None:
        """429 before any decoding when the stream's queue could not take a request like its last.

        A 429 promises nothing was written, so refusing early is always safe; it keeps the CPU for
        the flusher when clients offer more than Kafka takes."""
        queue = self.queues.get(stream.name, stream.topic)
        if queue is None or not self.sink.available():
            # During an outage admit() decides (wait=true: 503, wait=false: 202 while queues hold).
            return
        try:
            queue.check_room()
        except QueueFull as full:
            metrics.THROTTLED.labels(status="429", cause=full.cause).inc()
            raise TooManyRequests(f"the queue of stream {stream.name!r} is full ({full.cause}); "
                                  "nothing was written, retry later",
                                  retry_after=RETRY_AFTER_S) from None

    async def decode(self, stream: Stream, fmt: Format, chunks: AsyncIterable[bytes]) -> list[object]:
        """Decode and validate a body into rows of the stream's schema (429 first if full)."""
        self.check_room(stream)
        counted = _CountingChunks(chunks, self.queues.budget)
        try:
            return await decode(fmt, counted, self.schemas.get(stream))
        except GatewayError as err:
            metrics.BYTES_REJECTED.labels(stream=stream.name, cause=err.code).inc(counted.nbytes)
            raise
        finally:
            counted.release()

    async def decode_split(self, stream: Stream, chunks: AsyncIterable[bytes]) -> Split:
        """NDJSON into valid and invalid rows (quarantine): the streamed decode as usual; only when
        it meets an invalid row is the kept body split object by object."""
        self.check_room(stream)
        kept = KeptChunks(chunks)
        schema = self.schemas.get(stream)
        counted = _CountingChunks(kept, self.queues.budget)
        try:
            return Split(await decode(Format.STREAMING, counted, schema), [])
        except InvalidRow:
            pass
        except GatewayError as err:
            metrics.BYTES_REJECTED.labels(stream=stream.name, cause=err.code).inc(counted.nbytes)
            raise
        finally:
            counted.release()
        body = await kept.whole()
        try:
            return split_rows(schema, body)
        except GatewayError as err:
            metrics.BYTES_REJECTED.labels(stream=stream.name, cause=err.code).inc(len(body))
            raise

    async def admit(self, stream: Stream, rows: list[object], *, wait: bool,
                    quarantine: list[bytes] | None = None) -> Accepted:
        """Queue validated rows (and quarantine records) whole; with `wait`, return once the sink
        has acknowledged all of them."""
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
        if encoded.nbytes > self.max_record_bytes and max(map(len, encoded.values)) > \
                self.max_record_bytes:
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
        done: asyncio.Future[Any] | None = (asyncio.get_running_loop().create_future() if wait
                                            else None)
        entry = Entry(encoded.values, encoded.keys, encoded.nbytes, done)
        try:
            if quarantine:
                done, offers = self._offer_with_quarantine(stream, entry, quarantine)
            else:
                q = self.queues.queue(stream.name, stream.topic)
                q.offer(entry)
                offers = [(q, entry)]
        except QueueFull as full:
            if self.byte_rate is not None:
                self.byte_rate.refund(stream.name, encoded.nbytes)
            if full.never:
                metrics.ROWS_REJECTED.labels(stream=stream.name, cause="too_large").inc(entry.rows)
                raise PayloadTooLarge(
                    f"this request holds {full.size} {full.unit}; the queue of stream "
                    f"{stream.name!r} can never hold more than {full.limit} {full.unit} "
                    f"({_BOUND_FLAG[full.cause]}): split it into requests of at most "
                    f"{full.limit} {full.unit}; nothing was written") from None
            metrics.THROTTLED.labels(status="429", cause=full.cause).inc()
            metrics.ROWS_REJECTED.labels(stream=stream.name, cause=full.cause).inc(entry.rows)
            raise TooManyRequests(f"the queue of stream {stream.name!r} is full ({full.cause}); "
                                  "nothing was written, retry later",
                                  retry_after=RETRY_AFTER_S) from None
        rows_accepted, bytes_accepted = _accepted_metrics(stream.name)
        rows_accepted.inc(entry.rows)
        bytes_accepted.inc(entry.nbytes)
        if entry.rows:
            self.rates.record(stream.name, entry.rows, entry.nbytes)
        accepted = Accepted(entry.rows, acknowledged=wait, quarantined=len(quarantine or ()))
        if done is None:
            if self.spool is not None:
                await self._spool(offers)
            return accepted
        try:
            async with asyncio.timeout(self.wait_timeout_s):
                await asyncio.shield(done)
        except Discarded:
            raise NotFound(f"stream {stream.name!r} was deleted before Kafka acknowledged the "
                           "rows; they were discarded with it") from None
        except TimeoutError:
            raise NotConfirmed(f"Kafka did not acknowledge the rows within {self.wait_timeout_s:g}"
                               " s; they stay queued and will be written when it does") from None
        return accepted

    async def _spool(self, offers: list[tuple[StreamQueue, Entry]]) -> None:
        """Durable mode: log the queued entries and wait for the fsync (group commit). Called
        right after they were queued, with no await in between, so the flusher cannot
        acknowledge an entry before it knows its spool position."""
        assert self.spool is not None
        committed = None
        for q, e in offers:
            e.spool_pos, committed = self.spool.append(q.stream, q.topic, e.values, e.keys)
        try:
            if committed is not None:  # the last append's group commit covers the earlier ones
                await committed
        except SpoolError as exc:
            raise NotDurable(f"the rows are queued but the durable spool failed ({exc}); "
                             "they will probably be written, retrying may duplicate them") from None

    async def replay_spool(self) -> None:
        """Queue again the rows the durable spool holds from a previous run (after a crash)."""
        if self.spool is None or self.catalog is None:
            return
        catalog, queues = self.catalog, self.queues

        async def requeue(rec: SpoolRecord, pos: int) -> bool:
            stream = catalog.stream(rec.stream)
            if stream is not None and stream.topic == rec.topic:
                key = (stream.name, stream.topic)
            else:  # a quarantine record: queued under its topic
                owner = next((s for s in catalog.streams() if s.quarantine_topic == rec.topic),
                             None)
                if owner is None:
                    log.warning("spool: dropping %d rows of deleted stream %r", len(rec.values),
                                rec.stream)
                    return False
                key = (rec.topic, rec.topic)
            entry = Entry(rec.values, rec.keys, sum(map(len, rec.values)) + len(rec.values),
                          None, pos)
            while True:
                try:
                    queues.queue(*key).offer(entry)
                except QueueFull:
                    await asyncio.sleep(0.05)  # wait for the flusher to make room
                    continue
                return True

        rows = await self.spool.replay(requeue)
        if rows:
            log.warning("spool: %d rows from a previous run queued again", rows)

    def _offer_with_quarantine(self, stream: Stream, entry: Entry, quarantine: list[bytes]
                               ) -> tuple[asyncio.Future[Any] | None,
                                          list[tuple[StreamQueue, Entry]]]:
        """Queue the rows and the quarantine records all or none; with wait=true, the future of
        both being acknowledged."""
        if max(map(len, quarantine)) > self.max_record_bytes:
            raise PayloadTooLarge(f"an invalid row is too large to quarantine; the largest row is "
                                  f"{self.max_record_bytes} bytes")
        side = Entry(quarantine, None, sum(map(len, quarantine)),
                     None if entry.done is None else asyncio.get_running_loop().create_future())
        # keyed by the topic: stream names have no `-`, so it never meets a stream's queue
        offers = [(self.queues.queue(stream.quarantine_topic, stream.quarantine_topic), side)]
        if entry.rows:
            offers.append((self.queues.queue(stream.name, stream.topic), entry))
        self.queues.offer_all(offers)
        metrics.ROWS_QUARANTINED.labels(stream=stream.name).inc(len(quarantine))
        waits = [e.done for _, e in offers if e.done is not None]
        return (asyncio.gather(*waits) if waits else None), offers
