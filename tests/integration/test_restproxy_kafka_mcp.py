"""PyPI `kafka-mcp` 2.4.4 (pinned: deploy/dev/python-clients, its own Python 3.12 venv) runs its
REST-proxy topic (list, describe, configs), partition and produce tools against the gateway over
real HTTP with an API key (its KAFKA_TOKEN, sent as `Authorization: Bearer`); every record it
produced is read back from Kafka at the partition and offset the gateway answered."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import ADMIN_KEY, Gateway, read_topic, unique_name
from tests.integration.test_restproxy import SHARDS, TEXT, basic

CLUSTER = "ingest-gateway"
# what each produce call of the driver sends: (value, key, partition or None for any)
PRODUCED: dict[str, tuple[dict[str, str], bytes | None, int | None]] = {
    "produce json": ({"message": "m1"}, None, None),
    "produce key partition": ({"message": "m2"}, b"k2", 2),
}
SCRIPT = Path(__file__).with_name("restproxy_kafka_mcp_client.py")
PYTHON = (
    Path(os.environ.get("PYTHON_CLIENTS_DIR", Path.home() / ".cache" / "ingest-gateway" / "python"))
    / "venv"
    / "bin"
    / "python"
)


def run_client(gateway: Gateway, topic: str) -> dict[str, dict[str, Any]]:
    if not PYTHON.is_file():
        pytest.fail("needs PyPI kafka-mcp: run deploy/dev/setup-python-clients")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "EPISTEMIC_"))}
    env |= {"KAFKA_REST_URL": f"http://127.0.0.1:{gateway.port}", "KAFKA_TOKEN": ADMIN_KEY}
    done = subprocess.run(
        [str(PYTHON), str(SCRIPT), topic], env=env, capture_output=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith(b"{")]
    return {line["call"]: line for line in lines}


async def test_kafka_mcp_topic_and_produce_tools(gateway: Gateway, kafka: str) -> None:
    topic = gateway.create_stream(unique_name("mcp"), TEXT)["topic"]
    calls = run_client(gateway, topic)
    ok = {name: call["result"] for name, call in calls.items() if call["error"] is None}
    tools = {"list_clusters", "list_topics", "describe_topic", "topic_configs", "list_partitions"}
    assert set(ok) == set(calls) == set(PRODUCED) | tools | {"get_partition"}, calls
    # topic tools: what the gateway answers over HTTP, as the client got it
    v3 = f"/v3/clusters/{CLUSTER}/topics"
    assert [c["cluster_id"] for c in ok["list_clusters"]["data"]] == [CLUSTER]
    listed = {t["topic_name"]: t for t in ok["list_topics"]["data"]}
    assert listed[topic]["partitions_count"] == SHARDS
    assert ok["describe_topic"] == listed[topic] == _get(gateway, f"{v3}/{topic}")
    configs = {c["name"]: c["value"] for c in ok["topic_configs"]["data"]}
    # the settings the v2 topic read describes (what the gateway created the topic with)
    v2 = gateway.request("GET", f"/topics/{topic}", key=None, headers=basic())
    assert configs == v2.json()["configs"] and "retention.ms" in configs
    assert gateway.request("GET", f"{v3}/{topic}/configs", key=None).status == 401
    sources = {c["name"]: c["source"] for c in ok["topic_configs"]["data"]}
    assert sources["retention.ms"] == "DYNAMIC_TOPIC_CONFIG" != sources["compression.type"]
    partitions = ok["list_partitions"]["data"]
    assert [p["partition_id"] for p in partitions] == list(range(SHARDS))
    assert ok["list_partitions"] == _get(gateway, f"{v3}/{topic}/partitions")
    assert ok["get_partition"] == partitions[1]
    # produce: each record is where the gateway said, with the value and key sent
    got = {(r.partition, r.offset): r for r in await read_topic(kafka, topic)}
    assert len(got) == len(PRODUCED)
    for name, (value, key, partition) in PRODUCED.items():
        receipt = ok[name]
        assert receipt["error_code"] == 200 and receipt["topic_name"] == topic, receipt
        rec = got[(receipt["partition_id"], receipt["offset"])]
        assert rec.json() == value and rec.key == key, name
        if partition is not None:
            assert receipt["partition_id"] == partition, name


def _get(gateway: Gateway, path: str) -> Any:
    reply = gateway.request("GET", path)
    assert reply.status == 200, reply.body
    return reply.json()
