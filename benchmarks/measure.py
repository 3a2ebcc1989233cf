"""One measured load phase: run the load generator against running servers, and account for it:
rows delivered into Kafka (end offsets after minus before), CPU seconds of the gateway, the broker
and the load generator, peak RSS, and the client's view (statuses, latency percentiles)."""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from benchmarks.broker import Offsets
from benchmarks.loadgen import Request, Spec, Step
from benchmarks.procs import (
    ROOT,
    Pinning,
    Server,
    child_env,
    cpu_delta,
    cpu_seconds,
    machine_busy_cpu_s,
    peak_rss_mb,
    process_tree,
    python_module,
    self_cpu_s,
    tree_cpu,
)

DELIVERY_TIMEOUT_S = 60.0  # how long accepted rows may take to show up in Kafka after the load


@dataclass
class Profile:
    """py-spy options: where to write, which format (flamegraph svg or speedscope json)."""

    out_dir: Path
    fmt: str = "flamegraph"
    rate: int = 100


@dataclass
class Load:
    """What to send, how, and to which servers."""

    targets: list[tuple[str, int]]
    requests: list[list[Request]]
    connections: int
    steps: list[Step]
    warmup_s: float = 1.0
    timeout_s: float = 10.0
    knee_p99_ms: float = 100.0
    stop_at_knee: bool = False
    topics: list[str] = field(default_factory=list)  # empty: nothing to count in Kafka (ceilings)


def build_request(
    host: str, port: int, path: str, headers: dict[str, str], body: bytes, rows: int, raw_bytes: int
) -> Request:
    """A whole POST as bytes, keep-alive."""
    head = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    data = ("\r\n".join(head) + "\r\n\r\n").encode() + body
    return Request(data, rows, raw_bytes)


async def _read_tagged(stream: asyncio.StreamReader, tag: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RuntimeError(f"load generator: no '{tag}' line within {timeout:.0f} s")
        line = await asyncio.wait_for(stream.readline(), remaining)
        if not line:
            raise RuntimeError(f"load generator exited before its '{tag}' line")
        text = line.decode()
        if text.startswith(tag + " "):
            parsed: dict[str, Any] = json.loads(text[len(tag) + 1 :])
            return parsed


def _py_spy() -> str:
    beside = Path(sys.executable).parent / "py-spy"
    exe = str(beside) if beside.exists() else shutil.which("py-spy")
    if not exe:
        raise RuntimeError("--profile needs py-spy (the `bench` extra: deploy/dev/setup bench)")
    return exe


def _write_spec(spec: Spec) -> Path:
    with tempfile.NamedTemporaryFile(prefix="bench-spec-", suffix=".msgpack", delete=False) as f:
        f.write(msgspec.msgpack.encode(spec))
        return Path(f.name)


async def _start_profiler(
    pid: int, seconds: float, profile: Profile, label: str, pinning: Pinning
) -> tuple[asyncio.subprocess.Process, Path] | None:
    exe = _py_spy()
    suffix = "svg" if profile.fmt == "flamegraph" else "speedscope.json"
    out = profile.out_dir / f"{label}.{suffix}"
    argv = pinning.wrap(
        "loadgen",
        [
            exe,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, math.ceil(seconds))),
            "--rate",
            str(profile.rate),
            "--format",
            profile.fmt,
            "--output",
            str(out),
            "--subprocesses",
        ],
    )
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    return proc, out


