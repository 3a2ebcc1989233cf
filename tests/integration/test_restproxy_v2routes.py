"""The REST proxy's v2 routes as Karapace 6.2.0 answers them (issue 24): produce to one partition,
the reads (brokers, a topic from Kafka's metadata and configuration, one partition, `GET /`),
per-record results for records naming missing partitions, and the statuses and codes of
malformed requests. Over real HTTP into the real broker; what was written is read back."""

from __future__ import annotations

import http.client
import json
from typing import Any

from tests.integration.harness import Gateway, Reply, read_topic, unique_name
from tests.integration.test_restproxy import (
    BINARY_V2,
    COLUMNS,
    SHARDS,
    TEXT,
    assert_error,
    b64,
    basic,
    by_position,
    produce,
    total,
)

GOOD = {"id": "x", "n": 1}


def bare_post(gateway: Gateway, path: str, body: Any) -> Reply:
    """A POST with no Content-Type at all (urllib would add a form type)."""
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=60)
    try:
        conn.request("POST", path, json.dumps(body).encode(), headers=basic())
        resp = conn.getresponse()
        return Reply(resp.status, dict(resp.getheaders()), resp.read())
    finally:
        conn.close()


def get(gateway: Gateway, path: str, headers: dict[str, str] | None = None) -> Any:
    return gateway.request("GET", path, key=None, headers=basic() | (headers or {}))


async def test_produce_to_one_partition(gateway: Gateway, kafka: str) -> None:
    name = unique_name("rpp")
    topic = gateway.create_stream(name, TEXT)["topic"]
    records = [{"value": b64("a")}, {"value": b64("b"), "key": b64("k")}]
    for target in (topic, name):
        reply = gateway.request(
            "POST",
            f"/topics/{target}/partitions/2",
            json.dumps({"records": records}),
            key=None,
            headers=basic() | {"Content-Type": BINARY_V2},
        )
        assert reply.status == 200, reply.body
        assert [o["partition"] for o in reply.json()["offsets"]] == [2, 2]
    got = await read_topic(kafka, topic)
    assert [(r.partition, r.json()["message"]) for r in got] == [(2, "a"), (2, "b")] * 2
    assert got[1].key == b"k"
    for partition, code in (("3", 40402), ("-1", 40402), ("x", 404)):
        reply = gateway.request(
            "POST",
            f"/topics/{topic}/partitions/{partition}",
            json.dumps({"records": records}),
            key=None,
            headers=basic() | {"Content-Type": BINARY_V2},
        )
        assert_error(reply, 404, code)
    missing = gateway.request(
        "POST",
        "/topics/no_such_topic/partitions/0",
        json.dumps({"records": records}),
        key=None,
        headers=basic() | {"Content-Type": BINARY_V2},
    )
    assert_error(missing, 404, 40401)
    assert await total(kafka, topic) == 4


async def test_missing_partition_is_answered_in_its_own_entry(gateway: Gateway, kafka: str) -> None:
    name = unique_name("rpe")
    topic = gateway.create_stream(name, COLUMNS)["topic"]
    records = [
        {"value": {"id": "a", "n": 1}},
        {"value": {"id": "b", "n": 2}, "partition": 99},
        {"value": {"id": "c", "n": 3}, "partition": "1"},  # a number as a string: as Karapace
        {"value": {"id": "d", "n": 4}, "partition": -1},  # any partition
    ]
    reply = produce(gateway, topic, {"records": records})
    assert reply.status == 422, reply.body  # Karapace: 422 once a record was not written
    offsets = reply.json()["offsets"]
    assert offsets[1]["partition"] is None and offsets[1]["offset"] is None
    assert offsets[1]["error_code"] == 2 and "partition 99" in offsets[1]["error"]
    assert offsets[2]["partition"] == 1
    got = by_position(await read_topic(kafka, topic))
    assert len(got) == 3
    for i in (0, 2, 3):
        where = offsets[i]
        assert where["error_code"] is None
        assert got[(where["partition"], where["offset"])].json() == records[i]["value"]
    # every record naming a missing partition: 422, nothing written
    reply = produce(gateway, topic, {"records": [{"value": GOOD, "partition": SHARDS}]})
    assert reply.status == 422 and reply.json()["offsets"][0]["error_code"] == 2
    assert await total(kafka, topic) == 3


