"""Timeplus stream management against the real broker: update (retention reaches the topics),
archiving refused in every dialect, the quarantine topic's life, and stream stats."""

from __future__ import annotations

import asyncio
import datetime
import json
import time
from typing import Any

from tests.integration.harness import (
    ADMIN_KEY,
    Gateway,
    end_offsets,
    http,
    known_partitions,
    topic_config_becomes,
    unique_name,
)

COLUMNS = [
    {"name": "timestamp", "type": "int64"},
    {"name": "name", "type": "string"},
    {"name": "value", "type": "float64"},
]
KV = {"mode": "versioned_kv", "primary_key": "timestamp, name"}


def stream_path(name: str) -> str:
    return f"/api/v1beta2/streams/{name}"


async def test_patch_updates_fields_and_topic_retention(gateway: Gateway, kafka: str) -> None:
    created = gateway.create_stream(unique_name("m"), COLUMNS, description="old", **KV)
    name, topic = created["name"], created["topic"]
    await topic_config_becomes(
        kafka, topic, {"retention.ms": str(7 * 24 * 3600 * 1000), "cleanup.policy": "compact"}
    )
    reply = gateway.request(
        "PATCH",
        stream_path(name),
        {
            "description": "new description",
            "logstore_retention_ms": 3_600_000,
            "logstore_retention_bytes": 1_073_741_824,
            "ttl_expression": "to_datetime(_tp_time) + INTERVAL 28 DAY",
            "columns": created["columns"],
        },
    )  # sent back as is: no new version
    assert reply.status == 200, reply.body
    body = reply.json()
    assert body["description"] == "new description"
    assert body["logstore_retention_ms"] == 3_600_000
    assert body["logstore_retention_bytes"] == 1_073_741_824
    assert body["ttl_expression"] == body["ttl"] == "to_datetime(_tp_time) + INTERVAL 28 DAY"
    assert [c["name"] for c in body["columns"]] == ["timestamp", "name", "value"]
    assert body["schema_version"] == 1
    assert gateway.request("GET", stream_path(name)).json() == body
    config = await topic_config_becomes(
        kafka, topic, {"retention.ms": "3600000", "retention.bytes": "1073741824"}
    )
    assert config["cleanup.policy"] == "compact", "altering retention must keep compaction"
    await topic_config_becomes(
        kafka,
        created["quarantine_topic"],
        {"retention.ms": "3600000", "retention.bytes": "1073741824", "cleanup.policy": "delete"},
    )
    # PUT is an alias; a non-positive retention means unlimited (-1 on the topic)
    reply = gateway.request("PUT", stream_path(name), {"logstore_retention_ms": 0})
    assert reply.status == 200 and reply.json()["description"] == "new description"
    config = await topic_config_becomes(kafka, topic, {"retention.ms": "-1"})
    assert config["cleanup.policy"] == "compact"


def test_patch_errors(gateway: Gateway) -> None:
    name = gateway.create_stream(unique_name("m"), COLUMNS)["name"]
    reply = gateway.request("PATCH", stream_path("no_such_stream"), {"description": "x"})
    assert reply.status == 404 and reply.json()["message"] == "stream 'no_such_stream' does not exist"
    reply = gateway.request("PATCH", stream_path(name), {"archived": "yes"})
    assert reply.status == 400 and "$.archived" in reply.json()["message"]
    reply = gateway.request("PATCH", stream_path(name), "not json")
    assert reply.status == 400
    appender = gateway.request("POST", "/api/v1beta2/apikeys", {"permissions": ["DATASOURCE:APPEND"]}).json()[
        "api_key"
    ]
    reply = gateway.request("PATCH", stream_path(name), {"archived": True}, key=appender)
    assert reply.status == 403
    assert gateway.request("GET", stream_path(name)).json()["archived"] is False


async def test_archived_stream_refuses_rows_in_every_dialect(gateway: Gateway, kafka: str) -> None:
    created = gateway.create_stream(unique_name("m"), COLUMNS, **KV)
    name, topic = created["name"], created["topic"]
    assert gateway.request("PATCH", stream_path(name), {"archived": True}).json()["archived"] is True
    row = {"timestamp": 1718841600, "name": "orders", "value": 1}
    timeplus = gateway.ingest(name, json.dumps(row), content_type="application/x-ndjson")
    assert timeplus.status == 409 and timeplus.json()["message"] == f"stream {name!r} is archived"
    tinybird = http(
        "POST",
        f"{gateway.url}/v0/events?name={name}&wait=true",
        json.dumps(row),
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    )
    assert tinybird.status == 409
    assert tinybird.json()["error"] == f"Data Source {name!r} is archived and accepts no rows"
    source = http(
        "POST",
        f"{gateway.url}/v1/data_sources/ingest",
        {"data_source": name, "records": [row]},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    )
    assert source.status == 409 and source.json() == {"detail": "Data source is archived."}
    assert sum((await end_offsets(kafka, topic)).values()) == 0
    gateway.request("PATCH", stream_path(name), {"archived": False})
    assert gateway.ingest(name, json.dumps(row), content_type="application/x-ndjson").status == 200


