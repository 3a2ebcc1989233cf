"""The served OpenAPI document against the application's router: every route documented, nothing
documented that is not routed, and the document valid OpenAPI 3.1."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from openapi_spec_validator import validate

from gateway.app import build_app
from gateway.config import Settings
from gateway.openapi import Reply, build_spec, expand, openapi_path, operation, operation_of

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


@pytest.fixture
def app(tmp_path: Path) -> web.Application:
    return build_app(Settings(data_dir=tmp_path), "admin-key-for-openapi-tests")


@pytest.fixture
async def spec(app: web.Application, aiohttp_client: Any) -> dict[str, Any]:
    client: TestClient[web.Request, web.Application] = await aiohttp_client(app)
    reply = await client.get("/openapi.json")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("application/json")
    body: dict[str, Any] = await reply.json()
    return body


def routed(app: web.Application) -> set[tuple[str, str]]:
    """(METHOD, path template) of every route in the router, as OpenAPI writes paths."""
    out = set()
    for route in app.router.routes():
        assert route.resource is not None
        out.add((route.method.upper(), route.resource.canonical))
    return out


def documented(spec: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in spec["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


def test_spec_is_valid_openapi_3_1(spec: dict[str, Any]) -> None:
    assert spec["openapi"].startswith("3.1")
    validate(spec)


def test_every_route_is_documented_and_every_documented_route_exists(
    app: web.Application, spec: dict[str, Any]
) -> None:
    undocumented = sorted(
        f"{r.method} {r.resource.canonical}"
        for r in app.router.routes()
        if r.resource is not None and operation_of(r.handler) is None
    )
    assert not undocumented, f"routes without @operation: {undocumented}"
    missing_from_spec = routed(app) - documented(spec)
    not_routed = documented(spec) - routed(app)
    assert not missing_from_spec, f"routes missing from /openapi.json: {sorted(missing_from_spec)}"
    assert not not_routed, f"documented routes the router does not have: {sorted(not_routed)}"
    assert len(routed(app)) >= 18  # ops + the Timeplus routes with and without workspace


def test_every_operation_has_replies_params_and_unique_ids(spec: dict[str, Any]) -> None:
    ids = []
    for path, item in spec["paths"].items():
        names = re.findall(r"\{(\w+)\}", path)
        for method, op in item.items():
            ids.append(op["operationId"])
            params = [p["name"] for p in op.get("parameters", []) if p["in"] == "path"]
            assert params == names, (method, path)
            assert op["responses"] and op["summary"], (method, path)
            assert any(s.startswith("2") for s in op["responses"]), (method, path)
            for status, reply in op["responses"].items():
                if status != "204":
                    assert "content" in reply, (method, path, status)
            if path.startswith("/api/") or path.startswith("/{workspace}/"):
                assert op["security"], (method, path)
                assert "401" in op["responses"], (method, path)
    assert len(ids) == len(set(ids))


def test_version_and_workspace_parameters(spec: dict[str, Any]) -> None:
    op = spec["paths"]["/{workspace}/api/{version}/streams/{name}/ingest"]["post"]
    params = {p["name"]: p for p in op["parameters"]}
    assert params["version"]["schema"]["enum"] == ["v1beta1", "v1beta2"]
    assert params["workspace"]["schema"]["pattern"] == "^[A-Za-z0-9_-]{1,128}$"
    assert params["wait"]["in"] == "query" and params["wait"]["schema"] == {"type": "boolean"}
    assert set(op["requestBody"]["content"]) >= {"application/json", "application/x-ndjson"}
    created = spec["paths"]["/api/{version}/apikeys"]["post"]["responses"]["201"]
    ref = created["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert "api_key" in spec["components"]["schemas"][ref]["required"]


def test_path_conversion() -> None:
    path, params = openapi_path("/{workspace:[a-z]{1,8}}/api/{version:v1beta[12]}/s/{name}")
    assert path == "/{workspace}/api/{version}/s/{name}"
    assert [p["name"] for p in params] == ["workspace", "version", "name"]
    assert params[0]["schema"] == {"type": "string", "pattern": "^[a-z]{1,8}$"}
    assert params[1]["schema"] == {"type": "string", "enum": ["v1beta1", "v1beta2"]}
    assert params[2]["schema"] == {"type": "string"}


def test_expand() -> None:
    assert expand("v0") == ["v0"]
    assert expand("v[0-2]x") == ["v0x", "v1x", "v2x"]
    assert expand("[ab][12]") == ["a1", "a2", "b1", "b2"]
    assert expand("v.*") is None
    assert expand("[^a]") is None
    assert expand("[a-z][a-z]") is None  # too many to list


def test_undocumented_routes_are_left_out_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def plain(request: web.Request) -> web.Response:
        return web.Response()

    @operation("Documented", replies={200: Reply("ok", str)})
    async def described(request: web.Request) -> web.Response:
        return web.Response()

    spec = build_spec([("GET", "/a", plain), ("POST", "/b/{x}", described)], title="t", version="1")
    assert documented(spec) == {("POST", "/b/{x}")}
    assert "GET /a" in caplog.text
