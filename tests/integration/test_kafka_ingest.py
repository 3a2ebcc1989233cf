"""Every ingest format over real HTTP into the real broker, read back from Kafka field by field."""

from __future__ import annotations

import gzip
import json
from typing import Any

from tests.integration.harness import Gateway, end_offsets, known_partitions, read_topic, unique_name

COLUMNS = [
    {"name": "id", "type": "string"},
    {"name": "n", "type": "int64"},
    {"name": "x", "type": "float64", "default": "1.5"},
    {"name": "ok", "type": "bool", "default": "false"},
    {"name": "at", "type": "datetime64(3)", "default": "'2024-01-01T00:00:00Z'"},
    {"name": "tags", "type": "array(string)", "default": "[]"},
    {"name": "attrs", "type": "map(string, int32)", "default": "{}"},
    {"name": "note", "type": "nullable(string)"},
]


def expected(row: dict[str, Any]) -> dict[str, Any]:
    """The value the gateway must write for a row: every column, defaults filled."""
    full = {"x": 1.5, "ok": False, "at": "2024-01-01T00:00:00Z", "tags": [], "attrs": {}, "note": None, **row}
    return {c["name"]: full[c["name"]] for c in COLUMNS}


async def test_create_stream_makes_topic(gateway: Gateway, kafka: str) -> None:
    name = unique_name()
    body = gateway.create_stream(name, COLUMNS, shards=2, description="d")
    assert body["topic"] == f"ingest.{name}"
    assert body["name"] == name and body["shards"] == 2 and body["description"] == "d"
    for f in (
        "columns",
        "created_at",
        "engine",
        "is_external",
        "logstore_retention_bytes",
        "logstore_retention_ms",
        "mode",
        "primary_key",
        "ttl",
        "ttl_expression",
        "column_families",
        "secondary_indexes",
        "last_updated_at",
        "created_by",
    ):
        assert f in body
    assert await known_partitions(kafka, body["topic"]) == {0, 1}
    got = gateway.request("GET", f"/api/v1beta2/streams/{name}").json()
    assert got == body
    listed = gateway.request("GET", "/api/v1beta1/streams").json()
    assert name in [s["name"] for s in listed]


async def test_compact_wait_true_one_record_per_row(gateway: Gateway, kafka: str) -> None:
    name = unique_name()
    topic = gateway.create_stream(name, COLUMNS)["topic"]
    body = {
        "columns": ["id", "n", "tags", "note"],
        "data": [["a", 1, ["t1"], "hi"], ["b", -2, [], None], ["c", 3, ["x", "y"], None]],
    }
    reply = gateway.ingest(name, body)
    assert reply.status == 200, reply.body
    assert reply.json()["rows"] == 3
    records = await read_topic(kafka, topic)
    assert len(records) == 3
    assert all(r.key is None for r in records)
    got = sorted((r.json() for r in records), key=lambda v: v["id"])
    assert got == [
        expected({"id": "a", "n": 1, "tags": ["t1"], "note": "hi"}),
        expected({"id": "b", "n": -2}),
        expected({"id": "c", "n": 3, "tags": ["x", "y"]}),
    ]


async def test_streaming_ndjson_multiline_and_unseparated(gateway: Gateway, kafka: str) -> None:
    name = unique_name()
    topic = gateway.create_stream(name, COLUMNS)["topic"]
    body = (
        '{"id": "a", "n": 1, "at": 1700000000}\n'
        '{\n  "id": "b",\n  "n": 2,\n  "attrs": {"k": 7}\n}\n'
        '{"id": "c", "n": 3}{"id": "d", "n": 4, "ok": true, "x": 2}'
    )
    reply = gateway.ingest(name, body, content_type="application/x-ndjson")
    assert reply.status == 200, reply.body
    got = sorted((r.json() for r in await read_topic(kafka, topic)), key=lambda v: v["id"])
    assert got == [
        expected({"id": "a", "n": 1, "at": "2023-11-14T22:13:20Z"}),
        expected({"id": "b", "n": 2, "attrs": {"k": 7}}),
        expected({"id": "c", "n": 3}),
        expected({"id": "d", "n": 4, "ok": True, "x": 2.0}),
    ]


async def test_format_query_parameter_wins(gateway: Gateway, kafka: str) -> None:
    name = unique_name()
    topic = gateway.create_stream(name, COLUMNS)["topic"]
    reply = gateway.ingest(
        name, '{"id": "a", "n": 1}\n', content_type="application/json", query="format=streaming"
    )
    assert reply.status == 200, reply.body
    reply = gateway.ingest(
        name, '{"id": "b", "n": 2}\n', content_type="application/vnd.timeplus+json;format=streaming"
    )
    assert reply.status == 200, reply.body
    assert sorted(r.json()["id"] for r in await read_topic(kafka, topic)) == ["a", "b"]


