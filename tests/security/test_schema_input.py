"""Issue 9 items 5, 8 and 10: stream definitions that gave 500s are 400s, invalid UTF-8 is
refused wherever it sits, and compact `columns` lists are bounded."""

from __future__ import annotations

import pytest

from tests.integration.harness import ADMIN_KEY, Gateway, http, unique_name

STREAMS = "/api/v1beta2/streams"


@pytest.mark.parametrize(
    "column",
    [
        {"name": 'a"b', "type": "string"},
        {"name": "a\\b", "type": "string"},
        {"name": "a\tb", "type": "string"},
        {"name": "a\x00b", "type": "string"},
        {"name": "a`b", "type": "string"},
        {"name": "", "type": "string"},
        {"name": "x" * 256, "type": "string"},
        {"name": "deep", "type": "nullable(" * 3000 + "string" + ")" * 3000},
        {"name": "deep2", "type": "array(" * 40 + "string" + ")" * 40},
        {"name": "long", "type": "string" + " " * 5000},
    ],
)
def test_bad_columns_are_400(gw: Gateway, column: dict[str, str]) -> None:
    reply = gw.request("POST", STREAMS, {"name": unique_name("col"), "columns": [column]})
    assert reply.status == 400, (column["name"][:20], reply.status, reply.body[:300])
    assert reply.json()["message"]


def test_moderate_nesting_still_works(gw: Gateway) -> None:
    name = unique_name("nest")
    gw.create_stream(name, [{"name": "v", "type": "array(" * 8 + "string" + ")" * 8}])


def test_invalid_utf8_in_an_ignored_key_is_refused(gw: Gateway, stream: str) -> None:
    for body in (b'{"id":"a","n":1,"\xff":1}\n', b'{"id":"a","n":1,"ok":"\xc3("}\n'):
        reply = gw.ingest(stream, body, content_type="application/x-ndjson")
        assert reply.status == 400, (body, reply.body)
    events = http(
        "POST",
        f"{gw.url}/v0/events?name={stream}",
        b'{"id":"a","n":1,"\xff":1}',
        headers={"Authorization": "Bearer " + ADMIN_KEY},
    )
    assert events.status == 400, events.body


def test_compact_column_lists_are_bounded(gw: Gateway, stream: str) -> None:
    many = ["id", "n"] + [f"x{i}" for i in range(100_000)]
    body = '{"columns": ' + str(many).replace("'", '"') + ', "data": [["a", 1]]}'
    reply = gw.ingest(stream, body, content_type="application/json")
    assert reply.status == 400, reply.body[:300]
    assert "at most" in reply.json()["message"]  # refused for its length, not a row mismatch
    twice = gw.ingest(
        stream, '{"columns": ["id", "n", "id"], "data": [["a", 1, "b"]]}', content_type="application/json"
    )
    assert twice.status == 400, twice.body
    fine = gw.ingest(
        stream, '{"columns": ["id", "n", "extra"], "data": [["a", 1, 2]]}', content_type="application/json"
    )
    assert fine.status in (200, 202), fine.body
