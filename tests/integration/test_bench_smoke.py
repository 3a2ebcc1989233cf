"""The benchmark harness end to end, tiny and slow-paced, so that it cannot rot. No figure is
asserted: only that a run produces its result document and loses no acknowledged row."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.integration.harness import ROOT

MEASUREMENT_FIELDS = (
    "status",
    "rows_accepted",
    "rows_delivered",
    "rows_accepted_per_s",
    "rows_delivered_per_s",
    "requests_per_s",
    "mb_in_per_s",
    "latency_ms",
    "count_429",
    "count_503",
    "count_5xx",
    "count_errors",
    "gateway_cpu_s",
    "gateway_cpu_s_per_million_rows",
    "gateway_peak_rss_mb",
    "broker_cpu_s",
    "loadgen_cpu_s",
    "other_cpu_s",
)


def test_s1_smoke_run_writes_a_complete_result(kafka: str, tmp_path: Path) -> None:
    out = tmp_path / "results"
    md = tmp_path / "RESULTS.md"
    argv = [
        sys.executable,
        "-m",
        "benchmarks",
        "--scenario",
        "S1",
        "--quick",
        "--duration",
        "1",
        "--warmup",
        "0.3",
        "--rate",
        "20",
        "--connections",
        "2",
        "--ramp-step",
        "0.5",
        "--ceilings",
        "decode,aiokafka,aiokafka-native,produce,produce-native",
        "--no-chart",
        "--kafka-bootstrap",
        kafka,
        "--out",
        str(out),
        "--results-md",
        str(md),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr

    [path] = out.glob("*.json")
    result = json.loads(path.read_text())
    for section in ("machine", "versions", "git", "config", "ceilings", "scenarios"):
        assert section in result
    s1 = result["scenarios"]["S1"]
    m = s1["measurement"]
    for name in MEASUREMENT_FIELDS:
        assert name in m, name
    assert m["status"] == "ok", m["failure"]
    assert m["rows_accepted"] > 0
    assert m["rows_delivered"] == m["rows_accepted"]
    for pct in ("p50", "p90", "p99", "p999", "max"):
        assert m["latency_ms"][pct] is not None
    assert s1["config"]["mode"] == "open loop"
    ramp = s1["ramp"]
    assert ramp["status"] == "ok" and ramp["steps"], ramp
    assert result["ceilings"]["decode"]["ndjson100"]["rows_per_s"] > 0
    aiokafka = result["ceilings"]["aiokafka"]
    assert aiokafka["status"] == "ok" and aiokafka["delivered"] >= aiokafka["records"] > 0
    assert s1["goal"]["status"] in ("met", "not met")
    assert s1["ratios"]["rows_vs_ceiling_2"] is not None
    produce = result["ceilings"]["produce"]["ndjson100"]  # ceiling (5), counted in Kafka
    assert produce["status"] == "ok", produce["failure"]
    assert produce["rows_delivered"] == produce["rows_accepted"] > 0
    assert s1["ratios"]["rows_vs_ceiling_5"] is not None
    native = result["ceilings"]["produce_native"]["ndjson100"]  # (5), the gateway's encoder
    assert native["status"] == "ok", native["failure"]
    assert native["builder"] == "native" and produce["builder"] == "aiokafka"
    assert native["rows_delivered"] == native["rows_accepted"] > 0
    loop = result["ceilings"]["aiokafka_native"]  # (4), the gateway's encoder
    assert loop["status"] == "ok" and loop["delivered"] >= loop["records"] > 0
    text = md.read_text()
    assert result["run_id"] in text and "| S1 |" in text
    assert "| (5n) " in text and "native ÷ aiokafka builder" in text
