"""The ingest path every dialect shares: decode → validate → encode → admit to the queue → (wait)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Any

from gateway import metrics
from gateway.catalog.model import Stream
from gateway.errors import (
    GatewayError,
    InvalidRow,
    NotConfirmed,
    PayloadTooLarge,
    TooManyRequests,
    Unavailable,
)
from gateway.ingest.formats import Format, decode
from gateway.ingest.quarantine import KeptChunks, Split, split_rows
from gateway.ingest.schema import CompiledSchema, SchemaCache
from gateway.queues import Entry, QueueFull, Queues
from gateway.rates import WriteRates
from gateway.sinks.base import Sink

RETRY_AFTER_S = 1.0


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


class _CountingChunks:
    """Passes chunks through, counting their bytes (for the rejected-bytes metric)."""

    def __init__(self, chunks: AsyncIterable[bytes]) -> None:
        self._chunks = chunks
        self.nbytes = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._chunks:
            self.nbytes += len(chunk)
            yield chunk


class Pipeline:
    """Admits requests' rows into the queues; refuses them whole (429/503) when it cannot."""

    def __init__(self, sink: Sink, queues: Queues, schemas: SchemaCache, *, wait_timeout_s: float,
                 max_record_bytes: int) -> None:
        self.sink = sink
        self.queues = queues
        self.schemas = schemas
        self.wait_timeout_s = wait_timeout_s
        self.max_record_bytes = max_record_bytes
        self.draining = False
        self.rates = WriteRates()

    def check_open(self) -> None:
        """503 (nothing written, safe to retry) while draining or while the sink is unreachable."""
        if self.draining:
            metrics.THROTTLED.labels(status="503", cause="draining").inc()
            raise Unavailable("the gateway is shutting down; retry on another replica",
                              retry_after=RETRY_AFTER_S)
        if not self.sink.available():
            metrics.THROTTLED.labels(status="503", cause="sink_unavailable").inc()
            raise Unavailable("Kafka is unreachable; nothing was written, retry later",
                              retry_after=RETRY_AFTER_S)

    async def decode(self, stream: Stream, fmt: Format, chunks: AsyncIterable[bytes]) -> list[object]:
        """Decode and validate a body into rows of the stream's schema."""
        counted = _CountingChunks(chunks)
        try:
            return await decode(fmt, counted, self.schemas.get(stream))
        except GatewayError as err:
            metrics.BYTES_REJECTED.labels(stream=stream.name, cause=err.code).inc(counted.nbytes)
            raise

    async def decode_split(self, stream: Stream, chunks: AsyncIterable[bytes]) -> Split:
        """NDJSON into valid and invalid rows (quarantine): the streamed decode as usual; only when
        it meets an invalid row is the kept body split object by object."""
        kept = KeptChunks(chunks)
        schema = self.schemas.get(stream)
        counted = _CountingChunks(kept)
        try:
            return Split(await decode(Format.STREAMING, counted, schema), [])
        except InvalidRow:
            pass
        except GatewayError as err:
            metrics.BYTES_REJECTED.labels(stream=stream.name, cause=err.code).inc(counted.nbytes)
            raise
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
        schema: CompiledSchema = self.schemas.get(stream)
        encoded = schema.encode(rows)
        if encoded.nbytes > self.max_record_bytes and max(map(len, encoded.values)) > \
                self.max_record_bytes:
            big = next(i for i, v in enumerate(encoded.values) if len(v) > self.max_record_bytes)
            raise PayloadTooLarge(f"row {big} is {len(encoded.values[big])} bytes as JSON; the "
                                  f"largest row is {self.max_record_bytes} bytes", row=big)
        done: asyncio.Future[Any] | None = (asyncio.get_running_loop().create_future() if wait
                                            else None)
        entry = Entry(encoded.values, encoded.keys, encoded.nbytes, done)
        try:
            if quarantine:
                done = self._offer_with_quarantine(stream, entry, quarantine)
            else:
                self.queues.queue(stream.name, stream.topic).offer(entry)
        except QueueFull as full:
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
            return accepted
        try:
            async with asyncio.timeout(self.wait_timeout_s):
                await asyncio.shield(done)
        except TimeoutError:
            raise NotConfirmed(f"Kafka did not acknowledge the rows within {self.wait_timeout_s:g}"
                               " s; they stay queued and will be written when it does") from None
        return accepted

    def _offer_with_quarantine(self, stream: Stream, entry: Entry, quarantine: list[bytes]
                               ) -> asyncio.Future[Any] | None:
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
        return asyncio.gather(*waits) if waits else None
