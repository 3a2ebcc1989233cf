"""The time-series data-source API over real HTTP into the real broker: 204 only once written, upsert
keys on a compacted topic, archived data sources, and every error with its exact `detail`."""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest
from aiokafka.partitioner import murmur2

from tests.integration.harness import (
    ADMIN_KEY,
    Gateway,
    Reply,
    end_offsets,
    http,
    read_topic,
    topic_config_becomes,
    unique_name,
)

DS_COLUMNS = [
    {"name": "timestamp", "type": "int64"},
    {"name": "name", "type": "string"},
    {"name": "value", "type": "float64"},
]
EXAMPLE = [
    {"timestamp": 1718841600, "name": "orders", "value": 42},
    {"timestamp": 1718845200, "name": "orders", "value": 51},
    {"timestamp": 1718848800, "name": "orders", "value": 47},
    {"timestamp": 1718852400, "name": "orders", "value": 63},
]


def create_source(gateway: Gateway, **fields: Any) -> dict[str, Any]:
    return gateway.create_stream(
        unique_name("ds"), DS_COLUMNS, mode="versioned_kv", primary_key="timestamp, name", **fields
    )


def ingest(
    gateway: Gateway, body: Any, key: str | None = ADMIN_KEY, headers: dict[str, str] | None = None
) -> Reply:
    h = {"Content-Type": "application/json", **(headers or {})}
    if key is not None:
        h["Authorization"] = f"Bearer {key}"
    return http("POST", gateway.url + "/v1/data_sources/ingest", body, headers=h)


def detail(reply: Reply, status: int) -> str:
    assert reply.status == status, (reply.status, reply.body)
    assert reply.headers["Content-Type"].startswith("application/json")
    body = reply.json()
    assert list(body) == ["detail"], body
    text: str = body["detail"]
    return text


@pytest.fixture(scope="module")
def source(gateway: Gateway) -> dict[str, Any]:
    return create_source(gateway)


async def test_example_request_is_204_and_written(gateway: Gateway, kafka: str) -> None:
    created = create_source(gateway, shards=3)
    reply = ingest(gateway, {"data_source": created["name"], "records": EXAMPLE})
    assert reply.status == 204 and reply.body == b""
    assert "Content-Type" not in reply.headers
    records = await read_topic(kafka, created["topic"])  # 204 means already acknowledged
    assert sorted((r.json() for r in records), key=lambda v: v["timestamp"]) == [
        {**e, "value": float(e["value"])} for e in EXAMPLE
    ]
    for r in records:
        v = r.json()
        assert r.key == json.dumps([v["timestamp"], v["name"]], separators=(",", ":")).encode()
        assert r.partition == (murmur2(r.key) & 0x7FFFFFFF) % 3


async def test_upsert_same_key_same_partition_on_compacted_topic(gateway: Gateway, kafka: str) -> None:
    created = create_source(gateway, shards=3)
    name, topic = created["name"], created["topic"]
    first = [{"timestamp": 1718841600, "name": s, "value": 1} for s in ("a", "b", "c", "d")]
    again = [{"timestamp": 1718841600, "name": s, "value": 2.5} for s in ("a", "b", "c", "d")]
    assert ingest(gateway, {"data_source": name, "records": first}).status == 204
    assert ingest(gateway, {"data_source": name, "records": again}).status == 204  # a retry
    by_key: dict[bytes, list[Any]] = {}
    for r in await read_topic(kafka, topic):
        assert r.key is not None
        by_key.setdefault(r.key, []).append(r)
    assert sorted(by_key) == [f'[1718841600,"{s}"]'.encode() for s in ("a", "b", "c", "d")]
    for records in by_key.values():
        assert len(records) == 2 and records[0].partition == records[1].partition
        assert [r.json()["value"] for r in sorted(records, key=lambda r: r.offset)] == [1.0, 2.5]
    await topic_config_becomes(kafka, topic, {"cleanup.policy": "compact"})