async def measure(
    load: Load,
    *,
    servers: list[Server],
    offsets: Offsets | None,
    broker_pid: int | None,
    pinning: Pinning,
    profile: Profile | None = None,
    label: str = "run",
) -> dict[str, Any]:
    """Run `load` against `servers`; the accounting of the measured phase (warm-up excluded)."""
    counted = bool(load.topics) and offsets is not None
    spec = Spec(
        targets=load.targets,
        requests=load.requests,
        connections=load.connections,
        warmup_s=load.warmup_s,
        steps=load.steps,
        timeout_s=load.timeout_s,
        knee_p99_ms=load.knee_p99_ms,
        stop_at_knee=load.stop_at_knee,
    )
    spec_path = _write_spec(spec)
    start_total = await offsets.total(load.topics) if counted and offsets else 0
    proc = await asyncio.create_subprocess_exec(
        *pinning.wrap("loadgen", python_module("benchmarks.loadgen", str(spec_path))),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env=child_env(),
        cwd=ROOT,
        limit=64 * 1024 * 1024,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        warm = await _read_tagged(proc.stdout, "ready", load.warmup_s + 120)
        before = start_total
        if counted and offsets:
            before, waited = await offsets.wait_for(
                load.topics, start_total + warm["rows_ok"], DELIVERY_TIMEOUT_S
            )
            if before < start_total + warm["rows_ok"]:
                raise RuntimeError(f"warm-up rows did not reach Kafka within {waited:.0f} s")
        roots = [s.pid for s in servers]
        cpu0 = tree_cpu(roots)
        broker0 = cpu_seconds(broker_pid) if broker_pid else None
        busy0, harness0 = machine_busy_cpu_s(), self_cpu_s()
        seconds = sum(s.seconds for s in load.steps)
        profiler = await _start_profiler(roots[0], seconds, profile, label, pinning) if profile else None
        t0 = time.monotonic()
        proc.stdin.write(b"go\n")
        await proc.stdin.drain()
        result = await _read_tagged(proc.stdout, "result", seconds * 2 + load.timeout_s + 120)
        await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        os.unlink(spec_path)
    steps: list[dict[str, Any]] = result["steps"]
    accepted = sum(s["rows_ok"] for s in steps)
    delivered = None
    drain_s = 0.0
    if counted and offsets:
        total, drain_s = await offsets.wait_for(load.topics, before + accepted, DELIVERY_TIMEOUT_S)
        delivered = total - before
    wall = time.monotonic() - t0
    cpu1 = tree_cpu(roots)
    broker1 = cpu_seconds(broker_pid) if broker_pid else None
    busy, harness = machine_busy_cpu_s() - busy0, self_cpu_s() - harness0
    rss = [peak_rss_mb(p) for root in roots for p in process_tree(root)]
    profiled = None
    if profiler is not None:
        pproc, path = profiler
        _, perr = await pproc.communicate()
        profiled = str(path) if path.exists() else f"py-spy failed: {perr.decode()[-500:]}"
    m = summarise(
        steps,
        accepted=accepted,
        delivered=delivered,
        drain_s=drain_s,
        wall_s=wall,
        gateway_cpu_s=cpu_delta(cpu0, cpu1),
        broker_cpu_s=(broker1 - broker0) if broker0 is not None and broker1 is not None else None,
        peak_rss_mb=sum(r for r in rss if r is not None),
        profile=profiled,
        connections=load.connections,
        warmup=warm,
    )
    # A load generator near a full core limits the figure itself: then it is not the server's.
    m["loadgen_saturated"] = m["loadgen_cpu_s"] >= 0.85 * m["elapsed_s"]
    m["harness_cpu_s"] = harness
    m["machine_busy_cpu_s"] = busy
    # Whatever else ran on the machine meanwhile (other users, py-spy): the noise of this figure.
    m["other_cpu_s"] = busy - m["gateway_cpu_s"] - (m["broker_cpu_s"] or 0) - m["loadgen_cpu_s"] - harness
    return m


def summarise(
    steps: list[dict[str, Any]],
    *,
    accepted: int,
    delivered: int | None,
    drain_s: float,
    wall_s: float,
    gateway_cpu_s: float,
    broker_cpu_s: float | None,
    peak_rss_mb: float,
    profile: str | None,
    connections: int,
    warmup: dict[str, Any],
) -> dict[str, Any]:
    """The figures of one measured phase; a run that lost acknowledged rows is FAILED, not a number."""
    elapsed = sum(s["elapsed_s"] for s in steps)
    status: dict[str, int] = {}
    errors: dict[str, int] = {}
    for s in steps:
        for code, n in s["status"].items():
            status[code] = status.get(code, 0) + n
        for kind, n in s["errors"].items():
            errors[kind] = errors.get(kind, 0) + n
    answered = sum(status.values())
    ok = sum(n for code, n in status.items() if 200 <= int(code) < 300)
    failure = None
    if delivered is not None and delivered < accepted:
        failure = (
            f"{accepted - delivered} acknowledged rows did not reach Kafka within "
            f"{DELIVERY_TIMEOUT_S:.0f} s ({delivered} of {accepted})"
        )
    rows_basis = delivered if delivered is not None else accepted
    m: dict[str, Any] = {
        "status": "FAILED" if failure else "ok",
        "failure": failure,
        "connections": connections,
        "elapsed_s": elapsed,
        "drain_s": drain_s,
        "wall_s": wall_s,
        "requests_sent": sum(s["sent"] for s in steps),
        "requests_answered": answered,
        "requests_ok": ok,
        "requests_missed": sum(s["missed"] for s in steps),
        "status_counts": status,
        "errors": errors,
        "count_429": status.get("429", 0),
        "count_503": status.get("503", 0),
        "count_5xx": sum(n for code, n in status.items() if int(code) >= 500),
        "count_errors": sum(errors.values()),
        "rows_accepted": accepted,
        "rows_delivered": delivered,
        "rows_duplicated": max(0, delivered - accepted) if delivered is not None else None,
        "rows_accepted_per_s": accepted / elapsed if elapsed else 0.0,
        "rows_delivered_per_s": (None if failure or delivered is None else delivered / (elapsed + drain_s)),
        "requests_per_s": answered / elapsed if elapsed else 0.0,
        "ok_requests_per_s": ok / elapsed if elapsed else 0.0,
        "mb_in_per_s": sum(s["wire_bytes"] for s in steps) / elapsed / 1e6 if elapsed else 0.0,
        "latency_ms": steps[0]["latency_ms"] if len(steps) == 1 else None,
        "gateway_cpu_s": gateway_cpu_s,
        "gateway_cpu_s_per_million_rows": (gateway_cpu_s / rows_basis * 1e6) if rows_basis else None,
        "gateway_peak_rss_mb": peak_rss_mb,
        "broker_cpu_s": broker_cpu_s,
        "loadgen_cpu_s": sum(s["cpu_s"] for s in steps),
        "warmup": warmup,
        "profile": profile,
    }
    if any(s.get("offered_rate") for s in steps):
        m["offered_requests"] = sum((s["offered_rate"] or 0) * s["seconds"] for s in steps)
        m["steps"] = steps
    return m
