"""The catalog shared by every replica through one compacted Kafka topic (as Schema Registry keeps
`_schemas`).

Layout: topic `_ingest_gateway_catalog` (configurable), 1 partition, `cleanup.policy=compact`,
created when absent. One record per change: key `stream:<name>` or `key:<id>`, value the
msgspec-JSON `Stream` / `ApiKey` (stored as a salted hash), a tombstone (null value) for a delete,
and two headers: `wid` (the write's unique id) and `prev` (the entity's version the writer saw;
empty = "absent").

Reading: every replica reads the partition from the beginning at startup, up to the end offset it
read first; only then is the catalog `loaded` (`/readyz` says 503 until then). A consumer task
keeps tailing the partition and applies each record as it arrives.

Writing: a write appends its record and returns once the tail has read it back, so a replica's
view is always a prefix of the log, in the log's order.

Conflicts (who wins), the rule of `gateway.catalog.changes`, applied in log order by everybody:
a record applies when its key has not been seen yet, or when its `prev` is the key's current
version (the `wid` of the last applied record, "" after a delete); other records are ignored.
So of two replicas creating the same stream at once, the record that comes first in the
partition wins on every replica, and the other writer sees its own record ignored and answers
409. The loser then appends a *repair* (see `gateway.catalog.store`) so that the latest record
of the key is one everybody applied, which is all that compaction keeps. Records without the
headers (written by other tools) count as creates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from gateway.catalog.changes import ABSENT, Change
from gateway.catalog.store import Catalog
from gateway.errors import NotConfirmed, Unavailable, failed
from gateway.sinks.kafka_stop import stop_quietly

log = logging.getLogger(__name__)
DEFAULT_TOPIC = "_ingest_gateway_catalog"
TOPIC_ALREADY_EXISTS = 36
CLIENT_ID = "ingest-gateway-catalog"
RETRY_BACKOFF_MS = 1000  # while Kafka is down, aiokafka logs an error per attempt: not 10 a second


def to_change(offset: int, key: bytes | None, value: bytes | None, headers: Any) -> Change | None:
    """The change a record holds (None for a record without a key)."""
    if key is None:
        return None
    meta = {name: raw.decode(errors="replace") for name, raw in headers or ()}
    return Change(
        key.decode(errors="replace"), value, meta.get("wid") or f"@{offset}", meta.get("prev", ABSENT)
    )


class KafkaLog:
    """A catalog backend on a compacted single-partition topic."""

    def __init__(
        self,
        bootstrap: str,
        topic: str = DEFAULT_TOPIC,
        *,
        replication_factor: int = 1,
        min_insync_replicas: int = 1,
        request_timeout_ms: int = 10_000,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.replication_factor = replication_factor
        self.min_insync_replicas = min(min_insync_replicas, replication_factor)
        self.request_timeout_ms = request_timeout_ms
        self._tp = TopicPartition(topic, 0)
        self._producer: Any = None
        self._consumer: Any = None
        self._follower: asyncio.Task[None] | None = None

    async def start(self, catalog: Catalog) -> None:
        """Create the topic if needed, read it to the end offset found now, then keep following."""
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks="all",
            enable_idempotence=True,
            linger_ms=0,
            client_id=CLIENT_ID,
            request_timeout_ms=self.request_timeout_ms,
            retry_backoff_ms=RETRY_BACKOFF_MS,
        )
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id=CLIENT_ID,
            retry_backoff_ms=RETRY_BACKOFF_MS,
            request_timeout_ms=self.request_timeout_ms,
        )
        try:
            await self._ensure_topic()
            await producer.start()
            await consumer.start()
            consumer.assign([self._tp])
            await consumer.seek_to_beginning(self._tp)
            end = (await consumer.end_offsets([self._tp]))[self._tp]
            while await consumer.position(self._tp) < end:
                await self._read(consumer, catalog, timeout_ms=500)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await producer.stop()
            with contextlib.suppress(Exception):
                await consumer.stop()
            if isinstance(exc, KafkaError | OSError):
                raise Unavailable(
                    f"the catalog topic {self.topic} at {self.bootstrap} is unreachable: {exc!r}"
                ) from exc
            raise
        self._producer, self._consumer = producer, consumer
        log.info("catalog: read %s to offset %d", self.topic, end)
        self._follower = asyncio.create_task(self._follow(catalog), name="catalog-follow")

    async def _ensure_topic(self) -> None:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap, client_id=CLIENT_ID, request_timeout_ms=self.request_timeout_ms
        )
        await admin.start()
        try:
            resp = await admin.create_topics(
                [
                    NewTopic(
                        name=self.topic,
                        num_partitions=1,
                        replication_factor=self.replication_factor,
                        topic_configs={
                            "cleanup.policy": "compact",
                            "min.insync.replicas": str(self.min_insync_replicas),
                        },
                    )
                ]
            )
            for _name, code, *_ in resp.topic_errors:
                if code == 0:
                    log.info("catalog: created topic %s", self.topic)
                elif code != TOPIC_ALREADY_EXISTS:
                    raise Unavailable(f"could not create the catalog topic {self.topic}: error {code}")
        finally:
            await admin.close()

    async def _read(self, consumer: Any, catalog: Catalog, *, timeout_ms: int) -> None:
        batch = await consumer.getmany(self._tp, timeout_ms=timeout_ms)
        for msg in batch.get(self._tp, ()):
            change = to_change(msg.offset, msg.key, msg.value, msg.headers)
            if change is not None:
                catalog.apply(change)

    async def _follow(self, catalog: Catalog) -> None:
        while True:
            try:
                await self._read(self._consumer, catalog, timeout_ms=1000)
            except KafkaError as exc:
                log.warning("catalog: reading %s failed: %r; retrying", self.topic, exc)
                await asyncio.sleep(1.0)

    async def append(self, change: Change) -> None:
        """Produce the change's record (acks=all): 503 when Kafka refuses it, 504 when it does not
        answer in time (the producer keeps the record and may still deliver it)."""
        if self._producer is None:
            raise Unavailable("the catalog is not connected; retry shortly", retry_after=1.0)
        headers = [("wid", change.wid.encode()), ("prev", change.prev.encode())]
        try:
            async with asyncio.timeout(self.request_timeout_ms / 1000):
                await self._producer.send_and_wait(
                    self.topic, value=change.value, key=change.key.encode(), partition=0, headers=headers
                )
        except TimeoutError:
            raise NotConfirmed(
                "Kafka did not acknowledge the catalog change in time; it may still take effect"
            ) from None
        except KafkaError as exc:
            raise failed("could not write to the catalog topic", exc) from exc

    async def close(self) -> None:
        """Stop following and disconnect."""
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
        for client in (self._producer, self._consumer):
            if client is not None:
                await stop_quietly(client)
