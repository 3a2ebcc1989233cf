"""Column type grammar: every type name, its value range, and the types that must be refused."""

from __future__ import annotations

import datetime
import decimal
import uuid
from typing import Any

import msgspec
import pytest

from gateway.ingest.types import TypeError_, parse_type


def decode(type_name: str, raw: bytes) -> Any:
    """Decode one JSON value as the column type `type_name`."""
    return msgspec.json.Decoder(parse_type(type_name).py).decode(raw)


def rejects(type_name: str, raw: bytes) -> str:
    """Decode a value that must be refused; return msgspec's message."""
    decoder = msgspec.json.Decoder(parse_type(type_name).py)
    with pytest.raises(msgspec.ValidationError) as info:
        decoder.decode(raw)
    return str(info.value)


# ---- integers -----------------------------------------------------------------------------------
INT_RANGES = [
    ("int8", -(2**7), 2**7 - 1),
    ("int16", -(2**15), 2**15 - 1),
    ("int32", -(2**31), 2**31 - 1),
    ("int64", -(2**63), 2**63 - 1),
    ("uint8", 0, 2**8 - 1),
    ("uint16", 0, 2**16 - 1),
    ("uint32", 0, 2**32 - 1),
    ("uint64", 0, 2**64 - 1),
]


@pytest.mark.parametrize(("name", "lo", "hi"), INT_RANGES)
def test_int_range_edges_accepted(name: str, lo: int, hi: int) -> None:
    assert decode(name, str(lo).encode()) == lo
    assert decode(name, str(hi).encode()) == hi
    assert decode(name, b"0") == 0


@pytest.mark.parametrize(("name", "lo", "hi"), INT_RANGES)
def test_int_one_past_range_rejected(name: str, lo: int, hi: int) -> None:
    rejects(name, str(lo - 1).encode())
    if name == "uint64":  # msgspec bounds must fit an int64: the top is the type's post-check
        check = parse_type(name).check
        assert check is not None and not check(decode(name, str(hi + 1).encode()))
    else:
        rejects(name, str(hi + 1).encode())


def test_int64_min_exact() -> None:
    assert decode("int64", b"-9223372036854775808") == -9223372036854775808
    assert "-9223372036854775808" in rejects("int64", b"-9223372036854775809")


def test_uint64_max_exact() -> None:
    assert decode("uint64", b"18446744073709551615") == 18446744073709551615
    check = parse_type("uint64").check
    assert check is not None
    assert check(18446744073709551615) and not check(18446744073709551616)
    rejects("uint64", b"-1")
    nested = parse_type("map(string, array(uint64))").check
    assert nested is not None
    assert nested({"a": [1, 2**64 - 1]}) and not nested({"a": [1, 2**64]})


@pytest.mark.parametrize("name", ["int8", "int64", "uint32"])
@pytest.mark.parametrize("raw", [b"1.0", b"1.5", b'"1"', b"true", b"null", b"[1]"])
def test_int_rejects_non_integers(name: str, raw: bytes) -> None:
    rejects(name, raw)


@pytest.mark.parametrize("name", ["Int32", "INT32", "  int32 ", "UInt8"])
def test_type_names_are_case_and_space_insensitive(name: str) -> None:
    assert decode(name, b"7") == 7


# ---- floats -------------------------------------------------------------------------------------
def test_float32_range() -> None:
    assert decode("float32", b"3.4028234663852886e38") == 3.4028234663852886e38
    assert decode("float32", b"-3.4e38") == -3.4e38
    assert decode("float32", b"1") == 1.0
    assert isinstance(decode("float32", b"1"), float)
    rejects("float32", b"3.5e38")
    rejects("float32", b"-3.5e38")


def test_float64() -> None:
    assert decode("float64", b"1e300") == 1e300
    assert decode("float64", b"2") == 2.0
    assert isinstance(decode("float64", b"2"), float)
    rejects("float64", b'"2"')
    rejects("float64", b"null")


# ---- bool / string ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["bool", "boolean"])
def test_bool_is_strict(name: str) -> None:
    assert decode(name, b"true") is True
    assert decode(name, b"false") is False
    for raw in (b"1", b"0", b'"true"', b'"false"', b"null"):
        rejects(name, raw)


def test_string() -> None:
    assert decode("string", '"héllo"'.encode()) == "héllo"
    assert decode("string", b'""') == ""
    for raw in (b"1", b"true", b"null", b"[]", b"{}"):
        rejects("string", raw)


def test_string_types_are_stringlike() -> None:
    for name in ("string", "date", "uuid", "ipv4", "ipv6", "fixed_string(3)", "datetime"):
        assert parse_type(name).is_stringlike, name
    for name in ("int8", "float64", "bool", "json", "array(string)"):
        assert not parse_type(name).is_stringlike, name


