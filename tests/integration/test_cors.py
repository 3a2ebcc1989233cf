"""Cross-origin use over real HTTP into the real broker: preflights on every dialect's ingest route,
CORS headers on every reply (errors, 429, 503 included), the management API refusing foreign
origins, an explicit origin list, a key's own origin allow-list, and `text/plain` beacon bodies."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.integration.harness import (
    ADMIN_KEY,
    Gateway,
    Reply,
    end_offsets,
    free_port,
    read_topic,
    unique_name,
    wait_until,
)

PAGE = "http://page.example:8080"
EXPOSED = {"retry-after", "x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset", "x-request-id"}
COLUMNS = [{"name": "id", "type": "string"}, {"name": "n", "type": "int32"}]


def send(
    gw: Gateway,
    method: str,
    path: str,
    body: bytes | str | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    """A request with exactly these headers (http.client adds no Content-Type of its own)."""
    url = urlsplit(gw.url)
    conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=60)
    try:
        data = body.encode() if isinstance(body, str) else body
        conn.request(method, path, body=data, headers=headers or {})
        resp = conn.getresponse()
        return Reply(resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read())
    finally:
        conn.close()


def preflight(
    gw: Gateway, path: str, origin: str = PAGE, request_headers: str = "content-type, x-api-key"
) -> Reply:
    return send(
        gw,
        "OPTIONS",
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": request_headers,
        },
    )


def exposed(reply: Reply) -> set[str]:
    return {h.strip().lower() for h in reply.headers["access-control-expose-headers"].split(",")}


def assert_cors(reply: Reply, allow: str = "*") -> None:
    assert reply.headers.get("access-control-allow-origin") == allow, (reply.status, reply.headers)
    assert exposed(reply) == EXPOSED
    assert "access-control-allow-credentials" not in reply.headers


def make_key(gw: Gateway, **fields: Any) -> Reply:
    return gw.request("POST", "/api/v1beta2/apikeys", {"name": unique_name("k"), **fields})


@pytest.fixture(scope="module")
def stream(gateway: Gateway) -> tuple[str, str]:
    name = unique_name("cors")
    return name, gateway.create_stream(name, COLUMNS)["topic"]


@pytest.mark.parametrize(
    "path",
    [
        "/v0/events?name=x",
        "/v1/data_sources/ingest",
        "/api/v1beta2/streams/x/ingest",
        "/api/v1beta1/streams/x/ingest?format=streaming",
        "/my-ws/api/v1beta2/streams/x/ingest",
    ],
)
def test_preflight_on_every_ingest_route(gateway: Gateway, path: str) -> None:
    reply = preflight(gateway, path, request_headers="content-type,authorization,x-api-key,content-encoding")
    assert reply.status == 204, reply.body
    assert_cors(reply)
    assert {m.strip() for m in reply.headers["access-control-allow-methods"].split(",")} >= {"POST"}
    allowed = {h.strip().lower() for h in reply.headers["access-control-allow-headers"].split(",")}
    assert allowed >= {"content-type", "authorization", "x-api-key", "content-encoding"}
    assert int(reply.headers["access-control-max-age"]) > 0


def test_errors_carry_cors_headers(gateway: Gateway, stream: tuple[str, str]) -> None:
    name, _ = stream
    origin = {"Origin": PAGE}
    cases = [
        send(gateway, "POST", f"/v0/events?name={name}", '{"id":"a","n":1}', origin),  # no token
        send(gateway, "POST", "/v0/events?name=nope&token=bad", "{}", origin),
        send(
            gateway,
            "POST",
            f"/api/v1beta2/streams/{name}/ingest",
            "{not json",
            {**origin, "X-Api-Key": "bad-key-0123456789"},
        ),
        send(gateway, "POST", "/v1/data_sources/ingest", "{", origin),
        send(gateway, "PUT", "/v0/events", "", origin),  # 405 made by the router
    ]
    assert [r.status for r in cases] == [403, 403, 401, 401, 405]
    for reply in cases:
        assert_cors(reply)
        assert reply.headers["content-type"].startswith("application/json")


def test_429_carries_cors_and_exposes_rate_headers(gateway: Gateway, stream: tuple[str, str]) -> None:
    name, _ = stream
    key = make_key(gateway, rate_limit=1).json()["api_key"]
    replies: list[Reply] = []
    for _ in range(40):
        replies.append(
            send(gateway, "POST", f"/v0/events?name={name}&token={key}", '{"id":"r","n":1}', {"Origin": PAGE})
        )
        if replies[-1].status == 429:
            break
    assert replies[-1].status == 429, [r.status for r in replies]
    for reply in (replies[0], replies[-1]):
        assert_cors(reply)
    assert "retry-after" in replies[-1].headers and "x-ratelimit-limit" in replies[-1].headers


def test_503_carries_cors_headers(tmp_path: Path) -> None:
    gw = Gateway(tmp_path / "gw503", f"127.0.0.1:{free_port()}").start(wait_ready=False)
    try:
        wait_until(gw.answers, 30, "the gateway to answer")
        reply = send(
            gw,
            "POST",
            "/v0/events?name=any&wait=true",
            '{"id":"a"}',
            {"Origin": PAGE, "Authorization": "Bearer " + ADMIN_KEY},
        )
        assert reply.status == 503, reply.body
        assert_cors(reply)
    finally:
        assert gw.stop() == 0, gw.log()


def test_management_api_is_never_cross_origin(gateway: Gateway, stream: tuple[str, str]) -> None:
    name, _ = stream
    for path in (
        "/api/v1beta2/streams",
        f"/api/v1beta2/streams/{name}",
        "/api/v1beta2/apikeys",
        "/my-ws/api/v1beta1/apikeys",
    ):
        reply = preflight(gateway, path)
        assert reply.status == 403, (path, reply.status)
        assert not any(h.startswith("access-control-") for h in reply.headers), reply.headers
    foreign = gateway.request("GET", "/api/v1beta2/streams", headers={"Origin": PAGE})
    assert foreign.status == 403
    assert "access-control-allow-origin" not in {k.lower() for k in foreign.headers}
    deleted = gateway.request("DELETE", f"/api/v1beta2/streams/{name}", headers={"Origin": PAGE})
    assert deleted.status == 403
    assert gateway.request("GET", f"/api/v1beta2/streams/{name}").status == 200  # still there
    assert gateway.request("GET", "/api/v1beta2/streams").status == 200  # no Origin: a tool


async def test_beacon_bodies_are_json_rows(gateway: Gateway, kafka: str) -> None:
    """`sendBeacon` posts `text/plain;charset=UTF-8`: JSON rows on /v0/events and on Timeplus
    streams that are not one string column; raw text still for one-string-column streams."""
    name = unique_name("beacon")
    topic = gateway.create_stream(name, COLUMNS)["topic"]
    plain = {"Content-Type": "text/plain;charset=UTF-8", "Origin": PAGE}
    key = {"X-Api-Key": ADMIN_KEY}
    a = send(
        gateway,
        "POST",
        f"/v0/events?name={name}&wait=true&token={ADMIN_KEY}",
        '{"id":"tb","n":1}\n{"id":"tb","n":2}',
        plain,
    )
    b = send(
        gateway,
        "POST",
        f"/api/v1beta2/streams/{name}/ingest?wait=true",
        '{"id":"tp","n":3}',
        {**plain, **key},
    )
    assert (a.status, b.status) == (200, 200), (a.body, b.body)
    assert_cors(a)
    rows = sorted((r.json()["id"], r.json()["n"]) for r in await read_topic(kafka, topic))
    assert rows == [("tb", 1), ("tb", 2), ("tp", 3)]
    lines = unique_name("lines")
    lines_topic = gateway.create_stream(lines, [{"name": "line", "type": "string"}])["topic"]
    c = send(
        gateway, "POST", f"/api/v1beta2/streams/{lines}/ingest?wait=true", '{"id":"raw"}', {**plain, **key}
    )
    assert c.status == 200, c.body
    assert [r.json()["line"] for r in await read_topic(kafka, lines_topic)] == ['{"id":"raw"}']


@pytest.fixture(scope="module")
def listed(kafka: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway whose ingest routes allow one origin only."""
    gw = Gateway(
        Path(tmp_path_factory.mktemp("gwcors")),
        kafka,
        extra=["--default-shards", "1"],
        env={"GATEWAY_CORS_ALLOW_ORIGINS": PAGE},
    )
    gw.start()
    yield gw
    assert gw.stop() == 0, gw.log()


