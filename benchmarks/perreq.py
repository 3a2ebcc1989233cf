"""Per-request CPU of the ingest routes, repeatable on a loaded machine: the gateway's whole HTTP
stack (aiohttp's parser and request, the middleware, the dialect's handler, admission, queueing,
aiohttp's response writer) is fed pre-built keep-alive requests through transports that only
collect the replies: no sockets, no load generator, no Kafka (the embedded sink). The figure is
the process's CPU time (`time.process_time`) per request over the measured requests.

    PYTHONPATH=<checkout> python -m benchmarks.perreq [--route timeplus] [--rows 1] [--requests N]

Compare two checkouts by running each in turn (A, B, A, B, …) with the same interpreter.
`--refused` measures a refusal instead (S6's 429 `stream_rows`): after the warm-up the stream's
queue is held at its row bound, so every measured request is refused before its body is decoded.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop
from aiohttp import web

from benchmarks.payloads import COLUMNS, Payload, RowFactory, make_pool
from gateway.app import RUNNER_OPTIONS, build_app
from gateway.catalog.model import Column, Stream
from gateway.config import Settings
from gateway.connections import GuardedHandler
from gateway.context import GATEWAY
from gateway.limiters.address_share import AddressShares

ADMIN_KEY = "perreq-admin-key"
PATHS = {
    "timeplus": "/api/v1beta2/streams/{s}/ingest?wait=false",
    "tinybird": "/v0/events?name={s}&wait=false",
    "restproxy": "/topics/{s}",
}


class Sink(asyncio.Transport):
    """A transport that keeps nothing: counts replies (each begins with `HTTP/1.1 `)."""

    def __init__(self) -> None:
        super().__init__()
        self.replies = 0
        self.statuses: dict[bytes, int] = {}
        self.waiter: asyncio.Future[None] | None = None
        self._closing = False

    def write(self, data: Any) -> None:
        head = bytes(data[:12])
        if head.startswith(b"HTTP/1.1 "):
            status = head[9:12]
            self.statuses[status] = self.statuses.get(status, 0) + 1
            self.replies += 1
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_result(None)

    def writelines(self, chunks: Any) -> None:
        self.write(b"".join(chunks))

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        self._closing = True

    def abort(self) -> None:
        self._closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


def request_bytes(path: str, content_type: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nContent-Length: {len(body)}\r\n"
        f"X-Api-Key: {ADMIN_KEY}\r\nContent-Type: {content_type}\r\n\r\n"
    )
    return head.encode() + body


async def connection(
    proto: GuardedHandler, sink: Sink, requests: list[bytes], start: int, count: int
) -> None:
    """Send `count` requests one after another on one connection (keep-alive)."""
    loop = asyncio.get_running_loop()
    for i in range(count):
        sink.waiter = loop.create_future()
        proto.data_received(requests[(start + i) % len(requests)])
        await sink.waiter


def as_compact(ndjson: bytes) -> bytes:
    """The same rows as a compact body: `{"columns": [...], "data": [[...], ...]}`."""
    rows = [json.loads(line) for line in ndjson.splitlines() if line.strip()]
    columns = list(rows[0])
    return json.dumps({"columns": columns, "data": [[r.get(c) for c in columns] for r in rows]}).encode()


async def _acknowledged(*args: Any, **kwargs: Any) -> asyncio.Future[None]:
    """A sink's send that acknowledges at once: no I/O, no thread (repeatable counts)."""
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    done.set_result(None)
    return done


async def hold_full(gw: Any, stream: str) -> None:
    """Hold the stream's queue at its row bound once it has drained: every request is refused."""
    queue = next(q for (name, _), q in gw.queues._queues.items() if name == stream)
    while queue.rows:  # noqa: ASYNC110 (the flusher drains it; no event to await)
        await asyncio.sleep(0.01)
    queue.rows = queue.limits.max_rows


