"""The REST proxy's v2 reads and produce to one partition with the embedded sink (no Kafka): they
answer from the catalog (no brokers, leader -1), with the same codes as against Kafka."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from gateway.app import build_app
from gateway.config import Settings
from gateway.context import GATEWAY

ADMIN_KEY = "unit-admin-key"
AUTH = {"X-Api-Key": ADMIN_KEY}


async def _client(tmp_path: Path, aiohttp_client: Any) -> TestClient[Any, Any]:
    app = build_app(Settings(data_dir=tmp_path, default_shards=2), ADMIN_KEY)
    client: TestClient[Any, Any] = await aiohttp_client(app)
    await app[GATEWAY].lifecycle.wait_catalog()
    made = await client.post(
        "/api/v1beta2/streams",
        headers=AUTH,
        json={"name": "s", "columns": [{"name": "message", "type": "string"}]},
    )
    assert made.status == 201, await made.text()
    return client


async def test_embedded_reads(tmp_path: Path, aiohttp_client: Any) -> None:
    client = await _client(tmp_path, aiohttp_client)
    root = await client.get("/")
    assert root.status == 200 and await root.json() == {}
    brokers = await client.get("/brokers", headers=AUTH)
    assert brokers.status == 200 and await brokers.json() == {"brokers": []}
    topic = await client.get("/topics/s", headers=AUTH)
    assert topic.status == 200, await topic.text()
    body = await topic.json()
    assert body["configs"]["retention.ms"] == "604800000"  # the stream's default retention
    assert body["partitions"] == [{"partition": p, "leader": -1, "replicas": []} for p in (0, 1)]
    one = await client.get("/topics/s/partitions/1", headers=AUTH)
    assert await one.json() == {"partition": 1, "leader": -1, "replicas": []}
    for path, code in (
        ("/topics/s/partitions/2", 40402),
        ("/topics/s/partitions/one", 404),
        ("/topics/nope", 40403),
        ("/topics/nope/partitions", 40401),
    ):
        reply = await client.get(path, headers=AUTH)
        assert reply.status == 404 and (await reply.json())["error_code"] == code, path


async def test_embedded_produce_to_a_partition(tmp_path: Path, aiohttp_client: Any) -> None:
    client = await _client(tmp_path, aiohttp_client)
    value = base64.b64encode(b"hi").decode()
    reply = await client.post(
        "/topics/s/partitions/1",
        data=json.dumps({"records": [{"value": value}]}),
        headers=AUTH | {"Content-Type": "application/vnd.kafka.binary.v2+json"},
    )
    assert reply.status == 200, await reply.text()
    assert (await reply.json())["offsets"][0]["partition"] == 1
    refused = await client.post(
        "/topics/s/partitions/1",
        data=json.dumps({"records": [{"value": value}]}),
        headers=AUTH | {"Accept": "text/html", "Content-Type": "application/vnd.kafka.binary.v2+json"},
    )
    assert refused.status == 406 and await refused.json() == {
        "error_code": 406,
        "message": "HTTP 406 Not Acceptable",
    }
