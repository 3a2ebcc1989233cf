"""v3 produce receipts carry `timestamp` (as Confluent's): the timestamp Kafka stores for the
record, read back from the real broker, under CreateTime (the gateway's) and LogAppendTime (the
broker's); a tombstone's receipt has a null value; the embedded sink stamps receipts too."""

from __future__ import annotations

import calendar
import json
import re
import time
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from tests.integration.harness import Gateway, read_topic, topic_config_becomes, unique_name
from tests.integration.test_restproxy import COLUMNS, SHARDS, TEXT, basic, by_position

ISO_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
JSON_CT = {"Content-Type": "application/json"}


def _path(topic: str) -> str:
    return f"/v3/clusters/ingest-gateway/topics/{topic}/records"


def _ms(stamp: str) -> int:
    """A receipt's ISO 8601 timestamp as Kafka's milliseconds since the epoch."""
    assert ISO_MS.fullmatch(stamp), stamp
    whole, frac = stamp[:-1].split(".")
    return calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S")) * 1000 + int(frac)


def _produce(gateway: Gateway, topic: str, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    body = b"\n".join(json.dumps(r).encode() for r in records)
    reply = gateway.request("POST", _path(topic), body, key=None, headers=basic() | JSON_CT)
    assert reply.status == 200, reply.body
    return [json.loads(line) for line in reply.body.splitlines()]


def _keyed(i: int) -> dict[str, Any]:
    return {
        "key": {"type": "STRING", "data": f"k{i}"},
        "value": {"type": "JSON", "data": {"id": f"r{i}", "n": i}},
    }


async def _assert_stored(kafka: str, topic: str, receipts: list[dict[str, Any]]) -> None:
    got = by_position(await read_topic(kafka, topic))
    assert len(got) == len(receipts)
    for r in receipts:
        assert r["error_code"] == 200, r
        assert _ms(r["timestamp"]) == got[(r["partition_id"], r["offset"])].timestamp, r


async def test_receipts_carry_the_timestamp_kafka_stores(gateway: Gateway, kafka: str) -> None:
    """Keyed records over several partitions, records placed by partition_id, and runs in several
    requests (flushes with their own CreateTime): each receipt's timestamp is its record's."""
    topic = gateway.create_stream(unique_name("v3ts"), COLUMNS)["topic"]
    receipts = _produce(gateway, topic, [_keyed(i) for i in range(12)])
    placed = [
        {"partition_id": i % SHARDS, "value": {"type": "JSON", "data": {"id": "p", "n": i}}} for i in range(6)
    ]
    receipts += _produce(gateway, topic, placed)
    receipts += _produce(gateway, topic, [{"value": {"type": "JSON", "data": {"id": "u", "n": 1}}}])
    assert len({r["partition_id"] for r in receipts}) == SHARDS
    await _assert_stored(kafka, topic, receipts)


async def test_log_append_time_is_the_brokers(gateway: Gateway, kafka: str) -> None:
    """A topic that uses LogAppendTime stores the broker's time, not the gateway's: the receipt
    says that one (the produce response carries it)."""
    topic = gateway.create_stream(unique_name("v3la"), COLUMNS)["topic"]
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
    await admin.start()
    try:
        setting = {"message.timestamp.type": "LogAppendTime"}
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, setting)])
    finally:
        await admin.close()
    await topic_config_becomes(kafka, topic, {"message.timestamp.type": "LogAppendTime"})
    receipts = _produce(gateway, topic, [_keyed(i) for i in range(8)])
    await _assert_stored(kafka, topic, receipts)


async def test_tombstone_receipt_has_a_null_value(gateway: Gateway, kafka: str) -> None:
    """Confluent answers a tombstone with `"value": null`, not a JSON value of size 0."""
    stream = gateway.create_stream(unique_name("v3tb"), TEXT, passthrough=True, compacted=True)
    topic = stream["topic"]
    records = [
        {"key": {"type": "STRING", "data": "u1"}, "value": {"type": "JSON", "data": {"v": 1}}},
        {"key": {"type": "STRING", "data": "u1"}},
        {"key": {"type": "STRING", "data": "u2"}, "value": {"type": "JSON", "data": None}},
    ]
    receipts = _produce(gateway, topic, records)
    assert [r["value"] for r in receipts] == [{"type": "JSON", "size": len(b'{"v": 1}')}, None, None]
    assert [r["key"] for r in receipts] == [{"type": "STRING", "size": 2}] * 3
    await _assert_stored(kafka, topic, receipts)


def test_embedded_sink_receipts_are_stamped(tmp_path: Path) -> None:
    """Without Kafka (the development sink stores no timestamps) a receipt carries the time its
    record was acknowledged: between the request's start and its reply."""
    gw = Gateway(tmp_path, None).start()
    try:
        topic = gw.create_stream(unique_name("v3ls"), COLUMNS)["topic"]
        before = int(time.time() * 1000)
        receipts = _produce(gw, topic, [_keyed(i) for i in range(3)])
        after = int(time.time() * 1000)
    finally:
        gw.stop()
    assert [r["offset"] for r in receipts] == [-1] * 3
    assert all(before <= _ms(r["timestamp"]) <= after for r in receipts), receipts
