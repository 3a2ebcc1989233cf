"""Helpers of the deployment tests (workers, nginx, Prometheus): scraping /metrics, sending a known
number of rows over many connections, and finding a supervisor's worker processes."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.integration.harness import ADMIN_KEY, http, wait_until


def scrape(base_url: str) -> tuple[dict[tuple[str, frozenset[tuple[str, str]]], float], str]:
    """One scrape of `base_url/metrics`: {(sample name, labels): value}, and the serving worker."""
    reply = http("GET", base_url + "/metrics", timeout=10)
    assert reply.status == 200, reply.body[:500]
    samples = {}
    for family in text_string_to_metric_families(reply.body.decode()):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples, reply.headers.get("X-Gateway-Worker", "")


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels` (0 when there is none)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


@dataclass
class Sent:
    """What a batch of ingest requests did: rows acknowledged, and which workers answered."""

    rows: int = 0
    ids: list[str] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    workers: Counter[str] = field(default_factory=Counter)


def send_rows(
    base_url: str,
    stream: str,
    *,
    requests: int,
    rows_per_request: int,
    threads: int = 8,
    prefix: str = "r",
    wait: bool = True,
    headers: dict[str, str] | None = None,
) -> Sent:
    """POST `requests` NDJSON bodies of `rows_per_request` rows, each on a new connection."""

    def one(i: int) -> tuple[int, str, list[str]]:
        ids = [f"{prefix}-{i}-{j}" for j in range(rows_per_request)]
        body = "".join(json.dumps({"id": rid, "n": j}) + "\n" for j, rid in enumerate(ids))
        h = {"X-Api-Key": ADMIN_KEY, "Content-Type": "application/x-ndjson", **(headers or {})}
        reply = http(
            "POST",
            f"{base_url}/api/v1beta2/streams/{stream}/ingest?wait={'true' if wait else 'false'}",
            body,
            headers=h,
            timeout=60,
        )
        return reply.status, reply.headers.get("X-Gateway-Worker", ""), ids

    sent = Sent()
    with ThreadPoolExecutor(threads) as pool:
        for status, worker, ids in pool.map(one, range(requests)):
            sent.statuses[status] += 1
            sent.workers[worker] += 1
            if status in (200, 202):
                sent.rows += len(ids)
                sent.ids += ids
    return sent


def worker_pids(parent: int) -> set[int]:
    """The pids of a supervisor's live worker processes (its multiprocessing-spawned children)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, ...
        if int(fields[1]) == parent and fields[0] != "Z" and b"spawn_main" in cmdline:
            found.add(int(entry.name))
    return found


def listening_workers(log: str) -> dict[int, int]:
    """{worker index: pid} of the latest "worker N (pid P) listening" line per index."""
    found: dict[int, int] = {}
    for m in re.finditer(r"worker (\d+) \(pid (\d+)\) listening", log):
        found[int(m.group(1))] = int(m.group(2))
    return found


def stream_columns() -> list[dict[str, Any]]:
    """The schema send_rows writes: an id and a number."""
    return [{"name": "id", "type": "string"}, {"name": "n", "type": "int64"}]


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (and is not a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def wait_workers_ready(base_url: str, workers: int, timeout: float = 30) -> None:
    """Poll /readyz (a new connection each time) until every worker index has answered 200."""
    ready: set[str] = set()

    def all_ready() -> bool:
        try:
            reply = http("GET", base_url + "/readyz", timeout=2)
        except OSError:
            return False
        if reply.status == 200:
            ready.add(reply.headers.get("X-Gateway-Worker", ""))
        return len(ready) >= workers

    wait_until(all_ready, timeout, f"all {workers} workers ready")


@contextlib.contextmanager
def stopped_at_exit(procs: list[Any]) -> Iterator[None]:
    """Make sure the gateways (harness.Gateway) and other subprocesses in `procs` (the list may
    grow inside the block) are gone when it ends, also when a test fails half-way."""
    try:
        yield
    finally:
        for p in procs:
            proc = getattr(p, "proc", p)
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
