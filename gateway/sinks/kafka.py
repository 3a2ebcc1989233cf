"""The Kafka sink: record batches built directly (create_batch/send_batch), partitions chosen here."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaConnectionError, KafkaError, NodeNotReadyError
from aiokafka.partitioner import murmur2
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.metadata import MetadataRequest
from aiokafka.protocol.types import Array, Boolean, Int16, Int32, Int64, Schema, String

from gateway import metrics
from gateway.catalog.model import Stream
from gateway.sinks.base import SinkUnavailable, TopicStats

log = logging.getLogger(__name__)
TOPIC_ALREADY_EXISTS = 36
METADATA_WAIT_S = 3.0
UNKNOWN_TOPIC = 3
DAY_MS = 86_400_000


def partition_for_key(key: bytes, partitions: int) -> int:
    """The partition Java's default partitioner picks: murmur2 of the key, made positive, mod n."""
    return int((murmur2(key) & 0x7FFFFFFF) % partitions)


def topic_configs(stream: Stream) -> dict[str, str]:
    """The topic settings a stream implies: retention, and compaction for `*_kv` modes."""
    cfg = {
        "retention.ms": str(stream.logstore_retention_ms if stream.logstore_retention_ms > 0 else -1),
        "retention.bytes": str(
            stream.logstore_retention_bytes if stream.logstore_retention_bytes > 0 else -1),
    }
    if stream.keyed:
        cfg["cleanup.policy"] = "compact"
    return cfg


def quarantine_configs(stream: Stream) -> dict[str, str]:
    """The quarantine topic keeps the stream's retention, never compaction (its records are unkeyed)."""
    cfg = topic_configs(stream)
    cfg.pop("cleanup.policy", None)
    return cfg


# DescribeLogDirs v1 (aiokafka has no client call for it): the topic's bytes on each broker's disks.
_STR = String("utf-8")


class _LogDirsResponse(Response):  # type: ignore[misc]
    API_KEY = 35
    API_VERSION = 1
    SCHEMA = Schema(("throttle_time_ms", Int32), ("results", Array(
        ("error_code", Int16), ("log_dir", _STR), ("topics", Array(("name", _STR), ("partitions", Array(
            ("partition_index", Int32), ("partition_size", Int64), ("offset_lag", Int64),
            ("is_future_key", Boolean))))))))


class _LogDirsRequestV1(RequestStruct):  # type: ignore[misc]
    API_KEY = 35
    API_VERSION = 1
    RESPONSE_TYPE = _LogDirsResponse
    SCHEMA = Schema(("topics", Array(("topic", _STR), ("partitions", Array(Int32)))))


class _DescribeLogDirs(Request[_LogDirsRequestV1]):  # type: ignore[misc]
    API_KEY = 35

    def __init__(self, topic: str, partitions: list[int]) -> None:
        self.topics = [(topic, partitions)]

    def build(self, request_struct_class: type[_LogDirsRequestV1]) -> _LogDirsRequestV1:
        return request_struct_class(self.topics)


