"""Soak: mixed valid traffic plus 2 MB bodies with one bad row, RSS sampled (issue 20, item 13).

Starts an embedded gateway (`python -m gateway serve`, the development sink), then for
`--seconds` sends small valid NDJSON requests from `--clients` threads and, from three more
threads, a 2 MB body with one invalid row every `--bad-interval-s` to each of the paths that keep
an error: a Timeplus 400, Timeplus `?on_error=quarantine` and Tinybird (which quarantines). Prints
the gateway's RSS at the start, its peak and at the end, and the replies by status, as JSON:

    python -m benchmarks.soak_invalid --seconds 90
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

ADMIN = "soak-" + uuid.uuid4().hex
COLUMNS = [{"name": "id", "type": "string"}, {"name": "n", "type": "int32"}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def bad_body(nbytes: int) -> bytes:
    """About `nbytes` of NDJSON rows, one of them (in the middle) invalid."""
    row = b'{"id": "%s", "n": 1}\n' % (b"x" * 200)
    rows = [row] * (nbytes // len(row))
    rows[len(rows) // 2] = b'{"id": "bad", "n": "not a number"}\n'
    return b"".join(rows)


class Traffic:
    """Threads sending requests until `stop` is set; replies counted by (kind, status)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.stop = threading.Event()
        self.counts: Counter[str] = Counter()
        self.lock = threading.Lock()

    def loop(self, kind: str, path: str, body: bytes, headers: dict[str, str], interval_s: float) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                conn.request("POST", path, body, headers)
                reply = conn.getresponse()
                reply.read()
                status = str(reply.status)
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                status = "error"
            with self.lock:
                self.counts[f"{kind} {status}"] += 1
            if interval_s:
                self.stop.wait(max(0.0, interval_s - (time.monotonic() - started)))
        conn.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=90)
    p.add_argument("--clients", type=int, default=2, help="threads sending valid requests")
    p.add_argument("--valid-interval-s", type=float, default=0.01)
    p.add_argument("--bad-interval-s", type=float, default=0.5, help="per bad path (2 MB each)")
    p.add_argument("--bad-bytes", type=int, default=2_000_000)
    p.add_argument(
        "--gateway-arg", action="append", default=[], help="an extra argument for the gateway (repeat)"
    )
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="soak-"))
    port = free_port()
    env = {**os.environ, "GATEWAY_ADMIN_KEY": ADMIN}
    log = open(tmp / "gateway.log", "wb")  # noqa: SIM115 - handed to the child process
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(tmp / "data"),
            "--log-level",
            "WARNING",
            *a.gateway_arg,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        return run(a, port, proc)
    finally:
        proc.terminate()
        proc.wait(60)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


def run(a: argparse.Namespace, port: int, proc: subprocess.Popen[bytes]) -> int:
    deadline = time.monotonic() + 60
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                break
        except OSError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit("the gateway did not become ready")
        time.sleep(0.1)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request(
        "POST",
        "/api/v1beta2/streams",
        json.dumps({"name": "soak", "columns": COLUMNS}),
        {"X-Api-Key": ADMIN, "Content-Type": "application/json"},
    )
    assert conn.getresponse().status == 201
    traffic = Traffic(port)
    nd = {"X-Api-Key": ADMIN, "Content-Type": "application/x-ndjson"}
    good = b"".join(b'{"id": "r%d", "n": %d}\n' % (i, i) for i in range(20))
    bad = bad_body(a.bad_bytes)
    plans = [("valid", "/api/v1beta2/streams/soak/ingest", good, nd, a.valid_interval_s)] * a.clients + [
        ("timeplus_400", "/api/v1beta2/streams/soak/ingest", bad, nd, a.bad_interval_s),
        (
            "timeplus_quarantine",
            "/api/v1beta2/streams/soak/ingest?on_error=quarantine",
            bad,
            nd,
            a.bad_interval_s,
        ),
        (
            "tinybird_quarantine",
            "/v0/events?name=soak",
            bad,
            {"Authorization": f"Bearer {ADMIN}"},
            a.bad_interval_s,
        ),
    ]
    start_kib = rss_kib(proc.pid)
    threads = [threading.Thread(target=traffic.loop, args=plan, daemon=True) for plan in plans]
    for t in threads:
        t.start()
    samples = []
    began = time.monotonic()
    while time.monotonic() - began < a.seconds:
        samples.append((round(time.monotonic() - began, 1), rss_kib(proc.pid)))
        time.sleep(1)
    traffic.stop.set()
    for t in threads:
        t.join(60)
    end_kib = rss_kib(proc.pid)
    third = max(1, len(samples) // 3)
    print(
        json.dumps(
            {
                "seconds": a.seconds,
                "rss_mib": {
                    "start": round(start_kib / 1024, 1),
                    "peak": round(max(k for _, k in samples) / 1024, 1),
                    "end": round(end_kib / 1024, 1),
                    "mean_first_third": round(sum(k for _, k in samples[:third]) / third / 1024, 1),
                    "mean_last_third": round(sum(k for _, k in samples[-third:]) / third / 1024, 1),
                },
                "replies": dict(sorted(traffic.counts.items())),
                "samples_mib": [(t, round(k / 1024)) for t, k in samples[:: max(1, len(samples) // 15)]],
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
