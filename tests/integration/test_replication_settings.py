"""--replication-factor is checked against the cluster at start (issue 21): a gateway asking for
more replicas than Kafka has brokers stays unready and says why, instead of failing every stream
creation later."""

from __future__ import annotations

from pathlib import Path

from tests.integration.harness import Gateway, http, known_partitions, unique_name, wait_until

TOPIC_CONFIG = 1  # DescribeConfigs' config source of a setting made on the topic itself


def test_replication_factor_above_the_broker_count_is_a_clear_error(kafka: str, tmp_path: Path) -> None:
    gw = Gateway(tmp_path, kafka, extra=["--replication-factor", "3"]).start(wait_ready=False)
    try:
        wait_until(lambda: "needs at least 3 Kafka brokers" in gw.log(), 60, "the error")
        assert http("GET", gw.url + "/readyz").status == 503
        assert f"the cluster at {kafka} has 1" in gw.log()
    finally:
        assert gw.stop() == 0


async def _min_insync_entry(bootstrap: str, topic: str) -> tuple[str, int]:
    """min.insync.replicas of the topic: its value and where it comes from (config source 1:
    set on the topic; 4/5: the broker's file or Kafka's default)."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (resp,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        entries = resp.resources[0][4]
        (entry,) = [e for e in entries if e[0] == "min.insync.replicas"]
        return str(entry[1]), int(entry[3])
    finally:
        await admin.close()


async def test_topics_are_created_with_an_explicit_min_insync_replicas(kafka: str, gateway: Gateway) -> None:
    topic = gateway.create_stream(unique_name(), [{"name": "a", "type": "string"}])["topic"]
    await known_partitions(kafka, topic)
    # --replication-factor 1: min(2, 1) = 1, stated on the topic rather than left to the broker
    assert await _min_insync_entry(kafka, topic) == ("1", TOPIC_CONFIG)
    assert await _min_insync_entry(kafka, topic + "-quarantine") == ("1", TOPIC_CONFIG)
