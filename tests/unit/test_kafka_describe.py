"""Kafka's answers to the REST proxy's topic reads, as gateway.sinks.kafka_describe reads them."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError

from gateway.sinks.base import SinkUnavailable
from gateway.sinks.kafka_describe import PartitionInfo, broker_ids, describe_topic


class Admin:
    """An admin client answering with fixed Metadata and DescribeConfigs replies."""

    def __init__(self, topic_error: int = 0, config_error: int = 0, fail: bool = False) -> None:
        self.topic_error, self.config_error, self.fail = topic_error, config_error, fail

    async def describe_topics(self, topics: list[str]) -> list[dict[str, Any]]:
        if self.fail:
            raise KafkaConnectionError("down")
        parts = [
            {"error_code": 0, "partition": 1, "leader": 2, "replicas": [2, 1], "isr": [2]},
            {"error_code": 0, "partition": 0, "leader": 1, "replicas": [1, 2], "isr": [1, 2]},
        ]
        return [{"error_code": self.topic_error, "topic": topics[0], "partitions": parts}]

    async def describe_configs(self, resources: list[Any]) -> list[Any]:
        entries = [("cleanup.policy", "compact", False, 1, False, []), ("secret", None, False, 5, True, [])]
        return [SimpleNamespace(resources=[(self.config_error, None, 2, "t", entries)])]

    async def describe_cluster(self) -> dict[str, Any]:
        return {"brokers": [{"node_id": 2}, {"node_id": 1}]}


def test_a_topic_as_kafka_describes_it() -> None:
    info = asyncio.run(describe_topic(Admin(), "t"))
    assert info is not None
    assert info.partitions == (
        PartitionInfo(0, 1, (1, 2), frozenset({1, 2})),
        PartitionInfo(1, 2, (2, 1), frozenset({2})),
    )
    assert info.configs == {"cleanup.policy": "compact"}  # a sensitive value (None) is left out
    assert asyncio.run(broker_ids(Admin())) == [1, 2]


def test_a_missing_topic_is_none_and_other_errors_unavailable() -> None:
    assert asyncio.run(describe_topic(Admin(topic_error=3), "t")) is None
    assert asyncio.run(describe_topic(Admin(config_error=3), "t")) is None
    for admin in (Admin(topic_error=5), Admin(config_error=29), Admin(fail=True)):
        with pytest.raises(SinkUnavailable):
            asyncio.run(describe_topic(admin, "t"))
