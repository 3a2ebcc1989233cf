"""Error bodies of the Tinybird and data-source dialects that the integration tests cannot provoke:
an unexpected exception (500) goes through the route's own renderer, never the Timeplus shape."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.app import build_app
from gateway.config import Settings
from gateway.context import GATEWAY
from gateway.dialects import datasources, tinybird
from gateway.errors import Forbidden, GatewayError, InvalidRow, Unauthenticated

ADMIN = "unit-admin-key"
DS_COLUMNS = [
    {"name": "timestamp", "type": "int64"},
    {"name": "name", "type": "string"},
    {"name": "value", "type": "float64"},
]


def test_tinybird_maps_401_and_403_to_403() -> None:
    for err in (Unauthenticated("no key"), Forbidden("not yours")):
        reply = tinybird.render_error(err, "rid")
        assert reply.status == 403 and reply.content_type == "application/json"
    reply = tinybird.render_error(InvalidRow("row 2, column 'n': bad", row=2, column="n"), "rid")
    assert reply.status == 400
    assert reply.body == (
        b'{"error":"row 2, column \'n\': bad","code":"invalid_row","row":2,"column":"n","request_id":"rid"}'
    )


def test_datasources_detail_and_422() -> None:
    reply = datasources.render_error(InvalidRow("records[3].value: Expected `float`"), "rid")
    assert reply.status == 422 and reply.body == b'{"detail":"records[3].value: Expected `float`"}'
    assert datasources.render_error(GatewayError("internal error"), "rid").status == 500


async def _started(app: web.Application) -> None:
    """Wait until the app's lifecycle has loaded the catalog and connected the sink (the tasks that
    do it end): a request before that is a 503 "the catalog is still loading"."""
    tasks = [t for t in asyncio.all_tasks() if t.get_name() in ("catalog-load", "sink-connect")]
    async with asyncio.timeout(60):  # a failure guard only
        await asyncio.gather(*tasks)
    gw = app[GATEWAY]
    assert gw.catalog.loaded and gw.lifecycle.sink_started


async def _client(tmp_path: Path, aiohttp_client: Any) -> TestClient[Any, Any]:
    app = build_app(Settings(data_dir=tmp_path), ADMIN)
    client: TestClient[Any, Any] = await aiohttp_client(app)
    await _started(app)
    reply = await client.post(
        "/api/v1beta2/streams",
        headers={"X-Api-Key": ADMIN},
        json={"name": "ds", "columns": DS_COLUMNS, "mode": "versioned_kv", "primary_key": "timestamp, name"},
    )
    assert reply.status == 201, await reply.text()
    return client


async def test_unexpected_error_is_500_in_the_dialects_shape(
    tmp_path: Path, aiohttp_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await _client(tmp_path, aiohttp_client)
    gw = client.app[GATEWAY]

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(gw.pipeline, "admit", broken)
    reply = await client.post(
        "/v0/events?name=ds&token=" + ADMIN, data=b'{"timestamp": 1, "name": "a", "value": 1}\n'
    )
    assert reply.status == 500 and reply.content_type == "application/json"
    body = await reply.json()
    assert body == {
        "error": "internal error",
        "code": "internal_error",
        "request_id": reply.headers["X-Request-ID"],
    }
    reply = await client.post(
        "/v1/data_sources/ingest",
        headers={"Authorization": "Bearer " + ADMIN},
        json={"data_source": "ds", "records": [{"timestamp": 1, "name": "a", "value": 1}]},
    )
    assert reply.status == 500 and await reply.json() == {"detail": "internal error"}


async def test_missing_token_hint_names_the_tinybird_ways(tmp_path: Path, aiohttp_client: Any) -> None:
    client = await _client(tmp_path, aiohttp_client)
    reply = await client.post("/v0/events?name=ds", data=b'{"timestamp": 1}\n')
    body = await reply.json()
    assert reply.status == 403
    assert "`Authorization: Bearer TOKEN`" in body["error"] and "`?token=TOKEN`" in body["error"]
    assert "X-Api-Key" not in body["error"]


async def test_cross_origin_read_of_the_management_api_does_not_speak_of_writing(
    tmp_path: Path, aiohttp_client: Any
) -> None:
    client = await _client(tmp_path, aiohttp_client)
    foreign = {"X-Api-Key": ADMIN, "Origin": "https://elsewhere.example"}
    read = await client.get("/api/v1beta2/streams", headers=foreign)
    assert read.status == 403
    message = (await read.json())["message"]
    assert "not allowed" in message and "written" not in message
    write = await client.delete("/api/v1beta2/streams/ds", headers=foreign)
    assert write.status == 403
    assert (await write.json())["message"].endswith("nothing was written")
