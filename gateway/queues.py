"""Bounded per-stream queues between requests and the sink, and the flushers that drain them.

A request's rows enter a queue whole or not at all (429). Rows stay counted against the limits until
the sink acknowledges them, so the limits bound memory including flushes in flight. A flush that
fails goes back to the front of its queue and is retried: an accepted row is never dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from gateway import metrics
from gateway.landing import Landing
from gateway.limiters.drain_rate import DrainRate
from gateway.sinks.base import (
    Headers,
    Landed,
    Lines,
    OnBatch,
    RecordMeta,
    RowPositions,
    Sink,
    SinkUnavailable,
    lines_of,
)

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Entry:
    """One request's records, and the future a wait=true request awaits."""

    # one bytes object per record, or (unkeyed records, the common path) all of them as one run
    # of newline-terminated JSON lines (see `Lines`)
    values: list[bytes] | bytes
    keys: list[bytes] | None
    nbytes: int
    # resolved to the records' RowPositions (None when the sink cannot tell) once acknowledged
    done: asyncio.Future[Any] | None = None
    spool_pos: int = -1  # the durable spool's record holding these rows (-1: not spooled)
    headers: Headers | None = None  # Kafka headers of every record (e.g. its schema version)
    # each record's own key, partition and headers (rarely set); `headers` follow each record's own
    meta: RecordMeta | None = None
    rows: int = -1  # how many records the entry holds (counted from `values` when not given)

    def __post_init__(self) -> None:
        if self.rows < 0:
            v = self.values
            self.rows = v.count(b"\n") if isinstance(v, bytes) else len(v)

    def value_list(self) -> list[bytes]:
        """The records' values, one bytes object each."""
        v = self.values
        return lines_of(v) if isinstance(v, bytes) else v


@dataclass(slots=True)
class Limits:
    """Queue bounds: per stream (rows, bytes) and for all streams together (bytes)."""

    max_rows: int
    max_bytes: int
    memory_cap: int
    batch_max_bytes: int
    linger_s: float
    max_in_flight: int
    # A flush unsettled this long no longer counts against max_in_flight: a partition whose leader
    # does not answer holds it, and must not hold back the stream's other partitions (0: never).
    stall_s: float = 0.0


@dataclass(slots=True)
class MemoryBudget:
    """Bytes buffered by all queues together."""

    cap: int
    used: int = 0


class Flight:
    """A flush handed over to the sink and not yet settled."""

    __slots__ = ("counted", "entries", "started")

    def __init__(self, entries: list[Entry], started: float) -> None:
        self.entries = entries
        self.started = started
        self.counted = True  # counts against max_in_flight (until overdue)


class Discarded(Exception):
    """The entry's stream was deleted before the sink acknowledged the entry."""


class QueueFull(Exception):
    """The rows do not fit; `cause` says which bound (rows, bytes, memory). `never` is set when
    they could not fit even into an empty queue: the bound (`limit`, in `unit`) is smaller than
    the request (`size`), so retrying cannot help (413, not 429)."""

    def __init__(self, cause: str, *, limit: int = 0, size: int = 0, unit: str = "") -> None:
        super().__init__(cause)
        self.cause = cause
        self.never = limit > 0
        self.limit, self.size, self.unit = limit, size, unit


