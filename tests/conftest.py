"""Session-wide fixtures: the development Kafka broker (started once, reused when running)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from tests.integration.harness import kafka_dev

# Hypothesis: the same examples on every run (a failure is reproducible from the test alone, and a
# CI run cannot fail by the luck of the draw), no example database written into the worktree, no
# deadline (a busy 2-core machine is slow), and a failing example printed as a reproducible blob.
# HYPOTHESIS_PROFILE=explore draws fresh random examples for hunting bugs locally.
settings.register_profile("ci", derandomize=True, database=None, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("explore", settings.get_profile("ci"), derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

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
