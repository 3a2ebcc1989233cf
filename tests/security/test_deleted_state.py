"""Issue 20 item 14, in process (embedded sink): once a stream is deleted, its queue, compiled
schema, write rates and metric series are gone (weak references dead after a full collection),
and a stream made again under its name does not inherit its byte-rate debt."""

from __future__ import annotations

import asyncio
import gc
import weakref
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from gateway import metrics
from gateway.app import build_app
from gateway.config import Settings
from gateway.context import GATEWAY

ADMIN = "unit-admin-key"
COLUMNS = [{"name": "id", "type": "string"}, {"name": "n", "type": "int32"}]
H = {"X-Api-Key": ADMIN, "Content-Type": "application/x-ndjson"}


async def _started(client: TestClient[Any, Any]) -> None:
    tasks = [t for t in asyncio.all_tasks() if t.get_name() in ("catalog-load", "sink-connect")]
    async with asyncio.timeout(60):  # a failure guard only
        await asyncio.gather(*tasks)


def _series(name: str) -> list[str]:
    return [
        line
        for line in metrics.exposition().decode().splitlines()
        if not line.startswith("#") and f'stream="{name}"' in line
    ]


async def test_a_deleted_stream_leaves_nothing_behind(tmp_path: Path, aiohttp_client: Any) -> None:
    app = build_app(Settings(data_dir=tmp_path, stream_max_bytes_per_s=10**9), ADMIN)
    client: TestClient[Any, Any] = await aiohttp_client(app)
    await _started(client)
    gw = app[GATEWAY]
    refs: list[weakref.ref[Any]] = []
    for cycle in range(3):
        name = f"gone{cycle}"
        reply = await client.post("/api/v1beta2/streams", headers=H, json={"name": name, "columns": COLUMNS})
        assert reply.status == 201, await reply.text()
        ok = await client.post(
            f"/api/v1beta2/streams/{name}/ingest?wait=true", headers=H, data=b'{"id": "a", "n": 1}\n'
        )
        assert ok.status == 200, await ok.text()
        bad = await client.post(
            f"/api/v1beta2/streams/{name}/ingest", headers=H, data=b'{"id": "a", "n": "x"}\n'
        )
        assert bad.status == 400
        stream = gw.catalog.stream(name)
        queue = gw.queues.get(name, stream.topic)
        assert queue is not None and _series(name)
        refs += [weakref.ref(queue), weakref.ref(gw.ingest.schemas.get(stream))]
        del queue, stream
        assert gw.pipeline.rates.seen(name) != (None, None)
        assert (await client.delete(f"/api/v1beta2/streams/{name}", headers=H)).status == 204
        assert gw.pipeline.rates.seen(name) == (None, None)
        assert _series(name) == [], _series(name)
    gc.collect()
    alive = [r() for r in refs if r() is not None]
    assert alive == [], [type(a).__name__ for a in alive]


async def test_a_stream_made_again_gets_a_fresh_byte_rate(tmp_path: Path, aiohttp_client: Any) -> None:
    """The deleted stream's byte-rate bucket is forgotten: its debt does not pass to a stream
    created again under its name."""
    app = build_app(Settings(data_dir=tmp_path, stream_max_bytes_per_s=30), ADMIN)
    client: TestClient[Any, Any] = await aiohttp_client(app)
    await _started(client)
    body = b'{"id": "abcdefgh", "n": 1}\n'
    for attempt in range(2):
        reply = await client.post(
            "/api/v1beta2/streams", headers=H, json={"name": "again", "columns": COLUMNS}
        )
        assert reply.status == 201, await reply.text()
        statuses = [
            (await client.post("/api/v1beta2/streams/again/ingest", headers=H, data=body)).status
            for _ in range(4)
        ]
        assert statuses[0] == 202 and 429 in statuses, (attempt, statuses)
        assert (await client.delete("/api/v1beta2/streams/again", headers=H)).status == 204
