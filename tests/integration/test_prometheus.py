"""The real Prometheus with deploy/prometheus/ (targets swapped for the test's gateways) scraping
running gateways; promtool checks of the configuration, unit tests of the alerting rules, and every
Grafana dashboard query run against the live data."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

import gateway.metrics  # noqa: F401 - registers every metric of the gateway in REGISTRY
from tests.integration.deploy_helpers import (
    listening_workers,
    send_rows,
    stopped_at_exit,
    stream_columns,
    wait_workers_ready,
)
from tests.integration.harness import ROOT, Gateway, free_port, http, unique_name, wait_until

PROM_DIR = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboard.json"
JOB = "ingest-gateway"


def tool(name: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} is not installed: deploy/dev/setup-system installs it"
    return found


@dataclass
class Prometheus:
    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def api(self, path: str, **params: str) -> Any:
        query = ("?" + urllib.parse.urlencode(params)) if params else ""
        reply = http("GET", f"{self.url}/api/v1/{path}{query}", timeout=10)
        assert reply.status == 200, reply.body[:500]
        body = reply.json()
        assert body["status"] == "success", body
        return body["data"]

    def scalar(self, expr: str) -> float | None:
        result = self.api("query", query=expr)["result"]
        return float(result[0]["value"][1]) if result else None


def start_prometheus(directory: Path, targets: list[str]) -> Prometheus:
    """The project's prometheus.yml with the test's targets and 1 s intervals, alerts.yml beside."""
    config = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    jobs = [job for job in config["scrape_configs"] if job["job_name"] == JOB]
    assert len(jobs) == 1
    jobs[0]["static_configs"] = [{"targets": targets}]
    (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
    shutil.copy(PROM_DIR / "alerts.yml", directory / "alerts.yml")
    port = free_port()
    log_path = directory / "prometheus.log"
    log = open(log_path, "wb")  # noqa: SIM115 - handed to the child process
    proc = subprocess.Popen(
        [
            tool("prometheus"),
            f"--config.file={directory / 'prometheus.yml'}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=directory,
    )
    log.close()
    prom = Prometheus(proc, f"http://127.0.0.1:{port}", log_path)

    def ready() -> bool:
        assert proc.poll() is None, log_path.read_text()
        try:
            return http("GET", prom.url + "/-/ready", timeout=2).status == 200
        except OSError:
            return False

    wait_until(ready, 30, "Prometheus to be ready")
    return prom


@pytest.fixture(scope="module")
def scraped(
    kafka: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Prometheus, list[Gateway]]]:
    """Two gateway instances, the first with two worker processes, scraped every second."""
    gws = [
        Gateway(tmp_path_factory.mktemp("gw-a"), kafka, extra=["--workers", "2"]),
        Gateway(tmp_path_factory.mktemp("gw-b"), kafka),
    ]
    procs: list[Any] = list(gws)
    with stopped_at_exit(procs):
        for gw in gws:
            gw.start(wait_ready=False)
        for gw in gws:
            gw.wait_ready()
        wait_until(lambda: len(listening_workers(gws[0].log())) == 2, 30, "both workers listening")
        wait_workers_ready(gws[0].url, 2)
        prom = start_prometheus(tmp_path_factory.mktemp("prom"), [f"127.0.0.1:{gw.port}" for gw in gws])
        procs.append(prom.proc)
        yield prom, gws
        prom.proc.terminate()
        prom.proc.wait(30)
        for gw in gws:
            assert gw.stop() == 0, gw.log()


def test_promtool_checks_config_rules_and_rule_tests() -> None:
    promtool = tool("promtool")
    for args in (
        ["check", "config", "prometheus.yml"],
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts_test.yml"],
    ):
        done = subprocess.run([promtool, *args], cwd=PROM_DIR, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        assert "SUCCESS" in done.stdout + done.stderr


def test_every_target_up_and_rows_counter_equals_rows_sent(scraped: tuple[Prometheus, list[Gateway]]) -> None:
    prom, gws = scraped
    name = unique_name("prom")
    gws[0].create_stream(name, stream_columns())
    # The second instance has its own catalog until the catalog is shared through Kafka.
    reply = gws[1].request("POST", "/api/v1beta2/streams", {"name": name, "columns": stream_columns()})
    assert reply.status in (201, 409), reply.body
    wait_until(
        lambda: (
            {
                gws[0].request("GET", f"/api/v1beta2/streams/{name}").headers["X-Gateway-Worker"]
                for _ in range(20)
            }
            == {"0", "1"}
            and all(gws[0].request("GET", f"/api/v1beta2/streams/{name}").status == 200 for _ in range(10))
        ),
        20,
        "both workers to know the stream",
    )
    sent = [
        send_rows(gw.url, name, requests=24, rows_per_request=50 + 10 * i, prefix=f"p{i}")
        for i, gw in enumerate(gws)
    ]
    assert all(s.statuses == {200: 24} for s in sent), [s.statuses for s in sent]
    total = sum(s.rows for s in sent)

    def targets_up() -> bool:
        active = prom.api("targets")["activeTargets"]
        return sorted(t["labels"]["instance"] for t in active) == sorted(
            f"127.0.0.1:{gw.port}" for gw in gws
        ) and all(t["health"] == "up" for t in active)

    wait_until(targets_up, 20, "every target up in Prometheus")
    rows = f'sum(gateway_rows_accepted_total{{job="{JOB}", stream="{name}"}})'
    wait_until(lambda: prom.scalar(rows) == total, 20, f"Prometheus to count {total} rows")
    delivered = f'sum(gateway_rows_delivered_total{{job="{JOB}", stream="{name}"}})'
    wait_until(lambda: prom.scalar(delivered) == total, 20, "the delivered rows")
    per_instance = prom.api(
        "query", query=f'sum by (instance) (gateway_rows_accepted_total{{stream="{name}"}})'
    )["result"]
    assert sorted(float(r["value"][1]) for r in per_instance) == sorted(s.rows for s in sent)
    assert prom.scalar(f'sum(up{{job="{JOB}"}})') == len(gws)
    # The first instance's two workers each hold their share of the limit; the scrape sums them.
    limit = f'gateway_queue_limit{{job="{JOB}", bound="stream_rows", instance="127.0.0.1:{gws[0].port}"}}'
    assert prom.scalar(limit) == 2 * 500_000


def test_alert_rules_loaded_healthy_and_quiet(scraped: tuple[Prometheus, list[Gateway]]) -> None:
    prom, _ = scraped
    expected = {
        r["alert"]
        for g in yaml.safe_load((PROM_DIR / "alerts.yml").read_text())["groups"]
        for r in g["rules"]
    }

    def evaluated() -> list[dict[str, Any]]:
        rules = [r for g in prom.api("rules")["groups"] for r in g["rules"]]
        never = "0001-01-01T00:00:00Z"  # Go's zero time: not evaluated yet
        return rules if rules and all(r.get("lastEvaluation", never) != never for r in rules) else []

    rules = wait_until(evaluated, 20, "the rules to be evaluated")
    assert {r["name"] for r in rules} == expected
    assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]
    firing = [a for a in prom.api("alerts")["alerts"] if a["state"] == "firing"]
    assert not firing, firing


def _expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 15
    return exprs


def test_dashboard_and_alerts_use_only_real_metric_names() -> None:
    known = set()
    for family in REGISTRY.collect():
        if not family.name.startswith("gateway_"):
            continue
        suffixes = {"counter": ["_total"], "gauge": [""], "histogram": ["_bucket", "_sum", "_count"]}[
            family.type
        ]
        known |= {family.name + s for s in suffixes}
    alerts = yaml.safe_load((PROM_DIR / "alerts.yml").read_text())["groups"]
    text = "\n".join(_expressions() + [r["expr"] for g in alerts for r in g["rules"]])
    used = set(re.findall(r"\bgateway_[a-z_]+", text))
    assert used, "no metric referenced"
    assert used <= known, f"unknown metrics: {sorted(used - known)}"
    titles = " ".join(p["title"] for p in json.loads(DASHBOARD.read_text())["panels"]).lower()
    for needed in ("rows/s", "latency", "queue", "429", "503", "kafka produce latency", "kafka errors"):
        assert needed in titles, needed


def test_every_dashboard_query_runs_on_live_data(scraped: tuple[Prometheus, list[Gateway]]) -> None:
    prom, gws = scraped
    # Traffic first, so that rate() windows hold samples (this test may run alone).
    name = unique_name("dash")
    gws[1].create_stream(name, stream_columns())
    send_rows(gws[1].url, name, requests=10, rows_per_request=10)
    probe = f'sum(gateway_rows_accepted_total{{stream="{name}"}})'
    wait_until(lambda: prom.scalar(probe) == 100, 20, "the rows in Prometheus")
    wait_until(lambda: (prom.scalar(f"count_over_time({probe}[1m:1s])") or 0) >= 2, 20, "two scrapes")
    empty = []
    for expr in _expressions():
        live = expr.replace("$__rate_interval", "1m").replace('"$instance"', '".*"')
        assert "$" not in live.replace("$__", ""), live
        result = prom.api("query", query=live)["result"]  # a bad query fails here (status error)
        if not result:
            empty.append(expr)
    # Queries of things that did not happen (rejections, errors, restarts) may be empty; the
    # core panels must show data.
    for must in (
        "gateway_rows_accepted_total",
        "gateway_http_requests_total",
        "gateway_queue_rows",
        "gateway_sink_produce_duration_seconds_bucket",
        "gateway_http_request_duration_seconds_bucket",
        "up{",
    ):
        assert any(must in e for e in _expressions() if e not in empty), (must, empty)
