"""`python -m benchmarks` (or `benchmarks/run`): parse options, run, write the results."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import sys
from pathlib import Path

import uvloop

from benchmarks import broker
from benchmarks.machine import now_utc
from benchmarks.procs import ROOT
from benchmarks.report import write_chart, write_results_md
from benchmarks.runner import CEILINGS, Options, Run
from benchmarks.scenarios import SCENARIOS


def _list(text: str, allowed: list[str], what: str) -> list[str]:
    if text.lower() == "all":
        return list(allowed)
    if text.lower() == "none":
        return []
    items = [t.strip() for t in text.split(",") if t.strip()]
    wrong = [t for t in items if t not in allowed]
    if wrong:
        raise argparse.ArgumentTypeError(f"unknown {what} {wrong}; choose from {allowed}")
    return [a for a in allowed if a in items]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="benchmarks/run",
        description="Benchmark the gateway against a real Kafka: scenarios S1-S9 (issues 4 and 13), with "
        "ceilings measured in the same run by the same load generator.",
    )
    p.add_argument(
        "--scenario", default="all", help="comma-separated scenario ids (S1..S9), or all (default)"
    )
    p.add_argument(
        "--duration",
        type=float,
        default=None,
        help="seconds of each measured phase (default 20; 3 with --quick)",
    )
    p.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="seconds of warm-up before each phase, not measured (default 1; 0.5 quick)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="short run: 3 s phases, 3 ramp steps of 2 s, small ProducerPerformance",
    )
    p.add_argument(
        "--connections",
        type=int,
        default=None,
        help="connections for every phase instead of each scenario's own (64; S6 256)",
    )
    p.add_argument(
        "--rate",
        type=float,
        default=None,
        help="open loop at this many requests/s instead of closed loop (not S6)",
    )
    p.add_argument(
        "--no-ramp",
        dest="ramp",
        action="store_false",
        help="skip S1's open-loop ramp (the knee; S6 then measures it itself)",
    )
    p.add_argument(
        "--ramp-step", type=float, default=None, help="seconds per ramp step (default 4; 2 with --quick)"
    )
    p.add_argument(
        "--knee-p99-ms",
        type=float,
        default=100.0,
        help="a ramp step whose p99 exceeds this is past the knee (default 100)",
    )
    p.add_argument(
        "--overload-duration",
        type=float,
        default=None,
        help="seconds of S6's overload (default 30; the phase duration with --quick)",
    )
    p.add_argument(
        "--ceilings",
        default="all",
        help=f"all (default), none, or a comma-separated subset of {','.join(CEILINGS)}",
    )
    p.add_argument(
        "--pin",
        default="auto",
        help="CPU pinning: auto (gateway side on core 0, load generator on core 1 when "
        "there are 2+ cores), none, or GATEWAY_CORES/LOADGEN_CORES as taskset lists "
        "(e.g. 0/1, 0-1/2)",
    )
    p.add_argument(
        "--kafka-bootstrap",
        default=None,
        help="use this running broker (never started or stopped by the harness)",
    )
    p.add_argument(
        "--keep-kafka",
        action="store_true",
        help="leave the development broker running if this run started it",
    )
    p.add_argument(
        "--gateway-args",
        default="",
        help='extra `gateway serve` flags for every gateway, e.g. "--linger-ms 2"',
    )
    p.add_argument(
        "--profile",
        nargs="?",
        const="flamegraph",
        choices=("flamegraph", "speedscope"),
        default=None,
        help="record each scenario's gateway with py-spy (svg flamegraph by default, or "
        "speedscope json) into the results directory; figures of a profiled run "
        "are distorted by the sampling",
    )
    p.add_argument("--timeout", type=float, default=10.0, help="client timeout per request (s)")
    p.add_argument("--note", default="", help="free text stored with the run (what changed)")
    p.add_argument(
        "--out",
        type=Path,
        default=ROOT / "benchmarks" / "results",
        help="directory for the run's JSON, chart and profiles",
    )
    p.add_argument(
        "--results-md",
        type=Path,
        default=ROOT / "benchmarks" / "RESULTS.md",
        help="Markdown file whose run tables are regenerated from --out",
    )
    p.add_argument(
        "--no-chart",
        dest="chart",
        action="store_false",
        help="do not draw the PNG (matplotlib is only in the `bench` extra)",
    )
    return p


def options(args: argparse.Namespace) -> Options:
    quick = args.quick
    duration = args.duration if args.duration is not None else (3.0 if quick else 20.0)
    return Options(
        scenarios=_list(args.scenario.upper(), list(SCENARIOS), "scenario"),
        duration=duration,
        warmup=args.warmup if args.warmup is not None else (0.5 if quick else 1.0),
        quick=quick,
        connections=args.connections,
        rate=args.rate,
        ramp=args.ramp,
        ramp_step=args.ramp_step if args.ramp_step is not None else (2.0 if quick else 4.0),
        knee_p99_ms=args.knee_p99_ms,
        overload_duration=(
            args.overload_duration if args.overload_duration is not None else (duration if quick else 30.0)
        ),
        ceilings=_list(args.ceilings, list(CEILINGS), "ceiling"),
        pin=args.pin,
        kafka_bootstrap=args.kafka_bootstrap,
        kafka_port=int(os.environ.get("KAFKA_DEV_PORT", broker.DEFAULT_PORT)),
        keep_kafka=args.keep_kafka,
        gateway_args=shlex.split(args.gateway_args),
        profile=args.profile,
        timeout=args.timeout,
        note=args.note,
        out=args.out,
    )


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    try:
        opts = options(args)
    except argparse.ArgumentTypeError as exc:
        p.error(str(exc))
    opts.out.mkdir(parents=True, exist_ok=True)
    run_id = now_utc().strftime("%Y%m%dT%H%M%SZ")
    run = Run(opts, run_id)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        result = runner.run(run.execute())
    json_path = opts.out / f"{run_id}.json"
    if args.chart:
        try:
            png = write_chart(result, opts.out / f"{run_id}.png")
            result["chart"] = png.name
        except ImportError:
            print("bench: matplotlib is missing (deploy/dev/setup bench); no chart", file=sys.stderr)
    json_path.write_text(json.dumps(result, indent=1, default=str) + "\n")
    write_results_md(opts.out, args.results_md)
    print(f"bench: results in {json_path} and {args.results_md}", flush=True)
    failed = [
        sid
        for sid, r in result["scenarios"].items()
        if r.get("goal", {}).get("status") in ("FAILED", "error")
    ]
    if failed:
        print(
            f"bench: FAILED runs (acknowledged rows missing, or errors): {', '.join(failed)}", file=sys.stderr
        )
        return 1
    return 0
