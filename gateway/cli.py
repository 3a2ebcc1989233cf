"""Command line: `ingest-gateway serve` runs the gateway (see `--help` for every option)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import signal
import sys
from collections.abc import Callable

import uvloop
from aiohttp import web

from gateway import __version__, access_log, logs, workers
from gateway.app import RUNNER_OPTIONS, build_app
from gateway.config import Settings, add_arguments, from_sources
from gateway.context import GATEWAY

log = logging.getLogger("gateway")


def admin_key_for(settings: Settings) -> str:
    """The admin key: `GATEWAY_ADMIN_KEY`, else one kept in `<data-dir>/admin.key` (made once)."""
    if settings.admin_key:
        return settings.admin_key
    path = settings.data_dir / "admin.key"
    if path.exists():
        log.info("admin key read from %s", path)
        return path.read_text().strip()
    key = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    # Printed once, on stdout and never through the logger, so that log shipping never sees it.
    print(f"Generated admin API key (kept in {path}): {key}", flush=True)
    return key


async def serve(settings: Settings, admin_key: str, *, worker: int = 0, reuse_port: bool = False,
                ready_before_listening_s: float = 0.0,
                on_listening: Callable[[], None] | None = None) -> int:
    """Run until SIGTERM/SIGINT, then stop accepting, drain the queues and return the exit code.
    Under --workers N (gateway.workers) each worker runs this with `reuse_port`; a restarted
    worker first waits (up to `ready_before_listening_s`) until it is ready, so that the kernel
    does not hand it connections its siblings could serve while it connects to Kafka."""
    app = build_app(settings, admin_key, worker)
    runner = web.AppRunner(app, shutdown_timeout=settings.wait_timeout_s + 5,
                           **{**RUNNER_OPTIONS, **access_log.runner_options(settings)})
    await runner.setup()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ready_before_listening_s
    # Readiness is computed (catalog loaded, sink connected and reachable): no event to await.
    while not app[GATEWAY].ready and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.02)
    site = web.TCPSite(runner, settings.host, settings.port, backlog=1024,
                       reuse_port=True if reuse_port else None)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    if on_listening is not None:
        on_listening()
    log.info("ingest-gateway %s listening on http://%s:%d (sink: %s)", __version__, settings.host,
             settings.port, "embedded local DEVELOPMENT sink" if settings.embedded
             else f"Kafka {settings.kafka_bootstrap}")
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    gw = app[GATEWAY]
    gw.pipeline.draining = True
    gw.queues.flush_now()
    log.info("shutting down: refusing new requests, draining %d queued rows",
             gw.queues.total_rows())
    await runner.cleanup()
    if app.get("drain_failed"):
        return 1
    log.info("drained; bye")
    return 0


def parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    p = argparse.ArgumentParser(prog="ingest-gateway",
                                description="HTTP event ingestion gateway into Apache Kafka")
    p.add_argument("--version", action="version", version=__version__)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the gateway",
                       description="Run the gateway. Every option can also be set with the "
                                   "GATEWAY_* environment variable named in its help, or in the "
                                   "TOML file given by --config; flags win over the environment, "
                                   "which wins over the file.")
    add_arguments(s)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `ingest-gateway` console script."""
    args = parser().parse_args(argv)
    try:
        settings = from_sources(args)
    except ValueError as exc:
        print(f"ingest-gateway: invalid configuration: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_format)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if args.command == "serve":
        admin_key = admin_key_for(settings)
        if settings.worker_count > 1:
            return workers.supervise(settings, admin_key)
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(serve(settings, admin_key))
    return 2