async def test_explicit_origin_list(listed: Gateway, kafka: str) -> None:
    name = unique_name("listed")
    topic = listed.create_stream(name, COLUMNS)["topic"]
    path = f"/v0/events?name={name}&wait=true&token={ADMIN_KEY}"
    ok = send(listed, "POST", path, '{"id":"ok","n":1}', {"Origin": PAGE})
    assert ok.status == 200, ok.body
    assert_cors(ok, allow=PAGE)
    assert "origin" in {v.strip().lower() for v in ok.headers["vary"].split(",")}
    good = preflight(listed, path)
    assert good.status == 204 and good.headers["access-control-allow-origin"] == PAGE
    bad = preflight(listed, path, origin="http://evil.example")
    assert bad.status == 403 and "access-control-allow-origin" not in bad.headers
    before = await end_offsets(kafka, topic)
    for body, ctype in (
        ('{"id":"evil","n":1}', "text/plain;charset=UTF-8"),
        ('{"id":"evil","n":2}', "application/x-www-form-urlencoded"),
    ):
        refused = send(listed, "POST", path, body, {"Origin": "http://evil.example", "Content-Type": ctype})
        assert refused.status == 403, refused.body
        assert "access-control-allow-origin" not in refused.headers
    assert send(listed, "POST", path, '{"id":"n","n":1}', {"Origin": "null"}).status == 403
    assert await end_offsets(kafka, topic) == before
    assert [r.json()["id"] for r in await read_topic(kafka, topic)] == ["ok"]


