"""The settings of the topics the gateway creates: min.insync.replicas (issue 21)."""

from __future__ import annotations

from gateway.catalog.model import Stream
from gateway.sinks.kafka_topics import quarantine_configs, topic_configs


def test_topics_state_min_insync_replicas_capped_at_their_replication() -> None:
    three = Stream(name="s", columns=[], topic="t", replication_factor=3)
    assert topic_configs(three, 2)["min.insync.replicas"] == "2"
    assert quarantine_configs(three, 2)["min.insync.replicas"] == "2"
    one = Stream(name="s", columns=[], topic="t", replication_factor=1)
    assert topic_configs(one, 2)["min.insync.replicas"] == "1"  # else acks=all never succeeds
    assert "min.insync.replicas" not in topic_configs(three)  # 0: the broker's default
