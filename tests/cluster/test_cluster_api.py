"""The test cluster itself (tests/brokers.py `own_cluster`): replicated topics, leaders and the
active controller found from fresh metadata (the replication cases kill, stop and pause nodes)."""

from __future__ import annotations

import asyncio
import uuid

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.brokers import Cluster
from tests.integration.harness import topic_config


async def _create(bootstrap: str, topic: str, partitions: int) -> list[dict[str, object]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        # no min.insync.replicas given: the cluster's default applies
        await admin.create_topics([NewTopic(topic, partitions, 3)])
        while True:  # a created topic reaches the brokers' metadata a moment later
            (desc,) = await admin.describe_topics([topic])
            if desc["partitions"] and all(p["leader"] >= 0 for p in desc["partitions"]):
                return list(desc["partitions"])
            await asyncio.sleep(0.05)
    finally:
        await admin.close()


def test_cluster_replicates_and_finds_leaders(whole_cluster: Cluster) -> None:
    cluster = whole_cluster
    topic = "cluster_api_" + uuid.uuid4().hex[:8]
    parts = asyncio.run(asyncio.wait_for(_create(cluster.bootstrap, topic, 3), 60))
    assert all(len(p["replicas"]) == 3 and len(p["isr"]) == 3 for p in parts), parts
    config = asyncio.run(topic_config(cluster.bootstrap, topic))
    assert config["min.insync.replicas"] == "2"
    assert config["unclean.leader.election.enable"] == "false"
    for p in parts:
        assert cluster.leader_of(topic, int(p["partition"])).node_id == p["leader"]

    # exactly one node answers DescribeQuorum as the leader (failovers: tests/cluster/replication.py)
    assert cluster.controller() in cluster.nodes
    assert all(node.running() for node in cluster.nodes)
