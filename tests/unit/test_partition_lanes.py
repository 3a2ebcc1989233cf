"""KafkaSink's partitions are independent of each other (gateway/sinks/partitions.py): a batch for a
partition whose previous batch is still queued waits in that partition's lane, every other
partition's batches go on; unkeyed batches go to the partitions that answer, weighted by what they
hold. The producer here is aiokafka's own accumulator (where `send_batch` waits), drained by hand
as its sender would: a partition's batch is acknowledged when the test says, a stuck one's never."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import pytest
from aiokafka.cluster import ClusterMetadata
from aiokafka.producer.message_accumulator import MessageAccumulator, MessageBatch
from aiokafka.structs import TopicPartition

from gateway.sinks.base import Landed, Lines
from gateway.sinks.kafka import KafkaSink, partition_for_key
from gateway.sinks.partitions import Lane, Lanes, choose

GUARD = 5.0  # upper bound on waiting for an event that must happen; never reached when green
TOPIC = "t"


class Producer:
    """`send_batch` as aiokafka's producer does it (the accumulator waits while the partition's
    previous batch is queued); `step` is its sender's round for one partition."""

    def __init__(self) -> None:
        self._message_accumulator = MessageAccumulator(ClusterMetadata(), 1 << 20, 0, 30.0)
        self._request_timeout_ms = 30000  # what `send_batch` and the lanes wait at most
        self.in_flight: dict[int, MessageBatch] = {}
        self.offsets: defaultdict[int, int] = defaultdict(int)

    async def send_batch(self, batch: Any, topic: str, *, partition: int) -> Any:
        return await self._message_accumulator.add_batch(batch, TopicPartition(topic, partition), 30.0)

    def step(self, partition: int, *, ack: bool = True) -> None:
        """Acknowledge the partition's batch in flight (unless `ack` is False: its leader does not
        answer), then put the next queued one in flight."""
        tp = TopicPartition(TOPIC, partition)
        flying = self.in_flight.get(partition)
        if flying is not None:
            if not ack:
                return
            flying.done(self.offsets[partition])
            self.offsets[partition] += flying.record_count
            del self.in_flight[partition]
        if self._message_accumulator._batches.get(tp):
            self.in_flight[partition] = self._message_accumulator._pop_batch(tp)


@pytest.fixture
async def sink() -> AsyncIterator[tuple[KafkaSink, Producer]]:
    sink = KafkaSink("127.0.0.1:9", batch_max_bytes=1 << 20, partition_stall_s=60.0)
    producer = Producer()
    sink._producer = producer

    async def three(topic: str) -> int:
        return 3

    sink.partition_count = three  # type: ignore[method-assign]
    yield sink, producer
    await sink.lanes.close()


def keys_for(partition: int) -> Iterator[bytes]:
    return (k for i in itertools.count() if partition_for_key(k := b"k%d" % i, 3) == partition)


async def until(cond: Any, producer: Producer, partitions: Sequence[int]) -> None:
    """Run the sender's rounds for `partitions` (the others answer nothing) until `cond()`."""
    async with asyncio.timeout(GUARD):
        while not cond():
            for p in partitions:
                producer.step(p)
            await asyncio.sleep(0)


async def test_a_stuck_partition_holds_back_only_its_own_batches(sink: tuple[KafkaSink, Producer]) -> None:
    kafka, producer = sink
    k0, k1 = keys_for(0), keys_for(1)
    flushes = []
    for n in range(3):  # each flush: one row for partition 0, one for partition 1
        told: list[tuple[int, int, Sequence[int]]] = []
        async with asyncio.timeout(GUARD):  # the third waited for partition 0 before
            fut = await kafka.send(
                TOPIC,
                [b"a%d" % n, b"b%d" % n],
                [next(k0), next(k1)],
                on_batch=lambda p, o, ix, _ts, told=told: told.append((p, o, ix)),
            )
        flushes.append((fut, told))
        producer.step(0, ack=False)  # partition 0's first batch goes in flight and stays there
    await until(lambda: all(any(p == 1 for p, _, _ in told) for _, told in flushes), producer, [1])
    assert [told for _, told in flushes] == [[(1, n, [1])] for n in range(3)]
    assert not any(fut.done() for fut, _ in flushes)
    assert kafka.lanes.of(TOPIC, 3).lanes[0].waiting  # the third flush's batch for partition 0


async def test_partition_zero_lands_in_order_after_it_answers_again(sink: tuple[KafkaSink, Producer]) -> None:
    kafka, producer = sink
    k0, k1 = keys_for(0), keys_for(1)
    futs = []
    for n in range(4):
        async with asyncio.timeout(GUARD):
            futs.append(await kafka.send(TOPIC, [b"a%d" % n, b"b%d" % n], [next(k0), next(k1)]))
        producer.step(0, ack=False)
    await until(lambda: producer.offsets[1] == 4, producer, [1])
    assert not any(f.done() for f in futs)
    await until(lambda: all(f.done() for f in futs), producer, [0, 1])
    landed: list[Landed] = [f.result() for f in futs]
    assert [lan.positions() for lan in landed] == [[(0, n), (1, n)] for n in range(4)]
    assert kafka.lanes.of(TOPIC, 3).busy == 0


