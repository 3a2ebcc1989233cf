"""Issue 20 items 8, 11, 12 and 15 (embedded gateway): a key gets one answer for a stream outside
its scope whether it exists or not, in every dialect; schema reads need read scope; an expired
key is told what an unknown one is told; `/v3/clusters` does not reflect `Host`; Basic auth with
the key as user and no colon; no version in `Server`; bounds on what a creator can make."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import ADMIN_KEY, Gateway, Reply, unique_name, wait_until
from tests.reliability.rawhttp import exchange, request_bytes
from tests.security.conftest import COLUMNS, start_embedded

KEYS = "/api/v1beta2/apikeys"
STREAMS = "/api/v1beta2/streams"
DS_COLUMNS = [
    {"name": "timestamp", "type": "int64"},
    {"name": "name", "type": "string"},
    {"name": "value", "type": "float64"},
]
MAX_SHARDS, MAX_COLUMNS, MAX_VERSIONS = 8, 20, 3


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gateway = start_embedded(
        Path(tmp_path_factory.mktemp("authz")),
        [
            "--max-shards",
            str(MAX_SHARDS),
            "--max-columns",
            str(MAX_COLUMNS),
            "--max-schema-versions",
            str(MAX_VERSIONS),
            "--max-stream-record-bytes",
            "20000",
        ],
    )
    yield gateway
    assert gateway.stop() == 0, gateway.log()[-3000:]


def new_key(gw: Gateway, permissions: list[str], **extra: Any) -> str:
    reply = gw.request("POST", KEYS, {"name": "probe", "permissions": permissions, **extra})
    assert reply.status == 201, reply.body
    key: str = reply.json()["api_key"]
    return key


@pytest.fixture(scope="module")
def world(gw: Gateway) -> dict[str, str]:
    """`mine` (the key's stream), `other` (exists, outside the key's scope), `shaped` (a data
    source outside the scope), `missing` (no such stream), and the key."""
    names = {
        "mine": unique_name("mine"),
        "other": unique_name("other"),
        "shaped": unique_name("shaped"),
        "missing": unique_name("missing"),
    }
    gw.create_stream(names["mine"], COLUMNS)
    gw.create_stream(names["other"], COLUMNS)
    gw.create_stream(names["shaped"], DS_COLUMNS, mode="versioned_kv", primary_key="timestamp, name")
    names["key"] = new_key(gw, [f"DATASOURCE:APPEND:{names['mine']}"])
    return names


def without_names(reply: Reply, *names: str) -> tuple[int, str]:
    """The reply's status and body with the stream names and request ids blanked out (the name
    is the client's own input; what must not differ is everything else)."""
    body = reply.body.decode()
    for name in names:
        body = body.replace(name, "NAME")
    try:
        doc = json.loads(body)
        if isinstance(doc, dict):
            doc.pop("request_id", None)
        body = json.dumps(doc, sort_keys=True)
    except ValueError:
        pass
    return reply.status, body


def test_schema_reads_need_read_scope(gw: Gateway, world: dict[str, str]) -> None:
    key = world["key"]
    assert gw.request("GET", f"{STREAMS}/{world['mine']}/schemas", key=key).status == 200
    assert gw.request("GET", f"{STREAMS}/{world['mine']}/schemas/1", key=key).status == 200
    for path in ("schemas", "schemas/1", "schemas/99"):
        other = gw.request("GET", f"{STREAMS}/{world['other']}/{path}", key=key)
        missing = gw.request("GET", f"{STREAMS}/{world['missing']}/{path}", key=key)
        assert other.status == 403, (path, other.status, other.body)  # was 200 with the columns
        assert without_names(other, world["other"]) == without_names(missing, world["missing"])
        assert b"created_by" not in other.body
    reader = new_key(gw, [f"DATASOURCE:READ:{world['other']}"])
    assert gw.request("GET", f"{STREAMS}/{world['other']}/schemas", key=reader).status == 200


