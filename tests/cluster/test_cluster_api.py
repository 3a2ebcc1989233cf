"""The test cluster itself (tests/brokers.py `own_cluster`): replicated topics, leaders and the
active controller found from fresh metadata, a node killed and brought back."""

from __future__ import annotations

import asyncio
import uuid

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.brokers import Cluster
from tests.integration.harness import topic_config, wait_until


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

    controller = cluster.controller()
    controller.kill9()
    assert not controller.running()
    # a new active controller, and the killed node's partitions led elsewhere
    wait_until(lambda: _controller_id(cluster) not in (None, controller.node_id), 60,
               "another node to become the active controller")
    wait_until(lambda: all(cluster.leader_of(topic, p).node_id != controller.node_id
                           for p in range(3)), 60, "leaders away from the killed node")
    controller.start()
    assert controller.running()


def _controller_id(cluster: Cluster) -> int | None:
    try:
        return cluster.controller().node_id
    except LookupError:
        return None