async def test_raw_and_lines(gateway: Gateway, kafka: str) -> None:
    name = unique_name()
    topic = gateway.create_stream(name, [{"name": "raw", "type": "string"}])["topic"]
    assert gateway.ingest(name, "one whole\nbody", content_type="text/plain").status == 200
    assert gateway.ingest(name, "l1\r\nl2\nl3\n", content_type="text/plain;format=lines").status == 200
    assert gateway.ingest(name, "q1\nq2", query="format=lines").status == 200
    values = sorted(r.json()["raw"] for r in await read_topic(kafka, topic))
    assert values == sorted(["one whole\nbody", "l1", "l2", "l3", "q1", "q2"])


async def test_gzip_body(gateway: Gateway, kafka: str) -> None:
    name = unique_name()
    topic = gateway.create_stream(name, COLUMNS)["topic"]
    rows = [{"id": f"r{i}", "n": i} for i in range(500)]
    body = gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode())
    reply = gateway.ingest(
        name, body, content_type="application/x-ndjson", headers={"Content-Encoding": "gzip"}
    )
    assert reply.status == 200, reply.body
    got = sorted((r.json() for r in await read_topic(kafka, topic)), key=lambda v: v["n"])
    assert got == [expected(r) for r in rows]


async def test_wait_false_is_202_then_delivered(gateway: Gateway, kafka: str) -> None:
    name = unique_name()
    topic = gateway.create_stream(name, COLUMNS)["topic"]
    for i in range(20):
        body = {"columns": ["id", "n"], "data": [[f"{i}-{j}", j] for j in range(50)]}
        reply = gateway.ingest(name, body, wait=False)
        assert reply.status == 202, reply.body
        assert reply.json()["acknowledged"] is False

    async def total() -> int:
        return sum((await end_offsets(kafka, topic)).values())

    # Delivery happens after the 202; poll the topic's offsets (a condition, not a fixed sleep).
    import asyncio

    deadline = asyncio.get_running_loop().time() + 30
    while await total() < 1000:
        assert asyncio.get_running_loop().time() < deadline, "rows answered 202 never arrived"
        await asyncio.sleep(0.1)
    records = await read_topic(kafka, topic)
    assert len(records) == 1000
    assert len({r.json()["id"] for r in records}) == 1000
    assert len({r.partition for r in records}) > 1, "unkeyed rows should spread over partitions"


async def test_keyed_stream_uses_primary_key(gateway: Gateway, kafka: str) -> None:
    name = unique_name()
    cols = [
        {"name": "timestamp", "type": "int64"},
        {"name": "name", "type": "string"},
        {"name": "value", "type": "float64"},
    ]
    topic = gateway.create_stream(name, cols, mode="versioned_kv", primary_key="timestamp, name", shards=3)[
        "topic"
    ]
    rows = [{"timestamp": 1718841600 + i, "name": f"s{i % 3}", "value": i} for i in range(30)]
    assert (
        gateway.ingest(
            name, "\n".join(json.dumps(r) for r in rows), content_type="application/x-ndjson"
        ).status
        == 200
    )
    records = await read_topic(kafka, topic)
    assert len(records) == 30
    from aiokafka.partitioner import murmur2

    for r in records:
        v = r.json()
        assert r.key == json.dumps([v["timestamp"], v["name"]], separators=(",", ":")).encode()
        assert r.partition == (murmur2(r.key) & 0x7FFFFFFF) % 3, "must match Java's partitioner"


def test_wait_flag_must_be_boolean(gateway: Gateway) -> None:
    name = unique_name()
    gateway.create_stream(name, COLUMNS)
    reply = gateway.request(
        "POST", f"/api/v1beta2/streams/{name}/ingest?wait=maybe", {"columns": ["id", "n"], "data": [["a", 1]]}
    )
    assert reply.status == 400
    assert "wait" in reply.json()["message"]


async def test_readyz_healthz_metrics(gateway: Gateway) -> None:
    assert gateway.request("GET", "/healthz", key=None).status == 200
    ready = gateway.request("GET", "/readyz", key=None)
    assert ready.status == 200 and ready.json()["sink"] == "kafka"
    text = gateway.request("GET", "/metrics", key=None).body.decode()
    for metric in (
        "gateway_http_requests_total",
        "gateway_http_request_duration_seconds",
        "gateway_rows_accepted_total",
        "gateway_queue_rows",
        "gateway_sink_batch_rows",
        "gateway_sink_produce_duration_seconds",
        "gateway_rows_delivered_total",
    ):
        assert metric in text, metric
