"""Processes the harness starts and watches: CPU seconds and peak RSS from /proc, pinning with
taskset, and server subprocesses (the gateway, the ceiling servers) with their logs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import shutil
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

ROOT = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of every Python child: this checkout's packages first on the path."""
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": str(ROOT) + (os.pathsep + path if path else ""), **(extra or {})}


@dataclass(frozen=True, slots=True)
class Pinning:
    """CPU affinity (taskset -c lists) of the gateway side and of the load generator; None = free."""

    gateway: str | None
    loadgen: str | None

    @staticmethod
    def choose(mode: str) -> Pinning:
        """`auto`: gateway on core 0 and load on core 1 when two cores exist; `none`; or `G/L`."""
        if mode == "none":
            return Pinning(None, None)
        if mode == "auto":
            if (os.cpu_count() or 1) >= 2 and shutil.which("taskset"):
                return Pinning("0", "1")
            return Pinning(None, None)
        gateway, _, loadgen = mode.partition("/")
        return Pinning(gateway or None, loadgen or None)

    def wrap(self, side: str, argv: list[str]) -> list[str]:
        """`argv` under `taskset -c CORES` for the given side ("gateway" or "loadgen")."""
        cores = self.gateway if side == "gateway" else self.loadgen
        return ["taskset", "-c", cores, *argv] if cores else argv


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- /proc ----------------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process (all its threads), or None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_busy_cpu_s() -> float:
    """CPU seconds all cores spent busy since boot (/proc/stat: everything but idle and iowait)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def self_cpu_s() -> float:
    """CPU seconds of this (the harness) process."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _ppid_map() -> dict[int, int]:
    out: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            out[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    return out


def process_tree(pid: int) -> list[int]:
    """The process and all its descendants (e.g. a gateway's worker processes)."""
    parents = _ppid_map()
    tree, frontier = [pid], [pid]
    while frontier:
        frontier = [p for p, pp in parents.items() if pp in frontier]
        tree += frontier
    return tree


def tree_cpu(pids: list[int]) -> dict[int, float]:
    """CPU seconds of each process of the trees rooted at `pids`."""
    out: dict[int, float] = {}
    for root in pids:
        for p in process_tree(root):
            cpu = cpu_seconds(p)
            if cpu is not None:
                out[p] = cpu
    return out


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds spent between two `tree_cpu` snapshots (processes started since count fully)."""
    return sum(cpu - before.get(p, 0.0) for p, cpu in after.items())


def peak_rss_mb(pid: int) -> float | None:
    """VmHWM (peak resident set) of a process in MB, or None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def pid_listening_on(port: int) -> int | None:
    """The process that listens on TCP `port` on this machine (e.g. the broker), if visible."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(cols[9])
    if not inodes:
        return None
    targets = {f"socket:[{i}]" for i in inodes}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{entry}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{entry}/fd/{fd}") in targets:
                        return int(entry)
    return None


# ---- servers --------------------------------------------------------------------------------
@dataclass
class Server:
    """A server subprocess (gateway or ceiling) on a port, with its output in a log file."""

    name: str
    argv: list[str]
    port: int
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: asyncio.subprocess.Process | None = None
    exit_code: int | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self) -> Server:
        log = self._open_log()
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                stdin=asyncio.subprocess.DEVNULL,
                env=child_env(self.env),
                cwd=ROOT,
            )
        finally:
            log.close()
        return self

    def _open_log(self) -> BinaryIO:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        return open(self.log_path, "ab")

    async def wait_listening(self, timeout: float = 60) -> None:
        """Poll until the port accepts connections; fail if the process exits first."""
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            if self.proc.returncode is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not listen on {self.port} within {timeout} s")
            await asyncio.sleep(0.1)

    async def stop(self, timeout: float = 90) -> int | None:
        """SIGTERM and wait for the exit code (SIGKILL after `timeout`)."""
        if self.proc is None:
            return None
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self.exit_code = self.proc.returncode
        return self.exit_code

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def python_module(module: str, *args: str) -> list[str]:
    """argv that runs a module with this interpreter."""
    return [sys.executable, "-m", module, *args]
