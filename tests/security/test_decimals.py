"""Issue 20 item 9: `decimal(p,s)` takes only finite numbers with at most p - s digits before the
point and s after it (more fractional digits are refused, never rounded, as ClickHouse's strict
mode); NaN, sNaN and Infinity are refused; huge exponents and a million digits are refused without
costing more than reading them; the same for column defaults. Property tests run derandomized
(the `ci` profile of tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.catalog.model import Column, Stream
from gateway.errors import InvalidRow
from gateway.ingest.schema import CompiledSchema, SchemaError
from gateway.ingest.types import TypeError_, decimal_check, parse_type
from tests.integration.harness import Gateway, unique_name
from tests.security.conftest import start_embedded

HOSTILE = [
    "NaN",
    "-NaN",
    "sNaN",
    "Infinity",
    "-Infinity",
    "inf",
    "1e999999999",
    "-1e999999999",
    "123456789012.345",
    "1" * 1_000_000,
    "0." + "0" * 1_000_000 + "1",
    "12.345",
    "100000000",
    "1e-999999999",
]
FINE = [
    "0",
    "-0",
    "12.34",
    "-12.34",
    "99999999.99",
    "-99999999.99",
    "12.3",
    "12.3400",
    "1E+7",
    "0E+999999999",
    "0.00",
    "12",
]


def schema(column_type: str, default: str | None = None) -> CompiledSchema:
    return CompiledSchema(
        Stream("d", [Column("id", "string"), Column("x", column_type, default=default)], "t")
    )


def row(x: str, quoted: bool) -> bytes:
    return b'{"id": "a", "x": ' + (f'"{x}"' if quoted else x).encode() + b"}"


NOT_JSON_NUMBERS = ("nan", "snan", "infinity", "inf")  # only as strings


@pytest.mark.parametrize(
    ("text", "quoted"),
    [(t, q) for t in HOSTILE for q in (True, False) if q or t.lstrip("-").lower() not in NOT_JSON_NUMBERS],
)
def test_hostile_decimals_are_refused(text: str, quoted: bool) -> None:
    with pytest.raises(InvalidRow, match="decimal"):
        schema("decimal(10, 2)").decode_ndjson(row(text, quoted), 0)


@pytest.mark.parametrize("text", FINE)
def test_decimals_that_fit_are_kept_exactly(text: str) -> None:
    [got] = schema("decimal(10, 2)").decode_ndjson(row(text, True), 0)
    assert got.f1 == Decimal(text)


@given(st.decimals(allow_nan=True, allow_infinity=True), st.integers(1, 20), st.integers(0, 20))
def test_the_check_is_the_definition(value: Decimal, p: int, s: int) -> None:
    """Accepted exactly when finite, |value| < 10^(p-s), and no nonzero digit past s."""
    s = min(s, p)
    ok = decimal_check(p, s)(value)
    if not value.is_finite():
        assert not ok
        return
    fits_int = value.is_zero() or value.adjusted() < p - s
    fits_frac = value.is_zero() or value == value.scaleb(s).to_integral_value().scaleb(-s)
    assert ok == (fits_int and fits_frac), (value, p, s)


@given(st.decimals(min_value=-(10**6), max_value=10**6, places=2))
def test_every_decimal_10_2_round_trips(value: Decimal) -> None:
    [got] = schema("decimal(10, 2)").decode_ndjson(row(str(value), True), 0)
    assert got.f1 == value


@pytest.mark.parametrize(
    "column_type",
    ["decimal(0, 0)", "decimal(77, 2)", "decimal(5, 6)", "decimal(99999999999999999999, 2)", "decimal(a, b)"],
)
def test_impossible_decimal_types_are_refused(column_type: str) -> None:
    with pytest.raises(TypeError_):
        parse_type(column_type)


@pytest.mark.parametrize(
    "default",
    ["NaN", "'NaN'", "Infinity", "sNaN", "1e999999999", "123456789012.345", "12.345", "1" * 1_000_000],
)
def test_hostile_defaults_are_refused(default: str) -> None:
    with pytest.raises(SchemaError):
        schema("decimal(10, 2)", default=default)


def test_nested_decimals_are_checked() -> None:
    compiled = CompiledSchema(
        Stream(
            "d",
            [Column("a", "array(nullable(decimal(4, 1)))"), Column("m", "map(string, decimal(3, 0))")],
            "t",
        )
    )
    assert compiled.decode_ndjson(b'{"a": ["123.4", null], "m": {"k": 999}}', 0)
    for body in (b'{"a": ["NaN"], "m": {}}', b'{"a": [], "m": {"k": "1000"}}', b'{"a": ["1.25"], "m": {}}'):
        with pytest.raises(InvalidRow):
            compiled.decode_ndjson(body, 0)


# ---- through the gateway ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gateway = start_embedded(Path(tmp_path_factory.mktemp("dec")), [])
    yield gateway
    assert gateway.stop() == 0, gateway.log()[-3000:]


def test_the_gateway_refuses_hostile_decimals_and_defaults(gw: Gateway) -> None:
    name = unique_name("dec")
    gw.create_stream(name, [{"name": "id", "type": "string"}, {"name": "x", "type": "decimal(10,2)"}])
    for text in HOSTILE:
        reply = gw.ingest(name, row(text, True), content_type="application/x-ndjson")
        assert reply.status == 400, (text[:40], reply.status, reply.body[:200])
        assert reply.json()["column"] == "x"
    assert gw.ingest(name, row("12.34", True), content_type="application/x-ndjson").status == 200
    written = [
        msgspec.json.decode(line)
        for p in (gw.data_dir / "sink").rglob(f"*{name}*")
        for line in p.read_bytes().splitlines()
        if line
    ]
    assert [w["x"] for w in written] == ["12.34"]  # only the row that fits, and exact
    for default in ("NaN", "1e999999999", "12.345", "1" * 1_000_000):
        reply = gw.request(
            "POST",
            "/api/v1beta2/streams",
            {
                "name": unique_name("dd"),
                "columns": [{"name": "x", "type": "decimal(10,2)", "default": default}],
            },
        )
        assert reply.status == 400, (default[:40], reply.status, reply.body[:200])
        reply = gw.request(
            "PATCH",
            f"/api/v1beta2/streams/{name}",
            {
                "columns": [
                    {"name": "id", "type": "string"},
                    {"name": "x", "type": "decimal(10,2)", "default": default},
                ]
            },
        )
        assert reply.status == 400, (default[:40], reply.status, reply.body[:200])
