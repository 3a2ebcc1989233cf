"""The load generator: its own process, asyncio + uvloop, raw pre-built HTTP/1.1 keep-alive requests.

Run as `python -m benchmarks.loadgen SPEC` where SPEC is a msgpack file written by the harness
(`Spec`). Each connection sends one request at a time. A step is either closed loop (rate 0: every
connection sends back to back) or open loop (a fixed offered rate; latency is measured from each
request's intended send time, so a stalled server cannot hide its queueing: no coordinated
omission). A ramp is a list of open-loop steps, optionally stopping at the first step past the knee.

Protocol on stdout: after the warm-up one line `ready {json}`; the harness snapshots the gateway and
answers `go` on stdin; then one line `result {json}` and exit.
"""

from __future__ import annotations

import array
import asyncio
import json
import resource
import sys
import time
from collections.abc import Callable
from typing import Any, cast

import msgspec
import uvloop

KNEE_ACHIEVED = 0.95  # a step passes while ≥ 95% of the offered requests are answered 2xx …
KNEE_BAD_SHARE = 0.01  # … at most 1% of them get a non-2xx or an error …
# … and p99 stays under the spec's knee_p99_ms.


class Request(msgspec.Struct, frozen=True):
    """One pre-built request: the whole HTTP/1.1 message, and what it carries."""

    data: bytes
    rows: int
    body_bytes: int


class Step(msgspec.Struct, frozen=True):
    """One load phase: `rate` requests/s offered (0 = closed loop) for `seconds`."""

    rate: float
    seconds: float


class Spec(msgspec.Struct, frozen=True):
    """Everything the load generator does, written by the harness."""

    targets: list[tuple[str, int]]
    requests: list[list[Request]]  # per target, cycled
    connections: int
    warmup_s: float
    steps: list[Step]
    timeout_s: float = 10.0
    knee_p99_ms: float = 100.0
    stop_at_knee: bool = False


class ConnectionLost(Exception):
    """The connection closed (or was aborted on timeout) before the response was complete."""


