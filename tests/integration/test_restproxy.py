"""The Kafka REST Proxy dialect over real HTTP into the real broker: every reply's partitions and
offsets are compared with the records read back from Kafka (keys, values, headers included)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from gateway.sinks.kafka import partition_for_key
from tests.integration.harness import (
    ADMIN_KEY,
    Gateway,
    Record,
    Reply,
    end_offsets,
    read_topic,
    unique_name,
)

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "restproxy"
JSON_V2 = "application/vnd.kafka.json.v2+json"
BINARY_V2 = "application/vnd.kafka.binary.v2+json"
COLUMNS = [{"name": "id", "type": "string"}, {"name": "n", "type": "int32"}]
TEXT = [{"name": "message", "type": "string"}]
SHARDS = 3  # the module's gateway runs with --default-shards 3
VERSION_1 = ("schema-version", b"1")  # the header every record of a new stream carries


def basic(key: str = ADMIN_KEY, user: str = "client") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{key}".encode()).decode()}


def produce(
    gateway: Gateway, topic: str, body: Any, ctype: str = JSON_V2, headers: dict[str, str] | None = None
) -> Reply:
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    return gateway.request(
        "POST", f"/topics/{topic}", data, key=None, headers=(headers or basic()) | {"Content-Type": ctype}
    )


def b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def by_position(records: list[Record]) -> dict[tuple[int, int], Record]:
    return {(r.partition, r.offset): r for r in records}


def assert_error(reply: Reply, status: int, code: int) -> str:
    assert reply.status == status, (reply.status, reply.body)
    body = reply.json()
    assert set(body) == {"error_code", "message"} and body["error_code"] == code, body
    message: str = body["message"]
    return message


async def total(kafka: str, topic: str) -> int:
    return sum((await end_offsets(kafka, topic)).values())


async def test_v2_json_keys_partitions_headers_match_kafka(gateway: Gateway, kafka: str) -> None:
    name = unique_name("rp")
    topic = gateway.create_stream(name, COLUMNS)["topic"]
    records = [
        {"value": {"id": "a", "n": 1}},
        {"key": "k1", "value": {"id": "b", "n": 2}},
        {"partition": 2, "value": {"id": "c", "n": 3}, "headers": [{"name": "trace", "value": b64("t-1")}]},
        {"key": {"user": 7}, "partition": 0, "value": {"id": "d", "n": 4}},
        {"key": "k1", "value": {"id": "e", "n": 5}},
    ]
    reply = produce(gateway, topic, {"records": records})
    assert reply.status == 200, reply.body
    assert reply.headers["Content-Type"].startswith("application/vnd.kafka.v2+json")
    body = reply.json()
    assert body["key_schema_id"] is None and body["value_schema_id"] is None
    offsets = body["offsets"]
    assert len(offsets) == len(records)
    assert all(o["error_code"] is None and o["error"] is None for o in offsets)
    got = by_position(await read_topic(kafka, topic))
    assert len(got) == len(records)
    for rec, where in zip(records, offsets, strict=True):
        kafka_rec = got[(where["partition"], where["offset"])]
        assert kafka_rec.json() == rec["value"]
        key = rec.get("key")
        assert kafka_rec.key == (None if key is None else json.dumps(key, separators=(",", ":")).encode())
        # the record's own headers, in order, then the stream's schema version (one merged list)
        assert kafka_rec.headers == [
            (h["name"], base64.b64decode(h["value"])) for h in rec.get("headers", [])
        ] + [VERSION_1]
    assert offsets[2]["partition"] == 2 and offsets[3]["partition"] == 0
    assert offsets[1]["partition"] == partition_for_key(b'"k1"', SHARDS) == offsets[4]["partition"]
    assert offsets[4]["offset"] > offsets[1]["offset"]  # same key: same partition, in order


async def test_v2_binary_by_stream_name_and_content_types(gateway: Gateway, kafka: str) -> None:
    name = unique_name("rpb")
    topic = gateway.create_stream(name, TEXT)["topic"]
    sent: list[tuple[str, str | None]] = []
    for i, ctype in enumerate(
        [
            BINARY_V2,
            "application/vnd.kafka.v2+json",
            "application/json",
            "application/vnd.kafka.binary.v1+json; charset=utf-8",
        ]
    ):
        records = [
            {"key": b64(f"key{i}"), "value": b64(f"héllo {i}")},
            {"value": b64(f"bye {i}"), "partition": 1},
        ]
        reply = produce(gateway, name, {"records": records}, ctype)  # addressed by stream name
        assert reply.status == 200, (ctype, reply.body)
        offsets = reply.json()["offsets"]
        assert offsets[1]["partition"] == 1
        sent += [(f"héllo {i}", f"key{i}"), (f"bye {i}", None)]
        got = by_position(await read_topic(kafka, topic))
        for where, rec in zip(offsets, records, strict=True):
            r = got[(where["partition"], where["offset"])]
            assert r.json() == {"message": base64.b64decode(rec["value"]).decode()}
            assert r.key == (base64.b64decode(rec["key"]) if "key" in rec else None)
    assert await total(kafka, topic) == len(sent)


async def test_refusals_write_nothing(gateway: Gateway, kafka: str) -> None:
    name = unique_name("rpx")
    topic = gateway.create_stream(name, COLUMNS)["topic"]
    good = {"id": "x", "n": 1}
    msg = assert_error(
        produce(gateway, topic, {"records": [{"value": good}, {"value": {"id": "y", "n": "no"}}]}), 422, 42205
    )
    assert "row 1" in msg and "'n'" in msg
    assert_error(produce(gateway, topic, {"records": [{"value": good}, {"value": None}]}), 422, 42205)
    msg = assert_error(produce(gateway, topic, {"records": [{"value": b64("text")}]}, BINARY_V2), 422, 42206)
    assert "one string column" in msg
    assert_error(produce(gateway, topic, {"records": [{"value": "@@@"}]}, BINARY_V2), 400, 400)
    big = [{"name": "h", "value": b64(b"x" * (1 << 20))}]  # value fits a batch, headers do not
    msg = assert_error(
        produce(gateway, topic, {"records": [{"value": good}, {"value": good, "headers": big}]}), 413, 413
    )
    assert "record 1" in msg
    assert_error(produce(gateway, topic, {"records": []}), 422, 422)
    assert_error(produce(gateway, topic, {"rows": [good]}), 422, 422)
    assert_error(produce(gateway, topic, b"{not json"), 400, 400)
    protobuf = "application/vnd.kafka.protobuf.v2+json"  # Karapace: values need their schema first
    assert_error(produce(gateway, topic, {"records": [{"value": good}]}, protobuf), 422, 42202)
    assert_error(
        produce(gateway, topic, {"records": [{"value": good}], "value_schema": "x"}, protobuf), 415, 415
    )
    assert_error(produce(gateway, topic, {"records": [{"value": good}]}, "text/plain"), 415, 415)
    assert (
        assert_error(produce(gateway, "no_such_topic", {"records": [{"value": good}]}), 404, 40401)
        == "Topic not found."
    )
    reply = produce(gateway, topic, {"records": [{"value": good}]}, headers=basic("wrong-key"))
    assert_error(reply, 401, 40101)
    assert reply.headers["WWW-Authenticate"].startswith("Basic")
    assert await total(kafka, topic) == 0


async def test_v2_quarantine_answers_each_invalid_record(gateway: Gateway, kafka: str) -> None:
    name = unique_name("rpq")
    created = gateway.create_stream(name, COLUMNS)
    records = [
        {"value": {"id": "a", "n": 1}},
        {"key": "k", "value": {"id": "b", "n": "two"}},
        {"value": {"id": "c", "n": 3}, "partition": 1},
    ]
    reply = gateway.request(
        "POST",
        f"/topics/{name}?quarantine=true",
        json.dumps({"records": records}),
        key=None,
        headers=basic() | {"Content-Type": JSON_V2},
    )
    assert reply.status == 200, reply.body
    offsets = reply.json()["offsets"]
    assert offsets[1]["partition"] is None and offsets[1]["offset"] is None
    assert offsets[1]["error_code"] == 42205 and "'n'" in offsets[1]["error"]
    assert offsets[2]["partition"] == 1
    got = by_position(await read_topic(kafka, created["topic"]))
    assert len(got) == 2
    for i in (0, 2):
        where = offsets[i]
        assert where["error_code"] is None
        assert got[(where["partition"], where["offset"])].json() == records[i]["value"]
    (bad,) = await read_topic(kafka, created["topic"] + "-quarantine")
    assert json.loads(bad.json()["row_text"]) == records[1]["value"]
    assert bad.json()["error"]["row"] == 1


async def test_keyed_stream_refuses_record_keys(gateway: Gateway, kafka: str) -> None:
    name = unique_name("rpk")
    topic = gateway.create_stream(name, COLUMNS, mode="changelog_kv", primary_key="id")["topic"]
    assert_error(
        produce(gateway, topic, {"records": [{"key": "z", "value": {"id": "a", "n": 1}}]}), 422, 42206
    )
    reply = produce(gateway, topic, {"records": [{"value": {"id": "a", "n": 1}}]})
    assert reply.status == 200, reply.body
    where = reply.json()["offsets"][0]
    (rec,) = await read_topic(kafka, topic)
    assert (rec.partition, rec.offset, rec.key) == (where["partition"], where["offset"], b"a")


async def test_scopes_and_management_reads(gateway: Gateway) -> None:
    mine, other = unique_name("rpm"), unique_name("rpo")
    mine_topic = gateway.create_stream(mine, COLUMNS)["topic"]
    other_topic = gateway.create_stream(other, COLUMNS)["topic"]
    made = gateway.request(
        "POST",
        "/api/v1beta2/apikeys",
        {"name": unique_name("k"), "permissions": [f"DATASOURCE:APPEND:{mine}"]},
    )
    assert made.status == 201, made.body
    key = made.json()["api_key"]
    listed = gateway.request("GET", "/topics", key=None, headers=basic(key))
    assert listed.status == 200 and listed.json() == [mine_topic]
    assert other_topic in gateway.request("GET", "/topics", key=None, headers=basic()).json()
    # Karapace's codes: 40403 for the topic, 40401 for its partitions
    assert_error(gateway.request("GET", f"/topics/{other_topic}", key=None, headers=basic(key)), 404, 40403)
    for path in (f"/topics/{other_topic}/partitions", f"/topics/{other_topic}/partitions/0"):
        assert_error(gateway.request("GET", path, key=None, headers=basic(key)), 404, 40401)
    topic = gateway.request("GET", f"/topics/{mine}", key=None, headers={"X-Api-Key": key})
    assert topic.status == 200, topic.body
    assert topic.json()["name"] == mine_topic
    assert [p["partition"] for p in topic.json()["partitions"]] == list(range(SHARDS))
    assert "retention.ms" in topic.json()["configs"]
    parts = gateway.request("GET", f"/topics/{mine_topic}/partitions", key=None, headers=basic(key, user=""))
    assert [p["partition"] for p in parts.json()] == list(range(SHARDS))
    # produce to a topic the key may not see: 40401, as the reads (issue 20: 403 told the key
    # the topic existed, 404 that it did not)
    for target in (other_topic, "ingest.no_such_topic"):
        assert_error(
            produce(gateway, target, {"records": [{"value": {"id": "a", "n": 1}}]}, headers=basic(key)),
            404,
            40401,
        )


async def test_v3_records_one_result_each(gateway: Gateway, kafka: str) -> None:
    name = unique_name("rp3")
    topic = gateway.create_stream(name, COLUMNS)["topic"]
    clusters = gateway.request("GET", "/v3/clusters", key=None, headers=basic())
    assert clusters.status == 200, clusters.body
    cluster = clusters.json()["data"][0]["cluster_id"]
    objects = [
        {"value": {"type": "JSON", "data": {"id": "a", "n": 1}}},
        {
            "partition_id": 2,
            "key": {"type": "STRING", "data": "s"},
            "headers": [{"name": "h", "value": b64(b"\x00\x01")}],
            "value": {"type": "JSON", "data": {"id": "b", "n": 2}},
        },
        {"value": {"type": "JSON", "data": {"id": "c", "n": "bad"}}},
        {
            "key": {"type": "BINARY", "data": b64("bk")},
            "value": {"type": "JSON", "data": {"id": "d", "n": 4}},
        },
    ]
    body = "\n".join(json.dumps(o) for o in objects)
    reply = gateway.request(
        "POST",
        f"/v3/clusters/{cluster}/topics/{topic}/records",
        body,
        key=None,
        headers=basic() | {"Content-Type": "application/json"},
    )
    assert reply.status == 200, reply.body
    results = [json.loads(line) for line in reply.body.splitlines()]
    assert [r["error_code"] for r in results] == [200, 200, 400, 200]
    assert "row 2" in results[2]["message"]
    got = by_position(await read_topic(kafka, topic))
    assert len(got) == 3
    for obj, res in zip(objects, results, strict=True):
        if res["error_code"] != 200:
            continue
        assert res["topic_name"] == topic and res["cluster_id"] == cluster
        rec = got[(res["partition_id"], res["offset"])]
        assert rec.json() == obj["value"]["data"]
        key = obj.get("key")
        assert rec.key == (
            None
            if key is None
            else key["data"].encode()
            if key["type"] == "STRING"
            else base64.b64decode(key["data"])
        )
        assert res["key"] == (
            None if rec.key is None else {"type": key["type"] if key else "", "size": len(rec.key)}
        )
        assert rec.headers == [(h["name"], base64.b64decode(h["value"])) for h in obj.get("headers", [])] + [
            VERSION_1
        ]
    assert results[1]["partition_id"] == 2
    other = gateway.request(
        "POST", f"/v3/clusters/nope/topics/{topic}/records", body, key=None, headers=basic()
    )
    assert_error(other, 404, 404)


@pytest.mark.parametrize("route", ["timeplus", "tinybird"])
async def test_results_rows_on_vendor_routes(gateway: Gateway, kafka: str, route: str) -> None:
    name = unique_name("rpr")
    topic = gateway.create_stream(name, COLUMNS)["topic"]
    rows = [{"id": f"r{i}", "n": i} for i in range(5)]
    ndjson = "\n".join(json.dumps(r) for r in rows)
    if route == "timeplus":
        reply = gateway.ingest(name, ndjson, content_type="application/x-ndjson", query="results=rows")
        refused = gateway.ingest(
            name, ndjson, wait=False, content_type="application/x-ndjson", query="results=rows"
        )
    else:
        reply = gateway.request("POST", f"/v0/events?name={name}&wait=true&results=rows", ndjson)
        refused = gateway.request("POST", f"/v0/events?name={name}&results=rows", ndjson)
    assert refused.status == 400, refused.body
    assert reply.status == 200, reply.body
    results = reply.json()["results"]
    got = by_position(await read_topic(kafka, topic))
    assert len(got) == len(rows)
    assert [got[(r["partition"], r["offset"])].json() for r in results] == rows


CASES = {p.stem: json.loads(p.read_text()) for p in sorted(CORPUS.glob("*.json"))}


@pytest.mark.parametrize("example", sorted(CASES))
async def test_documented_examples(gateway: Gateway, kafka: str, example: str) -> None:
    """Each documented request gets the documented reply shape (or the documented difference)."""
    case = CASES[example]
    name = unique_name("doc")
    topic = gateway.create_stream(name, case["columns"])["topic"]
    req, doc = case["request"], case["reply"]
    expect = case.get("gateway", {"status": doc["status"], "body": doc["body"]})
    route = req["path"].format(topic=topic, cluster="ingest-gateway")
    headers = basic() | ({"Content-Type": req["content_type"]} if req["content_type"] else {})
    data = None if req["body"] is None else json.dumps(req["body"])
    reply = gateway.request(req["method"], route, data, key=None, headers=headers)
    assert reply.status == expect["status"], reply.body
    body = json.loads(reply.body.splitlines()[0]) if reply.body else None
    if "written" in case.get("gateway", {}):
        assert await total(kafka, topic) == case["gateway"]["written"]
    if "offsets" in expect["body"] and reply.status != 200:  # records answered one by one
        assert [o["error_code"] for o in body["offsets"]] == [
            o["error_code"] for o in expect["body"]["offsets"]
        ]
        return
    if reply.status != 200:
        assert set(body) == {"error_code", "message"}
        assert body["error_code"] == expect["body"]["error_code"]
        return
    assert set(body) <= set(doc["body"]) | {"message"}
    assert set(body) >= set(doc["body"]), set(doc["body"]) - set(body)  # v3: `timestamp` too
    if "offsets" in doc["body"]:
        assert len(body["offsets"]) == len(req["body"]["records"])
        got = by_position(await read_topic(kafka, topic))
        for entry, rec in zip(body["offsets"], req["body"]["records"], strict=True):
            assert set(doc["body"]["offsets"][0]) <= set(entry)
            assert got[(entry["partition"], entry["offset"])] is not None
            if "partition" in rec:
                assert entry["partition"] == rec["partition"]
