"""The quarantine splitter: the same good and bad rows as decoding every object on its own."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.catalog.model import Column, Stream
from gateway.errors import InvalidRow, MalformedBody
from gateway.ingest import quarantine
from gateway.ingest.quarantine import KeptChunks, quarantine_values, split_rows
from gateway.ingest.schema import CompiledSchema

STREAM = Stream(
    name="q",
    topic="ingest.q",
    columns=[
        Column("id", "string"),
        Column("n", "int32"),
        Column("at", "datetime64(3)", default="'2024-01-01T00:00:00Z'"),
        Column("tags", "array(string)", default="[]"),
    ],
)
SCHEMA = CompiledSchema(STREAM)
GOOD = [{"id": "a", "n": 1}, {"id": "b", "n": -7, "tags": ["x"]}, {"id": "c", "n": 3, "at": 1.7e9}]
BAD = [
    {"id": "a", "n": "x"},
    {"id": "a"},
    {"id": "a", "n": 2**31},
    {"id": 5, "n": 1},
    {"id": "a", "n": 1, "at": 1e30},
    42,
    [1, 2],
    "text",
    None,
]


def oracle(objects: list[Any]) -> tuple[list[Any], list[int]]:
    """Each object decoded on its own: the valid rows, and the indices of the invalid ones."""
    rows, bad = [], []
    for i, obj in enumerate(objects):
        try:
            rows += SCHEMA.decode_ndjson(json.dumps(obj).encode(), i)
        except InvalidRow:
            bad.append(i)
    return rows, bad


def as_json(rows: list[Any]) -> list[Any]:
    return [msgspec.to_builtins(r) for r in rows]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.one_of(st.sampled_from(GOOD), st.sampled_from(BAD)), max_size=60),
    st.sampled_from(["\n", "\r\n", "", "\n\n"]),
    st.booleans(),
)
def test_same_split_as_one_object_at_a_time(objects: list[Any], sep: str, indent: bool) -> None:
    if sep == "" and not all(isinstance(o, dict | list | str) for o in objects):
        sep = " "  # scalars need a separator to be told apart
    body = sep.join(json.dumps(o, indent=2 if indent else None) for o in objects).encode()
    split = split_rows(SCHEMA, body)
    rows, bad = oracle(objects)
    assert as_json(split.rows) == as_json(rows)
    assert [b.row for b in split.bad] == bad
    for b in split.bad:
        assert json.loads(b.text) == objects[b.row]
        assert b.message.startswith(f"row {b.row}")


def test_row_and_column_of_each_error() -> None:
    body = b'{"id": "a", "n": 1}\n{"id": "b", "n": "x"}\n{"id": "c"}\n42\n{"id": "d", "n": 4}\n'
    split = split_rows(SCHEMA, body)
    assert [r["id"] for r in as_json(split.rows)] == ["a", "d"]
    assert [(b.row, b.column) for b in split.bad] == [(1, "n"), (2, "n"), (3, None)]
    assert split.bad[0].text == b'{"id": "b", "n": "x"}'
    assert "Expected `int`, got `str`" in split.bad[0].message


@pytest.mark.parametrize(
    "body",
    [
        b'{"id": "a", "n": 1}\n{"id": "b", "n": ',
        b'{"id": "a"} nope',
        b'{"id": "a", "n": 1}\n{"id": "b", "n": 2,}\n',
    ],
)
def test_body_that_is_not_json_is_still_malformed(body: bytes) -> None:
    with pytest.raises(MalformedBody):
        split_rows(SCHEMA, body)


def test_bom_and_blank_body() -> None:
    with_bom = split_rows(SCHEMA, b'\xef\xbb\xbf{"id": "a", "n": 1}')
    assert as_json(with_bom.rows) == [{"id": "a", "n": 1, "at": "2024-01-01T00:00:00Z", "tags": []}]
    empty = split_rows(SCHEMA, b"\n \n")
    assert empty.rows == [] and empty.bad == []


def test_few_bad_rows_take_few_decode_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    objects: list[Any] = [{"id": str(i), "n": i} for i in range(20_000)]
    for at in (7, 9_000, 19_999):
        objects[at] = {"id": "bad", "n": "x"}
    calls = []
    real = CompiledSchema.decode_ndjson

    def counting(self: CompiledSchema, data: bytes | memoryview, first_row: int) -> list[Any]:
        calls.append(first_row)
        return real(self, data, first_row)

    monkeypatch.setattr(CompiledSchema, "decode_ndjson", counting)
    split = split_rows(SCHEMA, "\n".join(json.dumps(o) for o in objects).encode())
    assert [b.row for b in split.bad] == [7, 9_000, 19_999]
    assert len(split.rows) == 19_997
    assert len(calls) < 40, len(calls)  # runs of rows in one call each, not one call per row
    assert quarantine.MAX_RUN >= 1000


def test_quarantine_records() -> None:
    split = split_rows(SCHEMA, b'{"id": "a", "n": 1}\n{"id": "\xc3\xa9", "n": "x"}\n')
    (value,) = quarantine_values(split.bad, stream="q", request_id="r1", schema_version=3)
    record = json.loads(value)
    assert record["stream"] == "q" and record["request_id"] == "r1"
    assert record["schema_version"] == 3
    assert record["row_text"] == '{"id": "é", "n": "x"}'
    assert record["error"] == {
        "row": 1,
        "column": "n",
        "message": "row 1, column 'n': Expected `int`, got `str`",
    }
    assert record["time"].endswith("Z") and "T" in record["time"]


def test_kept_chunks_give_back_the_whole_body() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for part in (b"ab", b"cd", b"ef"):
            yield part

    async def run() -> tuple[bytes, bytes]:
        kept = KeptChunks(chunks())
        first = await anext(kept)
        return first, await kept.whole()

    assert asyncio.run(run()) == (b"ab", b"abcdef")
