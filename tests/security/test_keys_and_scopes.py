"""Issue 9 items 2, 3 and 5 (key creation): scopes follow a closed grammar, an empty permission
list is refused, a key sees only the streams its scopes name, and absurd numbers are 400s."""

from __future__ import annotations

import pytest

from tests.integration.harness import Gateway, unique_name
from tests.security.conftest import COLUMNS

KEYS = "/api/v1beta2/apikeys"
STREAMS = "/api/v1beta2/streams"


def new_key(gw: Gateway, permissions: list[str]) -> str:
    reply = gw.request("POST", KEYS, {"name": "probe", "permissions": permissions})
    assert reply.status == 201, reply.body
    key: str = reply.json()["api_key"]
    return key


@pytest.mark.parametrize(
    "permissions",
    [
        [],
        ["datasource:append"],
        ["DATASOURCE:APPEND:../../x"],
        ["DATASOURCE:APPEND:"],
        ["DATASOURCE:CREATE", "ADMIN"],
        ["DATASOURCE:APPEND:a b"],
        [""],
        ["admin "],
    ],
)
def test_bad_permission_lists_are_refused(gw: Gateway, permissions: list[str]) -> None:
    reply = gw.request("POST", KEYS, {"name": "bad", "permissions": permissions})
    assert reply.status == 400, (permissions, reply.status, reply.body)
    assert reply.json()["message"]


def test_an_empty_list_never_made_a_broad_key(gw: Gateway) -> None:
    victim = unique_name("victim")
    gw.create_stream(victim, COLUMNS)
    reply = gw.request("POST", KEYS, {"name": "empty", "permissions": []})
    if reply.status == 201:  # the old behaviour: a key with the default scopes
        key = reply.json()["api_key"]
        assert gw.request("DELETE", f"{STREAMS}/{victim}", key=key).status == 403
    assert reply.status == 400, reply.body
    assert gw.request("GET", f"{STREAMS}/{victim}").status == 200


def test_a_key_sees_only_the_streams_its_scopes_name(gw: Gateway) -> None:
    mine, other = unique_name("mine"), unique_name("other")
    gw.create_stream(mine, COLUMNS)
    gw.create_stream(other, COLUMNS)
    appender = new_key(gw, [f"DATASOURCE:APPEND:{mine}"])
    listed = {s["name"] for s in gw.request("GET", STREAMS, key=appender).json()}
    assert listed == {mine}
    assert gw.request("GET", f"{STREAMS}/{mine}", key=appender).status == 200
    assert gw.request("GET", f"{STREAMS}/{mine}/stats", key=appender).status == 200
    for path in (f"{STREAMS}/{other}", f"{STREAMS}/{other}/stats", f"{STREAMS}/no_such_one"):
        reply = gw.request("GET", path, key=appender)
        assert reply.status == 403, (path, reply.body)  # no existence oracle: 403 for unknown too
    reader = new_key(gw, ["DATASOURCE:READ"])
    seen = {s["name"] for s in gw.request("GET", STREAMS, key=reader).json()}
    assert {mine, other} <= seen
    assert gw.request("GET", f"{STREAMS}/{other}/stats", key=reader).status == 200
    assert gw.request("DELETE", f"{STREAMS}/{other}", key=reader).status == 403
    one_reader = new_key(gw, [f"DATASOURCE:READ:{other}"])
    assert {s["name"] for s in gw.request("GET", STREAMS, key=one_reader).json()} == {other}
    row = '{"id": "a", "n": 1}\n'
    assert (
        gw.ingest(other, row, content_type="application/x-ndjson", headers={"X-Api-Key": one_reader}).status
        == 403
    )


@pytest.mark.parametrize(
    "body",
    [
        {"expire_in": "9" * 400 + "h"},
        {"expire_in": "9" * 400 + "s"},
        {"expire_in": "0s"},
        {"rate_limit": int("9" * 400)},
        {"rate_limit": -1},
        {"rate_limit": 10**12},
    ],
)
def test_absurd_key_numbers_are_400(gw: Gateway, body: dict[str, object]) -> None:
    reply = gw.request("POST", KEYS, {"name": "n", **body})
    if reply.status == 201:  # show the consequence the old code had: every ingest then fails
        key = reply.json()["api_key"]
        events = gw.request("POST", "/v0/events?name=x", '{"a":1}', key=key)
        assert events.status < 500, events.body
    assert reply.status == 400, (body, reply.status, reply.body)
