"""Quarantined rows, read back and replayed into their stream once its schema accepts them.

A replay runs in pages, one at a time per stream. A page: note where the stream's topic and its
quarantine topic end, and claim the replay in the catalog with that *mark* (one replica at a
time: the catalog's conflict rule lets one of two concurrent claims win; the owner renews its
claim while the page runs); read up to `limit` records from the replay position (not past the
quarantine topic's end in the mark); validate each row against the current schema; queue the rows
that pass (and quarantine again, at the topic's end, those that still fail, so they stay
replayable), each record with the quarantine position it came from as a header
(gateway.evolution.replay_scan); wait for Kafka's acknowledgement however long it takes (the
request answers 504 after `--wait-timeout-s`, and the page goes on); only then advance the
position, drop the mark and release the claim, in one catalog change.

A page refused before its rows were queued (429, 503) drops its mark. Any other page that did not
finish leaves it (the gateway died, or the catalog change failed), and the next page runs that
page again, with the same start, limit and end, after reading both topics from the mark for the
positions already written, which it does not write again. So a page's rows are written once,
within the scan's bound (MAX_SCAN records a partition after the mark; README).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import msgspec

from gateway import faults
from gateway.catalog.model import ReplayMark, Stream
from gateway.catalog.store import Catalog
from gateway.errors import BadRequest, Conflict, GatewayError, NotConfirmed, NotFound
from gateway.evolution.quarantine_log import Page, Position, QuarantineLog, QuarantineRecord
from gateway.evolution.replay_scan import MAX_SCAN, replay_headers
from gateway.ingest.quarantine import BadRow, quarantine_values
from gateway.ingest.schema import SchemaCache
from gateway.pipeline import Pipeline
from gateway.sinks.base import Headers, RecordMeta

log = logging.getLogger(__name__)
CLAIM_S = 15.0  # a replica that died holding a claim blocks replays this long (renewed every third)
MAX_ERRORS = 10
WRITE_ATTEMPTS = 5
ACKNOWLEDGED = "replay-acknowledged"  # fault point: Kafka has the page, the catalog not yet


class _Error(msgspec.Struct):
    message: str = ""
    row: int | None = None
    column: str | None = None


class StoredRow(msgspec.Struct):
    """A quarantine record's value (see gateway.ingest.quarantine)."""

    time: str = ""
    stream: str = ""
    request_id: str = ""
    schema_version: int = 0  # 0: written before records carried it
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
    """What one replay page did (`recovered`: records of the page an interrupted run of it had
    already written, to the stream or to the quarantine again)."""

    read: int
    written: int
    still_failing: int
    errors: list[BadRow] = field(default_factory=list)
    next: Position = field(default_factory=dict)
    done: bool = True
    recovered: int = 0


@dataclass(slots=True)
class _Checked:
    """A page's records sorted: rows that pass with their headers, rows that still fail with
    theirs, and how many an interrupted run already wrote."""

    rows: list[Any] = field(default_factory=list)
    row_headers: list[Headers] = field(default_factory=list)
    bad: list[BadRow] = field(default_factory=list)
    bad_headers: list[Headers] = field(default_factory=list)
    recovered: int = 0


def _meta(headers: list[Headers]) -> RecordMeta:
    return RecordMeta([None] * len(headers), [-1] * len(headers), headers)


