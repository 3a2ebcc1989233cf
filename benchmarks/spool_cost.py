"""What durable mode (--spool-dir) costs: rows/s of wait=false ingest with and without the spool.

Runs the same load (concurrent clients posting 100-row NDJSON requests, wait=false) against a
gateway started without and then with --spool-dir, on the same machine and broker, alternating
the two a few times, and prints rows/s, p50/p99 request latency and requests per fsync.

    python benchmarks/spool_cost.py --kafka-bootstrap 127.0.0.1:19092 [--seconds 10] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
KEY = "bench-" + uuid.uuid4().hex


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def call(method: str, url: str, body: bytes | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers={"X-Api-Key": KEY})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def start_gateway(bootstrap: str, data_dir: Path, spool: bool) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    args = [
        sys.executable,
        "-m",
        "gateway",
        "serve",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        "--kafka-bootstrap",
        bootstrap,
        "--log-level",
        "WARNING",
    ]
    if spool:
        args += ["--spool-dir", str(data_dir / "spool")]
    proc = subprocess.Popen(
        args,
        cwd=ROOT,
        env={**os.environ, "GATEWAY_ADMIN_KEY": KEY},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if call("GET", url + "/readyz")[0] == 200:
                return proc, url
        except OSError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("gateway did not become ready")


def fsyncs(url: str) -> float:
    text = call("GET", url + "/metrics")[1].decode()
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("gateway_spool_fsyncs_total ")
    )


async def load(
    url: str, stream: str, clients: int, seconds: float, rows: int
) -> tuple[int, int, list[float]]:
    """Requests and rows answered 202 within `seconds`, and each request's latency."""
    body = "".join(json.dumps({"id": f"r{i}", "n": i, "s": "x" * 120}) + "\n" for i in range(rows)).encode()
    headers = {"X-Api-Key": KEY, "Content-Type": "application/x-ndjson"}
    done = [0, 0]
    latencies: list[float] = []
    deadline = time.monotonic() + seconds

    async def client(session: aiohttp.ClientSession) -> None:
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            async with session.post(
                f"{url}/api/v1beta2/streams/{stream}/ingest?wait=false", data=body, headers=headers
            ) as resp:
                await resp.read()
                if resp.status == 202:
                    done[0] += 1
                    done[1] += rows
                    latencies.append(time.monotonic() - t0)
                else:
                    await asyncio.sleep(0.01)

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    return done[0], done[1], latencies


def run_once(bootstrap: str, spool: bool, args: argparse.Namespace) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="spool-cost-") as tmp:
        proc, url = start_gateway(bootstrap, Path(tmp), spool)
        try:
            stream = f"bench_{uuid.uuid4().hex[:10]}"
            status, body = call(
                "POST",
                url + "/api/v1beta2/streams",
                json.dumps(
                    {
                        "name": stream,
                        "columns": [
                            {"name": "id", "type": "string"},
                            {"name": "n", "type": "int64"},
                            {"name": "s", "type": "string"},
                        ],
                    }
                ).encode(),
            )
            assert status == 201, body
            asyncio.run(load(url, stream, args.clients, 2.0, args.rows))  # warm-up
            before = fsyncs(url)
            requests, rows, latencies = asyncio.run(load(url, stream, args.clients, args.seconds, args.rows))
            syncs = fsyncs(url) - before
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    q = statistics.quantiles(latencies, n=100)
    return {
        "rows_per_s": rows / args.seconds,
        "p50_ms": q[49] * 1000,
        "p99_ms": q[98] * 1000,
        "requests_per_fsync": requests / syncs if syncs else 0.0,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--kafka-bootstrap", default=os.environ.get("GATEWAY_KAFKA_BOOTSTRAP", "127.0.0.1:19092"))
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--rows", type=int, default=100)
    args = p.parse_args()
    results: dict[str, list[dict[str, float]]] = {"no spool": [], "spool": []}
    for _ in range(args.rounds):
        for mode in ("no spool", "spool"):
            results[mode].append(run_once(args.kafka_bootstrap, mode == "spool", args))
            print(mode, {k: round(v, 1) for k, v in results[mode][-1].items()}, flush=True)
    print(
        f"\n{args.clients} clients, {args.rows}-row NDJSON requests (~150 B/row), wait=false, "
        f"{args.seconds:g} s per run, {args.rounds} rounds (median of rounds)"
    )
    print("| mode | rows/s | p50 ms | p99 ms | requests per fsync |")
    print("| --- | --- | --- | --- | --- |")
    for mode, runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(
            f"| {mode} | {med['rows_per_s']:,.0f} | {med['p50_ms']:.1f} | {med['p99_ms']:.1f} | "
            f"{med['requests_per_fsync']:.1f} |"
        )
    base = statistics.median(r["rows_per_s"] for r in results["no spool"])
    spooled = statistics.median(r["rows_per_s"] for r in results["spool"])
    print(f"\nthroughput cost of --spool-dir: {100 * (1 - spooled / base):.1f} %")


if __name__ == "__main__":
    main()