# ---- dates and times ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["date", "date32"])
def test_date(name: str) -> None:
    assert decode(name, b'"2024-02-29"') == datetime.date(2024, 2, 29)
    rejects(name, b'"2023-02-29"')
    rejects(name, b'"2024-13-01"')
    rejects(name, b"20240101")


@pytest.mark.parametrize(
    "name",
    [
        "datetime",
        "DateTime",
        "DATETIME",
        "datetime64",
        "datetime64(3)",
        "DateTime64(3)",
        "DateTime64(3,'UTC')",
        "datetime64(3, 'UTC')",
        "DateTime('Europe/Berlin')",
    ],
)
def test_datetime_spellings(name: str) -> None:
    ctype = parse_type(name)
    assert ctype.is_datetime
    assert not ctype.nullable
    value = decode(name, b'"2024-01-02T03:04:05.123Z"')
    assert value == datetime.datetime(2024, 1, 2, 3, 4, 5, 123000, tzinfo=datetime.UTC)
    rejects(name, b'"yesterday"')


def test_nullable_datetime_is_still_datetime() -> None:
    ctype = parse_type("nullable(datetime64(3))")
    assert ctype.is_datetime and ctype.nullable
    assert decode("nullable(datetime64(3))", b"null") is None


def test_datetime_inside_array_is_not_top_level_datetime() -> None:
    assert not parse_type("array(datetime)").is_datetime


# ---- uuid / ip ----------------------------------------------------------------------------------
def test_uuid() -> None:
    text = "12345678-1234-5678-1234-567812345678"
    assert decode("uuid", f'"{text}"'.encode()) == uuid.UUID(text)
    rejects("uuid", b'"not-a-uuid"')
    rejects("uuid", b"12345678")


@pytest.mark.parametrize("ip", ["0.0.0.0", "1.2.3.4", "255.255.255.255", "10.0.0.1", "192.168.1.254"])
def test_ipv4_valid(ip: str) -> None:
    assert decode("ipv4", f'"{ip}"'.encode()) == ip


@pytest.mark.parametrize(
    "ip",
    [
        "256.1.1.1",
        "1.2.3",
        "1.2.3.4.5",
        "01.2.3.4",
        "1.2.3.-4",
        "a.b.c.d",
        "1.2.3.4 ",
        " 1.2.3.4",
        "",
        "1..2.3",
        "::1",
        "1.2.3.4\n",
    ],
)
def test_ipv4_invalid(ip: str) -> None:
    rejects("ipv4", msgspec.json.encode(ip))


def test_ipv4_must_be_a_string() -> None:
    rejects("ipv4", b"16909060")


@pytest.mark.parametrize(
    "ip",
    [
        "2001:0db8:0000:0000:0000:ff00:0042:8329",  # full
        "2001:db8:0:0:0:ff00:42:8329",  # full, short groups
        "2001:db8::ff00:42:8329",  # compressed
        "::1",
        "::",
        "fe80::",
        "1:2:3:4:5:6:7::",
        "::2:3:4:5:6:7:8",
        "FE80::ABCD",  # upper case
        "::ffff:1.2.3.4",  # IPv4-mapped
        "::ffff:0:1.2.3.4",  # IPv4-translated
        "64:ff9b::1.2.3.4",  # NAT64 well-known prefix
    ],
)
def test_ipv6_valid(ip: str) -> None:
    assert decode("ipv6", f'"{ip}"'.encode()) == ip


@pytest.mark.parametrize(
    "ip",
    [
        "1:2:3:4:5:6:1.2.3.4",  # RFC 4291 §2.2 form 3: x:x:x:x:x:x:d.d.d.d
        "1:2:3:4:5::1.2.3.4",  # same, compressed after five groups
    ],
)
def test_ipv6_valid_with_embedded_ipv4_after_many_groups(ip: str) -> None:
    assert decode("ipv6", f'"{ip}"'.encode()) == ip


@pytest.mark.parametrize(
    "ip",
    [
        "1::2::3",
        ":::",
        "12345::",
        "g::1",
        "1:2:3:4:5:6:7:8:9",
        "1:2:3:4:5:6:7",
        "1.2.3.4",
        "::ffff:256.1.1.1",
        "::ffff:01.2.3.4",
        "",
        " ::1",
        "::1 ",
        "fe80::1%eth0",
        "1:2:3:4::5:6:7:8",
        "::1\n",
        "::ffff:1.2.3.4\n",
    ],
)
def test_ipv6_invalid(ip: str) -> None:
    rejects("ipv6", msgspec.json.encode(ip))


