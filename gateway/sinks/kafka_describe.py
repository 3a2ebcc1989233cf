"""What Kafka says of a topic and of the cluster: partitions with leader, replicas and in-sync
replicas (Metadata), a topic's configuration (DescribeConfigs), the broker ids. For the REST
proxy's reads; each call asks Kafka, bounded by `DESCRIBE_WAIT_S`."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from gateway.sinks.base import SinkUnavailable

DESCRIBE_WAIT_S = 5.0
UNKNOWN_TOPIC = 3


@dataclass(frozen=True, slots=True)
class PartitionInfo:
    """One partition: its leader (-1: none) and replica broker ids, and which are in sync."""

    partition: int
    leader: int
    replicas: tuple[int, ...]
    isr: frozenset[int]


@dataclass(frozen=True, slots=True)
class TopicInfo:
    """A topic as Kafka describes it (partitions in order)."""

    partitions: tuple[PartitionInfo, ...]
    configs: dict[str, str]


async def _asked(call: Any, what: str) -> Any:
    try:
        async with asyncio.timeout(DESCRIBE_WAIT_S):
            return await call
    except (KafkaError, OSError, TimeoutError) as exc:
        raise SinkUnavailable(f"Kafka did not describe {what}: {type(exc).__name__}") from exc


def _partition(p: dict[str, Any]) -> PartitionInfo:
    return PartitionInfo(
        p["partition"], p["leader"], tuple(p["replicas"]), frozenset(p.get("isr") or p.get("isr_nodes") or ())
    )


async def describe_topic(admin: Any, topic: str) -> TopicInfo | None:
    """The topic's partitions and configuration; None when Kafka has no such topic."""
    (meta,) = await _asked(admin.describe_topics([topic]), f"topic {topic}")
    if meta["error_code"] == UNKNOWN_TOPIC:
        return None
    if meta["error_code"] != 0 or not meta["partitions"]:  # e.g. no leader yet: retry later
        raise SinkUnavailable(f"Kafka did not describe topic {topic}: error {meta['error_code']}")
    parts = tuple(sorted((_partition(p) for p in meta["partitions"]), key=lambda p: p.partition))
    responses = await _asked(
        admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)]), f"topic {topic}"
    )
    configs: dict[str, str] = {}
    for resp in responses:
        for code, _message, _kind, _name, entries in resp.resources:
            if code == UNKNOWN_TOPIC:
                return None
            if code != 0:
                raise SinkUnavailable(f"Kafka did not describe the configs of topic {topic}: error {code}")
            configs.update({e[0]: e[1] for e in entries if e[1] is not None})
    return TopicInfo(parts, configs)


async def broker_ids(admin: Any) -> list[int]:
    """The ids of the cluster's brokers, ascending."""
    cluster = await _asked(admin.describe_cluster(), "the cluster")
    return sorted(b["node_id"] for b in cluster["brokers"])
