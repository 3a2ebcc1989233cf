"""The Tinybird Events API over real HTTP into the real broker: NDJSON variants, gzip, tokens,
quarantine, rate limit, and every status code with its exact JSON body."""

from __future__ import annotations

import gzip
import http.client
import json
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

COLUMNS = [
    {"name": "id", "type": "string"},
    {"name": "n", "type": "int32"},
    {"name": "city", "type": "string", "default": "'nowhere'"},
]


def post(gateway: Gateway, query: str, body: bytes | str, headers: dict[str, str] | None = None) -> Reply:
    """POST /v0/events with exactly these headers (http.client adds no Content-Type of its own)."""
    url = urlsplit(gateway.url)
    conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=60)
    try:
        data = body.encode() if isinstance(body, str) else body
        conn.request("POST", "/v0/events" + query, body=data, headers=headers or {})
        resp = conn.getresponse()
        return Reply(resp.status, dict(resp.headers), resp.read())
    finally:
        conn.close()


def bearer(key: str = ADMIN_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def ndjson(rows: list[dict[str, Any]], trailing: bool = True) -> str:
    return "\n".join(json.dumps(r) for r in rows) + ("\n" if trailing else "")


def assert_json(reply: Reply, status: int) -> dict[str, Any]:
    assert reply.status == status, (reply.status, reply.body)
    assert reply.headers["Content-Type"].startswith("application/json")
    body: dict[str, Any] = reply.json()
    return body


@pytest.fixture(scope="module")
def stream(gateway: Gateway) -> tuple[str, str]:
    name = unique_name("tb")
    return name, gateway.create_stream(name, COLUMNS)["topic"]


def make_key(gateway: Gateway, **fields: Any) -> str:
    reply = gateway.request("POST", "/api/v1beta2/apikeys", {"name": unique_name("k"), **fields})
    assert reply.status == 201, reply.body
    key: str = reply.json()["api_key"]
    return key


async def test_ndjson_variants_and_content_types(gateway: Gateway, kafka: str) -> None:
    name = unique_name("tb")
    topic = gateway.create_stream(name, COLUMNS)["topic"]
    variants = [
        (None, True),
        ("application/x-ndjson", False),
        ("text/plain", True),
        ("application/json", False),
        ("text/plain; charset=utf-8", True),
    ]
    sent: list[dict[str, Any]] = []
    for i, (ctype, trailing) in enumerate(variants):
        rows = [{"id": f"{i}-{j}", "n": j, "city": "Madrid"} for j in range(3)]
        headers = bearer() | ({"Content-Type": ctype} if ctype else {})
        reply = post(gateway, f"?name={name}&wait=true", ndjson(rows, trailing), headers)
        assert assert_json(reply, 200) == {"successful_rows": 3, "quarantined_rows": 0}
        assert reply.headers["X-RateLimit-Limit"] == "1000"
        sent += rows
    one = {"date": "2020-04-05 00:05:38", "id": "solo", "n": 9}  # the document's single message
    assert assert_json(post(gateway, f"?name={name}&wait=true", json.dumps(one), bearer()), 200) == {
        "successful_rows": 1,
        "quarantined_rows": 0,
    }
    sent.append({"id": "solo", "n": 9, "city": "nowhere"})
    got = [r.json() for r in await read_topic(kafka, topic)]
    assert sorted(got, key=lambda v: v["id"]) == sorted(sent, key=lambda v: v["id"])


async def test_wait_false_is_202_then_written(gateway: Gateway, kafka: str, stream: tuple[str, str]) -> None:
    name = unique_name("tb")
    topic = gateway.create_stream(name, COLUMNS)["topic"]
    reply = post(gateway, f"?name={name}", ndjson([{"id": "a", "n": 1}, {"id": "b", "n": 2}]), bearer())
    assert assert_json(reply, 202) == {"successful_rows": 2, "quarantined_rows": 0}
    reply = post(gateway, f"?name={name}&wait=false", ndjson([{"id": "c", "n": 3}]), bearer())
    assert assert_json(reply, 202) == {"successful_rows": 1, "quarantined_rows": 0}

    async def total() -> int:
        return sum((await end_offsets(kafka, topic)).values())

    import asyncio

    deadline = asyncio.get_running_loop().time() + 30
    while await total() < 3:
        assert asyncio.get_running_loop().time() < deadline, "rows answered 202 never arrived"
        await asyncio.sleep(0.1)
    assert sorted(r.json()["id"] for r in await read_topic(kafka, topic)) == ["a", "b", "c"]


async def test_gzip_and_token_styles(gateway: Gateway, kafka: str) -> None:
    name = unique_name("tb")
    topic = gateway.create_stream(name, COLUMNS)["topic"]
    rows = [{"id": f"g{i}", "n": i} for i in range(300)]
    reply = post(
        gateway,
        f"?name={name}&wait=true",
        gzip.compress(ndjson(rows).encode()),
        bearer() | {"Content-Encoding": "gzip"},
    )
    assert assert_json(reply, 200) == {"successful_rows": 300, "quarantined_rows": 0}
    reply = post(gateway, f"?name={name}&wait=true&token={ADMIN_KEY}", '{"id": "q", "n": 1}')
    assert assert_json(reply, 200)["successful_rows"] == 1
    key = make_key(gateway, permissions=[f"DATASOURCE:APPEND:{name}"])
    reply = post(gateway, f"?name={name}&wait=true", '{"id": "k", "n": 2}', bearer(key))
    assert assert_json(reply, 200)["successful_rows"] == 1
    ids = sorted(r.json()["id"] for r in await read_topic(kafka, topic))
    assert ids == sorted([r["id"] for r in rows] + ["q", "k"])


async def test_invalid_rows_go_to_quarantine(gateway: Gateway, kafka: str) -> None:
    name = unique_name("tb")
    created = gateway.create_stream(name, COLUMNS)
    topic, quarantine = created["topic"], created["quarantine_topic"]
    assert (
        gateway.request("GET", f"/api/v1beta2/streams/{name}").json()["quarantine_topic"]
        == quarantine
        == topic + "-quarantine"
    )
    body = (
        '{"id": "a", "n": 1}\n'
        '{"id": "b", "n": "not a number"}\n'
        '{"id": "c",\n "n": 3}\n'
        '{"n": 4}\n'
        "42\n"
        '{"id": "d", "n": 2147483648}\n'
        '{"id": "e", "n": 5}'
    )
    reply = post(
        gateway,
        f"?name={name}&wait=true",
        gzip.compress(body.encode()),
        bearer() | {"Content-Encoding": "gzip"},
    )
    assert assert_json(reply, 200) == {"successful_rows": 3, "quarantined_rows": 4}
    good = sorted(r.json()["id"] for r in await read_topic(kafka, topic))
    assert good == ["a", "c", "e"]
    records = [r.json() for r in await read_topic(kafka, quarantine)]  # wait=true: already there
    by_row = {r["error"]["row"]: r for r in records}
    assert sorted(by_row) == [1, 3, 4, 5]
    assert by_row[1]["row_text"] == '{"id": "b", "n": "not a number"}'
    assert by_row[1]["error"] == {
        "row": 1,
        "column": "n",
        "message": "row 1, column 'n': Expected `int`, got `str`",
    }
    assert by_row[3]["error"]["column"] == "id" and "missing required field" in by_row[3]["error"]["message"]
    assert by_row[4]["row_text"] == "42" and by_row[4]["error"]["column"] is None
    assert by_row[5]["error"]["column"] == "n" and "<= 2147483647" in by_row[5]["error"]["message"]
    for r in records:
        assert r["stream"] == name and r["request_id"] == reply.headers["X-Request-ID"]
        assert r["time"].endswith("Z")


async def test_all_rows_bad_is_still_accepted(gateway: Gateway, kafka: str) -> None:
    name = unique_name("tb")
    created = gateway.create_stream(name, COLUMNS)
    reply = post(gateway, f"?name={name}&wait=true", '{"id": 1}\n{"id": 2}\n', bearer())
    assert assert_json(reply, 200) == {"successful_rows": 0, "quarantined_rows": 2}
    reply = post(gateway, f"?name={name}", '{"id": 3}', bearer())
    assert assert_json(reply, 202) == {"successful_rows": 0, "quarantined_rows": 1}
    assert sum((await end_offsets(kafka, created["topic"])).values()) == 0
    import asyncio

    deadline = asyncio.get_running_loop().time() + 30
    while sum((await end_offsets(kafka, created["quarantine_topic"])).values()) < 3:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.1)


