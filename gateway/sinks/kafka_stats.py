"""Kafka topic statistics: rows from offsets, bytes from DescribeLogDirs, record timestamps."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import Array, Boolean, Int16, Int32, Int64, Schema, String

from gateway.catalog.model import Stream
from gateway.sinks.base import SinkUnavailable, TopicStats
from gateway.sinks.kafka_stop import stop_quietly

if TYPE_CHECKING:
    from gateway.sinks.kafka import KafkaSink

log = logging.getLogger(__name__)
DAY_MS = 86_400_000


# DescribeLogDirs v1 (aiokafka has no client call for it): the topic's bytes on each broker's disks.
_STR = String("utf-8")


class _LogDirsResponse(Response):  # type: ignore[misc]
    API_KEY = 35
    API_VERSION = 1
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "results",
            Array(
                ("error_code", Int16),
                ("log_dir", _STR),
                (
                    "topics",
                    Array(
                        ("name", _STR),
                        (
                            "partitions",
                            Array(
                                ("partition_index", Int32),
                                ("partition_size", Int64),
                                ("offset_lag", Int64),
                                ("is_future_key", Boolean),
                            ),
                        ),
                    ),
                ),
            ),
        ),
    )


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


POOL_SIZE = 2  # consumers stats calls share: at most this many broker clients, whatever the load
SLOT_WAIT_S = 10.0  # a call waits this long for a free consumer, then 503


class KafkaStats:
    """TopicStatsReader for Kafka: a small pool of consumers shared by every stats call (each
    call holds one for its duration; at most POOL_SIZE exist), and the sink's clients."""

    def __init__(self, sink: KafkaSink, pool_size: int = POOL_SIZE) -> None:
        self._sink = sink
        self._slots = asyncio.Semaphore(pool_size)
        self._idle: list[Any] = []  # started consumers no call holds
        self.made = 0  # consumers started so far (tests check that the pool bounds them)

    async def topic_stats(self, stream: Stream, days: int) -> TopicStats:
        """Rows from the offsets, bytes from DescribeLogDirs, first/last record timestamps, and
        rows per UTC day from the timestamp index (ListOffsets by time)."""
        if self._sink.producer is None:
            raise SinkUnavailable("Kafka is not connected")
        try:
            async with asyncio.timeout(SLOT_WAIT_S):
                await self._slots.acquire()
        except TimeoutError:
            raise SinkUnavailable("every stats consumer stayed busy") from None
        consumer: Any = None
        healthy = False
        try:
            consumer = self._idle.pop() if self._idle else await self._new_consumer()
            stats = await self._stats(consumer, stream.topic, days)
            healthy = True
            return stats
        except (KafkaError, OSError) as exc:
            raise SinkUnavailable(f"could not read the offsets of {stream.topic}: {exc}") from exc
        finally:
            if healthy:
                # no partitions and no topics tracked: an idle consumer keeps no topic that may be
                # deleted (it would log "not found" at each metadata refresh)
                consumer.assign([])
                self._idle.append(consumer)
            elif consumer is not None:  # failed or cancelled: its state is unknown, stop it
                await stop_quietly(consumer)
            self._slots.release()

    async def _new_consumer(self) -> Any:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._sink.bootstrap,
            enable_auto_commit=False,
            request_timeout_ms=self._sink.request_timeout_ms,
            fetch_max_wait_ms=50,
            client_id="ingest-gateway-stats",
        )
        try:
            await consumer.start()
        except BaseException:
            await stop_quietly(consumer)
            raise
        self.made += 1
        return consumer

    async def close(self) -> None:
        """Stop the idle consumers (at shutdown)."""
        idle, self._idle = self._idle, []
        for consumer in idle:
            await stop_quietly(consumer)

    async def _stats(self, consumer: Any, topic: str, days: int) -> TopicStats:
        parts = sorted(await self._sink.producer.partitions_for(topic) or ())
        tps = [TopicPartition(topic, p) for p in parts]
        if not tps:
            raise SinkUnavailable(f"topic {topic} has no partitions")
        begin = await consumer.beginning_offsets(tps)
        end = await consumer.end_offsets(tps)
        held = [tp for tp in tps if end[tp] > begin[tp]]
        stats = TopicStats(
            rows=sum(end[tp] - begin[tp] for tp in tps), nbytes=await self._log_bytes(topic, parts)
        )
        if days > 0:
            today = int(time.time() * 1000) // DAY_MS * DAY_MS
            cuts: list[dict[Any, int]] = []
            for day in range(days - 1, -1, -1):
                found = await consumer.offsets_for_times({tp: today - day * DAY_MS for tp in tps})
                cuts.append({tp: end[tp] if o is None else o.offset for tp, o in found.items()})
            cuts.append(end)
            stats.daily_rows = [sum(cuts[i + 1][tp] - cuts[i][tp] for tp in tps) for i in range(days)]
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
            cluster = await self._sink.admin.describe_cluster()
            for broker in cluster["brokers"]:
                resp = await self._sink.producer.client.send(
                    broker["node_id"], _DescribeLogDirs(topic, partitions)
                )
                for error, _dir, topics in resp.results:
                    for _name, parts in topics if error == 0 else ():
                        for index, size, _lag, future in parts:
                            if not future:
                                sizes[index] = max(size, sizes.get(index, 0))
        except (KafkaError, NotImplementedError) as exc:
            log.warning("could not describe the log dirs of %s: %s", topic, exc)
            return None
        return sum(sizes.values())