async def test_gzip_and_other_key_headers(gateway: Gateway, kafka: str, source: dict[str, Any]) -> None:
    before = sum((await end_offsets(kafka, source["topic"])).values())
    body = gzip.compress(json.dumps({"records": EXAMPLE[:2], "data_source": source["name"]}).encode())
    assert ingest(gateway, body, headers={"Content-Encoding": "gzip"}).status == 204
    assert (
        ingest(
            gateway,
            {"data_source": source["name"], "records": EXAMPLE[2:]},
            key=None,
            headers={"X-Api-Key": ADMIN_KEY},
        ).status
        == 204
    )
    assert ingest(gateway, {"data_source": source["name"], "records": []}).status == 204
    assert sum((await end_offsets(kafka, source["topic"])).values()) == before + 4


async def test_errors_have_the_documents_details(
    gateway: Gateway, kafka: str, source: dict[str, Any]
) -> None:
    name, topic = source["name"], source["topic"]
    before = sum((await end_offsets(kafka, topic)).values())
    good = {"data_source": name, "records": EXAMPLE}
    assert detail(ingest(gateway, good, key=None), 401) == "Missing access token."
    assert detail(ingest(gateway, good, key="wrong"), 401) == "Invalid access token."
    assert (
        detail(ingest(gateway, {"data_source": "no_such_source", "records": EXAMPLE}), 404)
        == "Data source not found."
    )
    plain = gateway.create_stream(unique_name("ds"), DS_COLUMNS)  # append mode: not a data source
    assert detail(ingest(gateway, {"data_source": plain["name"], "records": EXAMPLE}), 404) == (
        f"Data source not found. Stream {plain['name']!r} is not a data source: it must be in "
        "versioned_kv mode with primary key (timestamp, name)."
    )
    bad = [dict(e) for e in EXAMPLE]
    bad[3]["value"] = "63"
    assert (
        detail(ingest(gateway, {"data_source": name, "records": bad}), 422)
        == "records[3].value: Expected `float`, got `str`"
    )
    del bad[3]["value"]
    assert (
        detail(ingest(gateway, {"data_source": name, "records": bad}), 422)
        == "records[3].value: Object missing required field `value`"
    )
    bad[3] = {"timestamp": 1.5, "name": "x", "value": 1}
    assert (
        detail(ingest(gateway, {"data_source": name, "records": bad}), 422)
        == "records[3].timestamp: Expected `int`, got `float`"
    )
    assert (
        detail(ingest(gateway, {"records": EXAMPLE}), 422)
        == "data_source: Object missing required field `data_source`"
    )
    assert (
        detail(ingest(gateway, {"data_source": name, "records": {"a": 1}}), 422)
        == "records: Expected `array`, got `object`"
    )
    # the name leads the body: looked up before the rest is read (an unknown one is 404 at once)
    assert detail(ingest(gateway, f'{{"data_source": "{name}", "records": ['), 400).startswith(
        "body: not valid JSON"
    )
    assert detail(ingest(gateway, '{"data_source": "x", "records": ['), 404) == "Data source not found."
    scoped = gateway.request(
        "POST", "/api/v1beta2/apikeys", {"permissions": ["DATASOURCE:APPEND:another_source"]}
    ).json()["api_key"]
    # a data source outside the token's scope is not found, as a missing one (issue 20: the
    # contract has no 403, and a 403 told the token the data source existed)
    assert detail(ingest(gateway, good, key=scoped), 404) == "Data source not found."
    assert sum((await end_offsets(kafka, topic)).values()) == before, "a rejected request wrote"


async def test_archived_is_409_until_unarchived(gateway: Gateway, kafka: str) -> None:
    created = create_source(gateway)
    name, topic = created["name"], created["topic"]
    patch = gateway.request("PATCH", f"/api/v1beta2/streams/{name}", {"archived": True})
    assert patch.status == 200 and patch.json()["archived"] is True
    reply = ingest(gateway, {"data_source": name, "records": EXAMPLE})
    assert detail(reply, 409) == "Data source is archived."
    assert sum((await end_offsets(kafka, topic)).values()) == 0
    patch = gateway.request("PATCH", f"/api/v1beta2/streams/{name}", {"archived": False})
    assert patch.status == 200 and patch.json()["archived"] is False
    assert ingest(gateway, {"data_source": name, "records": EXAMPLE}).status == 204
    assert len(await read_topic(kafka, topic)) == 4
