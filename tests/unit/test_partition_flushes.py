"""A stream's queue with a partition that does not answer: a flush it holds stops counting against
--max-in-flight-flushes once overdue, and a flush of several requests settles request by request as
the sink reports each batch landed (gateway.landing), so the stuck partition holds only its own."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import REGISTRY

from gateway.context import Gateway
from gateway.errors import Unavailable
from gateway.ingest.formats import Format
from gateway.ingest.service import IngestRequest, StreamedBody
from gateway.queues import Entry, Limits, MemoryBudget, StreamQueue
from gateway.sinks.base import Landed, Lines, OnBatch, RowPositions
from tests.unit.test_ingest_service import WHO, Untouchable, chunks, gw  # noqa: F401 (fixture)
from tests.unit.test_queues import FakeSink

GUARD = 5.0  # upper bound on waiting for an event that must happen; never reached when green


class TellingSink(FakeSink):
    """A FakeSink that keeps each send's `on_batch`, for the test to report batches landing."""

    def __init__(self) -> None:
        super().__init__()
        self.told: list[OnBatch | None] = []

    async def send_lines(
        self, topic: str, lines: Lines, on_batch: OnBatch | None = None
    ) -> asyncio.Future[None]:
        self.told.append(on_batch)
        return await super().send_lines(topic, lines)


def _limits(**kw: Any) -> Limits:
    base: dict[str, Any] = {
        "max_rows": 100,
        "max_bytes": 10_000,
        "memory_cap": 100_000,
        "batch_max_bytes": 1000,
        "linger_s": 0,
        "max_in_flight": 1,
    }
    base.update(kw)
    return Limits(**base)


def _entry(*values: bytes) -> Entry:
    return Entry(
        b"".join(v + b"\n" for v in values),
        None,
        sum(map(len, values)),
        asyncio.get_running_loop().create_future(),
    )


async def test_an_overdue_flush_no_longer_holds_the_stream_back() -> None:
    sink = FakeSink()
    q = StreamQueue("s", "t", sink, _limits(stall_s=0.05), MemoryBudget(100_000))
    q.start()
    try:
        first = _entry(b"a")
        q.offer(first)
        stuck = await sink.next_send()  # its partition's leader never answers
        second = _entry(b"b")
        q.offer(second)
        flowing = await sink.next_send()  # was: never sent while the first was in flight
        assert flowing.values == [b"b"]
        flowing.ack()
        async with asyncio.timeout(GUARD):
            assert await second.done is None
        assert not first.done.done()  # type: ignore[union-attr]
        assert q.rows == 1  # the stuck row is still held
        stuck.ack()
        async with asyncio.timeout(GUARD):
            assert await first.done is None  # type: ignore[misc]
        assert q.rows == 0 and q._in_flight == 0 and q._overdue == 0
    finally:
        await q.stop()


async def _one_flush_of(sink: TellingSink, *entries: Entry) -> StreamQueue:
    q = StreamQueue("s", "t", sink, _limits(), MemoryBudget(100_000))
    for e in entries:
        q.offer(e)
    q.start()  # after the offers: one flush of all of them
    return q


async def test_a_request_is_acknowledged_once_its_own_rows_landed() -> None:
    sink = TellingSink()
    a, b, c = _entry(b"a1", b"a2"), _entry(b"b1"), _entry(b"c1", b"c2")
    q = await _one_flush_of(sink, a, b, c)
    try:
        send = await sink.next_send()
        assert send.values == [b"a1", b"a2", b"b1", b"c1", b"c2"]
        on_batch = sink.told[0]
        assert on_batch is not None
        on_batch(1, 40, range(0, 3))  # a and b on partition 1; c's partition does not answer
        async with asyncio.timeout(GUARD):
            landed_a, landed_b = await a.done, await b.done  # type: ignore[misc]
        assert isinstance(landed_a, RowPositions) and isinstance(landed_b, RowPositions)
        assert landed_a.positions() == [(1, 40), (1, 41)]
        assert landed_b.positions() == [(1, 42)]
        assert not c.done.done()  # type: ignore[union-attr]
        assert q.rows == 2 and q.nbytes == 4  # only c is held
        on_batch(0, 7, [3, 4])
        send.ack()
        async with asyncio.timeout(GUARD):
            landed_c = await c.done  # type: ignore[misc]
        assert landed_c.positions() == [(0, 7), (0, 8)]
        assert q.rows == 0 and q.budget.used == 0
    finally:
        await q.stop()


