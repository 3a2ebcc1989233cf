"""Session-wide fixtures: the development Kafka broker (started once, reused when running)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.integration.harness import kafka_dev

KAFKA_PORT = os.environ.get("KAFKA_DEV_PORT", "19092")


@pytest.fixture(scope="session")
def kafka() -> Iterator[str]:
    """Bootstrap address of a real single-node KRaft broker (deploy/kafka/kafka-dev)."""
    env = {"KAFKA_DEV_PORT": KAFKA_PORT}
    was_running = kafka_dev("status", env=env).returncode == 0
    if not was_running:
        started = kafka_dev("start", env=env)
        assert started.returncode == 0, f"kafka-dev start failed:\n{started.stdout}\n{started.stderr}"
    yield f"127.0.0.1:{KAFKA_PORT}"
    if not was_running:
        kafka_dev("stop", env=env)
