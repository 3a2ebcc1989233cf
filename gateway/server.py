"""Serving one gateway process: build the app, listen, and on SIGTERM drain and exit.

`gateway.cli` (one process) and `gateway.workers` (one per worker) both call `serve`; this module
imports neither of them, so the arrows stay `cli → server → app` and `workers → server → app`."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

from aiohttp import web

from gateway import __version__, access_log
from gateway.app import RUNNER_OPTIONS, begin_shutdown, build_app
from gateway.config import Settings
from gateway.connections import GuardedSite, head_limits, raise_open_files_limit
from gateway.context import GATEWAY
from gateway.gc_tuning import tune_gc
from gateway.limiters.address_share import AddressShares, parse_networks

log = logging.getLogger("gateway")


async def serve(
    settings: Settings,
    admin_key: str,
    *,
    worker: int = 0,
    reuse_port: bool = False,
    ready_before_listening_s: float = 0.0,
    on_listening: Callable[[], None] | None = None,
) -> int:
    """Run until SIGTERM/SIGINT, then stop accepting, drain the queues and return the exit code.
    Under --workers N (gateway.workers) each worker runs this with `reuse_port`; a restarted
    worker first waits (up to `ready_before_listening_s`) until it is ready, so that the kernel
    does not hand it connections its siblings could serve while it connects to Kafka."""
    app = build_app(settings, admin_key, worker)
    tune_gc(settings.gc_gen0_threshold)
    raise_open_files_limit(settings.max_connections + 1024)
    runner = web.AppRunner(
        app,
        shutdown_timeout=settings.wait_timeout_s + 5,
        keepalive_timeout=settings.keepalive_timeout_s,
        **{
            **RUNNER_OPTIONS,
            **access_log.runner_options(settings),
            **head_limits(settings.max_head_bytes, settings.max_headers),
        },
    )
    await runner.setup()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ready_before_listening_s
    # Readiness is computed (catalog loaded, sink connected and reachable): no event to await.
    while not app[GATEWAY].ready and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.02)
    site = GuardedSite(
        runner,
        settings.host,
        settings.port,
        backlog=1024,
        max_connections=settings.max_connections,
        header_timeout=settings.header_read_timeout_s,
        reuse_port=True if reuse_port else None,
        shares=AddressShares(
            settings.max_connections, settings.address_share, parse_networks(settings.share_exempt_addresses)
        ),
        budget=app[GATEWAY].queues.budget,
        max_head_bytes=settings.max_head_bytes,
    )
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    if on_listening is not None:
        on_listening()
    log.info(
        "ingest-gateway %s listening on http://%s:%d (sink: %s)",
        __version__,
        settings.host,
        settings.port,
        "embedded local DEVELOPMENT sink" if settings.embedded else f"Kafka {settings.kafka_bootstrap}",
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    begin_shutdown(app)
    log.info(
        "shutting down: refusing new requests, draining %d queued rows", app[GATEWAY].queues.total_rows()
    )
    await runner.cleanup()
    if app.get("drain_failed"):
        return 1
    log.info("drained; bye")
    return 0
