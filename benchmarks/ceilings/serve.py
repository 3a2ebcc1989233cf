"""Shared start-up of the ceiling servers: aiohttp on uvloop, options as the gateway's runner."""

from __future__ import annotations

import asyncio
import signal
import sys

import uvloop
from aiohttp import web


async def _serve(app: web.Application, port: int) -> None:
    runner = web.AppRunner(app, access_log=None, handle_signals=False, auto_decompress=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=1024)
    await site.start()
    print(f"listening on 127.0.0.1:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main(app: web.Application, argv: list[str]) -> int:
    """`python -m benchmarks.ceilings.<name> PORT`: serve `app` until SIGTERM."""
    if len(argv) != 1 or not argv[0].isdigit():
        print("usage: python -m benchmarks.ceilings.<server> PORT", file=sys.stderr)
        return 2
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_serve(app, int(argv[0])))
    return 0
