"""Property tests over the decoders and validators: any byte string, in any format and with any
content encoding, either decodes to rows that satisfy the schema (and encode to JSON objects with
every column) or raises a 4xx GatewayError; nothing else escapes (which would be a 500)."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.catalog.model import Column, Stream
from gateway.errors import GatewayError
from gateway.ingest.body import read_chunks
from gateway.ingest.formats import Format, decode
from gateway.ingest.schema import CompiledSchema

COLUMNS = [
    Column("id", "string"),
    Column("n", "int32"),
    Column("u", "nullable(uint8)"),
    Column("f", "float64", default="0"),
    Column("t", "nullable(datetime64(3))"),
    Column("j", "nullable(json)"),
    Column("a", "array(int16)", default="[]"),
    Column("m", "map(string, nullable(string))", default="{}"),
    Column("ip", "nullable(ipv4)"),
    Column("b", "bool", default="false"),
]
SCHEMA = CompiledSchema(Stream(name="p", columns=COLUMNS, topic="t"))
ONE_STRING = CompiledSchema(Stream(name="q", columns=[Column("line", "string")], topic="t2"))

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12,
)
names = st.sampled_from([c.name for c in COLUMNS] + ["zz", ""])
rows = st.dictionaries(names, json_values, max_size=8)


def ndjson(items: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in items).encode()


def compact(items: list[dict[str, Any]]) -> bytes:
    cols = sorted({k for r in items for k in r})
    return json.dumps({"columns": cols, "data": [[r.get(c) for c in cols] for r in items]}).encode()


async def chunked(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


class Source:
    """A ChunkSource over bytes, split at `size`."""

    def __init__(self, data: bytes, size: int) -> None:
        self.data, self.size, self.pos = data, size, 0

    async def readany(self) -> bytes:
        chunk = self.data[self.pos : self.pos + self.size]
        self.pos += len(chunk)
        return chunk


def outcome(
    fmt: Format, body: bytes, size: int, schema: CompiledSchema = SCHEMA, encoding: str = ""
) -> list[Any] | GatewayError:
    async def run() -> list[Any]:
        chunks = read_chunks(
            Source(body, size), content_encoding=encoding, max_bytes=1 << 20, max_decompressed=1 << 20
        )
        return await decode(fmt, chunks, schema)

    try:
        return _LOOP.run_until_complete(run())
    except GatewayError as err:
        assert 400 <= err.status < 500, err
        assert err.message
        return err


def assert_valid(result: list[Any] | GatewayError, schema: CompiledSchema = SCHEMA) -> None:
    if isinstance(result, GatewayError):
        return
    encoded = schema.encode(result)
    for value in encoded.values:
        obj = json.loads(value)
        assert sorted(obj) == sorted(schema.columns)  # every column, nothing else


_LOOP = asyncio.new_event_loop()  # one loop for all examples: asyncio.run per example is slow
PROPS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(st.binary(max_size=300), st.sampled_from(list(Format)), st.integers(1, 64))
def test_any_bytes_decode_or_4xx(body: bytes, fmt: Format, size: int) -> None:
    schema = ONE_STRING if fmt in (Format.RAW, Format.LINES) else SCHEMA
    assert_valid(outcome(fmt, body, size, schema), schema)


@PROPS
@given(st.lists(rows, max_size=6), st.integers(1, 97))
def test_ndjson_rows_decode_or_4xx(items: list[dict[str, Any]], size: int) -> None:
    assert_valid(outcome(Format.STREAMING, ndjson(items), size))


@PROPS
@given(st.lists(rows, max_size=6), st.integers(1, 97))
def test_compact_rows_decode_or_4xx(items: list[dict[str, Any]], size: int) -> None:
    assert_valid(outcome(Format.COMPACT, compact(items), size))


@PROPS
@given(
    st.lists(rows, max_size=6),
    st.integers(0, 400),
    st.binary(max_size=3),
    st.sampled_from([Format.STREAMING, Format.COMPACT]),
)
def test_mangled_bodies_decode_or_4xx(
    items: list[dict[str, Any]], cut: int, junk: bytes, fmt: Format
) -> None:
    """Truncated, spliced and corrupted versions of valid bodies."""
    body = ndjson(items) if fmt is Format.STREAMING else compact(items)
    assert_valid(outcome(fmt, body[:cut] + junk + body[cut:], 7))
    assert_valid(outcome(fmt, body[:cut], 13))


@PROPS
@given(st.lists(rows, max_size=6), st.integers(0, 200), st.integers(1, 64))
def test_gzip_bodies_decode_or_4xx(items: list[dict[str, Any]], cut: int, size: int) -> None:
    """Whole, truncated and corrupted gzip: rows or a 4xx, never another exception."""
    data = gzip.compress(ndjson(items))
    assert_valid(outcome(Format.STREAMING, data, size, encoding="gzip"))
    assert_valid(outcome(Format.STREAMING, data[:cut], size, encoding="gzip"))
    flipped = bytes(b ^ 0x5A if i == cut % max(len(data), 1) else b for i, b in enumerate(data))
    assert_valid(outcome(Format.STREAMING, flipped, size, encoding="gzip"))


@pytest.mark.parametrize("depth", [64, 1000, 10_000, 100_000])
@pytest.mark.parametrize("fmt", [Format.STREAMING, Format.COMPACT])
def test_deep_nesting_is_a_4xx(depth: int, fmt: Format) -> None:
    deep = "[" * depth + "]" * depth
    if fmt is Format.STREAMING:
        bodies = [f'{{"id": "a", "n": 1, "j": {deep}}}\n', f'{{"id": "a", "n": 1, "x": {deep}}}\n']
    else:
        bodies = [
            f'{{"columns": ["id", "n", "j"], "data": [["a", 1, {deep}]]}}',
            f'{{"columns": ["id"], "data": {deep}}}',
        ]
    for body in bodies:
        result = outcome(fmt, body.encode(), 4096)
        assert_valid(result)
