"""Pass-through streams over real HTTP into the real broker: every value read back from Kafka is
byte for byte what the client sent (JSON as written, binary decoded, null as a tombstone)."""

from __future__ import annotations

import base64
import json

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from tests.integration.harness import ADMIN_KEY, Gateway, end_offsets, read_topic, unique_name

JSON_V2 = "application/vnd.kafka.json.v2+json"
BINARY_V2 = "application/vnd.kafka.binary.v2+json"
TEXT = [{"name": "message", "type": "string"}]


def _basic() -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"client:{ADMIN_KEY}".encode()).decode()}


def _post(gateway: Gateway, path: str, body: bytes, ctype: str) -> tuple[int, bytes]:
    reply = gateway.request("POST", path, body, key=None, headers=_basic() | {"Content-Type": ctype})
    return reply.status, reply.body


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def _count(kafka: str, topic: str) -> int:
    return sum((await end_offsets(kafka, topic)).values())


async def test_json_values_are_kept_byte_for_byte(gateway: Gateway, kafka: str) -> None:
    name = unique_name("pt")
    stream = gateway.create_stream(name, TEXT, passthrough=True)
    assert stream["passthrough"] is True and stream["compacted"] is False
    assert gateway.request("GET", f"/api/v1beta2/streams/{name}").json()["passthrough"] is True
    values = [
        b'{ "z" :1,   "a":[1 ,2],"unknown" : {"nested":true} }',
        b'[3,  "x" ,null]',
        b'"just a string"',
        b"12.50",
        b'{"message":"fits the columns too"}',
    ]
    body = b'{"records": [' + b", ".join(b'{"value":  ' + v + b"  }" for v in values) + b"]}"
    status, reply = _post(gateway, f"/topics/{stream['topic']}", body, JSON_V2)
    assert status == 200, reply
    offsets = json.loads(reply)["offsets"]
    got = {(r.partition, r.offset): r for r in await read_topic(kafka, stream["topic"])}
    assert len(got) == len(values)
    for value, where in zip(values, offsets, strict=True):
        record = got[(where["partition"], where["offset"])]
        assert record.value == value
        assert record.headers == []  # nothing was validated: no schema-version header


async def test_binary_values_are_the_decoded_bytes(gateway: Gateway, kafka: str) -> None:
    name = unique_name("ptb")
    topic = gateway.create_stream(name, TEXT, passthrough=True)["topic"]
    values = [b"\xff\xfe\x00not utf-8\n\x80", b"", b"\n\n", bytes(range(256))]
    body = json.dumps({"records": [{"value": _b64(v), "key": _b64(b"\x01k")} for v in values]}).encode()
    status, reply = _post(gateway, f"/topics/{topic}", body, BINARY_V2)
    assert status == 200, reply
    offsets = json.loads(reply)["offsets"]
    got = {(r.partition, r.offset): r for r in await read_topic(kafka, topic)}
    assert [got[(o["partition"], o["offset"])].value for o in offsets] == values
    assert {got[(o["partition"], o["offset"])].key for o in offsets} == {b"\x01k"}
    # v3 BINARY and STRING too
    v3 = b"".join(
        json.dumps(r).encode()
        for r in (
            {
                "key": {"type": "BINARY", "data": _b64(b"k3")},
                "value": {"type": "BINARY", "data": _b64(b"\xc3\x28")},
            },
            {"value": {"type": "STRING", "data": "é text"}},
            {"value": {"type": "JSON", "data": {"b": 1, "a": 2}}},
        )
    )
    status, reply = _post(
        gateway, f"/v3/clusters/ingest-gateway/topics/{topic}/records", v3, "application/json"
    )
    assert status == 200, reply
    results = [json.loads(line) for line in reply.splitlines()]
    assert [r["error_code"] for r in results] == [200, 200, 200]
    got = {(r.partition, r.offset): r for r in await read_topic(kafka, topic)}
    assert [got[(r["partition_id"], r["offset"])].value for r in results] == [
        b"\xc3\x28",
        "é text".encode(),
        b'{"b": 1, "a": 2}',
    ]


async def test_tombstones_on_a_compacted_stream(gateway: Gateway, kafka: str) -> None:
    name = unique_name("ptc")
    stream = gateway.create_stream(name, TEXT, passthrough=True, compacted=True)
    topic = stream["topic"]
    assert stream["compacted"] is True
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
    await admin.start()
    try:
        [described] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        configs = {c[0]: c[1] for c in described.resources[0][4]}
        assert configs["cleanup.policy"] == "compact"
    finally:
        await admin.close()
    body = b'{"records":[{"key":"u1","value":{"v" : 1}},{"key":"u1","value":null},{"key":"u2"}]}'
    status, reply = _post(gateway, f"/topics/{topic}", body, JSON_V2)
    assert status == 200, reply
    offsets = json.loads(reply)["offsets"]
    got = {(r.partition, r.offset): r for r in await read_topic(kafka, topic)}
    records = [got[(o["partition"], o["offset"])] for o in offsets]
    assert [(r.key, r.value) for r in records] == [(b'"u1"', b'{"v" : 1}'), (b'"u1"', None), (b'"u2"', None)]
    # binary tombstones, and a v3 record without a value
    body = json.dumps({"records": [{"key": _b64(b"u3"), "value": None}]}).encode()
    status, reply = _post(gateway, f"/topics/{topic}", body, BINARY_V2)
    assert status == 200, reply
    v3 = json.dumps({"key": {"type": "BINARY", "data": _b64(b"u4")}}).encode()
    status, reply = _post(
        gateway, f"/v3/clusters/ingest-gateway/topics/{topic}/records", v3, "application/json"
    )
    assert status == 200 and json.loads(reply)["error_code"] == 200, reply
    assert {(r.key, r.value) for r in await read_topic(kafka, topic)} >= {(b"u3", None), (b"u4", None)}
    # a compacted topic keeps only keyed records: an unkeyed one is refused, nothing written
    before = await _count(kafka, topic)
    status, reply = _post(
        gateway, f"/topics/{topic}", b'{"records":[{"key":"k","value":1},{"value":2}]}', JSON_V2
    )
    assert status == 422 and json.loads(reply)["error_code"] == 42206, reply
    assert await _count(kafka, topic) == before


