"""The cluster tier's fault matrix, several times over: Kafka's replication_test cases
(tests/cluster/test_replication.py, a 3-node KRaft cluster, two gateways with
--replication-factor 3, one with --spool-dir) run `--runs` times, each case's figures collected
and summarised (min / median / max per case and gateway).

    .venv/bin/python -m benchmarks.cluster_faults [--runs 3] [--cases all|ci|NAME,...] [--out F]

`--cases all` adds the cases CI leaves out for time (CLUSTER_CASES=all for the test module);
figures are JSON lines the test module appends to CLUSTER_FIGURES (one per case run)."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FIELDS = (
    "acknowledged",
    "missing",
    "duplicates",
    "duplicates_wait_true",
    "longest_no_2xx_wait_true_s",
    "longest_no_2xx_wait_false_s",
)


def run(runs: int, cases: str, out: Path) -> float:
    """Run the tier `runs` times; wall seconds of all runs."""
    env = {**os.environ, "CLUSTER_FIGURES": str(out), "CLUSTER_CASES": cases}
    began = time.monotonic()
    for i in range(runs):
        print(f"run {i + 1}/{runs} ...", file=sys.stderr, flush=True)
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "tests/cluster/test_replication.py",
                "-q",
                "-p",
                "no:cacheprovider",
            ],
            cwd=ROOT,
            env=env,
        )
        if done.returncode:
            print(f"run {i + 1} failed (exit {done.returncode})", file=sys.stderr)
    return time.monotonic() - began


def spread(values: list[float]) -> str:
    if not values:
        return "-"
    return (
        f"{min(values):g} / {statistics.median(values):g} / {max(values):g}"
        if len(values) > 1
        else f"{values[0]:g}"
    )


def summary(lines: list[dict[str, Any]]) -> str:
    """A markdown table: per case and gateway, min / median / max of each figure."""
    by: dict[tuple[str, str], list[dict[str, Any]]] = {}
    not_ready: dict[tuple[str, str], list[float]] = {}
    for line in lines:
        for gw, rows in line["rows"].items():
            by.setdefault((line["case"], gw), []).append(rows)
            not_ready.setdefault((line["case"], gw), []).append(line["readyz_not_200_s"][gw])
    head = ["case", "gateway", "runs", *FIELDS, "readyz_not_200_s"]
    out = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for (case, gw), rows in sorted(by.items()):
        cells = [
            case,
            gw,
            str(len(rows)),
            *(spread([r[f] for r in rows]) for f in FIELDS),
            spread(not_ready[(case, gw)]),
        ]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cases", default="all", help="all, ci, or comma-separated case names")
    ap.add_argument("--out", type=Path, help="keep the JSON lines here (default: a temp file)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp) / "figures.jsonl"
        wall = run(args.runs, args.cases, out)
        lines = [json.loads(x) for x in out.read_text().splitlines()] if out.exists() else []
    print(summary(lines))
    print(f"\n{len(lines)} case runs in {wall:.0f} s")
    return 0 if lines else 1


if __name__ == "__main__":
    sys.exit(main())