class Conn(asyncio.Protocol):
    """A keep-alive HTTP/1.1 client connection with at most one request in flight."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.fut: asyncio.Future[int] | None = None
        self.sent_at = 0.0
        self.closed = False
        self.timed_out = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def send(self, data: bytes, loop: asyncio.AbstractEventLoop) -> asyncio.Future[int]:
        assert self.transport is not None
        fut: asyncio.Future[int] = loop.create_future()
        self.fut = fut
        self.sent_at = time.perf_counter()
        self.transport.write(data)
        return fut

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        fut = self.fut
        if fut is None:
            return
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(buf[:end]).lower()
        at = head.find(b"\r\ncontent-length:")
        if at < 0:  # the gateway and the ceiling servers always send Content-Length
            self.fut = None
            fut.set_exception(ConnectionLost("response without Content-Length"))
            self.abort()
            return
        stop = head.find(b"\r\n", at + 2)
        length = int(head[at + 17 : stop if stop >= 0 else len(head)])
        need = end + 4 + length
        if len(buf) < need:
            return
        status = int(buf[9:12])
        if b"\r\nconnection: close" in head:
            self.closed = True
        del buf[:need]
        self.fut = None
        fut.set_result(status)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        fut = self.fut
        if fut is not None and not fut.done():
            self.fut = None
            fut.set_exception(ConnectionLost("timeout" if self.timed_out else "closed"))

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class Stats:
    """Counts and every latency of one step."""

    def __init__(self) -> None:
        self.latencies = array.array("d")
        self.status = [0] * 600
        self.errors: dict[str, int] = {}
        self.rows_ok = 0
        self.sent = 0
        self.missed = 0  # offered (open loop) but no connection was free before the step ended
        self.body_bytes = 0
        self.wire_bytes = 0

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def summary(self, step: Step, elapsed: float, cpu_s: float, knee_p99_ms: float) -> dict[str, Any]:
        lat = sorted(self.latencies)
        status = {str(code): n for code, n in enumerate(self.status) if n}
        ok = sum(n for code, n in enumerate(self.status) if 200 <= code < 300)
        bad = self.sent - ok
        out: dict[str, Any] = {
            "offered_rate": step.rate or None,
            "seconds": step.seconds,
            "elapsed_s": elapsed,
            "sent": self.sent,
            "answered": sum(self.status),
            "ok": ok,
            "missed": self.missed,
            "status": status,
            "errors": self.errors,
            "rows_ok": self.rows_ok,
            "body_bytes": self.body_bytes,
            "wire_bytes": self.wire_bytes,
            "requests_per_s": sum(self.status) / elapsed if elapsed else 0.0,
            "ok_per_s": ok / elapsed if elapsed else 0.0,
            "rows_ok_per_s": self.rows_ok / elapsed if elapsed else 0.0,
            "mb_in_per_s": self.wire_bytes / elapsed / 1e6 if elapsed else 0.0,
            "cpu_s": cpu_s,
            "latency_ms": percentiles(lat),
        }
        if step.rate:
            offered = step.rate * step.seconds
            p99 = out["latency_ms"]["p99"]
            out["passed"] = bool(
                ok >= KNEE_ACHIEVED * offered
                and bad <= KNEE_BAD_SHARE * max(1, self.sent)
                and p99 is not None
                and p99 <= knee_p99_ms
            )
        return out


def percentiles(sorted_s: list[float]) -> dict[str, float | int | None]:
    """p50/p90/p99/p99.9/max/mean in milliseconds of sorted latencies in seconds (nearest rank)."""
    n = len(sorted_s)
    if not n:
        return {"count": 0, "p50": None, "p90": None, "p99": None, "p999": None, "max": None, "mean": None}

    def rank(q: float) -> float:
        return sorted_s[min(n - 1, max(0, int(q * n + 0.999999) - 1))] * 1000

    return {
        "count": n,
        "p50": rank(0.50),
        "p90": rank(0.90),
        "p99": rank(0.99),
        "p999": rank(0.999),
        "max": sorted_s[-1] * 1000,
        "mean": sum(sorted_s) / n * 1000,
    }


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class LoadGenerator:
    """Connections, request cycling, and the closed/open loop workers."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.loop = asyncio.get_running_loop()
        self.conns: list[Conn] = []
        self.slots_target = [i % len(spec.targets) for i in range(spec.connections)]
        self.next_request = [0] * len(spec.targets)
        self.next_intended = 0
        self.watchdog: asyncio.Task[None] | None = None

    async def connect(self, target: int) -> Conn:
        host, port = self.spec.targets[target]
        for attempt in range(50):
            try:
                _, proto = await self.loop.create_connection(Conn, host, port)
                return proto
            except OSError:
                if attempt == 49:
                    raise
                await asyncio.sleep(0.1)
        raise AssertionError("unreachable")

    async def start(self) -> None:
        self.conns = list(await asyncio.gather(*(self.connect(t) for t in self.slots_target)))
        self.watchdog = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        timeout = self.spec.timeout_s
        while True:
            await asyncio.sleep(0.1)
            now = time.perf_counter()
            for c in self.conns:
                if c.fut is not None and now - c.sent_at > timeout:
                    c.timed_out = True
                    c.abort()

    def _take(self, target: int) -> Request:
        reqs = self.spec.requests[target]
        i = self.next_request[target]
        self.next_request[target] = i + 1
        return reqs[i % len(reqs)]

    async def _exchange(self, slot: int, req: Request, stats: Stats) -> int | None:
        """Send one request on the slot's connection; the status, or None after an error."""
        conn = self.conns[slot]
        if conn.closed:
            try:
                conn = self.conns[slot] = await self.connect(self.slots_target[slot])
            except OSError:
                stats.error("connect")
                return None
        stats.sent += 1
        stats.body_bytes += req.body_bytes
        stats.wire_bytes += len(req.data)
        try:
            status = await conn.send(req.data, self.loop)
        except ConnectionLost as exc:
            stats.error(str(exc))
            return None
        stats.status[status if 0 <= status < 600 else 0] += 1
        if 200 <= status < 300:
            stats.rows_ok += req.rows
        return status

    async def _closed_worker(self, slot: int, stats: Stats, end: float) -> None:
        target = self.slots_target[slot]
        perf = time.perf_counter
        lat = stats.latencies.append
        while True:
            t0 = perf()
            if t0 >= end:
                return
            if await self._exchange(slot, self._take(target), stats) is not None:
                lat(perf() - t0)
            elif perf() - t0 < 0.001:
                await asyncio.sleep(0.01)  # failing fast (refused): do not spin

    async def _open_worker(self, slot: int, stats: Stats, start: float, rate: float, end: float) -> None:
        target = self.slots_target[slot]
        perf = time.perf_counter
        lat = stats.latencies.append
        while True:
            k = self.next_intended
            self.next_intended = k + 1
            intended = start + k / rate
            if intended >= end:
                return
            delay = intended - perf()
            if delay > 0.0005:
                await asyncio.sleep(delay)
            elif perf() >= end:  # due during the step, but no connection was free in time
                stats.missed += 1
                continue
            if await self._exchange(slot, self._take(target), stats) is not None:
                lat(perf() - intended)

    async def run_step(self, step: Step) -> tuple[Stats, float, float]:
        """Run one step; its stats, elapsed seconds and CPU seconds."""
        stats = Stats()
        cpu0 = _cpu()
        start = time.perf_counter() + 0.002
        end = start + step.seconds
        workers: list[Callable[[int], Any]]
        if step.rate > 0:
            self.next_intended = 0
            workers = [lambda s: self._open_worker(s, stats, start, step.rate, end)]
        else:
            workers = [lambda s: self._closed_worker(s, stats, end)]
        await asyncio.gather(*(workers[0](slot) for slot in range(len(self.conns))))
        elapsed = time.perf_counter() - start
        return stats, elapsed, _cpu() - cpu0

    async def close(self) -> None:
        if self.watchdog is not None:
            self.watchdog.cancel()
        for c in self.conns:
            if c.transport is not None:
                c.transport.close()


async def _read_line() -> str:
    return await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


async def run(spec: Spec) -> dict[str, Any]:
    """Warm up, hand-shake with the harness, run every step."""
    gen = LoadGenerator(spec)
    await gen.start()
    first = spec.steps[0]
    warm = Stats()
    if spec.warmup_s > 0:
        warm, elapsed, cpu = await gen.run_step(Step(first.rate, spec.warmup_s))
    print(
        "ready "
        + json.dumps(
            {
                "rows_ok": warm.rows_ok,
                "sent": warm.sent,
                "status": {str(c): n for c, n in enumerate(warm.status) if n},
                "errors": warm.errors,
            }
        ),
        flush=True,
    )
    if (await _read_line()).strip() != "go":
        await gen.close()
        return {"aborted": True}
    steps = []
    for step in spec.steps:
        stats, elapsed, cpu = await gen.run_step(step)
        summary = stats.summary(step, elapsed, cpu, spec.knee_p99_ms)
        steps.append(summary)
        if spec.stop_at_knee and not summary.get("passed", True):
            break
    await gen.close()
    return {"steps": steps, "connections": spec.connections}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m benchmarks.loadgen SPEC.msgpack", file=sys.stderr)
        return 2
    with open(args[0], "rb") as f:
        spec = msgspec.msgpack.decode(f.read(), type=Spec)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        result = runner.run(run(spec))
    print("result " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
