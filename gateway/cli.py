"""Command line: `ingest-gateway serve` runs the gateway (see `--help` for every option)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import signal
import sys

import uvloop
from aiohttp import web

from gateway import __version__
from gateway.app import RUNNER_OPTIONS, build_app
from gateway.config import Settings, add_arguments, from_sources
from gateway.connections import GuardedSite, raise_open_files_limit
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


async def serve(settings: Settings) -> int:
    """Run until SIGTERM/SIGINT, then stop accepting, drain the queues and return the exit code."""
    app = build_app(settings, admin_key_for(settings))
    raise_open_files_limit(settings.max_connections + 1024)
    runner = web.AppRunner(app, shutdown_timeout=settings.wait_timeout_s + 5,
                           keepalive_timeout=settings.keepalive_timeout_s, **RUNNER_OPTIONS)
    await runner.setup()
    site = GuardedSite(runner, settings.host, settings.port, backlog=1024,
                       max_connections=settings.max_connections,
                       header_timeout=settings.header_read_timeout_s)
    await site.start()
    log.info("ingest-gateway %s listening on http://%s:%d (sink: %s)", __version__, settings.host,
             settings.port, "embedded local DEVELOPMENT sink" if settings.embedded
             else f"Kafka {settings.kafka_bootstrap}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
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
                                   "GATEWAY_* environment variable named in its help; flags win.")
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
    logging.basicConfig(level=settings.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if args.command == "serve":
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(serve(settings))
    return 2