def _ingest_replies(gw: Gateway, key: str, name: str) -> dict[str, Reply]:
    row = '{"id": "a", "n": 1}\n'
    basic = "Basic " + base64.b64encode(f"user:{key}".encode()).decode()
    return {
        "timeplus": gw.ingest(name, row, content_type="application/x-ndjson", headers={"X-Api-Key": key}),
        "tinybird": gw.request("POST", f"/v0/events?name={name}&token={key}", row, key=None),
        "datasource": gw.request(
            "POST",
            "/v1/data_sources/ingest",
            {"data_source": name, "records": [{"timestamp": 1, "name": "x", "value": 1.0}]},
            key=None,
            headers={"Authorization": f"Bearer {key}"},
        ),
        "restproxy_v2": gw.request(
            "POST",
            f"/topics/ingest.{name}",
            {"records": [{"value": {"id": "a", "n": 1}}]},
            key=None,
            headers={"Authorization": basic, "Content-Type": "application/vnd.kafka.json.v2+json"},
        ),
        "restproxy_v3": gw.request(
            "POST",
            f"/v3/clusters/ingest-gateway/topics/{name}/records",
            '{"value": {"type": "JSON", "data": {"id": "a", "n": 1}}}',
            key=None,
            headers={"Authorization": basic, "Content-Type": "application/json"},
        ),
        "topic_read": gw.request("GET", f"/topics/ingest.{name}", key=None, headers={"Authorization": basic}),
        "stream_read": gw.request("GET", f"{STREAMS}/{name}", key=key),
        "stats_read": gw.request("GET", f"{STREAMS}/{name}/stats", key=key),
    }


# The status each dialect gives a stream outside the key's scope, from its vendor's contract:
# Timeplus and Tinybird 403 (Tinybird: "the token is not valid" for it); the data-source API and
# the REST proxy have no 403 for a resource: "Data source not found." / "Topic not found.".
HIDDEN_STATUS = {
    "timeplus": 403,
    "tinybird": 403,
    "datasource": 404,
    "restproxy_v2": 404,
    "restproxy_v3": 404,
    "topic_read": 404,
    "stream_read": 403,
    "stats_read": 403,
}


def test_one_answer_outside_the_scope_whether_the_stream_exists_or_not(
    gw: Gateway, world: dict[str, str]
) -> None:
    key = world["key"]
    existing = _ingest_replies(gw, key, world["other"])
    missing = _ingest_replies(gw, key, world["missing"])
    shaped = _ingest_replies(gw, key, world["shaped"])
    for route, status in HIDDEN_STATUS.items():
        assert existing[route].status == status, (route, existing[route].body)
        a = without_names(existing[route], world["other"])
        assert a == without_names(missing[route], world["missing"]), route
        assert a == without_names(shaped[route], world["shaped"]), route
    assert existing["datasource"].json() == {"detail": "Data source not found."}
    assert shaped["datasource"].json() == {"detail": "Data source not found."}  # no shape named
    mine = _ingest_replies(gw, key, world["mine"])
    assert mine["timeplus"].status == 200 and mine["tinybird"].status in (200, 202)
    assert mine["restproxy_v2"].status == 200, mine["restproxy_v2"].body


def test_an_expired_key_is_told_what_an_unknown_key_is_told(gw: Gateway, world: dict[str, str]) -> None:
    reply = gw.request("POST", KEYS, {"name": "short", "expire_in": "1s"})
    expiring = reply.json()["api_key"]
    wait_until(lambda: gw.request("GET", STREAMS, key=expiring).status == 401, 30, "the key to expire")
    unknown = expiring[:-4] + ("AAAA" if not expiring.endswith("AAAA") else "BBBB")
    for path in (STREAMS, f"/v0/events?name={world['mine']}"):
        method = "GET" if path == STREAMS else "POST"
        a = gw.request(method, path, '{"id":"a","n":1}' if method == "POST" else None, key=expiring)
        b = gw.request(method, path, '{"id":"a","n":1}' if method == "POST" else None, key=unknown)
        assert without_names(a) == without_names(b), (a.body, b.body)
        assert b"expire" not in a.body


