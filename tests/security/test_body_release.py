"""Issue 20 item 13: a body that fails validation is freed when its reply is sent.

An error kept past its handler (or raised again later) holds the frames it went through, and a
frame holding the error back is a reference cycle: the body, its decoded rows and the joined bytes
stay until the collector's next young pass, which well-formed traffic hardly triggers. Here the
collector is switched off while a request is served, so only reference counting can free the body:
each chunk the gateway reads is a weakly referenced object, and no frame of the decoding code may
outlive the reply, for each error and quarantine path.
"""

from __future__ import annotations

import asyncio
import gc
import types
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

import gateway.dialects.common as common
from gateway.app import build_app
from gateway.config import Settings
from gateway.context import GATEWAY

ADMIN = "release-admin-key"
COLUMNS = [{"name": "id", "type": "string"}, {"name": "n", "type": "int32"}]
DS_COLUMNS = [
    {"name": "timestamp", "type": "int64"},
    {"name": "name", "type": "string"},
    {"name": "value", "type": "float64"},
]
ROWS = 2000  # ~60 KB: several runs for the quarantine split, one bad row among them
# The modules whose frames hold a body while it is decoded: none may be alive after the reply.
DECODING = ("gateway/ingest/", "gateway/dialects/")


class Chunk(bytearray):
    """A body chunk that can be weakly referenced (bytes cannot)."""


class TrackedSource:
    """The request's body stream, handing out its chunks as weakly referenced `Chunk`s."""

    def __init__(self, inner: Any, refs: list[weakref.ref[Chunk]]) -> None:
        self._inner = inner
        self._refs = refs
        self.at_eof = inner.at_eof

    def _tracked(self, data: bytes) -> bytes:
        if not data:
            return data
        chunk = Chunk(data)
        self._refs.append(weakref.ref(chunk))
        return chunk  # type: ignore[return-value]  # a bytearray is as good as bytes here

    def read_nowait(self) -> bytes:
        return self._tracked(self._inner.read_nowait())

    async def readany(self) -> bytes:
        return self._tracked(await self._inner.readany())


@pytest.fixture
def refs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[weakref.ref[Chunk]]]:
    """Weak references to every body chunk read, with the collector off meanwhile."""
    tracked: list[weakref.ref[Chunk]] = []
    real = common.body_source
    monkeypatch.setattr(common, "body_source", lambda request: TrackedSource(real(request), tracked))
    gc.collect()
    gc.disable()
    try:
        yield tracked
    finally:
        gc.enable()


async def _started(app: web.Application) -> None:
    tasks = [t for t in asyncio.all_tasks() if t.get_name() in ("catalog-load", "sink-connect")]
    async with asyncio.timeout(60):  # a failure guard only
        await asyncio.gather(*tasks)
    assert app[GATEWAY].catalog.loaded


@pytest.fixture
async def client(tmp_path: Path, aiohttp_client: Any) -> TestClient[Any, Any]:
    app = build_app(Settings(data_dir=tmp_path, max_body_bytes=8 << 20), ADMIN)
    c: TestClient[Any, Any] = await aiohttp_client(app)
    await _started(app)
    for body in (
        {"name": "plain", "columns": COLUMNS},
        {"name": "ds", "columns": DS_COLUMNS, "mode": "versioned_kv", "primary_key": "timestamp, name"},
    ):
        reply = await c.post("/api/v1beta2/streams", headers={"X-Api-Key": ADMIN}, json=body)
        assert reply.status == 201, await reply.text()
    return c


def ndjson(bad_at: int) -> bytes:
    rows = [b'{"id": "r%d", "n": %d}' % (i, i) for i in range(ROWS)]
    rows[bad_at] = b'{"id": "bad", "n": "not a number"}'
    return b"\n".join(rows) + b"\n"


def decoding_frames() -> list[str]:
    """The frames of the decoding code still alive (found among the collector's objects)."""
    return [
        f"{f.f_code.co_filename}:{f.f_code.co_name}"
        for f in gc.get_objects()
        if isinstance(f, types.FrameType) and any(m in f.f_code.co_filename for m in DECODING)
    ]


