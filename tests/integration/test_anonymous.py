"""Opt-in anonymous produce (--anonymous-scopes) over real HTTP into the real broker: requests with
no credentials at all get exactly the configured scopes in every dialect (the rows read back from
Kafka), outside them the dialect's usual refusal (the same a key with those scopes gets), wrong
credentials stay 401, the feature off is 401 as before, the anonymous rate is its own (429), and
anonymous requests are one principal for the decoding slots: a flood of them leaves keyed clients
theirs. No timing: held requests are seen through the gateway's own gauge."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import Gateway, Reply, http, read_topic, unique_name, wait_until
from tests.reliability.rawhttp import connect, read_reply, request_bytes

OPEN = unique_name("anon")  # anonymous requests may append to (and so read) this stream only
CLOSED = unique_name("closed")  # and not to this one
COLUMNS = [{"name": "id", "type": "string"}, {"name": "n", "type": "int32"}]
JSON_V2 = "application/vnd.kafka.json.v2+json"
NDJSON = {"Content-Type": "application/x-ndjson"}
CAP = 4  # decoding slots; --key-share 0.5: 2 per principal; 1 reserved for admin keys


@pytest.fixture(scope="module")
def anon(kafka: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = Gateway(
        Path(tmp_path_factory.mktemp("anon")),
        kafka,
        extra=["--max-decoding-requests", str(CAP), "--key-share", "0.5", "--body-min-bytes-per-s", "0"],
        env={
            "GATEWAY_ANONYMOUS_SCOPES": f"DATASOURCE:APPEND:{OPEN}",
            "GATEWAY_ANONYMOUS_RATE_LIMIT": "100000",
        },
    )
    gw.start()
    for name in (OPEN, CLOSED):
        gw.create_stream(name, COLUMNS)
    yield gw
    assert gw.stop() == 0, gw.log()


@pytest.fixture(scope="module")
def slow(kafka: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """Anonymous requests limited to one per second (a bucket of one)."""
    gw = Gateway(
        Path(tmp_path_factory.mktemp("slow")),
        kafka,
        extra=["--anonymous-scopes", f"DATASOURCE:APPEND:{OPEN}", "--anonymous-rate-limit", "1"],
    )
    gw.start()
    gw.create_stream(OPEN, COLUMNS)
    yield gw
    assert gw.stop() == 0, gw.log()


def topic_of(gw: Gateway, name: str) -> str:
    reply = gw.request("GET", f"/api/v1beta2/streams/{name}")
    assert reply.status == 200, reply.body
    topic: str = reply.json()["topic"]
    return topic


def scoped_key(gw: Gateway, scopes: list[str]) -> str:
    reply = gw.request("POST", "/api/v1beta2/apikeys", {"name": unique_name("k"), "permissions": scopes})
    assert reply.status == 201, reply.body
    key: str = reply.json()["api_key"]
    return key


def timeplus(gw: Gateway, name: str, body: str, headers: dict[str, str] | None = None) -> Reply:
    return gw.request(
        "POST",
        f"/api/v1beta2/streams/{name}/ingest?wait=true",
        body,
        key=None,
        headers=NDJSON | (headers or {}),
    )


def tinybird(gw: Gateway, name: str, body: str, headers: dict[str, str] | None = None) -> Reply:
    return gw.request(
        "POST", f"/v0/events?name={name}&wait=true", body, key=None, headers=NDJSON | (headers or {})
    )


def restproxy(gw: Gateway, topic: str, records: list[Any], headers: dict[str, str] | None = None) -> Reply:
    body = json.dumps({"records": records})
    return gw.request(
        "POST", f"/topics/{topic}", body, key=None, headers={"Content-Type": JSON_V2} | (headers or {})
    )


def data_source(gw: Gateway, name: str, headers: dict[str, str] | None = None) -> Reply:
    body = json.dumps({"data_source": name, "records": [{"value": {"id": "ds", "n": 4}}]})
    h = {"Content-Type": "application/json"} | (headers or {})
    return gw.request("POST", "/v1/data_sources/ingest", body, key=None, headers=h)


def rows(kafka: str, topic: str) -> list[tuple[str, int]]:
    return sorted((r.json()["id"], r.json()["n"]) for r in asyncio.run(read_topic(kafka, topic)))


def refusal(reply: Reply) -> tuple[int, Any]:
    body = reply.json()
    return reply.status, body.get("error_code", body.get("code"))


def test_no_credentials_append_within_the_scopes_in_every_dialect(anon: Gateway, kafka: str) -> None:
    topic = topic_of(anon, OPEN)
    reply = timeplus(anon, OPEN, '{"id": "tp", "n": 1}\n')
    assert reply.status == 200, reply.body
    reply = tinybird(anon, OPEN, '{"id": "tb", "n": 2}\n')
    assert reply.status == 200, reply.body
    assert reply.json()["successful_rows"] == 1
    reply = restproxy(anon, topic, [{"value": {"id": "rp", "n": 3}}])
    assert reply.status == 200, reply.body
    offsets = reply.json()["offsets"]
    assert len(offsets) == 1 and offsets[0]["error_code"] is None
    # the data-sources dialect too: anonymous, its source lookup answers (404, hidden or missing)
    missing = data_source(anon, unique_name("nosuch"))
    assert missing.status == 404, missing.body
    assert (
        ("tp", 1) in rows(kafka, topic)
        and ("tb", 2) in rows(kafka, topic)
        and ("rp", 3) in rows(kafka, topic)
    )


def test_outside_the_scopes_the_dialects_usual_refusal(anon: Gateway, kafka: str) -> None:
    closed_topic = topic_of(anon, CLOSED)
    key = scoped_key(anon, [f"DATASOURCE:APPEND:{OPEN}"])  # a key with the anonymous scopes
    as_key = {"X-Api-Key": key}
    sends = [
        lambda h: timeplus(anon, CLOSED, '{"id": "x", "n": 1}\n', h),
        lambda h: tinybird(anon, CLOSED, '{"id": "x", "n": 1}\n', h),
        lambda h: restproxy(anon, closed_topic, [{"value": {"id": "x", "n": 1}}], h),
        lambda h: anon.request("GET", f"/api/v1beta2/streams/{CLOSED}", key=None, headers=h),
        lambda h: anon.request("GET", "/api/v1beta2/apikeys", key=None, headers=h),
        lambda h: anon.request(
            "POST",
            "/api/v1beta2/streams",
            {"name": unique_name("no"), "columns": COLUMNS},
            key=None,
            headers=h,
        ),
    ]
    for send in sends:
        anonymous, keyed = send({}), send(as_key)
        assert anonymous.status in (403, 404), anonymous.body
        assert refusal(anonymous) == refusal(keyed), (anonymous.body, keyed.body)
    assert rows(kafka, closed_topic) == []


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Api-Key": "wrong-key-0123456789abcdef"},
        {"X-Api-Key": ""},
        {"Authorization": "Bearer wrong-key-0123456789abcdef"},
        {"Authorization": "Basic !!!not-base64"},
        {"Authorization": "Basic " + base64.b64encode(b"user:wrong").decode()},
        {"Authorization": "Digest username=x"},
        {"Origin": "https://page.example"},  # no credentials, but from a web page: never anonymous
    ],
)
def test_wrong_credentials_and_web_pages_get_401_with_the_feature_on(
    anon: Gateway, headers: dict[str, str]
) -> None:
    topic = topic_of(anon, OPEN)
    assert timeplus(anon, OPEN, '{"id": "w", "n": 0}\n', headers).status == 401
    assert restproxy(anon, topic, [{"value": {"id": "w", "n": 0}}], headers).status == 401
    assert tinybird(anon, OPEN, '{"id": "w", "n": 0}\n', headers).status == 403  # Tinybird's 401
    assert data_source(anon, unique_name("nosuch"), headers).status == 401
    token = anon.request("POST", f"/v0/events?name={OPEN}&token=wrong", "{}\n", key=None, headers=NDJSON)
    assert token.status == 403, token.body


def test_feature_off_is_401_as_before(gateway: Gateway, kafka: str) -> None:
    name = unique_name("off")
    topic = gateway.create_stream(name, COLUMNS)["topic"]
    assert timeplus(gateway, name, '{"id": "o", "n": 0}\n').status == 401
    reply = restproxy(gateway, topic, [{"value": {"id": "o", "n": 0}}])
    assert reply.status == 401 and reply.json()["error_code"] == 40101, reply.body
    assert tinybird(gateway, name, '{"id": "o", "n": 0}\n').status == 403
    assert data_source(gateway, name).status == 401
    assert rows(kafka, topic) == []


def test_the_anonymous_rate_limit_is_its_own(slow: Gateway) -> None:
    """At one request per second, a burst of anonymous requests meets 429 (however slow this
    machine: 50 requests would need 50 s to pass); a key's own rate is untouched by it."""
    statuses = []
    for i in range(50):
        reply = timeplus(slow, OPEN, f'{{"id": "r", "n": {i}}}\n')
        statuses.append(reply.status)
        if reply.status == 429:
            assert "Retry-After" in reply.headers and reply.json()["code"] == 429, reply.body
            break
    assert statuses[-1] == 429 and set(statuses) <= {200, 429}, statuses
    keyed = slow.request(
        "POST", f"/api/v1beta2/streams/{OPEN}/ingest?wait=true", '{"id": "k", "n": 0}\n', headers=NDJSON
    )
    assert keyed.status == 200, keyed.body


