"""The timestamp Kafka stores for each record travels back with where it landed: the CreateTime
the Kafka sink set on the flush, or the broker's LogAppendTime from the produce response; the
queue hands it to requests settled early (gateway.landing) and v3 receipts write it ISO 8601."""

from __future__ import annotations

import asyncio
import types
from typing import Any

from gateway.dialects.restproxy_v3 import iso_ms
from gateway.queues import MemoryBudget, StreamQueue
from gateway.sinks.base import Landed, RowPositions
from gateway.sinks.kafka import KafkaSink, stored_time
from tests.unit.test_partition_flushes import GUARD, TellingSink, _entry, _limits


def _md(partition: int, offset: int, timestamp: int | None) -> Any:
    return types.SimpleNamespace(partition=partition, offset=offset, timestamp=timestamp)


def test_timestamps_per_record_follow_the_batches() -> None:
    landed = Landed([(2, 10, range(0, 2)), (0, 5, [4, 2]), (1, 0, [3])], [111, 222, 333])
    assert landed.timestamps() == [111, 111, 222, 333, 222]
    assert RowPositions(landed, 1, 4).timestamps() == [111, 222, 333]
    assert Landed([(0, 0, range(0, 2))]).timestamps() is None  # a sink that does not tell
    assert RowPositions(Landed([(0, 0, range(0, 2))]), 0, 2).timestamps() is None


def test_stored_time_is_the_brokers_under_log_append_time() -> None:
    assert stored_time(-1, 1000) == 1000  # CreateTime: the broker answers -1
    assert stored_time(None, 1000) == 1000
    assert stored_time(2500, 1000) == 2500  # LogAppendTime


async def test_the_kafka_sink_reports_each_batchs_stored_time() -> None:
    sink = KafkaSink("127.0.0.1:1", batch_max_bytes=1 << 20)
    loop = asyncio.get_running_loop()
    shipped = [(loop.create_future(), range(0, 2)), (loop.create_future(), range(2, 3))]
    told: list[tuple[int, int, Any, int]] = []
    flush = sink._delivered(None, shipped, 0.0, lambda p, o, ix, ts: told.append((p, o, ix, ts)), ts=1000)
    shipped[0][0].set_result(_md(1, 40, -1))
    shipped[1][0].set_result(_md(0, 7, 9999))
    landed = await asyncio.wait_for(flush, GUARD)
    assert landed is not None and landed.times == [1000, 9999]
    assert landed.timestamps() == [1000, 1000, 9999]
    assert told == [(1, 40, range(0, 2), 1000), (0, 7, range(2, 3), 9999)]


async def test_a_request_settled_early_gets_its_timestamps() -> None:
    sink = TellingSink()
    a, b = _entry(b"a1", b"a2"), _entry(b"b1")
    q = StreamQueue("s", "t", sink, _limits(), MemoryBudget(100_000))
    q.offer(a)
    q.offer(b)
    q.start()
    try:
        send = await sink.next_send()
        on_batch = sink.told[0]
        assert on_batch is not None
        on_batch(1, 40, range(0, 2), 1234)  # a landed; b's partition does not answer yet
        async with asyncio.timeout(GUARD):
            landed_a = await a.done  # type: ignore[misc]
        assert isinstance(landed_a, RowPositions) and landed_a.timestamps() == [1234, 1234]
        on_batch(2, 3, [2], 5678)
        send.ack()
        async with asyncio.timeout(GUARD):
            landed_b = await b.done  # type: ignore[misc]
        assert landed_b.timestamps() == [5678]
    finally:
        await q.stop()


def test_iso_ms() -> None:
    assert iso_ms(0) == "1970-01-01T00:00:00.000Z"
    assert iso_ms(1796698800123) == "2026-12-08T03:00:00.123Z"
    assert iso_ms(1796698800005) == "2026-12-08T03:00:00.005Z"
