"""A key's rate holds across replicas (issue 21, item 4): three gateway processes on one broker
and one catalog, behind the real nginx (deploy/nginx/nginx.conf), and a client sending as fast
as it can with a key of rate R: together the three let in about R per second, not 3R.

Counted, not timed: the allowed count is derived from the run's measured length, with the
tolerance gateway.limiters.rate_share states (a burst per replica, plus what each can let in
before it hears of the others: DELAY_S, generous for a loaded machine)."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from tests.integration.deploy_helpers import stopped_at_exit
from tests.integration.harness import Gateway, unique_name, wait_until
from tests.integration.test_nginx import GATEWAY_TOML, start_nginx

RATE = 5  # requests per second for the key
REPLICAS = 3
RUN_S = 30.0  # long enough that the bursts and delays are small against R·T
CLIENTS = 8  # connections, each at most one request per PACE_S: ~5 x RATE·REPLICAS per second
PACE_S = 0.1
DELAY_S = 4.0  # an announcement's delay allowed for (the interval is 0.25 s)
ROW = b'{"n": 1}\n'


async def hammer(url: str, key: str, run_s: float) -> tuple[Counter[int], float]:
    """Send from CLIENTS connections one request after another until `run_s` has passed; the
    statuses and the seconds from the first request sent to the last reply."""
    statuses: Counter[int] = Counter()
    headers = {"X-Api-Key": key, "Content-Type": "application/x-ndjson"}
    started = time.monotonic()

    async def client(session: aiohttp.ClientSession) -> None:
        while time.monotonic() - started < run_s:
            async with session.post(url, data=ROW, headers=headers) as reply:
                await reply.read()
                statuses[reply.status] += 1
            await asyncio.sleep(PACE_S)  # load enough, and no more, on a shared machine

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        await asyncio.gather(*(client(session) for _ in range(CLIENTS)))
    return statuses, time.monotonic() - started


def test_a_keys_rate_holds_across_three_replicas_behind_nginx(kafka: str, tmp_path: Path,
                                                              record_property: Any) -> None:
    catalog = "_test_catalog_" + uuid.uuid4().hex[:12]
    gws = [Gateway(tmp_path / f"gw{i}", kafka, catalog_topic=catalog,
                   extra=["--config", str(GATEWAY_TOML), "--host", "127.0.0.1",
                          "--access-log-sample", "1"])
           for i in range(REPLICAS)]
    procs: list[Any] = list(gws)
    with stopped_at_exit(procs):
        for gw in gws:
            gw.start(wait_ready=False)
        for gw in gws:
            gw.wait_ready()
        ngx = start_nginx(tmp_path / "nginx", [f"127.0.0.1:{gw.port}" for gw in gws])
        procs.append(ngx.proc)
        name = unique_name("rshare")
        gws[0].create_stream(name, [{"name": "n", "type": "int64"}])
        made = gws[0].request("POST", "/api/v1beta2/apikeys", {
            "name": "shared", "permissions": [f"DATASOURCE:APPEND:{name}"], "rate_limit": RATE})
        assert made.status == 201, made.body
        key = made.json()["api_key"]
        for gw in gws:  # every replica knows the key and the stream (its management bucket)
            wait_until(lambda gw=gw: gw.request("GET", f"/api/v1beta2/streams/{name}",
                                                key=key).status == 200, 60,
                       f"replica {gw.port} to know the key")
        statuses, elapsed = asyncio.run(hammer(
            f"{ngx.url}/api/v1beta2/streams/{name}/ingest", key, RUN_S))
        accepted, refused = statuses[202], statuses[429]
        allowed = RATE * elapsed + REPLICAS * RATE + (REPLICAS - 1) * RATE * DELAY_S
        upstreams = Counter(e["upstream_addr"] for e in ngx.access_log()
                            if e.get("uri", "").endswith("/ingest"))
        figures = (f"{accepted} accepted, {refused} refused in {elapsed:.1f} s at rate {RATE}: "
                   f"R·T = {RATE * elapsed:.0f}, allowed {allowed:.0f}, 3R·T = "
                   f"{3 * RATE * elapsed:.0f}; per upstream {dict(upstreams)}")
        print(figures)
        record_property("rate_share", figures)
        assert set(statuses) <= {202, 429}, statuses
        assert accepted + refused > 3 * RATE * elapsed, f"the client offered too little: {figures}"
        assert len([u for u in upstreams if u]) == REPLICAS, f"nginx did not spread: {figures}"
        assert accepted <= allowed, figures
        assert accepted < 2 * RATE * elapsed, figures
        assert accepted >= RATE * elapsed / 3, f"the replicas starve the key: {figures}"
        ngx.proc.send_signal(signal.SIGQUIT)
        ngx.proc.wait(30)
        for gw in gws:
            assert gw.stop() == 0, gw.log()[-3000:]
