"""The Kafka sink: record batches built directly (create_batch/send_batch), partitions chosen here."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    InvalidProducerEpoch,
    KafkaError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    UnknownProducerId,
)

from gateway import metrics
from gateway.catalog.model import DEFAULT_PARTITIONER, Stream
from gateway.sinks import recordbatch
from gateway.sinks.aiokafka_batch import RecordBatch, abandon, forget_producer_topics
from gateway.sinks.base import Headers, Landed, Lines, OnBatch, RecordMeta, SinkUnavailable
from gateway.sinks.kafka_health import KafkaHealth, check_replication
from gateway.sinks.kafka_topics import create_topics
from gateway.sinks.key_partitions import KeyPartitioner, or_sticky, partition_for_key, partitioner_named
from gateway.sinks.malloc_tuning import keep_request_buffers
from gateway.sinks.partitions import Lanes

log = logging.getLogger(__name__)
METADATA_WAIT_S = 3.0
TopicOwner = Callable[[str], Stream | None]
# The broker refuses the producer's sequence numbers or its id. aiokafka 0.14 never recovers: it
# fails the batch but keeps its sequence counters, so every later batch for the partition is out
# of order too (aio-libs/aiokafka#1017). A gap appears e.g. when a batch waits longer than
# request_timeout_ms for a partition with no leader (a broker restart): aiokafka numbers it, then
# expires it unsent. Only a new producer (new id, sequences from 0) gets out of this.
SEQUENCE_ERRORS = (OutOfOrderSequenceNumber, UnknownProducerId, InvalidProducerEpoch, ProducerFenced)


class ProducerReplaced(KafkaError):  # type: ignore[misc]
    """The batch belonged to a producer that was replaced before Kafka acknowledged it."""


Shipped = tuple["asyncio.Future[Any]", Sequence[int]]  # a batch's future, the records it holds


__all__ = ["KafkaSink", "partition_for_key"]


def stored_time(log_append_time: int | None, create_time: int) -> int:
    """The timestamp Kafka stores for a batch's records: the broker's LogAppendTime when the
    topic uses it (the produce response carries it), else the CreateTime the gateway set."""
    return create_time if log_append_time is None or log_append_time < 0 else log_append_time


class KafkaSink:
    """Produces flushes as record batches with an idempotent, acks=all producer."""

    name = "kafka"

    def __init__(
        self,
        bootstrap: str,
        *,
        batch_max_bytes: int,
        probe_interval_s: float = 1.0,
        unreachable_after_s: float = 5.0,
        max_unsettled_bytes: int = 32 << 20,
        request_timeout_ms: int = 30_000,
        compression: str | None = None,
        topic_owner: TopicOwner | None = None,
        replication_factor: int = 1,
        min_insync_replicas: int = 1,
        partition_stall_s: float = 2.0,
        partition_max_bytes: int = 16 << 20,
    ) -> None:
        self.bootstrap = bootstrap
        self.batch_max_bytes = batch_max_bytes
        self.probe_interval_s = probe_interval_s
        # Kafka's availability (/readyz, 503s): judged per topic partition, with hysteresis
        self.replication_factor = replication_factor
        self.min_insync_replicas = min_insync_replicas
        self.health = KafkaHealth(
            bootstrap,
            interval_s=probe_interval_s,
            unreachable_after_s=unreachable_after_s,
            min_insync=min_insync_replicas,
        )
        self.request_timeout_ms = request_timeout_ms
        self.compression = compression
        self._producer: Any = None
        self._admin: Any = None
        self._probe: asyncio.Task[None] | None = None
        self._closing = False
        # Finds the stream that owns a topic (from the catalog): a topic deleted behind the
        # gateway's back is then recreated instead of failing its flushes forever.
        self.topic_owner = topic_owner
        self._repaired_at: dict[str, float] = {}
        # each partition's batches, so that a stuck one holds back only its own
        self.lanes = Lanes(
            max_unsettled_bytes=max_unsettled_bytes,
            stall_s=partition_stall_s,
            max_held_bytes=partition_max_bytes,
        )
        self._renewal: asyncio.Task[None] | None = None
        # topic → its stream's key partitioner, for streams not on the default (murmur2)
        self._partitioners: dict[str, KeyPartitioner] = {}
        self.encoder = recordbatch.ENCODER  # native or pure Python: the same bytes

    def _new_producer(self) -> Any:
        return AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks="all",
            enable_idempotence=True,
            max_batch_size=self.batch_max_bytes,
            max_request_size=self.batch_max_bytes + 64 * 1024,
            linger_ms=0,
            compression_type=self.compression,
            request_timeout_ms=self.request_timeout_ms,
            client_id="ingest-gateway",
        )

    # ---- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect the producer and the admin client; raise SinkUnavailable when Kafka is down."""
        keep_request_buffers()
        producer = self._new_producer()
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap,
            request_timeout_ms=self.request_timeout_ms,
            client_id="ingest-gateway-admin",
        )
        try:
            await producer.start()
            await admin.start()
            await check_replication(producer.client, self.replication_factor, self.bootstrap)
        except (KafkaError, OSError, SinkUnavailable, asyncio.CancelledError) as exc:
            with contextlib.suppress(Exception):
                await producer.stop()
            with contextlib.suppress(Exception):
                await admin.close()
            if isinstance(exc, asyncio.CancelledError | SinkUnavailable):  # cancelled: shutdown began
                raise
            raise SinkUnavailable(f"Kafka at {self.bootstrap} is unreachable: {exc}") from exc
        self._producer, self._admin = producer, admin
        recordbatch.announce()
        self.health.set(True)
        self._probe = asyncio.create_task(
            self.health.run(lambda: self._producer.client, self._topics_in_use), name="kafka-probe"
        )
        self._probe.add_done_callback(self._probe_ended)

    async def close(self) -> None:
        """Wait for handed-over batches, then disconnect."""
        self._closing = self.health.closing = True
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
        if self._renewal is not None:
            self._renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewal
        await self.lanes.close()
        if self._producer is not None:
            await self._producer.stop()
        if self._admin is not None:
            await self._admin.close()

    @property
    def producer(self) -> Any:
        """The connected producer (None before `start`), shared with KafkaStats."""
        return self._producer

    @property
    def admin(self) -> Any:
        """The connected admin client (None before `start`), shared with KafkaTopics/KafkaStats."""
        return self._admin

    def forget_topics(self, topics: list[str]) -> None:
        """Forget what is kept per topic for deleted topics: their partition lanes, repair
        times, and the producer's metadata interest (forget_producer_topics)."""
        self.lanes.forget(topics)
        for topic in topics:
            self._repaired_at.pop(topic, None)
            self._partitioners.pop(topic, None)
        if self._producer is not None:
            forget_producer_topics(self._producer, topics)

    def stream_changed(self, name: str, before: Stream | None, after: Stream | None) -> None:
        """Follow the catalog (a stream watcher): the partitioner of each stream's keys."""
        if after is None:
            return  # forget_topics drops it once the stream's queues are gone
        if after.partitioner == DEFAULT_PARTITIONER:
            self._partitioners.pop(after.topic, None)
        else:
            self._partitioners[after.topic] = partitioner_named(after.partitioner, name)

    # ---- health ----------------------------------------------------------------------------
    def available(self) -> bool:
        return self.health.available and self._producer is not None

    def held_back(self, topic: str, keyed: bool) -> int | None:
        """A partition of `topic` that rows need and that is stalled with more than
        --partition-max-bytes (see `Lanes.held_back`), or None."""
        return self.lanes.held_back(topic, keyed)

    def _topics_in_use(self) -> list[str]:
        """The topics the producer has metadata for: those the streams write to."""
        return list(self._producer.client.cluster.topics())

    def _probe_ended(self, task: asyncio.Task[None]) -> None:
        """The probe ends only at close; anything else would freeze the health state, so say it."""
        if self._closing:
            return
        metrics.SINK_ERRORS.labels(kind="probe_ended").inc()
        exc = None if task.cancelled() else task.exception()
        log.error(
            "the Kafka probe stopped before close (%s); Kafka outages go unnoticed now",
            "cancelled" if exc is None else f"{type(exc).__name__}: {exc}",
        )

    # ---- topics ----------------------------------------------------------------------------
    async def partition_count(self, topic: str) -> int:
        """How many partitions the topic has (from the producer's metadata cache)."""
        parts = self._producer.client.cluster.partitions_for_topic(topic)
        if not parts:
            try:  # not cached: ask Kafka, but not for aiokafka's full request timeout
                async with asyncio.timeout(METADATA_WAIT_S):
                    parts = await self._producer.partitions_for(topic)
            except (TimeoutError, KafkaError):
                parts = None
            if not parts:
                await self._recreate(topic)
                raise SinkUnavailable(f"topic {topic} does not exist in Kafka")
        return len(parts)

    async def _recreate(self, topic: str) -> None:
        """Recreate a missing topic whose stream is in the catalog (at most every few seconds)."""
        owner = self.topic_owner(topic) if self.topic_owner is not None else None
        now = time.monotonic()
        if owner is None or now - self._repaired_at.get(topic, -1e9) < METADATA_WAIT_S:
            return
        self._repaired_at[topic] = now
        log.error(
            "topic %s of stream %r is missing in Kafka (deleted behind the gateway's back?); recreating it",
            topic,
            owner.name,
        )
        metrics.SINK_ERRORS.labels(kind="topic_missing").inc()
        try:
            await create_topics(self._admin, owner, self.min_insync_replicas)
        except SinkUnavailable as exc:
            log.error("%s", exc)

    # ---- producing -------------------------------------------------------------------------
    async def send(
        self,
        topic: str,
        values: list[bytes],
        keys: list[bytes] | None,
        meta: RecordMeta | None = None,
        headers: list[Headers] | None = None,
        on_batch: OnBatch | None = None,
    ) -> asyncio.Future[Landed | None]:
        """Pack records into batches (sticky partition for unkeyed rows, the stream's partitioner
        for keyed ones, or each record's own key, partition and headers when `meta` is given);
        `headers`, when given without `meta`, holds each record's headers."""

        async def route(producer: Any, n: int, ts: int) -> list[Shipped]:
            if meta is not None:
                return await self._send_placed(producer, topic, values, meta, n, ts)
            if keys is None:
                return await self._send_spread(producer, topic, self._value_batches(values, headers, ts), n)
            return await self._send_keyed(producer, topic, values, keys, n, ts, headers)

        return await self._produce(topic, route, on_batch)

    async def send_lines(
        self, topic: str, lines: Lines, on_batch: OnBatch | None = None
    ) -> asyncio.Future[Landed | None]:
        """Pack unkeyed records given as runs of lines into batches, partitions as `send`."""

        async def route(producer: Any, n: int, ts: int) -> list[Shipped]:
            return await self._send_spread(producer, topic, self._line_batches(lines, ts), n)

        return await self._produce(topic, route, on_batch)

    async def _produce(
        self,
        topic: str,
        route: Callable[[Any, int, int], Awaitable[list[Shipped]]],
        on_batch: OnBatch | None = None,
    ) -> asyncio.Future[Landed | None]:
        """Ship a flush's batches (`route` builds and ships them, given the producer and the
        topic's partition count, and the records' timestamp) through one producer; the future
        settles once all did. Every record of the flush gets the same CreateTime."""
        if self._producer is None:
            raise SinkUnavailable("Kafka producer is not connected")
        started = time.perf_counter()
        producer = self._producer  # a whole flush goes through one producer
        ts = int(time.time() * 1000)
        try:
            n = await self.partition_count(topic)
            self.lanes.of(topic, n)
            shipped = await route(producer, n, ts)
        except KafkaError as exc:
            self._failed(producer, exc)
            raise SinkUnavailable(str(exc)) from exc
        return self._delivered(producer, shipped, started, on_batch, topic=topic, ts=ts)

    def _delivered(
        self,
        producer: Any,
        shipped: list[Shipped],
        started: float,
        on_batch: OnBatch | None = None,
        *,
        topic: str = "",
        ts: int = -1,
    ) -> asyncio.Future[Landed | None]:
        """A future of the flush: where its batches landed once all are acknowledged, or the
        first failure. Done callbacks instead of a task gathering them: with many quiet streams
        every request is a flush of its own, and a task plus `gather` per flush cost more. On a
        failure the flush's batches still waiting in `topic`'s lanes are abandoned (never sent):
        its rows are queued again. `ts`: the CreateTime the flush's records carry."""
        out: asyncio.Future[Landed | None] = asyncio.get_running_loop().create_future()
        pending = len(shipped)

        def settled(fut: asyncio.Future[Any]) -> None:
            nonlocal pending
            if out.done():  # an earlier batch failed: the flush is settled already
                if not fut.cancelled():
                    fut.exception()  # retrieved, or asyncio logs it at GC
                return
            if fut.cancelled():
                out.cancel()
                return
            exc = fut.exception()
            if exc is not None:
                if isinstance(exc, KafkaError):
                    self._failed(producer, exc)
                    failure = SinkUnavailable(str(exc))
                    failure.__cause__ = exc
                    exc = failure
                out.set_exception(exc)
                self.lanes.abandon(topic, [f for f, _ in shipped])
                return
            pending -= 1
            if not pending:
                out.set_result(self._landed(shipped, started, ts))

        def told(indices: Sequence[int], fut: asyncio.Future[Any]) -> None:
            try:
                if (
                    on_batch is not None
                    and not out.done()
                    and not fut.cancelled()
                    and fut.exception() is None
                ):
                    md = fut.result()
                    on_batch(md.partition, md.offset, indices, stored_time(md.timestamp, ts))
            finally:  # the flush settles even if reporting a batch failed
                settled(fut)

        if not shipped:
            out.set_result(self._landed(shipped, started, ts))
        for fut, indices in shipped:
            fut.add_done_callback(settled if on_batch is None else functools.partial(told, indices))
        return out

    def _landed(self, shipped: list[Shipped], started: float, ts: int) -> Landed:
        self.health.delivered()
        metrics.PRODUCE_LATENCY.observe(time.perf_counter() - started)
        # the batch future's metadata carries the batch's base offset (aiokafka MessageBatch.done)
        # and the broker's LogAppendTime (-1 under CreateTime)
        mds = [fut.result() for fut, _ in shipped]
        return Landed(
            [(md.partition, md.offset, indices) for md, (_, indices) in zip(mds, shipped, strict=True)],
            [stored_time(md.timestamp, ts) for md in mds],
        )

    def _failed(self, producer: Any, exc: KafkaError) -> None:
        """Count a failed send; unless Kafka answered (sequence errors) or the producer was
        replaced (its rows go again through the new one), the health probe judges Kafka now."""
        metrics.SINK_ERRORS.labels(kind=type(exc).__name__).inc()
        if isinstance(exc, SEQUENCE_ERRORS):
            self._renew(producer, exc)
        elif not isinstance(exc, ProducerReplaced):
            self.health.failed()

    # ---- producer renewal ------------------------------------------------------------------
    def _renew(self, producer: Any, exc: KafkaError) -> None:
        """Replace `producer` with a new one, once however many of its batches fail."""
        if producer is self._producer and self._renewal is None and not self._closing:
            self._renewal = asyncio.create_task(self._replace(producer, exc), name="kafka-producer-renewal")

    async def _replace(self, old: Any, exc: KafkaError) -> None:
        """Start a new producer (retried until Kafka takes it), switch sends to it, then fail
        every batch the old one holds as retryable: the queues send those rows again through the
        new producer. A batch Kafka had written without acknowledging it is then written twice
        (at-least-once, as after a crash)."""
        metrics.PRODUCER_RESETS.inc()
        log.error(
            "Kafka rejected the producer (%s: %s); starting a new producer and sending its "
            "unacknowledged rows again (duplicates possible)",
            type(exc).__name__,
            exc,
        )
        try:
            for attempt in itertools.count():
                new = self._new_producer()
                try:
                    await new.start()
                    break
                except (KafkaError, OSError) as err:
                    if not attempt:  # once: Kafka being down is logged by the probe already
                        log.warning("a new Kafka producer could not start (%s); retrying", err)
                except BaseException:
                    with contextlib.suppress(Exception):
                        await new.stop()
                    raise
                with contextlib.suppress(Exception):
                    await new.stop()
                await asyncio.sleep(self.probe_interval_s)
            self._producer = new
        finally:
            self._renewal = None
        abandon(old, ProducerReplaced(f"the producer was replaced after {type(exc).__name__}"))
        try:  # every batch is settled now, so this only closes connections
            async with asyncio.timeout(self.request_timeout_ms / 1000):
                await old.stop()
        except Exception as err:  # the old producer is gone either way
            log.warning("closing the replaced Kafka producer failed: %s", err)

    async def _send_spread(
        self, producer: Any, topic: str, batches: Iterator[RecordBatch], n: int
    ) -> list[Shipped]:
        """Unkeyed batches, each to the partition `Lanes.next_partition` picks: in turn while
        all are idle, else the ones that answer, weighted by what they hold."""
        shipped: list[Shipped] = []
        lanes = self.lanes.of(topic, n)
        start = 0
        for batch in batches:
            count = batch.record_count()
            partition = self.lanes.next_partition(lanes, n)
            shipped.append((await self._ship(producer, batch, topic, partition), range(start, start + count)))
            start += count
        return shipped

    def _value_batches(
        self, values: list[bytes], headers: list[Headers] | None, ts: int
    ) -> Iterator[RecordBatch]:
        start = 0
        while start < len(values):
            batch = RecordBatch.fill(
                values,
                None,
                headers,
                None,
                start,
                ts,
                self.batch_max_bytes,
                encoder=self.encoder,
                compression=self.compression,
            )
            start += batch.record_count()
            yield batch

    def _line_batches(self, lines: Lines, ts: int) -> Iterator[RecordBatch]:
        run = offset = 0
        while run < len(lines.runs):
            batch, run, offset = RecordBatch.fill_lines(
                lines.runs,
                lines.headers,
                run,
                offset,
                ts,
                self.batch_max_bytes,
                encoder=self.encoder,
                compression=self.compression,
            )
            if batch.record_count():  # none when only empty runs were left
                yield batch

    async def _send_keyed(
        self,
        producer: Any,
        topic: str,
        values: list[bytes],
        keys: list[bytes],
        n: int,
        ts: int,
        headers: list[Headers] | None = None,
    ) -> list[Shipped]:
        by_partition: dict[int, list[int]] = {}
        place = self._key_placer(topic, n)
        for i, key in enumerate(keys):
            by_partition.setdefault(place(key, n), []).append(i)
        return await self._send_grouped(producer, topic, values, keys, headers, by_partition, ts)

    def _key_placer(self, topic: str, n: int, sticky: int = -1) -> KeyPartitioner:
        """The topic's key partitioner; a key that chooses none (librdkafka's empty key) goes to
        the sticky partition (`sticky`, or the lanes' next). The default is murmur2 itself: the
        keyed paths cost per record what they did before partitioners were per stream."""
        choose = self._partitioners.get(topic)
        if choose is None:
            return partition_for_key
        if sticky < 0:
            sticky = self.lanes.next_partition(self.lanes.of(topic, n), n)
        return or_sticky(choose, sticky)

    async def _send_placed(
        self, producer: Any, topic: str, values: list[bytes], meta: RecordMeta, n: int, ts: int
    ) -> list[Shipped]:
        """Records with their own partition (or key, or neither: one sticky partition for those)."""
        sticky = self.lanes.next_partition(self.lanes.of(topic, n), n)
        place = self._key_placer(topic, n, sticky)
        by_partition: dict[int, list[int]] = {}
        missing = -1
        for i, (key, partition) in enumerate(zip(meta.keys, meta.partitions, strict=True)):
            if partition < 0:
                partition = place(key, n) if key is not None else sticky
            elif partition >= n:
                # The dialect checked it against the stream's shards, so the topic has fewer
                # partitions than the catalog says (changed behind the gateway's back). Refusing
                # would retry this flush forever; the reply reports where the record went.
                missing = max(missing, partition)
                partition %= n
            by_partition.setdefault(partition, []).append(i)
        if missing >= 0:
            log.warning(
                "topic %s has %d partitions, fewer than records ask for (up to %d): "
                "those went to partition %% %d",
                topic,
                n,
                missing,
                n,
            )
            metrics.SINK_ERRORS.labels(kind="partition_missing").inc()
        return await self._send_grouped(producer, topic, values, meta.keys, meta.headers, by_partition, ts)

    async def _send_grouped(
        self,
        producer: Any,
        topic: str,
        values: list[bytes],
        keys: recordbatch.Keys | None,
        headers: list[Headers] | None,
        by_partition: dict[int, list[int]],
        ts: int,
    ) -> list[Shipped]:
        shipped: list[Shipped] = []
        for partition, indices in by_partition.items():
            start = 0
            while start < len(indices):
                batch = RecordBatch.fill(
                    values,
                    keys,
                    headers,
                    indices,
                    start,
                    ts,
                    self.batch_max_bytes,
                    encoder=self.encoder,
                    compression=self.compression,
                )
                held = indices[start : start + batch.record_count()]
                shipped.append((await self._ship(producer, batch, topic, partition), held))
                start += len(held)
        return shipped

    async def _ship(
        self, producer: Any, batch: RecordBatch, topic: str, partition: int
    ) -> asyncio.Future[Any]:
        metrics.BATCH_ROWS.observe(batch.record_count())
        metrics.BATCH_BYTES.observe(batch.size())
        return await self.lanes.ship(producer, batch, topic, partition)

    async def settle_topics(self, topics: list[str]) -> None:
        """Wait until aiokafka has settled (delivered or failed) every batch for `topics`; it
        gives up on a batch after `request_timeout_ms`, so this wait is bounded."""
        batches = {f for t in topics for f in self.lanes.unsettled.get(t, ())}
        if batches:
            _, late = await asyncio.wait(batches, timeout=self.request_timeout_ms / 1000 + 5)
            if late:
                raise SinkUnavailable(f"{len(late)} batches for {topics[0]} are still unsettled")
