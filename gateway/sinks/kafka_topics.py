"""Kafka topic administration: a stream's topic and quarantine topic, created, altered, deleted.

Shares the Kafka sink's admin client (`KafkaSink.admin`), and waits for the sink's batches in
flight to a topic before deleting it (`KafkaSink.settle_topics`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiokafka.admin import NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, for_code

from gateway.catalog.model import Stream
from gateway.sinks.base import SinkUnavailable, TopicRefused

if TYPE_CHECKING:
    from gateway.sinks.kafka import KafkaSink

TOPIC_ALREADY_EXISTS = 36
UNKNOWN_TOPIC = 3
# Kafka's answers to a topic change that retrying cannot fix: invalid topic, partitions,
# replication factor, replica assignment, config, request; policy violation.
PERMANENT = frozenset({17, 37, 38, 39, 40, 42, 44})


def refused(name: str, code: int, message: str | None) -> Exception:
    """The error for Kafka's `code` on topic `name`: TopicRefused when permanent, else
    SinkUnavailable (the broker's message stays in these exceptions: logs only, never replies)."""
    kind = for_code(code).__name__
    if code in PERMANENT:
        return TopicRefused(f"Kafka refused topic {name}: {kind}")
    return SinkUnavailable(f"could not change topic {name}: {kind} {message or ''}")


def topic_configs(stream: Stream, min_insync: int = 0) -> dict[str, str]:
    """The topic settings a stream implies: retention, compaction for `*_kv` modes and compacted
    streams, and `min_insync` (capped at the stream's replication; 0: the broker's default)
    in-sync replicas."""
    cfg = {
        "retention.ms": str(stream.logstore_retention_ms if stream.logstore_retention_ms > 0 else -1),
        "retention.bytes": str(
            stream.logstore_retention_bytes if stream.logstore_retention_bytes > 0 else -1
        ),
    }
    if stream.keyed or stream.compacted:
        cfg["cleanup.policy"] = "compact"
    if min_insync > 0:
        cfg["min.insync.replicas"] = str(min(min_insync, stream.replication_factor))
    return cfg


def quarantine_configs(stream: Stream, min_insync: int = 0) -> dict[str, str]:
    """The quarantine topic keeps the stream's retention, never compaction (its records are unkeyed)."""
    cfg = topic_configs(stream, min_insync)
    cfg.pop("cleanup.policy", None)
    return cfg


async def create_topics(admin: Any, stream: Stream, min_insync: int = 0) -> None:
    """Create the stream's topic and its quarantine topic; existing topics are kept as they are."""
    topics = [
        NewTopic(
            name=name,
            num_partitions=stream.shards,
            replication_factor=stream.replication_factor,
            topic_configs=cfg,
        )
        for name, cfg in (
            (stream.topic, topic_configs(stream, min_insync)),
            (stream.quarantine_topic, quarantine_configs(stream, min_insync)),
        )
    ]
    if admin is None:  # a request that arrived while the sink is still connecting
        raise SinkUnavailable("Kafka is not connected yet")
    try:
        resp = await admin.create_topics(topics)
    except KafkaError as exc:
        raise SinkUnavailable(f"could not create topic {stream.topic}: {exc}") from exc
    for name, code, *rest in resp.topic_errors:
        if code not in (0, TOPIC_ALREADY_EXISTS):
            raise refused(name, code, rest[0] if rest else None)


class KafkaTopics:
    """TopicAdmin for Kafka."""

    def __init__(self, sink: KafkaSink) -> None:
        self._sink = sink

    async def ensure_topic(self, stream: Stream) -> None:
        """Create the stream's topic and its quarantine topic; existing topics are kept as they are."""
        await create_topics(self._sink.admin, stream, self._sink.min_insync_replicas)

    async def delete_topic(self, stream: Stream) -> None:
        """Delete the stream's topic and its quarantine topic once their batches in flight have
        settled; missing topics are not an error."""
        admin = self._sink.admin
        if admin is None:
            raise SinkUnavailable("Kafka is not connected yet")
        await self._sink.settle_topics([stream.topic, stream.quarantine_topic])
        try:
            resp = await admin.delete_topics([stream.topic, stream.quarantine_topic])
        except KafkaError as exc:
            raise SinkUnavailable(f"could not delete topic {stream.topic}: {exc}") from exc
        for name, code, *_ in resp.topic_error_codes:
            if code not in (0, UNKNOWN_TOPIC):
                raise SinkUnavailable(f"could not delete topic {name}: error {code}")
        self._sink.forget_topics([stream.topic, stream.quarantine_topic])

    async def update_topic(self, stream: Stream) -> None:
        """Set the retention of both topics. AlterConfigs replaces a topic's whole configuration,
        so every setting the stream implies is sent (a quarantine topic may be missing: skipped)."""
        min_insync = self._sink.min_insync_replicas
        resources = [
            ConfigResource(ConfigResourceType.TOPIC, stream.topic, topic_configs(stream, min_insync)),
            ConfigResource(
                ConfigResourceType.TOPIC, stream.quarantine_topic, quarantine_configs(stream, min_insync)
            ),
        ]
        admin = self._sink.admin
        if admin is None:
            raise SinkUnavailable("Kafka is not connected yet")
        try:
            responses = await admin.alter_configs(resources)
        except KafkaError as exc:
            raise SinkUnavailable(f"could not alter topic {stream.topic}: {exc}") from exc
        for resp in responses:
            for code, message, _kind, name in resp.resources:
                if code and not (code == UNKNOWN_TOPIC and name == stream.quarantine_topic):
                    raise refused(name, code, message)
