"""The Kafka REST Proxy's v2 reads, as Karapace answers them: `GET /` (`{}`, for health checks),
`GET /brokers`, `GET /topics/{topic}` (the topic's configuration and its partitions' leaders and
replicas, from Kafka), `GET /topics/{topic}/partitions[/{partition}]`. Same key, scopes and
management rate as `GET /topics`; a topic the key may not see is not found. With the embedded
sink (no Kafka) there are no brokers: the settings the stream implies, leader -1, no replicas."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from aiohttp import web

from gateway.catalog.model import Stream
from gateway.context import gateway_of
from gateway.dialects.common import json_reply
from gateway.dialects.contract import Route
from gateway.dialects.restproxy import (
    SECURITY,
    V2_JSON,
    ProxyErrorOut,
    _visible,
    check_accept,
    partition_number,
    principal,
    render_error,
    v2_reply,
)
from gateway.dialects.restproxy_records import ProxyError, partition_not_found
from gateway.errors import NotFound, Unavailable
from gateway.openapi import Doc, Reply, operation
from gateway.sinks.base import SinkUnavailable
from gateway.sinks.kafka_describe import PartitionInfo, TopicInfo, broker_ids, describe_topic
from gateway.sinks.kafka_topics import topic_configs

__all__ = ["render_error", "routes"]


class ReplicaOut(Doc):
    """One replica of a partition: its broker, whether it leads, whether it is in sync."""

    broker: int
    leader: bool
    in_sync: bool


class PartitionOut(Doc):
    """A partition as v2 lists it: its leader's broker id (-1: none) and its replicas."""

    partition: int
    leader: int = -1
    replicas: list[ReplicaOut] = msgspec.field(default_factory=list)


class TopicOut(Doc):
    """A topic as v2 describes it."""

    name: str
    configs: dict[str, str]
    partitions: list[PartitionOut]


class BrokersOut(Doc):
    """`GET /brokers`: the broker ids."""

    brokers: list[int]


def _admin(request: web.Request) -> Any | None:
    """The Kafka admin client; None with the embedded sink (503 while Kafka is not connected)."""
    sink = gateway_of(request).sink
    if not hasattr(sink, "admin"):
        return None
    admin = sink.admin
    if admin is None:
        raise Unavailable("Kafka is not connected yet", retry_after=1.0)
    return admin


UNKNOWN_TOPIC_RETRIES = (0.05, 0.1, 0.2, 0.4, 0.8)  # seconds between asking Kafka again


def _seen(request: web.Request, code: int) -> Stream:
    """The stream the key may see whose topic (or name) the path names; 404 with `code` else."""
    who = principal(request)
    check_accept(request)
    try:
        return _visible(request, who, request.match_info["topic"])
    except NotFound:
        raise ProxyError(404, code, "Topic not found.") from None


async def _described(request: web.Request, stream: Stream, code: int) -> TopicInfo:
    """The topic as Kafka describes it; as the catalog implies with the embedded sink."""
    admin = _admin(request)
    if admin is None:
        parts = tuple(PartitionInfo(p, -1, (), frozenset()) for p in range(stream.shards))
        return TopicInfo(parts, topic_configs(stream))
    # The catalog knows the stream, so a topic Kafka does not know yet is most likely one just
    # created: a broker applies CreateTopics from the metadata log a moment after it returns.
    for pause in (*UNKNOWN_TOPIC_RETRIES, None):
        try:
            info = await describe_topic(admin, stream.topic)
        except SinkUnavailable as exc:
            raise Unavailable(str(exc), retry_after=1.0) from None
        if info is not None:
            return info
        if pause is not None:
            await asyncio.sleep(pause)
    raise ProxyError(404, code, "Topic not found.")


def _partitions(info: TopicInfo) -> list[PartitionOut]:
    return [
        PartitionOut(p.partition, p.leader, [ReplicaOut(r, r == p.leader, r in p.isr) for r in p.replicas])
        for p in info.partitions
    ]


@operation("Root (Kafka REST Proxy)", tags=("restproxy",), security=(), replies={200: Reply("`{}`.", dict)})
async def root(request: web.Request) -> web.Response:
    """GET /: `{}`, as Karapace answers it (load balancers' health checks); needs no key."""
    return json_reply({})


@operation(
    "List brokers (Kafka REST Proxy v2)",
    tags=("restproxy",),
    error_body=ProxyErrorOut,
    security=SECURITY,
    replies={
        200: Reply(
            "The ids of Kafka's brokers (none with the embedded sink).", BrokersOut, media_type=V2_JSON
        )
    },
    errors={503: "Kafka did not answer."},
)
async def list_brokers(request: web.Request) -> web.Response:
    """GET /brokers."""
    principal(request)
    check_accept(request)
    admin = _admin(request)
    if admin is None:
        return v2_reply(BrokersOut([]))
    try:
        return v2_reply(BrokersOut(await broker_ids(admin)))
    except SinkUnavailable as exc:
        raise Unavailable(str(exc), retry_after=1.0) from None


@operation(
    "Describe a topic (Kafka REST Proxy v2)",
    tags=("restproxy",),
    error_body=ProxyErrorOut,
    security=SECURITY,
    replies={
        200: Reply("The topic's configuration and partitions, from Kafka.", TopicOut, media_type=V2_JSON)
    },
    errors={404: "Topic not found (40403, as Karapace).", 503: "Kafka did not answer."},
)
async def get_topic(request: web.Request) -> web.Response:
    """GET /topics/{topic}."""
    stream = _seen(request, 40403)
    info = await _described(request, stream, 40403)
    return v2_reply(TopicOut(stream.topic, info.configs, _partitions(info)))


@operation(
    "List a topic's partitions (Kafka REST Proxy v2)",
    tags=("restproxy",),
    error_body=ProxyErrorOut,
    security=SECURITY,
    replies={200: Reply("The topic's partitions.", list[PartitionOut], media_type=V2_JSON)},
    errors={404: "Topic not found (40401).", 503: "Kafka did not answer."},
)
async def get_partitions(request: web.Request) -> web.Response:
    """GET /topics/{topic}/partitions."""
    stream = _seen(request, 40401)
    return v2_reply(_partitions(await _described(request, stream, 40401)))


@operation(
    "Describe a partition (Kafka REST Proxy v2)",
    tags=("restproxy",),
    error_body=ProxyErrorOut,
    security=SECURITY,
    replies={200: Reply("The partition's leader and replicas.", PartitionOut, media_type=V2_JSON)},
    errors={
        404: "Topic (40401) or partition (40402; 404 when not a number) not found.",
        503: "Kafka did not answer.",
    },
)
async def get_partition(request: web.Request) -> web.Response:
    """GET /topics/{topic}/partitions/{partition}."""
    stream = _seen(request, 40401)
    number = partition_number(request.match_info["partition"])
    for p in _partitions(await _described(request, stream, 40401)):
        if p.partition == number:
            return v2_reply(p)
    raise partition_not_found()


def routes() -> list[Route]:
    """The v2 reads (and `GET /`)."""
    return [
        ("GET", "/", root),
        ("GET", "/brokers", list_brokers),
        ("GET", "/topics/{topic}", get_topic),
        ("GET", "/topics/{topic}/partitions", get_partitions),
        ("GET", "/topics/{topic}/partitions/{partition}", get_partition),
    ]