async def test_body_that_is_not_json_is_400_and_writes_nothing(
    gateway: Gateway, kafka: str, stream: tuple[str, str]
) -> None:
    name, topic = stream
    before = sum((await end_offsets(kafka, topic)).values())
    for body in ('{"id": "a", "n": 1}\n{"id": "b", "n": "x"}\n{"id": ', "not json at all"):
        reply = post(gateway, f"?name={name}&wait=true", body, bearer())
        err = assert_json(reply, 400)
        assert err["code"] == "malformed_body" and err["error"]
        assert err["request_id"] == reply.headers["X-Request-ID"]
    assert sum((await end_offsets(kafka, topic)).values()) == before
    quarantine = topic + "-quarantine"
    assert sum((await end_offsets(kafka, quarantine)).values()) == 0


def test_status_codes_and_bodies(gateway: Gateway, stream: tuple[str, str]) -> None:
    name, _ = stream
    row = '{"id": "a", "n": 1}'

    def expect(reply: Reply, status: int, code: str, error: str) -> None:
        assert assert_json(reply, status) == {
            "error": error,
            "code": code,
            "request_id": reply.headers["X-Request-ID"],
        }

    expect(
        post(gateway, "?wait=true", row, bearer()),
        400,
        "bad_request",
        "missing the `name` query parameter (the data source to append to); nothing was inserted",
    )
    expect(
        post(gateway, f"?name={name}", row, bearer("not-a-key")), 403, "unauthenticated", "invalid API key"
    )
    expect(post(gateway, f"?name={name}&token=not-a-key", row), 403, "unauthenticated", "invalid API key")
    reply = post(gateway, f"?name={name}", row)
    assert assert_json(reply, 403)["code"] == "unauthenticated"
    other = make_key(gateway, permissions=["DATASOURCE:APPEND:some_other_stream"])
    expect(
        post(gateway, f"?name={name}", row, bearer(other)),
        403,
        "forbidden",
        f"this key may not append to stream {name!r}",
    )
    expect(
        post(gateway, "?name=no_such_source", row, bearer()),
        404,
        "not_found",
        "Data Source 'no_such_source' not found",
    )
    expect(
        post(gateway, f"?name={name}&wait=perhaps", row, bearer()),
        400,
        "bad_request",
        "query parameter 'wait' must be true or false, got 'perhaps'",
    )
    expect(post(gateway, f"?name={name}", "", bearer()), 400, "bad_request", "the body holds no rows")
    expect(
        post(gateway, f"?name={name}", b"\x1f\x8b\x08garbage", bearer() | {"Content-Encoding": "gzip"}),
        400,
        "malformed_body",
        "body is not valid gzip: Error -3 while decompressing data: unknown header flags set",
    )