async def test_malformed_requests_get_karapaces_codes(gateway: Gateway, kafka: str) -> None:
    name = unique_name("rpc")
    topic = gateway.create_stream(name, COLUMNS)["topic"]
    text = gateway.create_stream(unique_name("rpt"), TEXT)["topic"]
    one = {"records": [{"value": GOOD}]}

    # no Content-Type: application/json, whose embedded format is binary
    assert_error(bare_post(gateway, f"/topics/{topic}", one), 400, 400)  # an object: not base64
    reply = bare_post(gateway, f"/topics/{text}", {"records": [{"value": b64("plain")}]})
    assert reply.status == 200, reply.body
    assert [r.json() for r in await read_topic(kafka, text)] == [{"message": "plain"}]
    assert_error(produce(gateway, text, {"records": [{"value": "@@"}]}, BINARY_V2), 400, 400)
    assert_error(produce(gateway, topic, [one]), 400, 400)  # a JSON array
    assert_error(produce(gateway, topic, {"records": {"value": GOOD}}), 400, 400)
    assert_error(produce(gateway, topic, {"records": [GOOD, "x"]}), 400, 400)
    avro = "application/vnd.kafka.avro.v2+json"
    assert_error(produce(gateway, topic, one, avro), 422, 42202)
    assert_error(produce(gateway, topic, {"records": [{"key": 1, "value": GOOD}]}, avro), 422, 42201)
    assert_error(produce(gateway, topic, one | {"value_schema_id": 1}, avro), 415, 415)
    # Accept: nothing JSON → 406, for produce and reads; the usual Accept values pass
    assert_error(produce(gateway, topic, one, headers=basic() | {"Accept": "text/html"}), 406, 406)
    for path in ("/topics", f"/topics/{topic}", f"/topics/{topic}/partitions", "/brokers"):
        assert_error(get(gateway, path, {"Accept": "text/html"}), 406, 406)
    for accept in ("application/vnd.kafka.v2+json", "application/json", "*/*", "text/html, */*;q=0.8"):
        assert get(gateway, "/topics", {"Accept": accept}).status == 200, accept
    assert await total(kafka, topic) == 0
    # schema ids are echoed, as Karapace echoes them
    reply = produce(gateway, topic, one | {"value_schema_id": "5", "key_schema_id": 2})
    assert reply.status == 200, reply.body
    assert (reply.json()["key_schema_id"], reply.json()["value_schema_id"]) == (2, 5)


async def test_reads_from_kafka(gateway: Gateway, kafka: str) -> None:
    name = unique_name("rpd")
    topic = gateway.create_stream(name, COLUMNS, mode="changelog_kv", primary_key="id")["topic"]
    root = gateway.request("GET", "/", key=None)
    assert root.status == 200 and root.json() == {}
    brokers = get(gateway, "/brokers")
    assert brokers.status == 200, brokers.body
    ids = brokers.json()["brokers"]
    assert ids and all(isinstance(b, int) for b in ids)
    described = get(gateway, f"/topics/{name}")
    assert described.status == 200, described.body
    body = described.json()
    assert body["name"] == topic
    configs = body["configs"]
    assert configs["cleanup.policy"] == "compact"  # the stream's own setting, as Kafka holds it
    assert "segment.bytes" in configs and "max.message.bytes" in configs  # Kafka's, not the catalog's
    parts = body["partitions"]
    assert [p["partition"] for p in parts] == list(range(SHARDS))
    for p in parts:
        assert p["leader"] in ids
        assert p["replicas"] == [{"broker": p["leader"], "leader": True, "in_sync": True}]
    assert get(gateway, f"/topics/{topic}/partitions").json() == parts
    one = get(gateway, f"/topics/{topic}/partitions/1")
    assert one.status == 200 and one.json() == parts[1]
    assert_error(get(gateway, f"/topics/{topic}/partitions/{SHARDS}"), 404, 40402)
    assert_error(get(gateway, f"/topics/{topic}/partitions/x"), 404, 404)
    assert_error(get(gateway, "/topics/no_such_topic"), 404, 40403)
    assert_error(get(gateway, "/topics/no_such_topic/partitions"), 404, 40401)
    assert_error(get(gateway, "/topics/no_such_topic/partitions/0"), 404, 40401)
    assert_error(gateway.request("GET", "/brokers", key=None), 401, 40101)


def test_reads_can_be_used_cross_origin(gateway: Gateway) -> None:
    """A page's preflight for the reads gets its answer, not 403 (the gateway allows any origin
    by default, as its ingest routes)."""
    name = unique_name("rpo")
    topic = gateway.create_stream(name, COLUMNS)["topic"]
    origin = {"Origin": "https://app.example", "Access-Control-Request-Method": "GET"}
    for path in ("/topics", f"/topics/{topic}/partitions", f"/topics/{topic}/partitions/0", "/brokers"):
        pre = gateway.request(
            "OPTIONS", path, key=None, headers=origin | {"Access-Control-Request-Headers": "authorization"}
        )
        assert pre.status == 204, (path, pre.status, pre.body)
        assert "authorization" in pre.headers["Access-Control-Allow-Headers"].lower()
        reply = get(gateway, path, {"Origin": "https://app.example"})
        assert reply.status == 200, (path, reply.body)
        assert reply.headers["Access-Control-Allow-Origin"] == "*"
