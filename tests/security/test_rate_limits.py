"""A key's `rate_limit` holds on every route that takes a key (issue 20, item 7): a key allowed 2
requests per second gets 429 once its burst is spent, on each dialect's ingest routes and on the
management API, with `Retry-After` and `X-RateLimit-*` in that dialect's error shape. The ingest
routes share one bucket per key, the management API has its own."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import Gateway, Reply, unique_name
from tests.security.conftest import COLUMNS, start_embedded

RATE = 2
MAX_TRIES = 200  # a 429 comes after RATE requests unless each one takes over half a second
NDJSON = {"Content-Type": "application/x-ndjson"}
DS_COLUMNS = [
    {"name": "timestamp", "type": "int64"},
    {"name": "name", "type": "string"},
    {"name": "value", "type": "float64"},
]


@dataclass(frozen=True)
class Names:
    stream: str
    topic: str
    data_source: str


@dataclass(frozen=True)
class Route:
    """One request of a route, the statuses it gets while the key has tokens, and a check of
    the dialect's error shape on the 429."""

    method: str
    path: str  # {stream}, {topic} and {ds} are filled in
    ok: frozenset[int]
    shape: Callable[[Any], bool]
    body: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


def tinybird(b: Any) -> bool:
    return bool(b["code"] == "rate_limited" and "2 requests per second" in b["error"])


def timeplus(b: Any) -> bool:
    return bool(b["code"] == 429 and "2 requests per second" in b["message"])


def restproxy(b: Any) -> bool:
    return bool(str(b["error_code"]).startswith("429") and "2 requests per second" in b["message"])


def datasources(b: Any) -> bool:
    return "2 requests per second" in b["detail"]


ROW = '{"id": "a", "n": 1}\n'
V2 = (("Content-Type", "application/vnd.kafka.json.v2+json"),)
INGEST = {
    "tinybird": Route(
        "POST", "/v0/events?name={stream}", frozenset({202}), tinybird, ROW, tuple(NDJSON.items())
    ),
    "timeplus-v1beta2": Route(
        "POST", "/api/v1beta2/streams/{stream}/ingest", frozenset({202}), timeplus, ROW, tuple(NDJSON.items())
    ),
    "timeplus-v1beta1": Route(
        "POST", "/api/v1beta1/streams/{stream}/ingest", frozenset({202}), timeplus, ROW, tuple(NDJSON.items())
    ),
    "timeplus-workspace": Route(
        "POST",
        "/ws-1/api/v1beta2/streams/{stream}/ingest",
        frozenset({202}),
        timeplus,
        ROW,
        tuple(NDJSON.items()),
    ),
    "restproxy-v2": Route(
        "POST",
        "/topics/{topic}",
        frozenset({200}),
        restproxy,
        json.dumps({"records": [{"value": {"id": "a", "n": 1}}]}),
        V2,
    ),
    "restproxy-v3": Route(
        "POST",
        "/v3/clusters/ingest-gateway/topics/{topic}/records",
        frozenset({200}),
        restproxy,
        json.dumps({"value": {"type": "JSON", "data": {"id": "a", "n": 1}}}),
        (("Content-Type", "application/json"),),
    ),
    "datasources": Route(
        "POST",
        "/v1/data_sources/ingest",
        frozenset({204}),
        datasources,
        json.dumps({"data_source": "{ds}", "records": [{"timestamp": 1, "name": "x", "value": 1.5}]}),
        (("Content-Type", "application/json"),),
    ),
}
MANAGE = {
    "list-streams": Route("GET", "/api/v1beta2/streams", frozenset({200}), timeplus),
    "get-stream-workspace": Route("GET", "/ws-1/api/v1beta1/streams/{stream}", frozenset({200}), timeplus),
    "stream-schemas": Route("GET", "/api/v1beta2/streams/{stream}/schemas", frozenset({200}), timeplus),
    "stream-stats": Route("GET", "/api/v1beta2/streams/{stream}/stats", frozenset({200}), timeplus),
    "api-keys-forbidden": Route("GET", "/api/v1beta2/apikeys", frozenset({403}), timeplus),
    "restproxy-topics": Route("GET", "/topics", frozenset({200}), restproxy),
    "restproxy-topic": Route("GET", "/topics/{topic}", frozenset({200}), restproxy),
    "restproxy-clusters": Route("GET", "/v3/clusters", frozenset({200}), restproxy),
}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gateway = start_embedded(Path(tmp_path_factory.mktemp("sec-rates")), [])
    yield gateway
    assert gateway.stop() == 0, gateway.log()[-3000:]


