"""What the middleware knows of each route, worked out once; and the one middleware layer that
does every cross-cutting job (no response hook), CORS headers included."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from gateway.app import build_app
from gateway.config import Settings
from gateway.context import GATEWAY
from gateway.cors import INGEST, MANAGE, OPS, is_ingest, kind_of
from gateway.routes import ROUTES, UNMATCHED, sample_path

ADMIN_KEY = "unit-admin-key"


def test_sample_paths() -> None:
    assert sample_path("/{workspace}/api/{version}/streams/{name}/ingest") == (
        "/x/api/v1beta2/streams/x/ingest"
    )
    assert sample_path("/v0/events") == "/v0/events"


def test_every_route_is_classified_as_its_paths_are(tmp_path: Path) -> None:
    app = build_app(Settings(data_dir=tmp_path), ADMIN_KEY)
    routes = app[ROUTES]
    kinds = {}
    for route in app.router.routes():
        info = routes.of(route, "/ignored")
        assert info.name == route.resource.canonical
        kinds[info.name] = info.kind
    assert kinds["/v0/events"] == kinds["/api/{version}/streams/{name}/ingest"] == INGEST
    assert kinds["/{workspace}/api/{version}/streams/{name}/ingest"] == INGEST
    assert kinds["/api/{version}/streams/{name}"] == MANAGE
    assert kinds["/healthz"] == kinds["/metrics"] == OPS
    # the REST proxy's reads are used cross-origin as its produce routes are (issue 24)
    proxy_reads = {
        "/topics",
        "/brokers",
        "/topics/{topic}/partitions",
        "/topics/{topic}/partitions/{partition}",
    }
    assert {k for k, v in kinds.items() if v == INGEST} == {
        k for k in kinds if is_ingest(sample_path(k))
    } | proxy_reads
    assert kinds["/"] == OPS
    unmatched = routes.of(None, "/api/v1beta2/streams/s/ingest")  # e.g. OPTIONS: a 405
    assert (unmatched.name, unmatched.kind) == (UNMATCHED, INGEST)
    assert routes.of(None, "/nope").kind == MANAGE and kind_of("/readyz") == OPS


async def test_one_middleware_sets_every_header(tmp_path: Path, aiohttp_client: Any) -> None:
    app = build_app(Settings(data_dir=tmp_path), ADMIN_KEY)
    assert len(app.middlewares) == 1 and not app.on_response_prepare
    client: TestClient[Any, Any] = await aiohttp_client(app)
    await app[GATEWAY].lifecycle.wait_catalog()
    reply = await client.post(
        "/api/v1beta2/streams",
        headers={"X-Api-Key": ADMIN_KEY},
        json={"name": "s", "columns": [{"name": "n", "type": "int64"}]},
    )
    assert reply.status == 201, await reply.text()
    assert "Access-Control-Allow-Origin" not in reply.headers  # management: no CORS headers
    plain = await client.post(
        "/api/v1beta2/streams/s/ingest",
        data=b'{"n": 1}\n',
        headers={"X-Api-Key": ADMIN_KEY, "Content-Type": "application/x-ndjson"},
    )
    assert plain.status == 202, await plain.text()
    assert plain.headers["Access-Control-Allow-Origin"] == "*"
    assert "retry-after" in plain.headers["Access-Control-Expose-Headers"].lower()
    assert len(plain.headers["X-Request-ID"]) == 32 and plain.headers["X-Gateway-Worker"] == "0"
    expect = await client.post(
        "/api/v1beta2/streams/s/ingest",
        data=b'{"n": 1}\n',
        headers={"X-Api-Key": ADMIN_KEY, "Expect": "something-else", "Origin": "http://page.example"},
    )
    assert expect.status == 417  # made before the middleware: CORS headers all the same
    assert expect.headers["Access-Control-Allow-Origin"] == "*"