def metric(gw: Gateway, name: str, labels: str = "") -> float:
    text = http("GET", gw.url + "/metrics").body.decode()
    m = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def test_an_anonymous_flood_leaves_keyed_clients_their_slots(anon: Gateway, kafka: str) -> None:
    """Anonymous requests from many connections are one principal: they hold at most its share of
    the decoding slots (2 of 4); the next anonymous one gets 429, a keyed one still gets in."""
    topic = topic_of(anon, OPEN)
    path = f"/api/v1beta2/streams/{OPEN}/ingest?wait=true"
    held = 2
    bodies = [f'{{"id": "held", "n": {i}}}\n{{"id": "held", "n": {i + 100}}}\n'.encode() for i in range(held)]
    socks = [connect(anon.port) for _ in range(held)]
    key = scoped_key(anon, [f"DATASOURCE:APPEND:{OPEN}"])
    try:
        for sock, body in zip(socks, bodies, strict=True):  # headers and half of each body, no key
            sock.sendall(request_bytes("POST", path, NDJSON, body)[: -len(body) // 2])
        wait_until(lambda: metric(anon, "gateway_requests_decoding") == held, 30, "anonymous bodies held")
        refused = timeplus(anon, OPEN, '{"id": "flood", "n": -1}\n')
        assert refused.status == 429, refused.body
        keyed = timeplus(anon, OPEN, '{"id": "keyed", "n": 1}\n', {"X-Api-Key": key})
        assert keyed.status == 200, keyed.body
        for sock, body in zip(socks, bodies, strict=True):
            sock.sendall(body[-len(body) // 2 :])
        replies = [read_reply(sock) for sock in socks]
        assert [r.status for r in replies] == [200] * held, [r.body for r in replies]
    finally:
        for sock in socks:
            sock.close()
    got = rows(kafka, topic)
    assert ("keyed", 1) in got and ("held", 0) in got and ("held", 101) in got
    assert ("flood", -1) not in got  # the refused request wrote nothing
