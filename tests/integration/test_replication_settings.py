"""--replication-factor is checked against the cluster at start (issue 21): a gateway asking for
more replicas than Kafka has brokers stays unready and says why, instead of failing every stream
creation later."""

from __future__ import annotations

from pathlib import Path

from tests.integration.harness import Gateway, http, wait_until


def test_replication_factor_above_the_broker_count_is_a_clear_error(kafka: str,
                                                                    tmp_path: Path) -> None:
    gw = Gateway(tmp_path, kafka, extra=["--replication-factor", "3"]).start(wait_ready=False)
    try:
        wait_until(lambda: "needs at least 3 Kafka brokers" in gw.log(), 60, "the error")
        assert http("GET", gw.url + "/readyz").status == 503
        assert f"the cluster at {kafka} has 1" in gw.log()
    finally:
        assert gw.stop() == 0