async def test_quarantine_topic_lives_and_dies_with_the_stream(gateway: Gateway, kafka: str) -> None:
    created = gateway.create_stream(unique_name("m"), COLUMNS, shards=2)
    quarantine = created["quarantine_topic"]
    assert quarantine == created["topic"] + "-quarantine"
    assert await known_partitions(kafka, quarantine) == {0, 1}
    assert gateway.request("DELETE", stream_path(created["name"])).status == 204
    deadline = time.monotonic() + 60  # a failure guard only
    while await end_offsets(kafka, quarantine) != {} or await end_offsets(kafka, created["topic"]):
        assert time.monotonic() < deadline, "the stream's topics were not deleted"
        await asyncio.sleep(0.1)


def iso(text: str) -> datetime.datetime:
    assert text.endswith("Z") and len(text) == len("2023-02-01T01:02:03.456Z"), text
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


async def test_stats(gateway: Gateway, kafka: str) -> None:
    created = gateway.create_stream(unique_name("m"), COLUMNS, shards=3)
    name = created["name"]
    empty = gateway.request("GET", stream_path(name) + "/stats")
    assert empty.status == 200
    assert empty.json() == {
        "earliest_event": None,
        "latest_event": None,
        "row_count": 0,
        "historical_data_bytes": 0,
        "streaming_data_bytes": 0,
        "written_eps": 0,
        "written_bps": 0,
        "read_eps": 0,
        "read_bps": 0,
    }
    started = datetime.datetime.now(datetime.UTC)
    rows = [{"timestamp": i, "name": f"s{i % 7}", "value": i / 3} for i in range(250)]
    for part in (rows[:100], rows[100:]):
        body = "\n".join(json.dumps(r) for r in part)
        assert gateway.ingest(name, body, content_type="application/x-ndjson").status == 200
    stats = gateway.request("GET", stream_path(name) + "/stats").json()
    assert stats["row_count"] == 250 == sum((await end_offsets(kafka, created["topic"])).values())
    assert stats["streaming_data_bytes"] > 250 * 40  # at least the JSON values themselves
    assert stats["historical_data_bytes"] == 0
    assert stats["read_eps"] == stats["read_bps"] == 0
    assert stats["written_eps"] > 0 and stats["written_bps"] > stats["written_eps"]
    earliest, latest = iso(stats["earliest_event"]), iso(stats["latest_event"])
    margin = datetime.timedelta(seconds=5)
    assert started - margin <= earliest <= latest <= datetime.datetime.now(datetime.UTC) + margin
    assert "history" not in stats
    history = gateway.request("GET", stream_path(name) + "/stats?historyDays=3").json()["history"]
    today = datetime.datetime.now(datetime.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    assert [iso(h["time"]) for h in history] == [today - datetime.timedelta(days=d) for d in (2, 1, 0)]
    if started >= today:  # (else the rows were written just before midnight UTC)
        assert [h["row_count"] for h in history] == [0, 0, 250]
    assert sum(h["row_count"] for h in history) == 250
    for bad in ("0", "8", "week", "-1"):
        reply = gateway.request("GET", stream_path(name) + f"/stats?historyDays={bad}")
        assert reply.status == 400, bad
        assert reply.json()["message"] == f"historyDays must be an integer from 1 to 7, got {bad!r}"
    assert gateway.request("GET", stream_path("no_such_stream") + "/stats").status == 404
    assert gateway.request("GET", stream_path(name) + "/stats", key="bad-key").status == 401


def _key_body(reply: Any) -> dict[str, Any]:
    assert reply.status == 201, reply.body
    body: dict[str, Any] = reply.json()
    return body


def test_api_key_rate_limit_field(gateway: Gateway) -> None:
    body = _key_body(gateway.request("POST", "/api/v1beta2/apikeys", {"name": "r", "rate_limit": 7}))
    assert body["rate_limit"] == 7
    listed = {k["id"]: k for k in gateway.request("GET", "/api/v1beta2/apikeys").json()}
    assert listed[body["id"]]["rate_limit"] == 7
    reply = gateway.request("POST", "/api/v1beta2/apikeys", {"rate_limit": -1})
    assert reply.status == 400
