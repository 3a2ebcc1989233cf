"""Gateway processes for the scenarios, started exactly as a user starts them
(`python -m gateway serve --kafka-bootstrap … --port …`), and their streams, made over the API."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.payloads import COLUMNS
from benchmarks.procs import ROOT, Pinning, Server, child_env, free_port, python_module


def supports_workers() -> bool:
    """Whether `gateway serve --help` offers `--workers`."""
    out = subprocess.run(
        python_module("gateway", "serve", "--help"),
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=ROOT,
        timeout=60,
    )
    return "--workers" in out.stdout


class Gateways:
    """One or more gateway processes serving the same streams (S8 without `--workers`: two)."""

    def __init__(
        self,
        bootstrap: str,
        work_dir: Path,
        admin_key: str,
        pinning: Pinning,
        extra_args: list[str],
        label: str,
    ) -> None:
        self.bootstrap = bootstrap
        self.work_dir = work_dir
        self.admin_key = admin_key
        self.pinning = pinning
        self.extra_args = extra_args
        self.label = label
        self.servers: list[Server] = []
        self.topics: list[str] = []  # every topic this set of gateways created
        self.exit_codes: list[int | None] = []
        self._session: aiohttp.ClientSession | None = None

    def argv(self, port: int, data_dir: Path, extra: list[str]) -> list[str]:
        # One admin key sends every scenario's requests: the per-key rate (which holds on every
        # route since issue 20) would cap the figures at its default instead of the gateway's.
        return python_module(
            "gateway",
            "serve",
            "--kafka-bootstrap",
            self.bootstrap,
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            "--rate-limit-per-key",
            "0",
            *self.extra_args,
            *extra,
        )

    async def start(
        self, count: int = 1, extra: list[str] | None = None, pin_each: list[str | None] | None = None
    ) -> Gateways:
        """Start `count` gateways (separate data dirs) and wait until each answers /readyz 200."""
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120))
        for i in range(count):
            port = free_port()
            data_dir = self.work_dir / f"{self.label}-gw{i}"
            argv = self.argv(port, data_dir, extra or [])
            if pin_each is not None:
                argv = Pinning(pin_each[i], None).wrap("gateway", argv)
            else:
                argv = self.pinning.wrap("gateway", argv)
            server = Server(
                f"gateway {self.label}#{i}",
                argv,
                port,
                self.work_dir / f"{self.label}-gw{i}.log",
                env={"GATEWAY_ADMIN_KEY": self.admin_key},
            )
            self.servers.append(await server.start())
        for server in self.servers:
            await self._ready(server)
        return self

    async def _ready(self, server: Server, timeout: float = 90) -> None:
        assert self._session is not None
        deadline = time.monotonic() + timeout
        while True:
            assert server.proc is not None
            if server.proc.returncode is not None:
                raise RuntimeError(
                    f"{server.name} exited with {server.proc.returncode}:\n{server.log_tail()}"
                )
            try:
                async with self._session.get(f"http://127.0.0.1:{server.port}/readyz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{server.name} not ready within {timeout} s:\n{server.log_tail()}")
            await asyncio.sleep(0.1)

    async def _call(self, server: Server, method: str, path: str, body: Any = None) -> Any:
        assert self._session is not None
        async with self._session.request(
            method, f"http://127.0.0.1:{server.port}{path}", json=body, headers={"X-Api-Key": self.admin_key}
        ) as r:
            if r.status >= 300:
                raise RuntimeError(f"{method} {path} → {r.status}: {await r.text()}")
            return await r.json() if r.content_type == "application/json" else None

    async def create_streams(self, names: list[str], parallel: int = 8) -> list[str]:
        """Create the streams on every gateway (the first creates the topics); their topics."""
        topics: dict[str, str] = {}
        sem = asyncio.Semaphore(parallel)

        async def one(server: Server, name: str) -> None:
            async with sem:
                body = await self._call(
                    server, "POST", "/api/v1beta2/streams", {"name": name, "columns": COLUMNS}
                )
                topics[name] = body["topic"]

        for server in self.servers:
            await asyncio.gather(*(one(server, n) for n in names))
        created = [topics[n] for n in names]
        self.topics += created
        return created

    async def counters(
        self, prefixes: tuple[str, ...] = ("gateway_throttled_requests_total", "gateway_sink_errors_total")
    ) -> dict[str, float]:
        """Counters from every gateway's /metrics, summed: why requests were refused (429/503)."""
        assert self._session is not None
        out: dict[str, float] = {}
        for server in self.servers:
            try:
                async with self._session.get(f"http://127.0.0.1:{server.port}/metrics") as r:
                    text = await r.text()
            except aiohttp.ClientError:
                continue
            for line in text.splitlines():
                if line.startswith(prefixes):
                    name, _, value = line.rpartition(" ")
                    out[name] = out.get(name, 0.0) + float(value)
        return out

    async def stop(self) -> list[int | None]:
        """SIGTERM every gateway (each drains its queues); their exit codes."""
        self.exit_codes = [await s.stop() for s in self.servers]
        if self._session is not None:
            await self._session.close()
        return self.exit_codes
