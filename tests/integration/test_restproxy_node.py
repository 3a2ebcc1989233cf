"""Confluent's Node.js REST Proxy client, npm `kafka-rest` 0.0.5 (pinned: deploy/dev/node-clients),
runs every call of its README against the gateway over real HTTP; every record it produced is
read back from Kafka at the partition and offset the gateway answered. Its Avro and consumer calls
get the documented refusals (no schema registry, no consumer API: README "REST proxy")."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import ADMIN_KEY, Gateway, read_topic, unique_name
from tests.integration.test_restproxy import SHARDS, TEXT, basic, total

SCRIPT = Path(__file__).with_name("restproxy_node_client.js")
MODULES = (
    Path(os.environ.get("NODE_CLIENTS_DIR", Path.home() / ".cache" / "ingest-gateway" / "npm"))
    / "node_modules"
)
# what each produce call of the README sends: (value, key, partition or None for any)
PRODUCED: dict[str, list[tuple[bytes, bytes | None, int | None]]] = {
    "produce single": [(b"msg1", None, None)],
    "produce key value partition": [(b"msg1", b"key1", 0)],
    "produce partition value": [(b"msg1", None, 0)],
    "produce several": [(b"msg1", None, None), (b"msg2", None, None), (b"msg3", None, None)],
    "produce array": [(b"msg1", None, None), (b"msg2", None, None), (b"msg3", None, None)],
    "produce mixed": [(b"msg1", None, None), (b"msg2", None, 0)],
    "partition produce": [(b"p1", None, 1), (b"p2", b"pk", 1)],
    "topicPartition produce": [(b"hi", None, 2)],
}


def run_client(gateway: Gateway, topic: str) -> dict[str, dict[str, Any]]:
    node = shutil.which("node")
    if node is None or not (MODULES / "kafka-rest").is_dir():
        pytest.fail("needs node and npm kafka-rest: run deploy/dev/setup-node-clients")
    url = f"http://client:{ADMIN_KEY}@127.0.0.1:{gateway.port}"
    done = subprocess.run(
        [node, str(SCRIPT), url, topic],
        env={**os.environ, "NODE_PATH": str(MODULES)},
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    return {line["call"]: line for line in lines}


async def test_kafka_rest_node_client_readme(gateway: Gateway, kafka: str) -> None:
    name = unique_name("node")
    topic = gateway.create_stream(name, TEXT)["topic"]
    calls = run_client(gateway, topic)
    ok = {n: c["result"] for n, c in calls.items() if c["error"] is None}
    assert set(ok) == set(calls) - {"produce avro value", "produce avro key value", "consumer join"}, calls
    # metadata
    brokers = gateway.request("GET", "/brokers", key=None, headers=basic()).json()["brokers"]
    assert ok["brokers.list"] == brokers and brokers
    assert topic in ok["topics.list"]
    described = ok["topics.get"]
    assert described["name"] == topic and len(described["partitions"]) == SHARDS
    assert "retention.ms" in described["configs"]
    assert ok["topic.partitions.list"] == described["partitions"]
    assert ok["topic.partition.get"] == described["partitions"][0]
    assert ok["topicPartition.get"] == described["partitions"][1]
    assert all(p["leader"] in brokers for p in described["partitions"])
    # produce: every record is where the gateway said, with the value and key sent
    got = {(r.partition, r.offset): r for r in await read_topic(kafka, topic)}
    count = 0
    for call, sent in PRODUCED.items():
        offsets = ok[call]["offsets"]
        assert len(offsets) == len(sent), (call, offsets)
        for where, (value, key, partition) in zip(offsets, sent, strict=True):
            assert where["error_code"] is None, (call, where)
            rec = got[(where["partition"], where["offset"])]
            assert rec.json() == {"message": value.decode()} and rec.key == key, call
            if partition is not None:
                assert where["partition"] == partition, call
            count += 1
    assert await total(kafka, topic) == count
    # the documented differences: no schema registry (415), no consumer API (404)
    assert calls["produce avro value"]["error"]["status"] == 415
    assert calls["produce avro key value"]["error"]["status"] == 415
    assert calls["consumer join"]["error"]["status"] == 404