class KafkaSink:
    """Produces flushes as record batches with an idempotent, acks=all producer."""

    name = "kafka"

    def __init__(self, bootstrap: str, *, batch_max_bytes: int, probe_interval_s: float = 1.0,
                 unreachable_after_s: float = 5.0, max_unsettled_bytes: int = 32 << 20,
                 request_timeout_ms: int = 30_000, compression: str | None = None) -> None:
        self.bootstrap = bootstrap
        self.batch_max_bytes = batch_max_bytes
        self.probe_interval_s = probe_interval_s
        self.unreachable_after_s = unreachable_after_s
        self._last_reply = 0.0  # monotonic time of the last probe reply or delivered batch
        self.request_timeout_ms = request_timeout_ms
        self.compression = compression
        self._producer: Any = None
        self._admin: Any = None
        self._healthy = False
        self._next_partition: dict[str, int] = {}
        self._probe: asyncio.Task[None] | None = None
        self._closing = False
        # Finds the stream that owns a topic (set by the app from the catalog): a topic deleted
        # behind the gateway's back is then recreated instead of failing its flushes forever.
        self.topic_owner: Callable[[str], Stream | None] | None = None
        self._repaired_at: dict[str, float] = {}
        # Batches handed to aiokafka and not yet settled, by topic: a topic is deleted only once
        # its batches have settled, or one still retrying could land in a topic re-created under
        # the same name (a new stream with the old stream's rows).
        self._unsettled: dict[str, set[asyncio.Future[Any]]] = {}
        # aiokafka puts every ready batch for a broker into one Produce request, with no size
        # limit; one larger than the broker's socket.request.max.bytes (100 MiB by default) makes
        # it drop the connection, and aiokafka resends the same request forever. Bounding the
        # bytes handed over and not yet settled bounds every request.
        self.max_unsettled_bytes = max_unsettled_bytes
        self._unsettled_bytes = 0
        self._room = asyncio.Event()

    # ---- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect the producer and the admin client; raise SinkUnavailable when Kafka is down."""
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True,
            max_batch_size=self.batch_max_bytes,
            max_request_size=self.batch_max_bytes + 64 * 1024,
            linger_ms=0, compression_type=self.compression,
            request_timeout_ms=self.request_timeout_ms, client_id="ingest-gateway",
        )
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap,
                                    request_timeout_ms=self.request_timeout_ms,
                                    client_id="ingest-gateway-admin")
        try:
            await producer.start()
            await admin.start()
        except (KafkaError, OSError, asyncio.CancelledError) as exc:  # cancelled: shutdown began
            with contextlib.suppress(Exception):
                await producer.stop()
            with contextlib.suppress(Exception):
                await admin.close()
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise SinkUnavailable(f"Kafka at {self.bootstrap} is unreachable: {exc}") from exc
        self._producer, self._admin = producer, admin
        self._set_healthy(True)
        self._probe = asyncio.create_task(self._probe_loop(), name="kafka-probe")

    async def close(self) -> None:
        """Wait for handed-over batches, then disconnect."""
        self._closing = True
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
        if self._producer is not None:
            await self._producer.stop()
        if self._admin is not None:
            await self._admin.close()

    # ---- health ----------------------------------------------------------------------------
    def available(self) -> bool:
        return self._healthy and self._producer is not None

    def _set_healthy(self, healthy: bool) -> None:
        if healthy != self._healthy:
            # losing Kafka is a warning; finding it (at start or again) is good news
            log.log(logging.INFO if healthy else logging.WARNING, "Kafka at %s is %s",
                    self.bootstrap, "reachable" if healthy else "UNREACHABLE")
        self._healthy = healthy
        metrics.SINK_AVAILABLE.set(1 if healthy else 0)

    async def _probe_loop(self) -> None:
        """Refused or reset connections mark Kafka unreachable at once. A probe that only times
        out does so after `unreachable_after_s` without any reply: a broker busy creating hundreds
        of partitions answers late but works, and 503s would refuse rows it would take."""
        self._last_reply = time.monotonic()
        while not self._closing:
            await asyncio.sleep(self.probe_interval_s)
            try:
                async with asyncio.timeout(max(self.probe_interval_s * 2, 1.0)):
                    await self._probe_once()
            except (KafkaConnectionError, NodeNotReadyError, OSError) as exc:
                metrics.SINK_ERRORS.labels(kind="probe_" + type(exc).__name__).inc()
                self._set_healthy(False)
            except (KafkaError, TimeoutError) as exc:
                metrics.SINK_ERRORS.labels(kind="probe_" + type(exc).__name__).inc()
                if time.monotonic() - self._last_reply >= self.unreachable_after_s:
                    self._set_healthy(False)
            else:
                self._last_reply = time.monotonic()
                self._set_healthy(True)

    async def _probe_once(self) -> None:
        """One Metadata request for *no* topics: the broker must answer, but the reply stays tiny
        (asking for all topics costs ~20 ms of CPU per probe on a broker with hundreds of them)."""
        client = self._producer.client
        node = client.get_random_node()
        if node is None:
            raise KafkaError("no broker known")
        reply = await client.send(node, MetadataRequest([]))
        if not reply.brokers:
            raise KafkaError("the broker lists no brokers")

    # ---- topics ----------------------------------------------------------------------------
    async def ensure_topic(self, stream: Stream) -> None:
        """Create the stream's topic and its quarantine topic; existing topics are kept as they are."""
        topics = [NewTopic(name=name, num_partitions=stream.shards,
                           replication_factor=stream.replication_factor, topic_configs=cfg)
                  for name, cfg in ((stream.topic, topic_configs(stream)),
                                    (stream.quarantine_topic, quarantine_configs(stream)))]
        if self._admin is None:  # a request that arrived while the sink is still connecting
            raise SinkUnavailable("Kafka is not connected yet")
        try:
            resp = await self._admin.create_topics(topics)
        except KafkaError as exc:
            raise SinkUnavailable(f"could not create topic {stream.topic}: {exc}") from exc
        for name, code, *rest in resp.topic_errors:
            if code not in (0, TOPIC_ALREADY_EXISTS):
                message = rest[0] if rest else ""
                raise SinkUnavailable(f"could not create topic {name}: error {code} {message}")

    async def delete_topic(self, stream: Stream) -> None:
        """Delete the stream's topic and its quarantine topic once their batches in flight have
        settled; missing topics are not an error."""
        if self._admin is None:
            raise SinkUnavailable("Kafka is not connected yet")
        await self._settle_topics([stream.topic, stream.quarantine_topic])
        try:
            resp = await self._admin.delete_topics([stream.topic, stream.quarantine_topic])
        except KafkaError as exc:
            raise SinkUnavailable(f"could not delete topic {stream.topic}: {exc}") from exc
        for name, code, *_ in resp.topic_error_codes:
            if code not in (0, UNKNOWN_TOPIC):
                raise SinkUnavailable(f"could not delete topic {name}: error {code}")
        self._next_partition.pop(stream.topic, None)
        self._next_partition.pop(stream.quarantine_topic, None)

    async def update_topic(self, stream: Stream) -> None:
        """Set the retention of both topics. AlterConfigs replaces a topic's whole configuration,
        so every setting the stream implies is sent (a quarantine topic may be missing: skipped)."""
        resources = [ConfigResource(ConfigResourceType.TOPIC, stream.topic, topic_configs(stream)),
                     ConfigResource(ConfigResourceType.TOPIC, stream.quarantine_topic,
                                    quarantine_configs(stream))]
        if self._admin is None:
            raise SinkUnavailable("Kafka is not connected yet")
        try:
            responses = await self._admin.alter_configs(resources)
        except KafkaError as exc:
            raise SinkUnavailable(f"could not alter topic {stream.topic}: {exc}") from exc
        for resp in responses:
            for code, message, _kind, name in resp.resources:
                if code and not (code == UNKNOWN_TOPIC and name == stream.quarantine_topic):
                    raise SinkUnavailable(f"could not alter topic {name}: error {code} {message}")

    async def topic_stats(self, stream: Stream, days: int) -> TopicStats:
        """Rows from the offsets, bytes from DescribeLogDirs, first/last record timestamps, and
        rows per UTC day from the timestamp index (ListOffsets by time)."""
        if self._producer is None:
            raise SinkUnavailable("Kafka is not connected")
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                                    request_timeout_ms=self.request_timeout_ms,
                                    fetch_max_wait_ms=50, client_id="ingest-gateway-stats")
        try:
            await consumer.start()
            return await self._stats(consumer, stream.topic, days)
        except (KafkaError, OSError) as exc:
            raise SinkUnavailable(f"could not read the offsets of {stream.topic}: {exc}") from exc
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()

    async def _stats(self, consumer: Any, topic: str, days: int) -> TopicStats:
        parts = sorted(await self._producer.partitions_for(topic) or ())
        tps = [TopicPartition(topic, p) for p in parts]
        if not tps:
            raise SinkUnavailable(f"topic {topic} has no partitions")
        begin = await consumer.beginning_offsets(tps)
        end = await consumer.end_offsets(tps)
        held = [tp for tp in tps if end[tp] > begin[tp]]
        stats = TopicStats(rows=sum(end[tp] - begin[tp] for tp in tps),
                           nbytes=await self._log_bytes(topic, parts))
        if days > 0:
            today = int(time.time() * 1000) // DAY_MS * DAY_MS
            cuts: list[dict[Any, int]] = []
            for day in range(days - 1, -1, -1):
                found = await consumer.offsets_for_times({tp: today - day * DAY_MS for tp in tps})
                cuts.append({tp: end[tp] if o is None else o.offset for tp, o in found.items()})
            cuts.append(end)
            stats.daily_rows = [sum(cuts[i + 1][tp] - cuts[i][tp] for tp in tps)
                                for i in range(days)]
        if held:
            first = await consumer.offsets_for_times({tp: 0 for tp in held})
            stamps = [o.timestamp for o in first.values() if o is not None]
            stats.earliest_ms = min(stamps) if stamps else None
            # last: once partitions are assigned, fetches queue ahead of other requests
            stats.latest_ms = await self._latest_timestamp(consumer, held, end)
        return stats

    @staticmethod
    async def _latest_timestamp(consumer: Any, held: list[Any], end: dict[Any, int]) -> int | None:
        """The newest timestamp among the last record of each partition (one small fetch each)."""
        consumer.assign(held)
        for tp in held:
            consumer.seek(tp, end[tp] - 1)
        latest: int | None = None
        pending = set(held)
        deadline = time.monotonic() + 5
        while pending and time.monotonic() < deadline:
            got = await consumer.getmany(*pending, timeout_ms=500)
            for tp, records in got.items():
                for r in records:
                    latest = r.timestamp if latest is None else max(latest, r.timestamp)
                if records:
                    pending.discard(tp)
        return latest

    async def _log_bytes(self, topic: str, partitions: list[int]) -> int | None:
        """The topic's size: per partition the largest replica, summed; None if not supported."""
        sizes: dict[int, int] = {}
        try:
            cluster = await self._admin.describe_cluster()
            for broker in cluster["brokers"]:
                resp = await self._admin._send_request_to_node(
                    broker["node_id"], _DescribeLogDirs(topic, partitions))
                for error, _dir, topics in resp.results:
                    for _name, parts in (topics if error == 0 else ()):
                        for index, size, _lag, future in parts:
                            if not future:
                                sizes[index] = max(size, sizes.get(index, 0))
        except (KafkaError, NotImplementedError) as exc:
            log.warning("could not describe the log dirs of %s: %s", topic, exc)
            return None
        return sum(sizes.values())

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
        log.error("topic %s of stream %r is missing in Kafka (deleted behind the gateway's "
                  "back?); recreating it", topic, owner.name)
        metrics.SINK_ERRORS.labels(kind="topic_missing").inc()
        try:
            await self.ensure_topic(owner)
        except SinkUnavailable as exc:
            log.error("%s", exc)

    # ---- producing -------------------------------------------------------------------------
    async def send(self, topic: str, values: list[bytes], keys: list[bytes] | None
                   ) -> asyncio.Future[None]:
        """Pack records into batches (sticky partition for unkeyed rows, murmur2 for keyed ones)."""
        if self._producer is None:
            raise SinkUnavailable("Kafka producer is not connected")
        started = time.perf_counter()
        try:
            n = await self.partition_count(topic)
            if keys is None:
                first = self._next_partition.get(topic, 0) % n
                futures, used = await self._send_spread(topic, values, first, n)
                self._next_partition[topic] = first + used
            else:
                futures = await self._send_keyed(topic, values, keys, n)
        except KafkaError as exc:
            metrics.SINK_ERRORS.labels(kind=type(exc).__name__).inc()
            self._set_healthy(False)
            raise SinkUnavailable(str(exc)) from exc
        return asyncio.ensure_future(self._delivered(futures, started))

    async def _delivered(self, futures: list[asyncio.Future[Any]], started: float) -> None:
        try:
            await asyncio.gather(*futures)
        except KafkaError as exc:
            metrics.SINK_ERRORS.labels(kind=type(exc).__name__).inc()
            self._set_healthy(False)
            raise SinkUnavailable(str(exc)) from exc
        self._last_reply = time.monotonic()
        self._set_healthy(True)
        metrics.PRODUCE_LATENCY.observe(time.perf_counter() - started)

    async def _send_spread(self, topic: str, values: list[bytes], first: int, n: int
                           ) -> tuple[list[asyncio.Future[Any]], int]:
        futures: list[asyncio.Future[Any]] = []
        partition = first
        ts = int(time.time() * 1000)
        batch = self._producer.create_batch()
        append = batch._builder.append  # the C builder; BatchBuilder.append only wraps it
        count = 0
        for value in values:
            if append(count, ts, None, value, []) is None:
                futures.append(await self._ship(batch, count, topic, partition % n))
                partition += 1
                batch = self._producer.create_batch()
                append = batch._builder.append
                count = 0
                append(count, ts, None, value, [])
            count += 1
        if count:
            futures.append(await self._ship(batch, count, topic, partition % n))
            partition += 1
        return futures, partition - first

    async def _send_keyed(self, topic: str, values: list[bytes], keys: list[bytes], n: int
                          ) -> list[asyncio.Future[Any]]:
        by_partition: dict[int, list[int]] = {}
        for i, key in enumerate(keys):
            by_partition.setdefault(partition_for_key(key, n), []).append(i)
        futures: list[asyncio.Future[Any]] = []
        ts = int(time.time() * 1000)
        for partition, indices in by_partition.items():
            batch = self._producer.create_batch()
            count = 0
            for i in indices:
                if batch._builder.append(count, ts, keys[i], values[i], []) is None:
                    futures.append(await self._ship(batch, count, topic, partition))
                    batch = self._producer.create_batch()
                    count = 0
                    batch._builder.append(count, ts, keys[i], values[i], [])
                count += 1
            if count:
                futures.append(await self._ship(batch, count, topic, partition))
        return futures

    async def _ship(self, batch: Any, count: int, topic: str, partition: int
                    ) -> asyncio.Future[Any]:
        batch._relative_offset = count  # what BatchBuilder.append would have counted
        batch.close()
        metrics.BATCH_ROWS.observe(count)
        size = batch.size()
        metrics.BATCH_BYTES.observe(size)
        while self._unsettled_bytes and self._unsettled_bytes + size > self.max_unsettled_bytes:
            self._room.clear()
            await self._room.wait()
        fut: asyncio.Future[Any] = await self._producer.send_batch(batch, topic,
                                                                  partition=partition)
        unsettled = self._unsettled.get(topic)
        if unsettled is None:
            unsettled = self._unsettled[topic] = set()
        unsettled.add(fut)
        self._unsettled_bytes += size
        fut.add_done_callback(functools.partial(self._settled, unsettled, size))
        return fut

    def _settled(self, unsettled: set[asyncio.Future[Any]], size: int,
                 fut: asyncio.Future[Any]) -> None:
        unsettled.discard(fut)
        self._unsettled_bytes -= size
        self._room.set()

    async def _settle_topics(self, topics: list[str]) -> None:
        """Wait until aiokafka has settled (delivered or failed) every batch for `topics`; it
        gives up on a batch after `request_timeout_ms`, so this wait is bounded."""
        batches = {f for t in topics for f in self._unsettled.get(t, ())}
        if batches:
            _, late = await asyncio.wait(batches, timeout=self.request_timeout_ms / 1000 + 5)
            if late:
                raise SinkUnavailable(f"{len(late)} batches for {topics[0]} are still unsettled")
        for t in topics:
            if not self._unsettled.get(t, True):
                del self._unsettled[t]
