"""Driver for PyPI `kafka-mcp` 2.4.4 (run by its own Python >= 3.12 venv: deploy/dev/
setup-python-clients): calls its REST-proxy tools against the gateway and prints one JSON line
per call, {"call", "result", "error"}. Usage: python <this> TOPIC, with KAFKA_REST_URL and
KAFKA_TOKEN (the gateway's URL and API key) in the environment, as kafka-mcp itself reads them.
kafka_topics' "list" action also writes the list into a knowledge graph (EPISTEMIC_GRAPH_ENDPOINT),
so the topic list is read with the client call that tool makes (`list_topics`)."""

import asyncio
import json
import sys
from typing import Any

from fastmcp import FastMCP
from kafka_mcp.auth import get_client
from kafka_mcp.mcp.mcp_kafka import register_kafka_tools


async def main(topic: str) -> None:
    mcp = FastMCP("gateway-test")
    register_kafka_tools(mcp)

    async def tool(name: str, action: str, params: dict[str, Any]) -> Any:
        done = await mcp.call_tool(name, {"action": action, "params_json": json.dumps(params)})
        return done.structured_content

    calls: list[tuple[str, Any]] = [
        ("list_clusters", lambda: asyncio.to_thread(get_client().list_clusters)),
        ("list_topics", lambda: asyncio.to_thread(get_client().list_topics)),
        ("describe_topic", lambda: tool("kafka_topics", "describe", {"topic": topic})),
        ("topic_configs", lambda: tool("kafka_topics", "configs", {"topic": topic})),
        ("list_partitions", lambda: tool("kafka_partitions", "list", {"topic": topic})),
        ("get_partition", lambda: tool("kafka_partitions", "get", {"topic": topic, "partition_id": 1})),
        (
            "produce json",
            lambda: tool("kafka_records", "produce", {"topic": topic, "value": {"message": "m1"}}),
        ),
        (
            "produce key partition",
            lambda: tool(
                "kafka_records",
                "produce",
                {
                    "topic": topic,
                    "value": {"message": "m2"},
                    "key": "k2",
                    "key_format": "STRING",
                    "partition_id": 2,
                },
            ),
        ),
    ]
    for name, call in calls:
        try:
            line = {"call": name, "result": await call(), "error": None}
        except Exception as exc:  # reported to the test, which decides
            line = {"call": name, "result": None, "error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
