"""The bus of gateway.limiters.rate_share on Kafka: one topic of one partition that every replica
(and worker) writes its announcements to and reads from its end onwards.

The topic (`--rate-share-topic`, by default the catalog topic's name + `_rates`) is created when absent with
`cleanup.policy=delete` and a minute's retention: an announcement matters for a second or two, so
the topic stays small whatever the traffic. Announcements are sent with acks=1 and not awaited:
one lost only loosens the bound for that interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from gateway.catalog.kafka_log import RETRY_BACKOFF_MS, TOPIC_ALREADY_EXISTS
from gateway.sinks.kafka_stop import stop_quietly

log = logging.getLogger(__name__)
CLIENT_ID = "ingest-gateway-rates"
RETENTION_MS = 60_000


class KafkaUsageBus:
    """Publish to and follow the rate-share topic."""

    def __init__(
        self, bootstrap: str, topic: str, *, replication_factor: int = 1, request_timeout_ms: int = 10_000
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.replication_factor = replication_factor
        self.request_timeout_ms = request_timeout_ms
        self._tp = TopicPartition(topic, 0)
        self._producer: Any = None
        self._consumer: Any = None
        self._follower: asyncio.Task[None] | None = None

    async def start(self, on_message: Callable[[bytes], None]) -> None:
        """Create the topic if needed, connect, and follow it from its end."""
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks=1,
            linger_ms=0,
            client_id=CLIENT_ID,
            request_timeout_ms=self.request_timeout_ms,
            retry_backoff_ms=RETRY_BACKOFF_MS,
        )
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            client_id=CLIENT_ID,
            retry_backoff_ms=RETRY_BACKOFF_MS,
            request_timeout_ms=self.request_timeout_ms,
            fetch_max_wait_ms=100,
        )
        try:
            await self._ensure_topic()
            await producer.start()
            await consumer.start()
            consumer.assign([self._tp])
            await consumer.seek_to_end(self._tp)
            await consumer.position(self._tp)  # fixed now: what is published from here is read
        except BaseException:
            with contextlib.suppress(Exception):
                await producer.stop()
            with contextlib.suppress(Exception):
                await consumer.stop()
            raise
        self._producer, self._consumer = producer, consumer
        self._follower = asyncio.create_task(self._follow(on_message), name="rate-share-follow")
        log.info("rate share: announcing on %s", self.topic)

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
                            "cleanup.policy": "delete",
                            "retention.ms": str(RETENTION_MS),
                            "segment.ms": str(RETENTION_MS),
                        },
                    )
                ]
            )
            for _name, code, *_ in resp.topic_errors:
                if code not in (0, TOPIC_ALREADY_EXISTS):
                    raise KafkaError(f"could not create the rate-share topic {self.topic}: error {code}")
        finally:
            await admin.close()

    async def _follow(self, on_message: Callable[[bytes], None]) -> None:
        while True:
            try:
                batch = await self._consumer.getmany(self._tp, timeout_ms=1000)
            except KafkaError as exc:
                log.warning("rate share: reading %s failed: %r; retrying", self.topic, exc)
                await asyncio.sleep(1.0)
                continue
            for msg in batch.get(self._tp, ()):
                if msg.value is not None:
                    on_message(msg.value)

    async def publish(self, message: bytes) -> None:
        """Hand `message` to the producer (delivery is not awaited; a failure is logged)."""
        delivery = await self._producer.send(self.topic, value=message, partition=0)
        delivery.add_done_callback(_log_failure)

    async def close(self) -> None:
        """Stop following and disconnect."""
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
        for client in (self._producer, self._consumer):
            if client is not None:
                await stop_quietly(client)  # a consumer's stop() lets CancelledError out


def _log_failure(delivery: asyncio.Future[Any]) -> None:
    if not delivery.cancelled() and delivery.exception() is not None:
        log.warning("rate share: an announcement was not delivered: %r", delivery.exception())
