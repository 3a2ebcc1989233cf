"""Quarantined rows, read back and replayed into their stream once its schema accepts them.

A replay runs in pages. Each page: claim the replay in the catalog (one replica at a time: the
catalog's conflict rule lets one of two concurrent claims win), read up to `limit` records from
the stream's replay position, validate each row against the current schema, queue the rows that
pass (and quarantine again, at the topic's end, those that still fail, so they stay replayable)
and wait for Kafka's acknowledgement; only then advance the position in the catalog and release
the claim, in one catalog change. A replay interrupted before that change runs the page again;
one interrupted after it goes on from the next page: rows are written once. The window between
Kafka's acknowledgement and the catalog change is the exception (see README).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import msgspec

from gateway.catalog.model import Stream
from gateway.catalog.store import Catalog
from gateway.errors import BadRequest, Conflict, NotFound
from gateway.evolution.quarantine_log import Page, Position, QuarantineLog, QuarantineRecord
from gateway.ingest.quarantine import BadRow, quarantine_values
from gateway.ingest.schema import SchemaCache
from gateway.pipeline import Pipeline

CLAIM_S = 60.0  # a replica that died holding a claim blocks replays this long
MAX_ERRORS = 10
WRITE_ATTEMPTS = 5


class _Error(msgspec.Struct):
    message: str = ""
    row: int | None = None
    column: str | None = None


class StoredRow(msgspec.Struct):
    """A quarantine record's value (see gateway.ingest.quarantine)."""

    time: str = ""
    stream: str = ""
    request_id: str = ""
    error: _Error = msgspec.field(default_factory=_Error)
    row_text: str = ""


_stored = msgspec.json.Decoder(StoredRow)


def stored_row(record: QuarantineRecord) -> StoredRow | None:
    """The quarantined row a record holds (None when the record is not one)."""
    try:
        return _stored.decode(record.value)
    except msgspec.DecodeError:
        return None


@dataclass(slots=True)
class ReplayOutcome:
    """What one replay page did."""

    read: int
    written: int
    still_failing: int
    errors: list[BadRow] = field(default_factory=list)
    next: Position = field(default_factory=dict)
    done: bool = True


class Replayer:
    """Reads quarantined rows, and replays them page by page."""

    def __init__(self, catalog: Catalog, schemas: SchemaCache, pipeline: Pipeline,
                 log: QuarantineLog) -> None:
        self.catalog = catalog
        self.schemas = schemas
        self.pipeline = pipeline
        self.log = log
        self.replica = uuid.uuid4().hex
        self._lock = asyncio.Lock()

    def _stream(self, name: str) -> Stream:
        stream = self.catalog.stream(name)
        if stream is None:
            raise NotFound(f"stream {name!r} does not exist")
        return stream

    async def read(self, name: str, start: Position, limit: int) -> tuple[Stream, Page]:
        """A page of the stream's quarantined rows from `start`."""
        stream = self._stream(name)
        return stream, await self.log.read(stream, start, limit)

    async def replay(self, name: str, limit: int) -> ReplayOutcome:
        """Replay one page of up to `limit` quarantined rows (see the module docstring)."""
        if limit < 1:
            raise BadRequest("limit must be at least 1")
        async with self._lock:
            stream = await self._claim(name)
            try:
                page = await self.log.read(stream, stream.quarantine_replayed, limit)
                outcome = await self._write(stream, page)
            except BaseException:
                with contextlib.suppress(Exception):
                    await self._advance(name, None)
                raise
            await self._advance(name, page.next)
            return outcome

    async def _write(self, stream: Stream, page: Page) -> ReplayOutcome:
        schema = self.schemas.get(stream)
        rows: list[Any] = []
        bad: list[BadRow] = []
        for i, record in enumerate(page.records):
            stored = stored_row(record)
            if stored is None:
                bad.append(BadRow(i, None, "not a quarantined row", record.value))
                continue
            try:
                rows += schema.decode_ndjson(stored.row_text.encode(), i)
            except BadRequest as err:
                bad.append(BadRow(i, err.column, err.message, stored.row_text.encode()))
        if rows or bad:
            quarantine = quarantine_values(bad, stream=stream.name,
                                           request_id=f"replay-{self.replica}") if bad else None
            await self.pipeline.admit(stream, rows, wait=True, quarantine=quarantine)
        return ReplayOutcome(len(page.records), len(rows), len(bad), bad[:MAX_ERRORS],
                             page.next, page.at_end)

    async def _claim(self, name: str) -> Stream:
        """Mark the replay as this replica's in the catalog (409 when another replica holds it)."""
        for _ in range(WRITE_ATTEMPTS):
            stream = self._stream(name)
            owner, _, until = stream.replay_claim.partition(" ")
            if owner and owner != self.replica and float(until or 0) > time.time():
                raise Conflict(f"a replay of stream {name!r} is running on another replica; "
                               "retry once it is done", retry_after=1.0)
            claimed = msgspec.structs.replace(
                stream, replay_claim=f"{self.replica} {time.time() + CLAIM_S:.0f}")
            if await self.catalog.put_stream(claimed, create=False):
                return claimed
        raise Conflict(f"stream {name!r} keeps changing; retry", retry_after=1.0)

    async def _advance(self, name: str, position: Position | None) -> None:
        """Release the claim and (unless None) move the replay position, in one change."""
        for _ in range(WRITE_ATTEMPTS):
            stream = self.catalog.stream(name)
            if stream is None or not stream.replay_claim.startswith(self.replica):
                return
            done = msgspec.structs.replace(
                stream, replay_claim="",
                quarantine_replayed=stream.quarantine_replayed if position is None else position)
            if await self.catalog.put_stream(done, create=False):
                return
        raise Conflict(f"stream {name!r} keeps changing; the rows are written, but the replay "
                       "position could not be saved", retry_after=1.0)