async def test_a_failed_flush_retries_only_the_requests_not_acknowledged() -> None:
    sink = TellingSink()
    a, b = _entry(b"a1"), _entry(b"b1", b"b2")
    q = await _one_flush_of(sink, a, b)
    try:
        send = await sink.next_send()
        on_batch = sink.told[0]
        assert on_batch is not None
        on_batch(2, 5, range(0, 1))
        on_batch(0, 9, range(1, 2))  # half of b landed, then its other batch failed
        send.fail()
        retry = await sink.next_send()
        assert retry.values == [b"b1", b"b2"]  # a is not written twice
        async with asyncio.timeout(GUARD):
            assert (await a.done).positions() == [(2, 5)]  # type: ignore[misc]
        on_batch(1, 1, [5])  # the failed flush's late batches change nothing
        retry.ack()
        async with asyncio.timeout(GUARD):
            assert await b.done is None  # type: ignore[misc]  # the FakeSink tells no positions
        assert q.rows == 0 and q.budget.used == 0
    finally:
        await q.stop()


def test_positions_of_a_flush_landed_in_part() -> None:
    """A request settled early reads its positions from the batches landed so far."""
    landed = Landed([(0, 7, [3, 4]), (1, 40, range(0, 2))])
    assert RowPositions(landed, 3, 5).positions() == [(0, 7), (0, 8)]
    assert landed.positions()[2] == (-1, -1)  # not landed yet


async def test_a_stream_whose_stalled_partition_is_full_gets_503(gw: Gateway) -> None:  # noqa: F811
    body = StreamedBody(Format.STREAMING, chunks(b'{"id": "a", "n": 1}\n'))
    assert (await gw.ingest.ingest(IngestRequest("s", body, WHO))).rows == 1  # the queue exists
    asked: list[tuple[str, bool]] = []

    def held_back(topic: str, keyed: bool) -> int | None:
        asked.append((topic, keyed))
        return 2

    gw.sink.held_back = held_back  # type: ignore[method-assign]
    before = (
        REGISTRY.get_sample_value(
            "gateway_throttled_requests_total", {"status": "503", "cause": "partition_stalled"}
        )
        or 0.0
    )
    with pytest.raises(Unavailable) as refused:
        await gw.ingest.ingest(IngestRequest("s", Untouchable(), WHO))
    assert refused.value.status == 503 and refused.value.retry_after
    assert "partition 2 of stream 's' is stalled" in refused.value.message
    assert "--partition-max-bytes" in refused.value.message
    assert asked == [(gw.catalog.stream("s").topic, False)]  # type: ignore[union-attr]
    assert (
        REGISTRY.get_sample_value(
            "gateway_throttled_requests_total", {"status": "503", "cause": "partition_stalled"}
        )
        == before + 1
    )


class FullSink(FakeSink):
    """A sink whose partition 0 is stalled and full (for keyed rows) until the test says not."""

    def __init__(self) -> None:
        super().__init__()
        self.full = True
        self.asked = 0
        self.asked_thrice = asyncio.Event()

    def held_back(self, topic: str, keyed: bool) -> int | None:
        if keyed:
            self.asked += 1
            if self.asked >= 3:
                self.asked_thrice.set()
        return 0 if self.full and keyed else None


async def test_rows_for_a_full_stalled_partition_stay_queued_unencoded() -> None:
    sink = FullSink()
    q = StreamQueue("s", "t", sink, _limits(stall_s=0.05), MemoryBudget(100_000))
    q.start()
    try:
        q.offer(_entry(b"u"))  # unkeyed rows go around the stalled partition
        (await sink.next_send()).ack()
        keyed = Entry([b"k"], [b"key"], 1, asyncio.get_running_loop().create_future())
        q.offer(keyed)
        async with asyncio.timeout(GUARD):  # the flusher looks again (after stall_s at most)
            await sink.asked_thrice.wait()
        assert sink.calls.empty() and list(q._pending) == [keyed]
        sink.full = False
        send = await sink.next_send()
        assert send.keys == [b"key"]
        send.ack()
        async with asyncio.timeout(GUARD):
            assert await keyed.done is None  # type: ignore[misc]
    finally:
        await q.stop()
