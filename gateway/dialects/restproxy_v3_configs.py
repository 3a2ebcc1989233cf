"""`GET /v3/clusters/{id}/topics/{topic}/configs` (the link every v3 topic carries): the topic's
configs as Kafka describes them, the same the v2 topic read answers, as Confluent REST Proxy v3
lists them. The settings the gateway gives the topic are `DYNAMIC_TOPIC_CONFIG`, the rest the
broker's (`DEFAULT_CONFIG`)."""

from __future__ import annotations

from aiohttp import web

from gateway.dialects.common import json_reply
from gateway.dialects.contract import Route
from gateway.dialects.restproxy import (
    CLUSTER_ID,
    SECURITY,
    ClusterListMeta,
    Meta,
    ProxyErrorOut,
    _base,
    render_error,
)
from gateway.dialects.restproxy_reads import _described
from gateway.dialects.restproxy_v3 import _v3_topic
from gateway.openapi import Doc, Reply, operation
from gateway.sinks.kafka_topics import topic_configs

__all__ = ["render_error", "routes"]


class TopicConfigV3(Doc):
    """One topic config."""

    kind: str
    metadata: Meta
    cluster_id: str
    topic_name: str
    name: str
    value: str
    is_default: bool
    is_read_only: bool
    is_sensitive: bool
    source: str
    synonyms: list[dict[str, str]]


class TopicConfigListV3(Doc):
    """`GET /v3/clusters/{id}/topics/{topic}/configs`."""

    kind: str
    metadata: ClusterListMeta
    data: list[TopicConfigV3]


@operation(
    "List a topic's configs (Kafka REST Proxy v3)",
    replies={200: Reply("The topic's configs, from Kafka.", TopicConfigListV3)},
    errors={404: "Cluster or topic not found.", 503: "Kafka did not answer."},
    tags=("restproxy",),
    error_body=ProxyErrorOut,
    security=SECURITY,
)
async def list_topic_configs_v3(request: web.Request) -> web.Response:
    """GET /v3/clusters/{cluster_id}/topics/{topic}/configs."""
    stream = _v3_topic(request)
    configs = (await _described(request, stream, 40401)).configs
    ours = topic_configs(stream)
    url = f"{_base(request)}/v3/clusters/{CLUSTER_ID}/topics/{stream.topic}/configs"
    data = [
        TopicConfigV3(
            "KafkaTopicConfig",
            Meta(f"{url}/{name}", f"crn:///kafka={CLUSTER_ID}/topic={stream.topic}/config={name}"),
            CLUSTER_ID,
            stream.topic,
            name,
            value,
            name not in ours,
            True,
            False,
            "DYNAMIC_TOPIC_CONFIG" if name in ours else "DEFAULT_CONFIG",
            [],
        )
        for name, value in sorted(configs.items())
    ]
    return json_reply(TopicConfigListV3("KafkaTopicConfigList", ClusterListMeta(url), data))


def routes() -> list[Route]:
    """The v3 topic configs read."""
    return [("GET", "/v3/clusters/{cluster_id}/topics/{topic}/configs", list_topic_configs_v3)]
