"""Steady state before a many-stream phase (S7): every partition of every stream has taken two
record batches, and the broker has stopped working on the new topics.

Measured on this machine (perf on the broker during S7, 2026-12-01): 75 % of the broker's samples
in the phase were page faults on its mmapped offset/time index files (`filemap_fault` →
`page_cache_ra_order` → zero-filling). Kafka preallocates each index as a sparse 10 MiB file and
writes its first entry on a partition's second batch; the disk's read-ahead here is 8 MiB
(/sys/block/vda/queue/read_ahead_kb), so that first write zero-fills up to 8 MiB of page cache.
Once per partition, i.e. set-up, but with 600 partitions it is seconds of broker CPU, and it fell
into the measured phase or not depending on when each partition got its second batch: S7's broker
CPU swung 4.5-17.5 s in a 10 s phase for the same code. Creating the topics also keeps the
broker's metadata thread busy for up to ~30 s, and the gateway opens each stream's queue, flusher
and metrics on its first request.

So the harness first sends `rounds` requests with `wait=true` one after another to every stream
(each is its own flush, and the gateway moves unkeyed flushes to the next partition: two rounds
per partition touch every index), then waits until the broker stays below `idle_cores` for
`quiet_s` in a row, at most `timeout_s`. What it waited, and whether the broker settled, goes
into the scenario's config.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from benchmarks.procs import cpu_seconds


@dataclass(frozen=True, slots=True)
class Priming:
    """Requests for each stream: where to send them, what, and how many."""

    base_url: str
    paths: list[str]  # each stream's ingest path, without the query
    headers: dict[str, str]
    body: bytes
    rounds: int = 6  # requests per stream, one after another: 2 x the topic's partitions
    parallel: int = 32  # streams primed at once


async def prime(p: Priming, timeout_s: float = 120.0) -> float:
    """Send `p.body` with wait=true `p.rounds` times to every path, one after another per path
    and `p.parallel` paths at once; the seconds it took. Raises when a stream does not answer
    2xx: its figures would not be steady-state ones."""
    start = time.monotonic()
    sem = asyncio.Semaphore(p.parallel)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:

        async def one(path: str) -> None:
            async with sem:
                for _ in range(p.rounds):
                    async with session.post(
                        f"{p.base_url}{path}?wait=true", data=p.body, headers=p.headers
                    ) as r:
                        if r.status >= 300:
                            raise RuntimeError(f"priming {path} → {r.status}: {await r.text()}")

        await asyncio.gather(*(one(path) for path in p.paths))
    return time.monotonic() - start


async def broker_idle(
    pid: int | None,
    *,
    idle_cores: float = 0.15,
    quiet_s: float = 3.0,
    window_s: float = 0.5,
    timeout_s: float = 60.0,
) -> dict[str, Any]:
    """Wait until the broker's CPU stays below `idle_cores` for `quiet_s` in a row (windows of
    `window_s`), at most `timeout_s`: what was waited, whether it settled, the last rate seen."""
    start = time.monotonic()
    quiet_since: float | None = None
    rate = None
    settled = pid is None
    while not settled and time.monotonic() - start < timeout_s:
        before = cpu_seconds(pid) if pid else None
        await asyncio.sleep(window_s)
        after = cpu_seconds(pid) if pid else None
        if before is None or after is None:  # the broker is gone: nothing to wait for
            break
        rate = (after - before) / window_s
        now = time.monotonic()
        if rate >= idle_cores:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = now - window_s
        settled = quiet_since is not None and now - quiet_since >= quiet_s
    return {
        "broker_idle_wait_s": round(time.monotonic() - start, 2),
        "broker_settled": settled,
        "broker_last_cores": rate,
        "broker_idle_rule": f"< {idle_cores:g} core for "
        f"{quiet_s:g} s in a row (windows of {window_s:g} s), at most {timeout_s:g} s",
    }
