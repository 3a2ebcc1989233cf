"""Ceiling (1): aiohttp + uvloop hello world. Every request (any method, any path) gets 200 "ok"."""

from __future__ import annotations

import sys

from aiohttp import web

from benchmarks.ceilings.serve import main


async def hello(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def app() -> web.Application:
    application = web.Application()
    application.router.add_route("*", "/{tail:.*}", hello)
    return application


if __name__ == "__main__":
    raise SystemExit(main(app(), sys.argv[1:]))
