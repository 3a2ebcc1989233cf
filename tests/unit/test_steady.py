"""benchmarks.steady: S7's priming reaches every stream `rounds` times, one request after another
per stream, and fails loudly when a stream refuses; the idle wait reports what it waited."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from benchmarks.steady import Priming, broker_idle, prime


async def _server(status: int = 200) -> tuple[TestServer, Counter[str], list[int]]:
    seen: Counter[str] = Counter()
    most_at_once = [0]
    busy: Counter[str] = Counter()

    async def ingest(request: web.Request) -> web.Response:
        path = request.path
        assert request.query["wait"] == "true" and await request.read() == b"{}\n"
        busy[path] += 1
        most_at_once[0] = max(most_at_once[0], busy[path])
        await asyncio.sleep(0)  # let other streams' requests interleave
        busy[path] -= 1
        seen[path] += 1
        return web.json_response({}, status=status)

    app = web.Application()
    app.router.add_post("/s/{name}", ingest)
    server = TestServer(app)
    await server.start_server()
    return server, seen, most_at_once


async def test_every_stream_is_primed_rounds_times_one_request_at_a_time() -> None:
    server, seen, most_at_once = await _server()
    try:
        paths = [f"/s/{i}" for i in range(20)]
        await prime(Priming(str(server.make_url("")).rstrip("/"), paths, {}, b"{}\n", rounds=6, parallel=4))
    finally:
        await server.close()
    assert seen == {p: 6 for p in paths}
    assert most_at_once[0] == 1  # each is its own flush in the gateway


async def test_a_refused_stream_fails_the_priming() -> None:
    server, _, _ = await _server(status=429)
    try:
        with pytest.raises(RuntimeError, match="429"):
            await prime(Priming(str(server.make_url("")).rstrip("/"), ["/s/a"], {}, b"{}\n"))
    finally:
        await server.close()


async def test_no_broker_process_means_nothing_to_wait_for() -> None:
    idle = await broker_idle(None)
    assert idle["broker_settled"] is True and idle["broker_last_cores"] is None