def assert_released(refs: list[weakref.ref[Chunk]]) -> None:
    assert refs, "no body chunk was read"
    alive = sum(r() is not None for r in refs)
    assert alive == 0, f"{alive} of {len(refs)} body chunks outlive the reply"
    assert not decoding_frames(), decoding_frames()


AUTH = {"X-Api-Key": ADMIN}


@pytest.mark.parametrize("bad_at", [5, ROWS - 1])
async def test_timeplus_400_frees_the_body(
    client: TestClient[Any, Any], refs: list[weakref.ref[Chunk]], bad_at: int
) -> None:
    reply = await client.post(
        "/api/v1beta2/streams/plain/ingest",
        data=ndjson(bad_at),
        headers={**AUTH, "Content-Type": "application/x-ndjson"},
    )
    assert reply.status == 400, await reply.text()
    assert f"row {bad_at}" in (await reply.json())["message"]
    assert_released(refs)


async def test_timeplus_quarantine_frees_the_body(
    client: TestClient[Any, Any], refs: list[weakref.ref[Chunk]]
) -> None:
    reply = await client.post(
        "/api/v1beta2/streams/plain/ingest?on_error=quarantine&wait=true",
        data=ndjson(ROWS // 2),
        headers={**AUTH, "Content-Type": "application/x-ndjson"},
    )
    assert reply.status == 200, await reply.text()
    assert (await reply.json())["rows"] == ROWS - 1
    assert_released(refs)


async def test_tinybird_quarantine_frees_the_body(
    client: TestClient[Any, Any], refs: list[weakref.ref[Chunk]]
) -> None:
    reply = await client.post("/v0/events?name=plain&wait=true&token=" + ADMIN, data=ndjson(ROWS // 2))
    assert reply.status == 200, await reply.text()
    assert await reply.json() == {"successful_rows": ROWS - 1, "quarantined_rows": 1}
    assert_released(refs)


async def test_datasource_422_frees_the_body(
    client: TestClient[Any, Any], refs: list[weakref.ref[Chunk]]
) -> None:
    records = [b'{"timestamp": %d, "name": "s", "value": 1.5}' % i for i in range(ROWS)]
    records[ROWS // 2] = b'{"timestamp": 1, "name": "s", "value": "x"}'
    body = b'{"data_source": "ds", "records": [' + b",".join(records) + b"]}"
    reply = await client.post(
        "/v1/data_sources/ingest", data=body, headers={"Authorization": "Bearer " + ADMIN}
    )
    assert reply.status == 422, await reply.text()
    assert_released(refs)


@pytest.mark.parametrize("quarantine", [False, True])
async def test_restproxy_422_frees_the_body(
    client: TestClient[Any, Any], refs: list[weakref.ref[Chunk]], quarantine: bool
) -> None:
    records = [b'{"value": {"id": "r%d", "n": %d}}' % (i, i) for i in range(ROWS)]
    records[ROWS // 2] = b'{"value": {"id": "bad", "n": "x"}}'
    body = b'{"records": [' + b",".join(records) + b"]}"
    reply = await client.post(
        "/topics/plain" + ("?quarantine=true" if quarantine else ""),
        data=body,
        headers={**AUTH, "Content-Type": "application/vnd.kafka.json.v2+json"},
    )
    assert reply.status == (200 if quarantine else 422), await reply.text()
    assert_released(refs)


async def test_restproxy_v3_refused_records_free_the_body(
    client: TestClient[Any, Any], refs: list[weakref.ref[Chunk]]
) -> None:
    good = b'{"value": {"type": "JSON", "data": {"id": "a", "n": 1}}}'
    bad = b'{"partition_id": -1, "value": {"type": "JSON", "data": {"id": "a", "n": 1}}}'
    body = b"\n".join([good] * (ROWS // 2) + [bad] + [good] * (ROWS // 2))
    reply = await client.post(
        "/v3/clusters/ingest-gateway/topics/plain/records",
        data=body,
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert reply.status == 200, await reply.text()
    assert_released(refs)
