"""Ceiling (5) in the benchmark harness: which modes a run measures, how the report shows it."""

from __future__ import annotations

from typing import Any

from benchmarks.report import _ceilings, _scenarios
from benchmarks.scenarios import produce_ceiling_key, produce_ceiling_modes


def test_measured_for_s1_and_s2_only() -> None:
    assert produce_ceiling_modes(["S1", "S2", "S3"]) == [False, True]
    assert produce_ceiling_modes(["S2"]) == [True]
    assert produce_ceiling_modes(["S3", "S4"]) == []
    assert produce_ceiling_key(False) == "ndjson100"
    assert produce_ceiling_key(True) == "ndjson100-wait"


def _m(**extra: Any) -> dict[str, Any]:
    return {"status": "ok", "rows_delivered_per_s": 100_000.0, "ok_requests_per_s": 1_000.0,
            "gateway_cpu_s_per_million_rows": 5.0, "latency_ms": {"count": 0}, "other_cpu_s": 0.1,
            "payload": "ndjson100", **extra}


def test_report_rows_and_ratios() -> None:
    table = "\n".join(_ceilings({"produce": {"ndjson100": _m(wait=False),
                                             "ndjson100-wait": _m(wait=True)}}))
    assert "| (5) read + untyped decode + bare aiokafka batch produce" in table
    assert "ndjson100, wait=false | 100,000 rows/s delivered (1,000 req/s)" in table
    assert "ndjson100, wait=true" in table
    measurement = {"rows_delivered_per_s": 50_000.0, "requests_per_s": 500.0, "mb_in_per_s": 7.5,
                   "latency_ms": {"count": 0}, "count_429": 0, "count_503": 0, "count_5xx": 0,
                   "count_errors": 0, "gateway_cpu_s_per_million_rows": 10.0,
                   "gateway_peak_rss_mb": 80.0, "broker_cpu_s": 1.0, "loadgen_cpu_s": 1.0,
                   "status": "ok"}
    run = {"scenarios": {"S1": {"measurement": measurement, "goal": {"status": "not met"},
                                "ratios": {"rows_vs_ceiling_2": 0.2,
                                           "cpu_efficiency_vs_ceiling_2": 0.3,
                                           "rows_vs_ceiling_5": 0.5,
                                           "cpu_efficiency_vs_ceiling_5": 0.5}}}}
    [row] = [line for line in _scenarios(run) if line.startswith("| S1 ")]
    assert "0.20 x c(2) (CPU 0.30); 0.50 x c(5) (CPU 0.50)" in row
