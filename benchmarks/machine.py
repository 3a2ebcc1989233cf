"""What a result was measured on: the machine, the package versions, the git commit."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from benchmarks.procs import ROOT

PACKAGES = ("aiohttp", "msgspec", "aiokafka", "uvloop", "prometheus-client")


def _cpuinfo_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def machine() -> dict[str, Any]:
    """nproc, CPU model, memory, kernel, load average now."""
    return {
        "nproc": os.cpu_count(),
        "cpu_model": _cpuinfo_model(),
        "memory_gib": _mem_gib(),
        "kernel": platform.release(),
        "loadavg": list(os.getloadavg()),
    }


def versions(kafka: str | None) -> dict[str, str | None]:
    """Python, the stack's packages, and Kafka."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    out["kafka"] = kafka
    return out


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT, timeout=30)
    except OSError:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git() -> dict[str, Any]:
    """Commit, branch, and whether the working tree had changes (outside benchmarks/results)."""
    status = _git("status", "--porcelain", "--", ".", ":!benchmarks/results", ":!benchmarks/RESULTS.md")
    return {
        "commit": _git("rev-parse", "HEAD"),
        "branch": _git("rev-parse", "--abbrev-ref", "HEAD"),
        "dirty": bool(status),
    }


def now_utc() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