@pytest.fixture(scope="module")
def names(gw: Gateway) -> Names:
    stream = unique_name("rl")
    topic = gw.create_stream(stream, COLUMNS)["topic"]
    ds = unique_name("rlds")
    gw.create_stream(ds, DS_COLUMNS, mode="versioned_kv", primary_key="timestamp, name")
    return Names(stream, topic, ds)


def limited_key(gw: Gateway) -> str:
    """A fresh key (a fresh bucket) that may manage streams, allowed RATE requests per second."""
    made = gw.request(
        "POST",
        "/api/v1beta2/apikeys",
        {"name": unique_name("rl"), "permissions": ["DATASOURCE:CREATE"], "rate_limit": RATE},
    )
    assert made.status == 201, made.body
    key: str = made.json()["api_key"]
    return key


def send(gw: Gateway, route: Route, names: Names, key: str) -> Reply:
    def fill(text: str) -> str:
        return (
            text.replace("{stream}", names.stream)
            .replace("{topic}", names.topic)
            .replace("{ds}", names.data_source)
        )

    return gw.request(
        route.method,
        fill(route.path),
        None if route.body is None else fill(route.body),
        key=None,
        headers={**dict(route.headers), "Authorization": f"Bearer {key}"},
    )


def until_refused(gw: Gateway, route: Route, names: Names, key: str) -> tuple[list[int], Reply]:
    """The statuses before the first 429 (asserted to be the route's ok ones), and the 429."""
    before: list[int] = []
    for _ in range(MAX_TRIES):
        reply = send(gw, route, names, key)
        if reply.status == 429:
            return before, reply
        assert reply.status in route.ok, (reply.status, reply.body)
        before.append(reply.status)
    raise AssertionError(f"{MAX_TRIES} requests without a 429: {route.method} {route.path}")


def assert_rate_refusal(route: Route, reply: Reply) -> None:
    got = {k.lower(): v for k, v in reply.headers.items()}
    assert 1 <= int(got["retry-after"]) <= 60, got
    assert got["x-ratelimit-limit"] == str(RATE), got
    assert got["x-ratelimit-remaining"] == "0", got
    assert int(got["x-ratelimit-reset"]) >= 0, got
    assert route.shape(reply.json()), reply.body


@pytest.mark.parametrize("route", [*INGEST.values(), *MANAGE.values()], ids=[*INGEST, *MANAGE])
def test_429_after_the_burst_on_every_route(gw: Gateway, names: Names, route: Route) -> None:
    before, refused = until_refused(gw, route, names, limited_key(gw))
    assert len(before) >= 1, "the burst let no request in"
    assert_rate_refusal(route, refused)


def test_ingest_success_replies_carry_the_rate_headers(gw: Gateway, names: Names) -> None:
    key = limited_key(gw)
    for name in ("timeplus-v1beta2", "datasources"):
        reply = send(gw, INGEST[name], names, key)
        assert reply.status in INGEST[name].ok, reply.body
        assert reply.headers.get("X-RateLimit-Limit") == str(RATE), (name, reply.headers)


def test_ingest_routes_share_a_bucket_and_management_has_its_own(tmp_path: Path) -> None:
    """With a default rate of one request per 1000 s (a bucket of one token that does not refill
    during the test, however slow the machine), one ingest request spends the key's ingest bucket
    for every ingest route, and its management bucket still has its own token."""
    first = start_embedded(tmp_path, [])
    try:
        stream = unique_name("rl")
        names = Names(stream, first.create_stream(stream, COLUMNS)["topic"], unique_name("rlds"))
        first.create_stream(names.data_source, DS_COLUMNS, mode="versioned_kv", primary_key="timestamp, name")
        made = first.request(
            "POST", "/api/v1beta2/apikeys", {"name": "slow", "permissions": ["DATASOURCE:CREATE"]}
        )  # rate 0: the default
        assert made.status == 201, made.body
        key = made.json()["api_key"]
    finally:
        assert first.stop() == 0, first.log()[-3000:]
    gw = start_embedded(tmp_path, ["--rate-limit-per-key", "0.001"])  # same data dir, catalog
    try:
        assert send(gw, INGEST["tinybird"], names, key).status == 202
        for name, route in INGEST.items():
            reply = send(gw, route, names, key)
            assert reply.status == 429, (name, reply.status, reply.body)
            got = {k.lower(): v for k, v in reply.headers.items()}
            assert got["x-ratelimit-limit"] == "0.001" and got["retry-after"] == "60", got
            assert "0.001 requests per second" in json.dumps(reply.json()), reply.body
        listed = send(gw, MANAGE["list-streams"], names, key)
        assert listed.status == 200, listed.body
        assert send(gw, MANAGE["restproxy-topics"], names, key).status == 429
    finally:
        assert gw.stop() == 0, gw.log()[-3000:]