@dataclass(eq=False)
class StreamQueue:
    """The queue of one stream's topic, with its flusher task."""

    stream: str
    topic: str
    sink: Sink
    limits: Limits
    budget: MemoryBudget
    on_release: Callable[[list[Entry]], None] | None = None  # acknowledged or discarded entries
    rows: int = 0
    nbytes: int = 0
    _pending: deque[Entry] = field(default_factory=deque)
    _wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    _flush_now: asyncio.Event = field(default_factory=asyncio.Event)
    _in_flight: int = 0  # flushes handed over and not settled that count against max_in_flight
    _overdue: int = 0  # flushes handed over and not settled that no longer count (see `_slot`)
    _in_flight_nbytes: int = 0
    _last_rows: int = 0  # size of the last admitted request, for check_room()
    _last_nbytes: int = 0
    _slot_free: asyncio.Event = field(default_factory=asyncio.Event)
    _idle: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None
    _closed: bool = False
    _deleted: bool = False  # the stream was deleted: rows still here are discarded, not retried
    _draining: bool = False
    _backoff: float = 0.0
    # handed over, not settled: the entries, when, and whether they still count in `_in_flight`
    _flights: dict[int, Flight] = field(default_factory=dict)
    _handing: list[Entry] | None = None  # taken for the hand-over that is in progress
    _landed: asyncio.Event = field(default_factory=asyncio.Event)  # set while nothing is in flight
    drain_rate: DrainRate = field(default_factory=DrainRate)  # acknowledged rows/bytes per second
    # rows and bytes accepted (`tally`) and not yet added to their counters (`count_accepted`)
    _accepted_rows: int = 0
    _accepted_bytes: int = 0

    def __post_init__(self) -> None:
        self._idle.set()
        self._landed.set()
        self._slot_free.set()
        gauges = (
            metrics.QUEUE_ROWS.labels(stream=self.stream),
            metrics.QUEUE_BYTES.labels(stream=self.stream),
        )
        # One process: the gauges read the queue when scraped, nothing per request. Under
        # --workers the values must go to the shared files: set once per flush (`_set_gauges`).
        self._gauges: tuple[Any, Any] | None = gauges if metrics.MULTIPROCESS else None
        if self._gauges is None:  # a weak reference: the gauge must not keep a deleted queue
            queue = weakref.ref(self)
            gauges[0].set_function(lambda: q.rows if (q := queue()) is not None else 0)
            gauges[1].set_function(lambda: q.nbytes if (q := queue()) is not None else 0)
        self._delivered = metrics.ROWS_DELIVERED.labels(stream=self.stream)

    def start(self) -> None:
        """Start the flusher (in a fresh context: not tagged with the request that started it)."""
        self._task = asyncio.create_task(
            self._run(), name=f"flush-{self.stream}", context=contextvars.Context()
        )

    def check(self, entry: Entry, other_bytes: int = 0) -> None:
        """Raise QueueFull unless the entry fits (with `other_bytes` about to join the budget)."""
        if self._closed:
            raise QueueFull("closed")
        if entry.rows > self.limits.max_rows:
            raise QueueFull("stream_rows", limit=self.limits.max_rows, size=entry.rows, unit="rows")
        if entry.nbytes > min(self.limits.max_bytes, self.budget.cap):
            cause = "stream_bytes" if self.limits.max_bytes <= self.budget.cap else "memory"
            raise QueueFull(
                cause, limit=min(self.limits.max_bytes, self.budget.cap), size=entry.nbytes, unit="bytes"
            )
        if self.rows + entry.rows > self.limits.max_rows:
            raise QueueFull("stream_rows")
        if self.nbytes + entry.nbytes > self.limits.max_bytes:
            raise QueueFull("stream_bytes")
        if self.budget.used + other_bytes + entry.nbytes > self.budget.cap:
            raise QueueFull("memory")

    def check_room(self) -> None:
        """Raise QueueFull when a request as large as the last one admitted would not fit.

        Called before a body is decoded: under overload, decoding requests only to refuse them
        took most of the CPU (benchmark S4: 5 rows decoded and dropped per row delivered) and
        starved the flusher that makes room."""
        if self.rows + self._last_rows > self.limits.max_rows:
            raise QueueFull("stream_rows")
        if self.nbytes + self._last_nbytes > self.limits.max_bytes:
            raise QueueFull("stream_bytes")
        if self.budget.used + self._last_nbytes > self.budget.cap:
            raise QueueFull("memory")

    @property
    def last_request(self) -> tuple[int, int]:
        """(rows, bytes) of the last request admitted: the size `check_room` expects."""
        return self._last_rows, self._last_nbytes

    def offer(self, entry: Entry) -> None:
        """Queue a request's records whole, or raise QueueFull and queue nothing."""
        self.check(entry)
        self._last_rows, self._last_nbytes = entry.rows, entry.nbytes
        self.rows += entry.rows
        self.nbytes += entry.nbytes
        self.budget.used += entry.nbytes
        self._pending.append(entry)
        self._idle.clear()
        self._wakeup.set()
        if self.nbytes - self._in_flight_nbytes >= self.limits.batch_max_bytes:
            self._flush_now.set()

    def tally(self, rows: int, nbytes: int) -> None:
        """Count a request's rows as accepted (gateway_rows/bytes_accepted_total). The counters
        are updated once per flush and before a scrape (`count_accepted`): a counter's inc()
        takes a lock and checks its type, twice per request."""
        self._accepted_rows += rows
        self._accepted_bytes += nbytes

    def count_accepted(self) -> None:
        """Add the rows and bytes tallied since the last call to their counters."""
        if self._accepted_rows or self._accepted_bytes:
            rows, nbytes = self._accepted_rows, self._accepted_bytes
            self._accepted_rows = self._accepted_bytes = 0
            metrics.ROWS_ACCEPTED.labels(stream=self.stream).inc(rows)
            metrics.BYTES_ACCEPTED.labels(stream=self.stream).inc(nbytes)

    def _set_gauges(self) -> None:
        """Under --workers: the queue gauges' values, once per flush."""
        if self._gauges is not None:
            self._gauges[0].set(self.rows)
            self._gauges[1].set(self.nbytes)

    def _release(self, entries: list[Entry]) -> None:
        rows = sum(e.rows for e in entries)
        nbytes = sum(e.nbytes for e in entries)
        self.rows -= rows
        self.nbytes -= nbytes
        self.budget.used -= nbytes
        self._set_gauges()
        self._delivered.inc(rows)
        self.drain_rate.record(rows, nbytes)
        if self.on_release is not None:
            self.on_release(entries)
        if self.rows == 0:
            self._idle.set()

    def _take(self) -> list[Entry]:
        """Entries for one flush: whole entries up to a few batches' worth of bytes."""
        budget = self.limits.batch_max_bytes * 4
        taken: list[Entry] = []
        size = 0
        while self._pending and (not taken or size + self._pending[0].nbytes <= budget):
            entry = self._pending.popleft()
            taken.append(entry)
            size += entry.nbytes
        return taken

    async def _run(self) -> None:
        while not self._closed:
            if not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
            if self._backoff:  # the last flush failed: give the sink a moment before retrying
                await asyncio.sleep(self._backoff)
            await self._linger()
            while self._in_flight >= self.limits.max_in_flight and not self._closed:
                await self._slot()
            while self._pending and not self._closed and self._held_back():
                await self._progress()
            if self._closed:
                return
            entries = self._take()
            self.count_accepted()
            self._set_gauges()
            if not self._draining:
                self._flush_now.clear()
            if not entries:
                continue
            self._handing = entries
            # several requests: each settles once its own rows landed (see gateway.landing)
            landing = Landing(entries, self._landed_early) if len(entries) > 1 else None
            try:
                delivered = await self._hand_over(entries, None if landing is None else landing.landed)
            except asyncio.CancelledError:
                self._requeue(entries, None)
                raise
            except Exception as exc:  # whatever the sink raised, the rows must not be lost
                self._requeue(entries, exc)
                continue
            finally:
                self._handing = None
            self._in_flight += 1
            self._in_flight_nbytes += sum(e.nbytes for e in entries)
            self._flights[id(entries)] = Flight(entries, time.monotonic())
            self._landed.clear()
            delivered.add_done_callback(functools.partial(self._settle, entries, landing))

    async def _slot(self) -> None:
        """Wait until a flush settles, or until the oldest one counted is overdue (`stall_s`):
        that one then stops counting, so that a stuck partition holds only its own flushes."""
        self._slot_free.clear()
        stall_s = self.limits.stall_s
        oldest = next((f for f in self._flights.values() if f.counted), None)
        if not stall_s or oldest is None:
            await self._slot_free.wait()
            return
        wait_s = oldest.started + stall_s - time.monotonic()
        if wait_s > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await self._slot_free.wait()
            return
        oldest.counted = False
        self._in_flight -= 1
        self._overdue += 1
        if self._overdue == 1:  # once while any is (under a stuck leader every flush becomes so)
            log.warning(
                "a flush of %d rows to %s is unacknowledged after %.1f s (a partition's "
                "leader does not answer?); the stream's other flushes go on",
                sum(e.rows for e in oldest.entries),
                self.topic,
                stall_s,
            )

    def _held_back(self) -> bool:
        """True while a partition the next rows need is stalled and full (--partition-max-bytes):
        they stay queued here, not encoded into batches that would wait behind it."""
        head = self._pending[0]
        return self.sink.held_back(self.topic, head.keys is not None or head.meta is not None) is not None

    async def _progress(self) -> None:
        """Wait until a flush settles, or `stall_s` at most (a stalled partition may recover
        without any flush of this stream settling)."""
        self._slot_free.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.limits.stall_s or 1.0):
                await self._slot_free.wait()

    async def _linger(self) -> None:
        """Wait up to linger_s for more rows, unless a full batch is waiting or a drain began.

        The timer sets `_flush_now` itself (`_run` clears it after taking the rows): a timer
        handle costs 6 µs of CPU per flush where `asyncio.timeout` costs 14 (its expiry cancels
        the task), and with many quiet streams every request is a flush of its own."""
        if not self.limits.linger_s or self._flush_now.is_set():
            return
        timer = asyncio.get_running_loop().call_later(self.limits.linger_s, self._flush_now.set)
        try:
            await self._flush_now.wait()
        finally:
            timer.cancel()

    async def _hand_over(
        self, entries: list[Entry], on_batch: OnBatch | None
    ) -> asyncio.Future[Landed | None]:
        if any(e.meta is not None for e in entries):
            return await self._hand_over_placed(entries, on_batch)
        runs = [v for e in entries if isinstance(v := e.values, bytes)]
        if len(runs) == len(entries):  # the common path: no bytes object per record
            run_headers = [e.headers for e in entries] if any(e.headers for e in entries) else None
            lines = Lines(runs, run_headers, sum(e.rows for e in entries))
            return await self.sink.send_lines(self.topic, lines, on_batch=on_batch)
        if len(entries) == 1:
            values, keys = entries[0].value_list(), entries[0].keys
        else:
            values = []
            for e in entries:
                values += e.value_list()
            keys = None
            if entries[0].keys is not None:
                keys = []
                for e in entries:
                    keys += e.keys or []
        if any(e.headers for e in entries):
            headers: list[Headers] = []
            for e in entries:
                headers += [e.headers or []] * e.rows
            return await self.sink.send(self.topic, values, keys, headers=headers, on_batch=on_batch)
        return await self.sink.send(self.topic, values, keys, on_batch=on_batch)

    async def _hand_over_placed(
        self, entries: list[Entry], on_batch: OnBatch | None
    ) -> asyncio.Future[Landed | None]:
        """A flush where some records carry their own key, partition or headers: every record's
        details in one RecordMeta, the entry's shared headers (schema version) after its own."""
        values: list[bytes] = []
        meta = RecordMeta([], [], [])
        for e in entries:
            values += e.value_list()
            m = e.meta if e.meta is not None else RecordMeta.plain(e.rows, e.keys)
            meta.keys += m.keys
            meta.partitions += m.partitions
            meta.headers += [own + e.headers for own in m.headers] if e.headers else m.headers
        return await self.sink.send(self.topic, values, None, meta, on_batch=on_batch)

    def _landed_early(self, landing: Landing, done: list[int]) -> None:
        """Entries of a flush in flight whose records all landed: acknowledged now."""
        entries = [landing.entries[k] for k in done]
        self._release(entries)
        landed = Landed(list(landing.batches), list(landing.times))
        for k, e in zip(done, entries, strict=True):
            if e.done is not None and not e.done.done():
                start = landing.starts[k]
                e.done.set_result(RowPositions(landed, start, start + e.rows))

    def _settle(
        self, entries: list[Entry], landing: Landing | None, fut: asyncio.Future[Landed | None]
    ) -> None:
        flight = self._flights.pop(id(entries), None)
        if not self._flights:
            self._landed.set()
        if flight is None or flight.counted:
            self._in_flight -= 1
        else:
            self._overdue -= 1
        self._in_flight_nbytes -= sum(e.nbytes for e in entries)
        self._slot_free.set()
        if fut.cancelled() or fut.exception() is not None:
            exc = fut.exception() if not fut.cancelled() else SinkUnavailable("cancelled")
            if landing is not None:  # the entries whose rows all landed stay acknowledged
                landing.live = False
                entries = landing.unreleased()
            self._requeue(entries, exc)
            return
        self._backoff = 0.0
        landed = fut.result()
        if landing is None or not landing.batches:  # no batch told of: all settle now
            self._release(entries)
            start = 0
            for e in entries:
                if e.done is not None and not e.done.done():
                    e.done.set_result(None if landed is None else RowPositions(landed, start, start + e.rows))
                start += e.rows
            return
        # those not settled as their batches landed (no rows, or a sink that told of some only)
        landing.live = False
        rest = [
            (e, start)
            for e, start, released in zip(landing.entries, landing.starts, landing.released, strict=True)
            if not released
        ]
        if rest:
            self._release([e for e, _ in rest])
        for e, start in rest:
            if e.done is not None and not e.done.done():
                e.done.set_result(None if landed is None else RowPositions(landed, start, start + e.rows))

    def _discard(self, entries: list[Entry]) -> None:
        """Forget entries of a deleted stream: free their memory, tell the spool they are done,
        and fail the wait=true requests still waiting for them."""
        nbytes = sum(e.nbytes for e in entries)
        self.rows -= sum(e.rows for e in entries)
        self.nbytes -= nbytes
        self.budget.used -= nbytes
        self._set_gauges()
        if self.on_release is not None:
            self.on_release(entries)
        self._fail_waiters(entries)

    def _fail_waiters(self, entries: Iterable[Entry]) -> None:
        for e in entries:
            if e.done is not None and not e.done.done():
                e.done.set_exception(Discarded(self.stream))

    def _requeue(self, entries: list[Entry], exc: BaseException | None) -> None:
        if self._deleted:  # the stream was deleted while these rows were being flushed
            self._discard(entries)
            return
        if exc is not None:
            self._backoff = min(max(self._backoff * 2, 0.05), 2.0)
            log.warning(
                "flush of %d rows to %s failed (%s: %s); retrying in %.2f s",
                sum(e.rows for e in entries),
                self.topic,
                type(exc).__name__,
                exc,
                self._backoff,
            )
            metrics.SINK_ERRORS.labels(kind="flush_retry").inc()
        self._pending.extendleft(reversed(entries))
        self._wakeup.set()

    def flush_now(self) -> None:
        """Stop lingering: from now on every row is flushed as soon as it is queued."""
        self._draining = True
        self._flush_now.set()

    async def drain(self, timeout: float) -> bool:
        """Flush without lingering until everything queued is acknowledged; False on timeout."""
        self.flush_now()
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def stop(self, grace: float = 0.0) -> None:
        """Stop the flusher (after `drain`); rows still queued are not flushed any more. Within
        `grace` seconds a hand-over in progress may finish, so that no batch is left half sent."""
        self._closed = True
        self.count_accepted()
        for event in (self._wakeup, self._flush_now, self._slot_free):
            event.set()
        if self._task is None:
            return
        if grace > 0:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._task), grace)
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("flusher of %s had failed", self.topic)

    async def delete(self, grace: float) -> None:
        """The stream was deleted: fail its waiting requests at once (404, not a 504 after the
        grace), stop, discard what is queued, and wait (up to twice `grace`) until the flushes in
        flight have landed, so that none of them can reach a topic created again under the name."""
        self._deleted = True
        self._fail_waiters(self._pending)
        self._fail_waiters(self._handing or ())
        for flight in self._flights.values():  # their topic is going away: do not wait for it
            self._fail_waiters(flight.entries)
        await self.stop(grace)
        pending = list(self._pending)
        self._pending.clear()
        self._discard(pending)
        try:
            async with asyncio.timeout(grace):
                await self._landed.wait()
        except TimeoutError:
            log.warning("stream %s deleted with flushes still in flight", self.stream)