async def measure(
    route: str,
    rows: int,
    total: int,
    connections: int,
    warmup: int,
    rounds: int,
    linger_ms: float,
    null_sink: bool,
    refused: bool = False,
    compact: bool = False,
) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="perreq-"))
    app = build_app(Settings(data_dir=tmp, access_log=False, linger_ms=linger_ms), ADMIN_KEY)
    runner = web.AppRunner(app, **RUNNER_OPTIONS)
    await runner.setup()
    gw = app[GATEWAY]
    if null_sink:
        gw.sink.send = _acknowledged  # type: ignore[method-assign,assignment]
        gw.sink.send_lines = _acknowledged  # type: ignore[method-assign,assignment]
    await gw.lifecycle.wait_catalog()
    while not gw.ready:  # noqa: ASYNC110 (readiness is computed, no event to await)
        await asyncio.sleep(0.01)
    stream = "perreq"
    await gw.streams.create(
        Stream(stream, [Column(c["name"], c["type"]) for c in COLUMNS], ""), created_by="perreq"
    )
    payload = Payload("restproxy" if route == "restproxy" else "ndjson", rows)
    bodies = make_pool(payload, RowFactory("perreq"), 64)
    path = PATHS[route].format(s=stream)
    requests = [
        request_bytes(path, "application/json", as_compact(b.data))
        if compact
        else request_bytes(path, payload.content_type, b.data)
        for b in bodies
    ]
    server = runner.server
    assert server is not None
    loop = asyncio.get_running_loop()
    shares = AddressShares(10_000, gw.settings.address_share)  # as gateway.server wires them
    protos = []
    for _ in range(connections):
        proto = GuardedHandler(
            server,
            loop=loop,
            max_connections=10_000,
            header_timeout=10.0,
            shares=shares,
            budget=gw.queues.budget,
            max_head_bytes=gw.settings.max_head_bytes,
            **server._kwargs,
        )
        sink = Sink()
        proto.connection_made(sink)
        protos.append((proto, sink))
    per = max(1, warmup // connections)
    await asyncio.gather(*(connection(p, s, requests, i * 7, per) for i, (p, s) in enumerate(protos)))
    if refused:
        await hold_full(gw, stream)
    results = []
    for _ in range(rounds):
        gc.collect()
        per = total // connections
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(connection(p, s, requests, i * 11, per) for i, (p, s) in enumerate(protos)))
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        results.append(cpu / (per * connections) * 1e6)
    statuses: dict[str, int] = {}
    for _, s in protos:
        for k, v in s.statuses.items():
            statuses[k.decode()] = statuses.get(k.decode(), 0) + v
    await runner.cleanup()
    shutil.rmtree(tmp, ignore_errors=True)
    return {
        "route": route,
        "rows": rows,
        "refused": refused,
        "requests_per_round": per * connections,
        "cpu_us_per_request": results,
        "median": statistics.median(results),
        "statuses": statuses,
        "wall_s_last_round": wall,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--route", choices=sorted(PATHS), default="timeplus")
    p.add_argument("--rows", type=int, default=1, help="rows per request (S3: 1, S1: 100)")
    p.add_argument("--requests", type=int, default=20_000, help="requests per measured round")
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--warmup", type=int, default=4_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--linger-ms", type=float, default=5.0)
    p.add_argument(
        "--null-sink",
        action="store_true",
        help="acknowledge every flush at once (no file, no thread): with --linger-ms 0 "
        "the run has no timing in it, so instruction counts repeat (valgrind)",
    )
    p.add_argument(
        "--refused",
        action="store_true",
        help="measure refusals: the stream's queue is held full after the warm-up "
        "(every request gets 429 before its body is decoded, as in S6)",
    )
    p.add_argument(
        "--compact",
        action="store_true",
        help="send the rows as compact bodies (timeplus route) instead of NDJSON",
    )
    a = p.parse_args()
    result = uvloop.run(
        measure(
            a.route,
            a.rows,
            a.requests,
            a.connections,
            a.warmup,
            a.rounds,
            a.linger_ms,
            a.null_sink,
            a.refused,
            a.compact,
        )
    )
    json.dump(result, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