class Replayer:
    """Reads quarantined rows, and replays them page by page."""

    def __init__(
        self,
        catalog: Catalog,
        schemas: SchemaCache,
        pipeline: Pipeline,
        log: QuarantineLog,
        *,
        claim_s: float = CLAIM_S,
    ) -> None:
        self.catalog = catalog
        self.schemas = schemas
        self.pipeline = pipeline
        self.log = log
        self.claim_s = claim_s
        self.replica = uuid.uuid4().hex
        self._pages: dict[str, asyncio.Task[ReplayOutcome]] = {}

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
        """Replay one page of up to `limit` quarantined rows (see the module docstring); 504
        when it is not done within the pipeline's wait timeout (it goes on in the background)."""
        if limit < 1:
            raise BadRequest("limit must be at least 1")
        if name in self._pages:
            raise Conflict(
                f"a replay page of stream {name!r} is still running on this replica "
                "(waiting for Kafka); retry once it is done",
                retry_after=1.0,
            )
        task = asyncio.create_task(self._page(name, limit))
        self._pages[name] = task
        task.add_done_callback(functools.partial(self._finished, name))
        try:
            async with asyncio.timeout(self.pipeline.wait_timeout_s):
                return await asyncio.shield(task)
        except TimeoutError:
            raise NotConfirmed(
                f"the replay page is not done after {self.pipeline.wait_timeout_s:g}"
                " s (Kafka has not acknowledged its rows); it goes on and saves "
                "the replay position itself: call again to go on"
            ) from None

    def _finished(self, name: str, task: asyncio.Task[ReplayOutcome]) -> None:
        if self._pages.get(name) is task:
            del self._pages[name]
        if not task.cancelled():
            exc = task.exception()  # (retrieved: a page left in the background may fail alone)
            if exc is not None and not isinstance(exc, GatewayError):
                log.error("replay page of stream %r failed: %r", name, exc)

    async def _page(self, name: str, limit: int) -> ReplayOutcome:
        stream_end, quarantine_end = await self.log.ends(self._stream(name))
        fresh = ReplayMark(stream_end, quarantine_end, limit, uuid.uuid4().hex[:16])
        stream, inherited = await self._claim(name, fresh)
        mark = stream.replay_mark
        assert mark is not None
        renewing = asyncio.create_task(self._renew(name))
        try:
            try:
                page = await self.log.read(stream, stream.quarantine_replayed, mark.limit, mark.quarantine)
                checked = self._check(
                    stream, page, await self._written(stream, mark, page) if inherited else set(), mark.token
                )
                await self._write(stream, checked)
            except (asyncio.CancelledError, NotFound):
                raise  # the rows may be queued (or the stream is gone): the mark stays
            except BaseException:
                with contextlib.suppress(Exception):  # nothing was queued
                    await self._advance(name, None, mark if inherited else None)
                raise
            faults.reached(ACKNOWLEDGED)
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing
        await self._advance(name, page.next, None)
        return ReplayOutcome(
            len(page.records),
            len(checked.rows),
            len(checked.bad),
            checked.bad[:MAX_ERRORS],
            page.next,
            page.at_end,
            checked.recovered,
        )

    async def _written(self, stream: Stream, mark: ReplayMark, page: Page) -> set[tuple[int, int]]:
        """The positions of the page an interrupted run of it already wrote."""
        scan = await self.log.written(stream, mark, {(r.partition, r.offset) for r in page.records})
        if not scan.complete:
            log.warning(
                "replay of stream %r: the interrupted page's rows were looked for in the "
                "first %d records of each partition after its claim; %d of %d not found "
                "there are written again",
                stream.name,
                MAX_SCAN,
                len(page.records) - len(scan.found),
                len(page.records),
            )
        return scan.found

    def _check(self, stream: Stream, page: Page, written: set[tuple[int, int]], token: str) -> _Checked:
        schema = self.schemas.get(stream)
        out = _Checked()
        for i, record in enumerate(page.records):
            if (record.partition, record.offset) in written:
                out.recovered += 1
                continue
            headers = replay_headers(record.partition, record.offset, token)
            stored = stored_row(record)
            if stored is None:
                out.bad.append(BadRow(i, None, "not a quarantined row", record.value))
                out.bad_headers.append(headers)
                continue
            try:
                rows = schema.decode_ndjson(stored.row_text.encode(), i)
            except BadRequest as err:
                out.bad.append(BadRow(i, err.column, err.message, stored.row_text.encode()))
                out.bad_headers.append(headers)
                continue
            out.rows += rows
            out.row_headers += [headers] * len(rows)
        return out

    async def _write(self, stream: Stream, checked: _Checked) -> None:
        if not checked.rows and not checked.bad:
            return
        quarantine = (
            quarantine_values(
                checked.bad,
                stream=stream.name,
                request_id=f"replay-{self.replica}",
                schema_version=stream.schema_version,
            )
            if checked.bad
            else None
        )
        await self.pipeline.admit(
            stream,
            checked.rows,
            wait=True,
            quarantine=quarantine,
            meta=_meta(checked.row_headers),
            quarantine_meta=_meta(checked.bad_headers),
            patient=True,
        )

    def _claim_text(self) -> str:
        return f"{self.replica} {time.time() + self.claim_s:.3f}"

    async def _claim(self, name: str, fresh: ReplayMark) -> tuple[Stream, bool]:
        """Mark the replay as this replica's in the catalog (409 when another replica holds it),
        with the mark an unfinished page left, or else `fresh`; True when it was left."""
        for _ in range(WRITE_ATTEMPTS):
            stream = self._stream(name)
            owner, _, until = stream.replay_claim.partition(" ")
            left = float(until or 0) - time.time()
            if owner and owner != self.replica and left > 0:
                raise Conflict(
                    f"a replay of stream {name!r} is running on another replica; retry once it is done",
                    retry_after=max(1.0, left),
                )
            claimed = msgspec.structs.replace(
                stream, replay_claim=self._claim_text(), replay_mark=stream.replay_mark or fresh
            )
            if await self.catalog.put_stream(claimed, create=False):
                return claimed, stream.replay_mark is not None
        raise Conflict(f"stream {name!r} keeps changing; retry", retry_after=1.0)

    async def _renew(self, name: str) -> None:
        """Push the claim's expiry forward every third of it while the page runs (a failed
        renewal is tried again at the next turn)."""
        while True:
            await asyncio.sleep(self.claim_s / 3)
            try:
                stream = self.catalog.stream(name)
                if stream is None or not stream.replay_claim.startswith(self.replica):
                    return
                await self.catalog.put_stream(
                    msgspec.structs.replace(stream, replay_claim=self._claim_text()), create=False
                )
            except Exception as exc:  # the page goes on; the claim lapses unless renewed
                log.warning("replay of stream %r: could not renew the claim: %r", name, exc)

    async def _advance(self, name: str, position: Position | None, mark: ReplayMark | None) -> None:
        """Release the claim, set the mark, and (unless None) move the replay position, in one
        change."""
        for _ in range(WRITE_ATTEMPTS):
            stream = self.catalog.stream(name)
            if stream is None or not stream.replay_claim.startswith(self.replica):
                return
            done = msgspec.structs.replace(
                stream,
                replay_claim="",
                replay_mark=mark,
                quarantine_replayed=stream.quarantine_replayed if position is None else position,
            )
            if await self.catalog.put_stream(done, create=False):
                return
        raise Conflict(
            f"stream {name!r} keeps changing; the rows are written, but the replay "
            "position could not be saved (the next replay finds them)",
            retry_after=1.0,
        )