def test_v3_clusters_does_not_reflect_host(gw: Gateway) -> None:
    head = (f"GET /v3/clusters HTTP/1.1\r\nHost: evil.example:666\r\nX-Api-Key: {ADMIN_KEY}\r\n\r\n").encode()
    reply = exchange(gw.port, head)
    assert reply.status == 200, reply.body
    assert b"evil.example" not in reply.body
    urls = json.loads(reply.body)
    assert urls["metadata"]["self"] == "/v3/clusters"
    assert urls["data"][0]["metadata"]["self"] == "/v3/clusters/ingest-gateway"


@pytest.mark.parametrize("userpass", ["{key}", "{key}:", ":{key}", "anyone:{key}"])
def test_basic_auth_with_the_key_as_user_or_password(
    gw: Gateway, world: dict[str, str], userpass: str
) -> None:
    token = base64.b64encode(userpass.format(key=world["key"]).encode()).decode()
    reply = gw.request("GET", "/topics", key=None, headers={"Authorization": f"Basic {token}"})
    assert reply.status == 200, (userpass, reply.status, reply.body)
    assert reply.json() == [f"ingest.{world['mine']}"]


def test_server_header_names_no_version(gw: Gateway, world: dict[str, str]) -> None:
    replies = [
        exchange(gw.port, request_bytes("GET", "/healthz", {})),
        exchange(gw.port, request_bytes("GET", STREAMS, {"X-Api-Key": world["key"]})),
        exchange(gw.port, request_bytes("GET", "/no/such/route", {})),
        exchange(gw.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n"),
        exchange(
            gw.port,
            request_bytes(
                "POST",
                f"/api/v1beta2/streams/{world['mine']}/ingest",
                {"X-Api-Key": world["key"], "Content-Type": "application/x-ndjson"},
                b'{"id":"a","n":1}\n',
            ),
        ),
    ]
    for reply in replies:
        server = {k.lower(): v for k, v in reply.headers.items()}.get("server")
        assert server == "ingest-gateway", (reply.status, reply.headers)


@pytest.mark.parametrize(
    ("fields", "limit"),
    [
        ({"shards": 2_000_000}, "--max-shards"),
        ({"shards": MAX_SHARDS + 1}, "--max-shards"),
        ({"columns": [{"name": f"c{i}", "type": "string"} for i in range(MAX_COLUMNS + 1)]}, "--max-columns"),
        (
            {
                "columns": [
                    {"name": "c" * 250 + f"{i:03}", "type": "string", "description": "d" * 900}
                    for i in range(MAX_COLUMNS)
                ]
            },
            "--max-stream-record-bytes",
        ),
        ({"description": "d" * 30_000}, "--max-stream-record-bytes"),
    ],
)
def test_creators_are_bounded(gw: Gateway, fields: dict[str, Any], limit: str) -> None:
    name = unique_name("big")
    reply = gw.request("POST", STREAMS, {"name": name, "columns": COLUMNS, **fields})
    assert reply.status == 400, (reply.status, reply.body[:300])
    assert limit in reply.json()["message"]
    assert gw.request("GET", f"{STREAMS}/{name}").status == 404  # nothing made


def test_schema_versions_are_bounded(gw: Gateway) -> None:
    name = unique_name("ver")
    gw.create_stream(name, COLUMNS)
    columns = list(COLUMNS)
    statuses = []
    for i in range(MAX_VERSIONS + 1):
        columns = [*columns, {"name": f"x{i}", "type": "nullable(string)"}]
        statuses.append(gw.request("PATCH", f"{STREAMS}/{name}", {"columns": columns}))
    assert [r.status for r in statuses[: MAX_VERSIONS - 1]] == [200] * (MAX_VERSIONS - 1)
    last = statuses[-1]
    assert last.status == 400 and "--max-schema-versions" in last.json()["message"], last.body
    got = gw.request("GET", f"{STREAMS}/{name}").json()
    assert got["schema_version"] == MAX_VERSIONS
