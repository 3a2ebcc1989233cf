"""The Kafka sink's partitions, independent of each other: a stuck partition holds back only its own
batches, and unkeyed rows go to the partitions that answer.

aiokafka queues one batch per partition and sends the next only once the one in flight is
acknowledged; `send_batch` waits while the partition's previous batch is still queued. A flush that
awaited it batch after batch stalled, behind one frozen leader, every partition after it (and the
stream's flush loop with it). Here each partition has a `Lane`: a batch goes to aiokafka at once
when aiokafka holds nothing of that partition's, otherwise it waits in the lane and the lane's own
task (alive only while the lane has batches waiting) hands them over in order.

A lane also tells how many bytes its partition holds (handed over or waiting, not yet settled) and
since when it made no progress: unkeyed rows go to the partitions that made progress recently,
weighted by what they hold as Kafka's own producer weighs them by their queues (KIP-794), and a
partition stalled with more than `max_held_bytes` makes the streams that need it refuse rows.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import functools
import random
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from gateway import metrics
from gateway.sinks.aiokafka_batch import RecordBatch, holds_queued, wait_taken


class Waiting:
    """A batch waiting in its lane, with the future its flush awaits."""

    __slots__ = ("batch", "out", "producer", "size")

    def __init__(self, producer: Any, batch: RecordBatch, size: int, out: asyncio.Future[Any]) -> None:
        self.producer, self.batch, self.size, self.out = producer, batch, size, out


class Lane:
    """One partition of a topic: its batches handed over or waiting, and its progress."""

    __slots__ = ("held", "partition", "pump", "since", "topic", "waiting")

    def __init__(self, topic: str, partition: int) -> None:
        self.topic = topic
        self.partition = partition
        self.held = 0  # bytes of batches handed over or waiting, not yet settled
        self.since = 0.0  # monotonic time of the last progress (a batch settled) or of going busy
        self.waiting: deque[Waiting] = deque()
        self.pump: asyncio.Task[None] | None = None

    def stalled(self, now: float, stall_s: float) -> bool:
        """True when the lane holds batches and none settled for `stall_s`."""
        return self.held > 0 and now - self.since > stall_s


class TopicLanes:
    """The lanes of one topic, and the round-robin position used while all of them are idle."""

    __slots__ = ("busy", "full", "lanes", "next")

    def __init__(self, topic: str, partitions: int) -> None:
        self.lanes = [Lane(topic, p) for p in range(partitions)]
        self.next = 0
        self.busy = 0  # lanes holding something
        self.full = 0  # lanes holding more than the bound

    def grow(self, topic: str, partitions: int) -> None:
        """Lanes for partitions added to the topic."""
        self.lanes += [Lane(topic, p) for p in range(len(self.lanes), partitions)]


def choose(lanes: list[Lane], now: float, stall_s: float, rand: Callable[[], float]) -> int:
    """A partition for the next unkeyed batch, among the lanes that are not stalled (all, when
    every one is): each with a weight of (most any of them holds + 1 - what it holds), so an
    idle partition is the likeliest and the fullest one the least likely (Kafka's
    BuiltInPartitioner weighs its queue sizes the same way)."""
    live = [lane for lane in lanes if not lane.stalled(now, stall_s)] or lanes
    if len(live) == 1:
        return live[0].partition
    top = max(lane.held for lane in live) + 1
    bounds: list[int] = []
    total = 0
    for lane in live:
        total += top - lane.held
        bounds.append(total)
    return live[bisect.bisect_right(bounds, int(rand() * total))].partition


class Lanes:
    """Every topic's lanes; hands batches to the producer without waiting for a busy partition."""

    def __init__(
        self,
        *,
        max_unsettled_bytes: int,
        stall_s: float,
        max_held_bytes: int,
        rand: Callable[[], float] = random.random,
    ) -> None:
        # aiokafka puts every ready batch for a broker into one Produce request, with no size
        # limit; one larger than the broker's socket.request.max.bytes (100 MiB by default) makes
        # it drop the connection, and aiokafka resends the same request forever. Bounding the
        # bytes handed over and not yet settled bounds every request.
        self.max_unsettled_bytes = max_unsettled_bytes
        self.stall_s = stall_s
        self.max_held_bytes = max_held_bytes  # 0: no bound of its own (the stream's bounds hold)
        self.rand = rand
        self.unsettled_bytes = 0
        self._room = asyncio.Event()
        self._topics: dict[str, TopicLanes] = {}
        # Batches not yet settled (handed over or waiting), by topic: a topic is deleted only once
        # its batches have settled, or one still retrying could land in a topic re-created under
        # the same name (a new stream with the old stream's rows).
        self.unsettled: dict[str, set[asyncio.Future[Any]]] = {}
        self._gauge_at = 0.0
        if not metrics.MULTIPROCESS:  # one process: counted when scraped
            for state in ("stalled", "full"):
                metrics.PARTITIONS_HELD_BACK.labels(state=state).set_function(
                    functools.partial(self.count, state)
                )

    def of(self, topic: str, partitions: int) -> TopicLanes:
        """The topic's lanes, `partitions` of them at least."""
        lanes = self._topics.get(topic)
        if lanes is None:
            lanes = self._topics[topic] = TopicLanes(topic, partitions)
        elif len(lanes.lanes) < partitions:
            lanes.grow(topic, partitions)
        return lanes

    def next_partition(self, lanes: TopicLanes, n: int) -> int:
        """The partition of the next unkeyed batch: in turn while no partition holds anything,
        else by `choose`."""
        if not lanes.busy:
            p = lanes.next % n
            lanes.next = p + 1
            return p
        return choose(lanes.lanes[:n], time.monotonic(), self.stall_s, self.rand)

    async def ship(
        self, producer: Any, batch: RecordBatch, topic: str, partition: int
    ) -> asyncio.Future[Any]:
        """Hand `batch` over for `partition`: the future settles once Kafka acknowledged it (or
        it failed). Never waits: a batch that aiokafka would not take at once (its partition's
        previous batch is still queued there, or the bytes handed over to all partitions are at
        their bound) waits in the partition's lane."""
        lanes = self._topics[topic]
        lane = lanes.lanes[partition]
        size = batch.size()
        self._held(lanes, lane, size)
        if (
            not lane.waiting
            and not holds_queued(producer, topic, partition)
            and (not self.unsettled_bytes or self.unsettled_bytes + size <= self.max_unsettled_bytes)
        ):
            try:  # does not wait: nothing of the partition's is queued, the topic is known
                fut: asyncio.Future[Any] = await producer.send_batch(batch, topic, partition=partition)
            except BaseException:
                self._release(lanes, lane, size)
                raise
            self._handed(size, fut)
            return self._track(lanes, lane, size, topic, fut)
        out: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        lane.waiting.append(Waiting(producer, batch, size, out))
        if lane.pump is None:
            lane.pump = asyncio.create_task(self._pump(lane), name=f"lane-{topic}-{partition}")
        return self._track(lanes, lane, size, topic, out)

    def _held(self, lanes: TopicLanes, lane: Lane, size: int) -> None:
        if not lane.held:
            lanes.busy += 1
            lane.since = time.monotonic()
        before = lane.held
        lane.held += size
        bound = self.max_held_bytes
        if bound and before <= bound < lane.held:
            lanes.full += 1

    def _handed(self, size: int, fut: asyncio.Future[Any]) -> None:
        self.unsettled_bytes += size
        fut.add_done_callback(functools.partial(self._unsettle, size))

    def _unsettle(self, size: int, _: asyncio.Future[Any]) -> None:
        self.unsettled_bytes -= size
        self._room.set()

    def _track(
        self, lanes: TopicLanes, lane: Lane, size: int, topic: str, fut: asyncio.Future[Any]
    ) -> asyncio.Future[Any]:
        unsettled = self.unsettled.get(topic)
        if unsettled is None:
            unsettled = self.unsettled[topic] = set()
        unsettled.add(fut)
        fut.add_done_callback(functools.partial(self._settled, lanes, lane, size, unsettled))
        return fut

    def _settled(
        self,
        lanes: TopicLanes,
        lane: Lane,
        size: int,
        unsettled: set[asyncio.Future[Any]],
        fut: asyncio.Future[Any],
    ) -> None:
        unsettled.discard(fut)
        self._release(lanes, lane, size)

    def _release(self, lanes: TopicLanes, lane: Lane, size: int) -> None:
        """A batch of `size` bytes left the lane (settled, or never handed over): progress."""
        bound = self.max_held_bytes
        if bound and lane.held > bound >= lane.held - size:
            lanes.full -= 1
        lane.held -= size
        lane.since = time.monotonic()
        if not lane.held:
            lanes.busy -= 1

    async def _pump(self, lane: Lane) -> None:
        """Hand the lane's waiting batches over in order, each once aiokafka took the one before."""
        try:
            while lane.waiting:
                w = lane.waiting[0]
                if w.out.done():  # its flush failed meanwhile (`abandon`): its rows go again
                    lane.waiting.popleft()
                    continue
                while self.unsettled_bytes and self.unsettled_bytes + w.size > self.max_unsettled_bytes:
                    self._room.clear()
                    await self._room.wait()
                try:
                    await wait_taken(w.producer, lane.topic, lane.partition)
                    if w.out.done():  # abandoned while it waited: never handed over
                        lane.waiting.popleft()
                        continue
                    fut = await w.producer.send_batch(w.batch, lane.topic, partition=lane.partition)
                except Exception as exc:  # e.g. KafkaTimeoutError, or a replaced producer's error
                    lane.waiting.popleft()
                    if not w.out.done():
                        w.out.set_exception(exc)
                    continue
                lane.waiting.popleft()
                self._handed(w.size, fut)
                fut.add_done_callback(functools.partial(_copy, w.out))
        finally:
            lane.pump = None
            while lane.waiting:  # cancelled (the sink closes): their flushes are retried
                lane.waiting.popleft().out.cancel()

    def abandon(self, topic: str, futs: list[asyncio.Future[Any]]) -> None:
        """A flush failed and its rows will be queued again: its batches still waiting in lanes
        are never handed over (sent later, they would land beside the new copy)."""
        lanes = self._topics.get(topic)
        if lanes is None:
            return
        ids = {id(f) for f in futs}
        for lane in lanes.lanes:
            for w in lane.waiting:
                if id(w.out) in ids and not w.out.done():
                    w.out.cancel()  # `_settled` releases its bytes; the pump drops it

    def held_back(self, topic: str, keyed: bool) -> int | None:
        """A partition of `topic` stalled while holding more than `max_held_bytes`, or None.
        Unkeyed rows go around stalled partitions, so for them only when every one is stalled."""
        if metrics.MULTIPROCESS:
            self._refresh_gauges()
        lanes = self._topics.get(topic)
        if lanes is None or not lanes.full:
            return None
        now = time.monotonic()
        stall_s = self.stall_s
        if not keyed and any(not lane.stalled(now, stall_s) for lane in lanes.lanes):
            return None
        bound = self.max_held_bytes
        for lane in lanes.lanes:
            if lane.held > bound and lane.stalled(now, stall_s):
                return lane.partition
        return None

    def count(self, state: str) -> int:
        """Partitions stalled now (`stalled`), or stalled and over `max_held_bytes` (`full`)."""
        now = time.monotonic()
        bound = self.max_held_bytes if state == "full" else 0
        return sum(
            1
            for lanes in self._topics.values()
            if lanes.busy
            for lane in lanes.lanes
            if lane.stalled(now, self.stall_s) and (not bound or lane.held > bound)
        )

    def _refresh_gauges(self) -> None:
        """Under --workers: the gauges' values, at most once a second."""
        now = time.monotonic()
        if now - self._gauge_at >= 1.0:
            self._gauge_at = now
            for state in ("stalled", "full"):
                metrics.PARTITIONS_HELD_BACK.labels(state=state).set(self.count(state))

    def forget(self, topics: list[str]) -> None:
        """Forget the lanes of deleted topics (once settled: see `KafkaSink.settle_topics`)."""
        for topic in topics:
            lanes = self._topics.get(topic)
            if lanes is not None and not lanes.busy:
                del self._topics[topic]
            if not self.unsettled.get(topic, True):
                del self.unsettled[topic]

    async def close(self) -> None:
        """Stop the lanes' tasks; the batches still waiting are cancelled (their flushes retry)."""
        pumps = [
            lane.pump for lanes in self._topics.values() for lane in lanes.lanes if lane.pump is not None
        ]
        for pump in pumps:
            pump.cancel()
        for pump in pumps:
            with contextlib.suppress(asyncio.CancelledError):
                await pump


def _copy(out: asyncio.Future[Any], fut: asyncio.Future[Any]) -> None:
    """Settle `out` as `fut` settled."""
    if out.done():
        if not fut.cancelled():
            fut.exception()  # retrieved, or asyncio logs it at GC
    elif fut.cancelled():
        out.cancel()
    elif (exc := fut.exception()) is not None:
        out.set_exception(exc)
    else:
        out.set_result(fut.result())