def test_rate_limit_429_with_headers(gateway: Gateway, stream: tuple[str, str]) -> None:
    name, _ = stream
    key = make_key(gateway, rate_limit=5)
    statuses: list[Reply] = []
    for _ in range(40):
        reply = post(gateway, f"?name={name}", '{"id": "r", "n": 1}', bearer(key))
        statuses.append(reply)
        if reply.status == 429:
            break
    assert [r.status for r in statuses[:5]] == [202] * 5  # a burst of one second's worth
    assert statuses[0].headers["X-RateLimit-Limit"] == "5"
    assert statuses[0].headers["X-RateLimit-Remaining"] == "4"
    limited = statuses[-1]
    body = assert_json(limited, 429)
    assert body == {
        "error": "this key's limit of 5 requests per second is reached; nothing was inserted, retry later",
        "code": "rate_limited",
        "request_id": limited.headers["X-Request-ID"],
    }
    assert limited.headers["Retry-After"] == "1"
    assert limited.headers["X-RateLimit-Limit"] == "5"
    assert limited.headers["X-RateLimit-Remaining"] == "0"
    assert limited.headers["X-RateLimit-Reset"] == "1"
    # other keys are not affected, and the key recovers once its bucket refills
    assert post(gateway, f"?name={name}", '{"id": "r", "n": 1}', bearer()).status == 202
    wait_until(
        lambda: post(gateway, f"?name={name}", '{"id": "r", "n": 1}', bearer(key)).status == 202,
        5,
        "the rate-limited key to recover",
        interval=0.25,
    )


def test_kafka_unreachable_is_503(tmp_path: Path) -> None:
    gw = Gateway(tmp_path / "gw503", f"127.0.0.1:{free_port()}").start(wait_ready=False)
    try:
        wait_until(gw.answers, 30, "the gateway to answer")
        reply = post(gw, "?name=anything&wait=true", '{"id": "a", "n": 1}', bearer())
        body = assert_json(reply, 503)
        assert body == {
            "error": "Kafka is unreachable; nothing was written, retry later",
            "code": "unavailable",
            "request_id": reply.headers["X-Request-ID"],
        }
        assert reply.headers["Retry-After"] == "1"
    finally:
        assert gw.stop() == 0, gw.log()
