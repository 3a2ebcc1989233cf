"""Session-wide fixtures: Hypothesis settings, and the session's own Kafka broker."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from tests.brokers import own_broker

# Hypothesis: the same examples on every run (a failure is reproducible from the test alone, and a
# CI run cannot fail by the luck of the draw), no example database written into the worktree, no
# deadline (a busy 2-core machine is slow), and a failing example printed as a reproducible blob.
# HYPOTHESIS_PROFILE=explore draws fresh random examples for hunting bugs locally.
settings.register_profile("ci", derandomize=True, database=None, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("explore", settings.get_profile("ci"), derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

@pytest.fixture(scope="session")
def kafka() -> Iterator[str]:
    """Bootstrap address of a real single-node KRaft broker (deploy/kafka/kafka-dev) of the test
    session's own: a free port, data in a temporary directory removed afterwards."""
    with own_broker() as broker:
        yield broker.bootstrap
