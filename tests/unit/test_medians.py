"""benchmarks.medians: goals are judged on the median of the runs, in the goal's direction."""

from __future__ import annotations

from typing import Any

from benchmarks.medians import meets, table


def _run(run_id: str, ratio: float, p99: float) -> dict[str, Any]:
    checks = [
        {"name": "rows/s ÷ ceiling (2)", "value": ratio, "limit": 0.45},
        {"name": "p99 latency", "value": p99, "limit": 50.0},
    ]
    return {
        "run_id": run_id,
        "ceilings": {},
        "scenarios": {
            "S2": {
                "measurement": {"rows_delivered_per_s": 1000.0, "gateway_cpu_s_per_million_rows": 5.0},
                "goal": {"checks": checks},
            }
        },
    }


def test_the_median_decides_not_the_best_run() -> None:
    lines = table([_run("a", 0.50, 40.0), _run("b", 0.30, 60.0), _run("c", 0.40, 70.0)])
    ratio = next(line for line in lines if "ceiling (2)" in line)
    p99 = next(line for line in lines if "p99" in line)
    assert "**0.40**" in ratio and ratio.endswith("✗ |")
    assert "**60**" in p99 and p99.endswith("✗ |")


def test_direction_of_each_goal() -> None:
    assert meets("p99 latency", 49.0, 50.0) == "✓"
    assert meets("p99 latency", 51.0, 50.0) == "✗"
    assert meets("answered ÷ offered", 0.96, 0.95) == "✓"
    assert meets("peak RSS", 301.0, 300.0) == "✗"
    assert meets("rows/s", 5.0, None) == ""
    assert meets("rows/s ÷ S1 rows/s", None, 0.8) == "?"
