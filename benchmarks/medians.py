"""The median of several runs of `benchmarks/run`: one Markdown table of every goal check, the
figures of each run side by side, and whether the median meets the goal.

    python -m benchmarks.medians benchmarks/results/RUN1.json RUN2.json RUN3.json

Goals are judged on the median, not on the best run: a goal met once in three is not met.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

# checks whose limit is an upper bound; every other check with a limit is a lower bound
AT_MOST = {"p99 latency", "peak RSS", "5xx replies", "client errors/timeouts"}
Figure = tuple[str, str]  # (scenario id, figure name)


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    if float(x).is_integer() and abs(x) < 100:
        return str(int(x))
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.2f}" if abs(x) < 10 else f"{x:.1f}"


def figures(run: dict[str, Any]) -> dict[Figure, tuple[float | None, float | None]]:
    """Every (scenario, figure) of a run: its value, and its goal's limit (None: reported only)."""
    out: dict[Figure, tuple[float | None, float | None]] = {}
    for name, c in run.get("ceilings", {}).items():
        if not isinstance(c, dict):
            continue
        single = "status" in c or "records_per_s" in c
        entries = [("", c)] if single else list(c.items())  # decode, produce: one per payload
        for payload, m in entries:
            if not isinstance(m, dict) or m.get("status", "ok") != "ok":
                continue
            value = m.get("rows_per_s") or m.get("records_per_s") or m.get("requests_per_s")
            out[(f"ceiling {name}", payload or "per s")] = (value, None)
            cpu = m.get("gateway_cpu_s_per_million_rows")
            if cpu is not None:
                out[(f"ceiling {name}", f"{payload or 'per s'}: CPU s / M")] = (cpu, None)
    for sid, s in run.get("scenarios", {}).items():
        m = s.get("measurement", {})
        rows = m.get("rows_delivered_per_s") or m.get("rows_accepted_per_s")
        out[(sid, "rows/s")] = (rows, None)
        out[(sid, "GW CPU s / M rows")] = (m.get("gateway_cpu_s_per_million_rows"), None)
        if sid == "S3":
            out[(sid, "requests/s")] = (m.get("ok_requests_per_s"), None)
        for c in s.get("goal", {}).get("checks", []):
            if c.get("limit") is not None or c["name"].startswith("429"):
                out[(sid, c["name"])] = (c.get("value"), c.get("limit"))
    return out


def meets(name: str, value: float | None, limit: float | None) -> str:
    """✓ / ✗ for a goal check's median, or '' for a reported figure."""
    if limit is None:
        return ""
    if value is None:
        return "?"
    ok = value <= limit if name in AT_MOST else value >= limit
    return "✓" if ok else "✗"


def table(runs: list[dict[str, Any]]) -> list[str]:
    """The Markdown table of the runs' figures and their medians."""
    per_run = [figures(r) for r in runs]
    keys: list[Figure] = []
    for f in per_run:
        keys += [k for k in f if k not in keys]
    head = " | ".join(r["run_id"] for r in runs)
    lines = [
        f"| scenario | figure | {head} | median | goal | met |",
        "| --- | --- |" + " --- |" * len(runs) + " --- | --- | --- |",
    ]
    for key in keys:
        values = [f.get(key, (None, None))[0] for f in per_run]
        limits = [f.get(key, (None, None))[1] for f in per_run]
        limit = next((x for x in limits if x is not None), None)
        present = [v for v in values if v is not None]
        median = statistics.median(present) if present else None
        goal = "" if limit is None else ("≤ " if key[1] in AT_MOST else "≥ ") + _fmt(limit)
        lines.append(
            f"| {key[0]} | {key[1]} | "
            + " | ".join(_fmt(v) for v in values)
            + f" | **{_fmt(median)}** | {goal} | {meets(key[1], median, limit)} |"
        )
    return lines


def main() -> int:
    """Print the medians table of the result files given."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", type=Path, help="result JSON files of benchmarks/run")
    args = parser.parse_args()
    runs = [json.loads(p.read_text()) for p in args.results]
    print("\n".join(table(runs)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
