"""The cluster tier's Kafka: a 3-node KRaft cluster of the session's own (tests/brokers.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.brokers import Cluster, own_cluster


@pytest.fixture(scope="package")
def cluster() -> Iterator[Cluster]:
    """Three combined broker+controller nodes on loopback (replication 3, min.insync.replicas 2,
    unclean election off), shared by this tier's tests and stopped after them (three idle JVMs
    would slow the rest of the suite): a test that stops, kills or pauses nodes takes
    `whole_cluster`, which brings every node back afterwards."""
    with own_cluster(3) as c:
        yield c


@pytest.fixture
def whole_cluster(cluster: Cluster) -> Iterator[Cluster]:
    """The cluster with every node running before the test, and again after it."""
    cluster.restore()
    yield cluster
    cluster.restore()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The cluster tier's figures (rows acknowledged, missing, duplicated; longest stretch
    without a 2xx; /readyz not 200), whether the cases passed or not."""
    from tests.cluster.replication import RESULTS

    if RESULTS:
        terminalreporter.section("cluster tier figures")
        for result in RESULTS:
            terminalreporter.write_line(result.line())
