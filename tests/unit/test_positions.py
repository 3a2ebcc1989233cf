"""Per-record positions from the sink back to each waiting request, and per-record Kafka details
(key, partition, headers) merged when one flush carries several requests."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.queues import Entry, Limits, Queues
from gateway.sinks.base import Landed, OnBatch, RecordMeta, RowPositions
from tests.unit.test_queues import FakeSink

GUARD = 2.0  # upper bound on waiting for an event that must happen; never reached when green


class LandingSink(FakeSink):
    """Acknowledges each flush at once as if Kafka put the even records on partition 0 (from
    offset 100) and the odd ones on partition 1 (from offset 200)."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[list[bytes], list[bytes] | None, RecordMeta | None]] = []

    async def send(
        self,
        topic: str,
        values: list[bytes],
        keys: list[bytes] | None,
        meta: RecordMeta | None = None,
        on_batch: OnBatch | None = None,
    ) -> asyncio.Future[Landed | None]:  # type: ignore[override]
        self.sent.append((list(values), keys, meta))
        even = list(range(0, len(values), 2))
        odd = list(range(1, len(values), 2))
        fut: asyncio.Future[Landed | None] = asyncio.get_running_loop().create_future()
        fut.set_result(Landed([(0, 100, even), (1, 200, odd)]))
        return fut


def _limits() -> Limits:
    return Limits(
        max_rows=100, max_bytes=10_000, memory_cap=100_000, batch_max_bytes=1000, linger_s=0, max_in_flight=1
    )


def _entry(*values: bytes, meta: RecordMeta | None = None) -> Entry:
    return Entry(
        list(values), None, sum(map(len, values)), asyncio.get_running_loop().create_future(), meta=meta
    )


async def _settled(entries: list[Entry]) -> list[Any]:
    async with asyncio.timeout(GUARD):
        return [await e.done for e in entries if e.done is not None]


def test_landed_positions_follow_each_batch() -> None:
    landed = Landed([(2, 10, range(0, 2)), (0, 5, [3, 2]), (1, 0, [4])])
    assert landed.positions() == [(2, 10), (2, 11), (0, 6), (0, 5), (1, 0)]
    assert RowPositions(landed, 1, 4).positions() == [(2, 11), (0, 6), (0, 5)]


async def test_each_request_gets_its_own_slice_of_a_merged_flush() -> None:
    sink = LandingSink()
    queues = Queues(sink, _limits())
    try:
        q = queues.queue("s", "t")
        first, second = _entry(b"a", b"b", b"c"), _entry(b"d", b"e")
        # both offered before the flusher runs: one flush carries both
        q.offer(first)
        q.offer(second)
        got = await _settled([first, second])
    finally:
        await queues.stop()
    assert len(sink.sent) == 1 and sink.sent[0][0] == [b"a", b"b", b"c", b"d", b"e"]
    assert [g.positions() for g in got] == [[(0, 100), (1, 200), (0, 101)], [(1, 201), (0, 102)]]


async def test_each_run_of_lines_gets_its_own_slice_of_a_merged_flush() -> None:
    """Entries as runs of lines (the common path): positions numbered across the runs."""
    sink = LandingSink()
    queues = Queues(sink, _limits())
    try:
        q = queues.queue("s", "t")
        loop = asyncio.get_running_loop()
        first = Entry(b"a\nb\nc\n", None, 6, loop.create_future())
        second = Entry(b"d\ne\n", None, 4, loop.create_future())
        q.offer(first)
        q.offer(second)
        got = await _settled([first, second])
    finally:
        await queues.stop()
    assert sink.lines_sent == 1 and sink.sent[0][0] == [b"a", b"b", b"c", b"d", b"e"]
    assert [g.positions() for g in got] == [[(0, 100), (1, 200), (0, 101)], [(1, 201), (0, 102)]]


async def _one_flush(*entries: Entry) -> tuple[list[bytes], list[bytes] | None, RecordMeta | None]:
    """Offer `entries` to one stream's queue, wait until they are settled, and return what the
    sink was handed in its first send (values, keys, meta)."""
    sink = LandingSink()
    queues = Queues(sink, _limits())
    try:
        q = queues.queue("s", "t")
        for entry in entries:
            q.offer(entry)
        await _settled(list(entries))
    finally:
        await queues.stop()
    return sink.sent[0]


async def test_records_with_their_own_details_merge_with_plain_ones() -> None:
    plain = _entry(b"p1")
    placed = _entry(b"x1", b"x2", meta=RecordMeta([b"k", None], [2, -1], [[("h", b"v")], []]))
    values, keys, meta = await _one_flush(plain, placed)
    assert values == [b"p1", b"x1", b"x2"] and keys is None and meta is not None
    assert meta.keys == [None, b"k", None]
    assert meta.partitions == [-1, 2, -1]
    assert meta.headers == [[], [("h", b"v")], []]


async def test_an_entrys_shared_headers_follow_each_records_own() -> None:
    """The stream's schema-version header reaches records with their own details too, after
    their own headers, and plain rows of the same flush get it alone."""
    version = [("schema-version", b"3")]
    plain = Entry([b"p1"], None, 2, asyncio.get_running_loop().create_future(), headers=version)
    placed = Entry(
        [b"x1", b"x2"],
        None,
        4,
        asyncio.get_running_loop().create_future(),
        headers=version,
        meta=RecordMeta([b"k", None], [2, -1], [[("h", b"v")], []]),
    )
    meta = (await _one_flush(plain, placed))[2]
    assert meta is not None
    assert meta.headers == [version, [("h", b"v"), *version], version]
    assert meta.partitions == [-1, 2, -1] and meta.keys == [None, b"k", None]