async def test_unkeyed_batches_go_around_a_stalled_partition(sink: tuple[KafkaSink, Producer]) -> None:
    kafka, producer = sink
    kafka.lanes.stall_s = 0.0  # a partition holding anything unacknowledged is stalled at once
    kafka.lanes.rand = random.Random(7).random
    lines = Lines([b'{"n":1}\n'], None, 1)
    async with asyncio.timeout(GUARD):
        first = await kafka.send_lines(TOPIC, lines)  # all idle: in turn, partition 0 first
    producer.step(0, ack=False)
    chosen = set()
    for _ in range(30):
        async with asyncio.timeout(GUARD):
            fut = await kafka.send_lines(TOPIC, lines)
        await until(fut.done, producer, [1, 2])
        chosen.add(fut.result().batches[0][0])
    assert chosen == {1, 2}
    assert not first.done()


def lane(partition: int, held: int, since: float = 100.0) -> Lane:
    lane = Lane(TOPIC, partition)
    lane.held, lane.since = held, since
    return lane


def test_choice_weighs_partitions_by_what_they_hold() -> None:
    lanes = [lane(0, 0), lane(1, 300), lane(2, 100)]
    # weights: most held + 1 - held = 301, 1, 201 of 503; a uniform draw picks by cumulative weight
    assert choose(lanes, 100.0, 2.0, lambda: 0.0) == 0
    assert choose(lanes, 100.0, 2.0, lambda: 300 / 503) == 0
    assert choose(lanes, 100.0, 2.0, lambda: 301 / 503) == 1
    assert choose(lanes, 100.0, 2.0, lambda: 302 / 503) == 2
    assert choose(lanes, 100.0, 2.0, lambda: 0.999) == 2


def test_choice_leaves_stalled_partitions_out_unless_all_are() -> None:
    lanes = [lane(0, 50, since=90.0), lane(1, 100), lane(2, 100)]  # 0: no progress for 10 s
    assert {choose(lanes, 100.0, 2.0, lambda r=r: r / 10) for r in range(10)} == {1, 2}
    stalled = [lane(0, 50, since=90.0), lane(1, 50, since=90.0)]
    assert {choose(stalled, 100.0, 2.0, lambda r=r: r / 10) for r in range(10)} == {0, 1}


def test_idle_partitions_take_turns() -> None:
    lanes = Lanes(max_unsettled_bytes=1 << 20, stall_s=2.0, max_held_bytes=0)
    topic = lanes.of(TOPIC, 3)
    assert [lanes.next_partition(topic, 3) for _ in range(4)] == [0, 1, 2, 0]


def test_held_back_names_a_stalled_partition_over_the_bound() -> None:
    lanes = Lanes(max_unsettled_bytes=1 << 20, stall_s=2.0, max_held_bytes=1000)
    topic = lanes.of(TOPIC, 3)
    for p, held in ((0, 5000), (1, 10)):
        lanes._held(topic, topic.lanes[p], held)
    topic.lanes[0].since -= 10  # no progress for 10 s
    assert lanes.held_back(TOPIC, keyed=True) == 0
    assert lanes.held_back(TOPIC, keyed=False) is None  # unkeyed rows go to 1 and 2
    for p in (1, 2):
        lanes._held(topic, topic.lanes[p], 10)
        topic.lanes[p].since -= 10
    assert lanes.held_back(TOPIC, keyed=False) == 0  # every partition stalled
    lanes._release(topic, topic.lanes[0], 4500)  # progress, and under the bound
    assert lanes.held_back(TOPIC, keyed=True) is None
    assert topic.full == 0


async def test_a_failed_flushs_batches_still_waiting_in_a_lane_are_never_sent(
    sink: tuple[KafkaSink, Producer],
) -> None:
    """Its rows are queued again whole: a batch of it handed over later would land beside them."""
    from aiokafka.errors import RequestTimedOutError

    kafka, producer = sink
    k0, k1 = keys_for(0), keys_for(1)
    futs = []
    for n in range(3):  # as above: the third flush's batch for partition 0 waits in its lane
        async with asyncio.timeout(GUARD):
            futs.append(await kafka.send(TOPIC, [b"a%d" % n, b"b%d" % n], [next(k0), next(k1)]))
        producer.step(0, ack=False)
    lane = kafka.lanes.of(TOPIC, 3).lanes[0]
    assert len(lane.waiting) == 1
    async with asyncio.timeout(GUARD):  # partition 1 acknowledges two batches; its third flies
        while not (producer.offsets[1] == 2 and 1 in producer.in_flight):
            producer.step(1)
            await asyncio.sleep(0)
    producer.in_flight.pop(1).failure(RequestTimedOutError())  # the third flush's other batch
    async with asyncio.timeout(GUARD):
        with pytest.raises(Exception, match="RequestTimedOut"):
            await futs[2]
    await until(lambda: futs[0].done() and futs[1].done() and not lane.waiting, producer, [0])
    for _ in range(3):  # the sender's rounds go on: nothing more arrives for partition 0
        producer.step(0)
        await asyncio.sleep(0)
    assert producer.offsets[0] == 2  # the first two flushes' rows, not the failed one's
    assert kafka.lanes.of(TOPIC, 3).busy == 0