async def test_null_refused_where_no_tombstone_belongs(gateway: Gateway, kafka: str) -> None:
    plain = gateway.create_stream(unique_name("ptn"), TEXT, passthrough=True)["topic"]
    validated = gateway.create_stream(unique_name("ptv"), TEXT)["topic"]
    for topic in (plain, validated):
        for body, ctype in (
            (b'{"records":[{"value":{"message":"a"}},{"key":"k","value":null}]}', JSON_V2),
            (json.dumps({"records": [{"value": _b64(b"x")}, {"key": _b64(b"k")}]}).encode(), BINARY_V2),
        ):
            status, reply = _post(gateway, f"/topics/{topic}", body, ctype)
            # validated streams keep their answer (42205 for a JSON null, 42206 for a binary one)
            assert status == 422 and json.loads(reply)["error_code"] in (42205, 42206), (topic, reply)
            if topic == plain:
                assert json.loads(reply)["error_code"] == 42206 and b"tombstone" in reply, reply
        assert await _count(kafka, topic) == 0
    v3 = b'{"key":{"type":"JSON","data":"k"}}{"value":{"type":"JSON","data":{"ok":1}}}'
    status, reply = _post(
        gateway, f"/v3/clusters/ingest-gateway/topics/{plain}/records", v3, "application/json"
    )
    assert status == 200, reply
    assert [json.loads(line)["error_code"] for line in reply.splitlines()] == [42206, 200]
    assert [r.value for r in await read_topic(kafka, plain)] == [b'{"ok":1}']


async def test_other_dialects_refuse_a_passthrough_stream(gateway: Gateway, kafka: str) -> None:
    name = unique_name("ptd")
    topic = gateway.create_stream(name, TEXT, passthrough=True)["topic"]
    reply = gateway.request(
        "POST", f"/api/v1beta2/streams/{name}/ingest?format=streaming", '{"message":"a"}\n'
    )
    assert reply.status == 409, reply.body
    assert "pass-through" in reply.json()["message"]
    reply = gateway.request("POST", f"/v0/events?name={name}", '{"message":"a"}\n')  # Tinybird
    assert reply.status == 409, reply.body
    assert await _count(kafka, topic) == 0
    # a definition that cannot be a pass-through stream is a 400
    bad = [
        {
            "name": unique_name("ptk"),
            "columns": TEXT,
            "passthrough": True,
            "mode": "versioned_kv",
            "primary_key": "message",
        },
        {"name": unique_name("ptk"), "columns": TEXT, "compacted": True},
    ]
    for body in bad:
        assert gateway.request("POST", "/api/v1beta2/streams", body).status == 400


def _metric(gateway: Gateway, name: str, stream: str) -> float:
    text = gateway.request("GET", "/metrics", key=None).body.decode()
    prefix = f'{name}{{stream="{stream}"}} '
    return sum(float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix))


async def test_scopes_and_metrics_apply(gateway: Gateway, kafka: str) -> None:
    mine, other = unique_name("pts"), unique_name("pto")
    mine_topic = gateway.create_stream(mine, TEXT, passthrough=True)["topic"]
    other_topic = gateway.create_stream(other, TEXT, passthrough=True)["topic"]
    made = gateway.request(
        "POST",
        "/api/v1beta2/apikeys",
        {"name": unique_name("k"), "permissions": [f"DATASOURCE:APPEND:{mine}"]},
    )
    assert made.status == 201, made.body
    key = made.json()["api_key"]
    body = b'{"records":[{"value":{"any" : "thing"}}, {"value":[1]}]}'
    headers = {"X-Api-Key": key, "Content-Type": JSON_V2}
    refused = gateway.request("POST", f"/topics/{other_topic}", body, key=None, headers=headers)
    assert refused.status == 404 and refused.json()["error_code"] == 40401, refused.body
    assert await _count(kafka, other_topic) == 0
    written = gateway.request("POST", f"/topics/{mine_topic}", body, key=None, headers=headers)
    assert written.status == 200, written.body
    assert [r.value for r in await read_topic(kafka, mine_topic)] in (
        [b'{"any" : "thing"}', b"[1]"],
        [b"[1]", b'{"any" : "thing"}'],  # one request's records may land on two partitions
    )
    assert _metric(gateway, "gateway_rows_accepted_total", mine) == 2
    assert _metric(gateway, "gateway_rows_delivered_total", mine) == 2
