"""Enqueueing validated rows: encode → size check → byte rate → queue (whole or not at all) → wait.

Called by the ingest entry point (gateway.ingest.service) once a request's rows are decoded; the
refusals (429/503) are decided by gateway.admission.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass, field
from typing import Any, cast

from gateway import metrics
from gateway.admission import Admission
from gateway.catalog.model import Stream
from gateway.catalog.store import Catalog
from gateway.deadlines import Deadlines
from gateway.errors import NotConfirmed, NotDurable, NotFound, PayloadTooLarge
from gateway.ingest.as_sent import AsSent
from gateway.ingest.schema import CompiledSchema, Encoded, SchemaCache
from gateway.queues import Discarded, Entry, QueueFull, Queues, StreamQueue
from gateway.rates import WriteRates
from gateway.sinks.base import RecordMeta, RowPositions, lines_of
from gateway.spool import Spool, SpoolError, SpoolRecord

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Outcome:
    """What an accepted request did: rows queued (and quarantined), whether Kafka has acknowledged
    them, and headers the reply carries (e.g. X-RateLimit-*)."""

    rows: int
    acknowledged: bool
    quarantined: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    # where Kafka put the rows (wait=true and a sink that tells; else None)
    positions: RowPositions | None = None


SCHEMA_VERSION_HEADER = "schema-version"


def version_headers(stream: Stream) -> list[tuple[str, bytes]]:
    """The Kafka headers every record of a request carries: the schema version its rows were
    validated against (the version current when the request was admitted). One list per version,
    shared by the requests: never changed in place."""
    return _version_headers(stream.schema_version)


@functools.lru_cache(maxsize=1024)
def _version_headers(version: int) -> list[tuple[str, bytes]]:
    return [(SCHEMA_VERSION_HEADER, str(version).encode())]


class Pipeline:
    """Queues requests' rows whole, or refuses them whole (429/503) through `admission`."""

    def __init__(
        self,
        queues: Queues,
        schemas: SchemaCache,
        admission: Admission,
        *,
        wait_timeout_s: float,
        max_record_bytes: int,
        catalog: Catalog | None = None,
        spool: Spool | None = None,
    ) -> None:
        self.queues = queues
        self.schemas = schemas
        self.admission = admission
        self.wait_timeout_s = wait_timeout_s
        self.deadlines = Deadlines(wait_timeout_s)
        self.max_record_bytes = max_record_bytes
        self.catalog = catalog
        self.spool = spool
        self.rates = WriteRates()

    async def admit(
        self,
        stream: Stream,
        rows: list[object],
        *,
        wait: bool,
        quarantine: list[bytes] | None = None,
        meta: RecordMeta | None = None,
        quarantine_meta: RecordMeta | None = None,
        patient: bool = False,
    ) -> Outcome:
        """Queue validated rows (and quarantine records) whole; with `wait`, return once the sink
        has acknowledged all of them (and, when it tells, where they landed). `meta`: each row's
        own key, partition and headers (keyed streams' keys come from the schema);
        `quarantine_meta` likewise for the quarantine records. `patient`: wait however long
        Kafka takes, not `wait_timeout_s` (the caller bounds the wait itself).

        The decoded rows are let go once encoded: a caller that hands its only reference over
        (as IngestService does) has them freed before the wait. A waiting request would otherwise
        keep them (~50 KB per 100-row request) alive until Kafka acknowledges; 64 such requests
        spread the working set beyond the CPU caches (S2: ~12 % more CPU per row)."""
        self.admission.gate(wait=wait)  # the body took a while: draining may have begun
        if self.catalog is not None:
            current = self.catalog.stream(stream.name)
            if current is None or current.topic != stream.topic:
                raise NotFound(
                    f"stream {stream.name!r} was deleted while the request was read; nothing was written"
                )
        encoded: Encoded | AsSent
        values: list[bytes] | bytes
        if stream.passthrough:  # values as sent, no schema version (nothing was validated)
            encoded, headers = AsSent(cast(list[bytes | None], rows)), None
            meta = meta or RecordMeta.plain(encoded.rows, None)
            self._check_extras([v or b"" for v in encoded.values], meta)
            # tombstones ride as None: the record-batch encoders write None as a null value
            values = cast(list[bytes], encoded.values)
        else:
            schema: CompiledSchema = self.schemas.get(stream)
            encoded, headers = schema.encode(rows), version_headers(stream)
            if encoded.nbytes > self.max_record_bytes:
                self._check_sizes(encoded.lines)
            # unkeyed rows stay one run of lines (the common path); others get a bytes object each
            values = encoded.lines
            if encoded.keys is not None or meta is not None:
                values = listed = encoded.values
                if meta is not None:
                    if encoded.keys is not None:  # keyed streams: the key comes from the primary key
                        meta.keys = list(encoded.keys)
                    self._check_extras(listed, meta)
        del rows
        self.admission.charge(stream, encoded.rows, encoded.nbytes)
        done: asyncio.Future[Any] | None = asyncio.get_running_loop().create_future() if wait else None
        entry = Entry(
            values,
            encoded.keys,
            encoded.nbytes,
            done,
            headers=headers,
            meta=meta,
            rows=encoded.rows,
        )
        if quarantine:
            done, offers = self._with_quarantine(stream, entry, quarantine, quarantine_meta)
        else:
            offers = [(self.queues.queue(stream.name, stream.topic), entry)]
        self.admission.offer(stream, entry, offers)
        if quarantine:
            metrics.ROWS_QUARANTINED.labels(stream=stream.name).inc(len(quarantine))
        if entry.rows:  # the stream's own queue is the last offer
            offers[-1][0].tally(entry.rows, entry.nbytes)
            self.rates.record(stream.name, entry.rows, entry.nbytes)
        accepted = Outcome(entry.rows, acknowledged=wait, quarantined=len(quarantine or ()))
        if done is None:
            if self.spool is not None:
                await self._spool(offers)
            return accepted
        if not patient:
            self.deadlines.watch(done)
        try:
            # not shielded: were this task cancelled, cancelling `done` only tells the queue that
            # nobody waits for it any more (the rows stay queued, as after a timeout)
            await done
        except Discarded:
            raise NotFound(
                f"stream {stream.name!r} was deleted before Kafka acknowledged the "
                "rows; they were discarded with it"
            ) from None
        except TimeoutError:
            raise NotConfirmed(
                f"Kafka did not acknowledge the rows within {self.wait_timeout_s:g}"
                " s; they stay queued and will be written when it does"
            ) from None
        if entry.rows and entry.done is not None:
            accepted.positions = entry.done.result()
        return accepted

    def _check_sizes(self, lines: bytes) -> None:
        """Every record must fit a batch (413 otherwise)."""
        values = lines_of(lines)
        if max(map(len, values)) > self.max_record_bytes:
            big = next(i for i, v in enumerate(values) if len(v) > self.max_record_bytes)
            raise PayloadTooLarge(
                f"row {big} is {len(values[big])} bytes as JSON; the largest row "
                f"is {self.max_record_bytes} bytes",
                row=big,
            )

    def _check_extras(self, values: list[bytes], meta: RecordMeta) -> None:
        """A record with its own key and headers must still fit a batch (413 otherwise)."""
        for i, value in enumerate(values):
            if len(value) + meta.extra_bytes(i) > self.max_record_bytes:
                raise PayloadTooLarge(
                    f"record {i} is larger than {self.max_record_bytes} bytes with its key and headers", row=i
                )

    async def _spool(self, offers: list[tuple[StreamQueue, Entry]]) -> None:
        """Durable mode: log the queued entries and wait for the fsync (group commit). Called
        right after they were queued, with no await in between, so the flusher cannot
        acknowledge an entry before it knows its spool position."""
        assert self.spool is not None
        committed = None
        for q, e in offers:
            e.spool_pos, committed = self.spool.append(
                q.stream, q.topic, e.value_list(), e.keys, e.headers, e.meta
            )
        try:
            if committed is not None:  # the last append's group commit covers the earlier ones
                await committed
        except SpoolError as exc:
            raise NotDurable(
                f"the rows are queued but the durable spool failed ({exc}); "
                "they will probably be written, retrying may duplicate them"
            ) from None

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
                owner = next((s for s in catalog.streams() if s.quarantine_topic == rec.topic), None)
                if owner is None:
                    log.warning("spool: dropping %d rows of deleted stream %r", len(rec.values), rec.stream)
                    return False
                key = (rec.topic, rec.topic)
            entry = Entry(
                cast(list[bytes], rec.values),  # None: a tombstone, which the encoders take
                rec.keys,
                sum(len(v or b"") for v in rec.values) + len(rec.values),
                None,
                pos,
                rec.headers,
                rec.meta(),
            )
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

    def _with_quarantine(
        self, stream: Stream, entry: Entry, quarantine: list[bytes], meta: RecordMeta | None
    ) -> tuple[asyncio.Future[Any] | None, list[tuple[StreamQueue, Entry]]]:
        """The offers of the rows and the quarantine records (queued all or none); with wait=true,
        the future of both being acknowledged."""
        if max(map(len, quarantine)) > self.max_record_bytes:
            raise PayloadTooLarge(
                f"an invalid row is too large to quarantine; the largest row is {self.max_record_bytes} bytes"
            )
        side = Entry(
            quarantine,
            None,
            sum(map(len, quarantine)),
            None if entry.done is None else asyncio.get_running_loop().create_future(),
            headers=entry.headers,
            meta=meta,
        )
        # keyed by the topic: stream names have no `-`, so it never meets a stream's queue
        offers = [(self.queues.queue(stream.quarantine_topic, stream.quarantine_topic), side)]
        if entry.rows:
            offers.append((self.queues.queue(stream.name, stream.topic), entry))
        waits = [e.done for _, e in offers if e.done is not None]
        return (asyncio.gather(*waits) if waits else None), offers
