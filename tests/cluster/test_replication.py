"""Kafka's replication_test matrix against two real gateways (`--replication-factor 3`, one with
`--spool-dir`) on a 3-node KRaft cluster: a leader and the active controller bounced hard
(kill -9) and clean (SIGTERM), a paused (SIGSTOP) leader, two of three nodes down, a rolling
restart; each under wait=true and wait=false load, every topic read back. No acknowledged row may
be missing, no wait=true row duplicated; the longest stretch without a 2xx and the time /readyz
was not 200 are reported (printed at the end of the run), not asserted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.brokers import Cluster
from tests.cluster.replication import gateways, keep, run_case, selected_cases
from tests.integration.harness import Gateway

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pair(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Gateway]]:
    yield from gateways(cluster, Path(tmp_path_factory.mktemp("cluster-gw")))


@pytest.mark.parametrize("case", selected_cases())
def test_replication_case(case: str, whole_cluster: Cluster, pair: dict[str, Gateway]) -> None:
    result = run_case(case, whole_cluster, pair)
    keep(result)
    for gw, rows in result.rows.items():
        assert rows["missing"] == 0, (gw, result.line())
        assert rows["violations"] == 0 and rows["unknown"] == 0, (gw, result.line())
        assert rows["duplicates_wait_true"] == 0, (gw, result.line())
    # acks=all with min.insync.replicas=2: nothing is acknowledged while one node runs
    assert result.wait_true_200_while_under_min_isr == 0, result.line()
    if case == "rolling-restart":
        # One node down at a time is no outage: readiness never flips (not even for a moment
        # the poller could miss: the log would say UNREACHABLE)
        assert result.readyz_not_200_s == {"plain": 0, "spool": 0}, result.line()
        assert result.unreachable_logged == {"plain": 0, "spool": 0}, result.line()