# ---- json ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "raw",
    [
        b'{"a" : [1, 2.50, {"b": null}] , "c":"\\u00e9"}',
        b"[ ]",
        b"1.50",
        b"-0",
        b'"x"',
        b"true",
        b"null",
        b"1e400",
    ],
)
def test_json_passes_any_value_through_byte_exact(raw: bytes) -> None:
    value = decode("json", raw)
    assert isinstance(value, msgspec.Raw)
    assert bytes(value) == raw
    assert msgspec.json.encode({"v": value}) == b'{"v":' + raw + b"}"


# ---- compound types -----------------------------------------------------------------------------
def test_array() -> None:
    assert decode("array(int8)", b"[1, -2, 127]") == [1, -2, 127]
    assert decode("array(int8)", b"[]") == []
    assert "$[1]" in rejects("array(int8)", b"[1, 128]")
    rejects("array(int8)", b'[1, "2"]')
    rejects("array(int8)", b"1")
    assert decode("array(array(string))", b'[["a"], []]') == [["a"], []]


def test_map() -> None:
    assert decode("map(string, int32)", b'{"a": 1, "b": 2}') == {"a": 1, "b": 2}
    assert decode("Map(String, Array(Float64))", b'{"a": [1, 2.5]}') == {"a": [1.0, 2.5]}
    rejects("map(string, int32)", b'{"a": "1"}')
    rejects("map(string, int32)", b"[]")


@pytest.mark.parametrize(
    "name",
    ["map(int32, string)", "map(uuid, string)", "map(array(string), int8)", "map(nullable(string), int8)"],
)
def test_map_keys_must_be_strings(name: str) -> None:
    with pytest.raises(TypeError_, match="map keys must be string"):
        parse_type(name)


def test_nullable() -> None:
    ctype = parse_type("nullable(int8)")
    assert ctype.nullable
    assert decode("nullable(int8)", b"null") is None
    assert decode("nullable(int8)", b"5") == 5
    rejects("nullable(int8)", b"500")
    rejects("int8", b"null")
    assert decode("array(nullable(string))", b'[null, "a"]') == [None, "a"]
    assert not parse_type("array(nullable(string))").nullable


@pytest.mark.parametrize(
    "name", ["low_cardinality(string)", "LowCardinality(String)", "lowcardinality(string)"]
)
def test_low_cardinality_is_transparent(name: str) -> None:
    ctype = parse_type(name)
    assert not ctype.nullable
    assert ctype.py is str
    assert decode(name, b'"x"') == "x"
    rejects(name, b"null")


@pytest.mark.parametrize(
    "name",
    [
        "low_cardinality(nullable(string))",
        "LowCardinality(Nullable(String))",
        "nullable(low_cardinality(string))",
    ],
)
def test_low_cardinality_of_nullable_is_nullable(name: str) -> None:
    """ClickHouse spells it LowCardinality(Nullable(String)); the column accepts null, so it is
    nullable (and a missing value defaults to null, as for Nullable(String))."""
    assert decode(name, b"null") is None
    assert parse_type(name).nullable is True


def test_fixed_string() -> None:
    assert decode("fixed_string(3)", b'"abc"') == "abc"
    assert decode("fixed_string(3)", b'"ab"') == "ab"
    rejects("fixed_string(3)", b'"abcd"')
    rejects("fixed_string(3)", b"123")


@pytest.mark.parametrize("name", ["decimal(10, 2)", "decimal(10)", "Decimal(38,10)"])
def test_decimal(name: str) -> None:
    assert decode(name, b'"1.25"') == decimal.Decimal("1.25")
    assert decode(name, b"1.25") == decimal.Decimal("1.25")
    rejects(name, b'"abc"')


@pytest.mark.parametrize(
    "name",
    [
        "foo",
        "",
        "int128",
        "array",
        "array()",
        "array(int8",
        "array(int8)x",
        "int8)",
        "array(int8, int8)",
        "map(string)",
        "map(string, int8, int8)",
        "nullable(foo)",
        "nullable(int8, int8)",
        "fixed_string(x)",
        "fixed_string()",
        "fixed_string(3, 4)",
        "decimal(a, b)",
        "decimal(1, 2, 3)",
        "decimal()",
        "array(foo)",
        "map(string, foo)",
    ],
)
def test_unknown_types_raise(name: str) -> None:
    with pytest.raises(TypeError_):
        parse_type(name)


def test_type_error_is_a_value_error_naming_the_type() -> None:
    with pytest.raises(ValueError, match="'frobnicate'"):
        parse_type("frobnicate")


def test_parse_type_keeps_the_original_name() -> None:
    assert parse_type("Nullable(Int8)").name == "Nullable(Int8)"