class Queues:
    """All streams' queues: admission for requests, draining for shutdown."""

    def __init__(
        self, sink: Sink, limits: Limits, on_release: Callable[[list[Entry]], None] | None = None
    ) -> None:
        self.sink = sink
        self.limits = limits
        self.on_release = on_release  # told of acknowledged and discarded entries (the spool)
        self.budget = MemoryBudget(limits.memory_cap)
        self._queues: dict[tuple[str, str], StreamQueue] = {}

    def queue(self, stream: str, topic: str) -> StreamQueue:
        """The queue of a stream's topic, created (and its flusher started) on first use."""
        q = self._queues.get((stream, topic))
        if q is None:
            q = StreamQueue(stream, topic, self.sink, self.limits, self.budget, self.on_release)
            q.start()
            self._queues[(stream, topic)] = q
        return q

    def offer_all(self, offers: list[tuple[StreamQueue, Entry]]) -> None:
        """Queue entries into different queues all or none (a request's rows and its quarantine)."""
        if len(offers) == 1:
            offers[0][0].offer(offers[0][1])
            return
        other = 0
        for q, e in offers:
            q.check(e, other)
            other += e.nbytes
        for q, e in offers:
            q.offer(e)

    def get(self, stream: str, topic: str) -> StreamQueue | None:
        """The queue of a stream's topic, if it exists."""
        return self._queues.get((stream, topic))

    def detach(self, stream: str, topic: str) -> StreamQueue | None:
        """Forget a stream topic's queue at once (new rows get a new queue); the caller stops it."""
        return self._queues.pop((stream, topic), None)

    async def remove(self, stream: str, grace: float = 5.0) -> None:
        """Stop and forget a (deleted) stream's queues; their unflushed rows are discarded."""
        for key in [k for k in self._queues if k[0] == stream]:
            await self._queues.pop(key).delete(grace)

    def flush_now(self) -> None:
        """Stop lingering in every queue (shutdown has begun)."""
        for q in self._queues.values():
            q.flush_now()

    async def drain(self, timeout: float) -> bool:
        """Wait until every queue is acknowledged, up to `timeout` in total."""
        deadline = time.monotonic() + timeout
        ok = True
        for q in list(self._queues.values()):
            ok = await q.drain(max(0.0, deadline - time.monotonic())) and ok
        return ok

    async def stop(self) -> None:
        """Stop every flusher."""
        for q in list(self._queues.values()):
            await q.stop()
        self._queues.clear()

    def count_accepted(self) -> None:
        """Bring every queue's accepted-rows counters up to date (before a scrape)."""
        for q in self._queues.values():
            q.count_accepted()

    def total_rows(self) -> int:
        """Rows queued or in flight over all streams."""
        return sum(q.rows for q in self._queues.values())