async def test_key_origin_allow_list(gateway: Gateway, kafka: str) -> None:
    name = unique_name("keyorigin")
    topic = gateway.create_stream(name, COLUMNS)["topic"]
    created = make_key(
        gateway,
        permissions=[f"DATASOURCE:APPEND:{name}"],
        rate_limit=50,
        allowed_origins=["HTTP://Page.Example:8080/"],
    )
    assert created.status == 201, created.body
    assert created.json()["allowed_origins"] == [PAGE]
    key = created.json()["api_key"]
    listed = [
        k for k in gateway.request("GET", "/api/v1beta2/apikeys").json() if k["id"] == created.json()["id"]
    ]
    assert listed[0]["allowed_origins"] == [PAGE]
    path = f"/v0/events?name={name}&wait=true&token={key}"
    before = await end_offsets(kafka, topic)
    refused = [
        send(gateway, "POST", path, '{"id":"x","n":1}', {"Origin": "http://other.example"}),
        send(
            gateway,
            "POST",
            f"/api/v1beta2/streams/{name}/ingest?wait=true",
            '{"id":"x","n":1}',
            {"Origin": "http://other.example", "X-Api-Key": key, "Content-Type": "application/x-ndjson"},
        ),
        send(
            gateway,
            "POST",
            "/v1/data_sources/ingest",
            json.dumps({"data_source": name, "records": [{"id": "x", "n": 1}]}),
            {"Origin": "http://other.example", "Authorization": f"Bearer {key}"},
        ),
    ]
    assert [r.status for r in refused] == [403, 403, 403], [r.body for r in refused]
    assert await end_offsets(kafka, topic) == before
    assert send(gateway, "POST", path, '{"id":"page","n":1}', {"Origin": PAGE}).status == 200
    assert send(gateway, "POST", path, '{"id":"tool","n":2}').status == 200  # not a browser
    assert sorted(r.json()["id"] for r in await read_topic(kafka, topic)) == ["page", "tool"]
    bad = make_key(gateway, allowed_origins=["page.example"])
    assert bad.status == 400 and "allowed_origins" in bad.body.decode()
