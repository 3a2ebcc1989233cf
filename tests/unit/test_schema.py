"""CompiledSchema: NDJSON and compact rows → exact Kafka values and keys; row/column errors."""

from __future__ import annotations

import datetime

import msgspec
import pytest

from gateway.catalog.model import Column, Stream
from gateway.errors import BadRequest, InvalidRow, MalformedBody
from gateway.ingest.schema import CompiledSchema, SchemaCache, SchemaError, check_columns

UTC = datetime.UTC


def stream(*columns: Column, name: str = "s", **kw: object) -> Stream:
    return Stream(name=name, columns=list(columns), topic=f"t.{name}", **kw)  # type: ignore[arg-type]


def compile_(*columns: Column, forbid_unknown: bool = False, **kw: object) -> CompiledSchema:
    return CompiledSchema(stream(*columns, **kw), forbid_unknown=forbid_unknown)


EVENTS = (
    Column("id", "int32"),
    Column("name", "string", default="'anon'"),
    Column("score", "float64", default="0"),
    Column("ts", "datetime64(3)", default="now()"),
    Column("ip", "ipv4", nullable=True),
    Column("tags", "array(int8)", default="[]"),
    Column("meta", "json", default="{}"),
)


@pytest.fixture
def events() -> CompiledSchema:
    return compile_(*EVENTS)


def ndjson_values(schema: CompiledSchema, body: bytes, first_row: int = 0) -> list[bytes]:
    return schema.encode(schema.decode_ndjson(body, first_row)).values


def parsed(values: list[bytes]) -> list[object]:
    """Record values as JSON objects (comparison that ignores the order of keys)."""
    return [msgspec.json.decode(v) for v in values]


def ndjson_error(schema: CompiledSchema, body: bytes, first_row: int = 0) -> InvalidRow:
    with pytest.raises(InvalidRow) as info:
        schema.decode_ndjson(body, first_row)
    return info.value


def compact_error(
    schema: CompiledSchema, columns: list[str], data: bytes, kind: type[BadRequest] = InvalidRow
) -> BadRequest:
    with pytest.raises(kind) as info:
        schema.decode_compact_data(columns, data)
    return info.value


# ---- values -------------------------------------------------------------------------------------
def test_ndjson_values_have_every_column_defaults_and_normalised_types(events: CompiledSchema) -> None:
    body = (
        b'{"id":1,"score":2,"ts":0}\n'
        b'{"id":2,"name":"x","ts":"2024-01-02T03:04:05.5Z","ip":"1.2.3.4","tags":[1,-2],'
        b'"meta":{"a" : [1, 2.50]},"score":-1.5}\n'
        b'{"id":3,"ts":1700000000.5}\n'
    )
    assert ndjson_values(events, body) == [
        b'{"id":1,"name":"anon","score":2.0,"ts":"1970-01-01T00:00:00Z","ip":null,"tags":[],"meta":{}}',
        b'{"id":2,"name":"x","score":-1.5,"ts":"2024-01-02T03:04:05.500000Z","ip":"1.2.3.4",'
        b'"tags":[1,-2],"meta":{"a" : [1, 2.50]}}',
        b'{"id":3,"name":"anon","score":0.0,"ts":"2023-11-14T22:13:20.500000Z","ip":null,'
        b'"tags":[],"meta":{}}',
    ]


def test_encode_reports_total_bytes(events: CompiledSchema) -> None:
    enc = events.encode(events.decode_ndjson(b'{"id":1,"ts":0}\n{"id":2,"ts":0}', 0))
    assert enc.keys is None
    assert enc.nbytes == sum(len(v) + 1 for v in enc.values)


def test_nested_floats_are_normalised() -> None:
    schema = compile_(
        Column("a", "array(float64)"), Column("m", "map(string, float32)"), Column("n", "nullable(float64)")
    )
    assert ndjson_values(schema, b'{"a":[1,2.5],"m":{"k":3},"n":4}') == [
        b'{"a":[1.0,2.5],"m":{"k":3.0},"n":4.0}'
    ]


@pytest.mark.parametrize("default", ["now()", "now64()", "now64(3)", "NOW64(6)", "now64(9)"])
def test_now_default_is_current_utc_time(default: str) -> None:
    schema = compile_(Column("id", "int8"), Column("ts", "DateTime64(3, 'UTC')", default=default))
    before = datetime.datetime.now(UTC)
    values = ndjson_values(schema, b'{"id":1}\n{"id":2}\n')
    after = datetime.datetime.now(UTC)
    for value in values:
        text = msgspec.json.decode(value)["ts"]
        assert text.endswith("Z")
        ts = datetime.datetime.fromisoformat(text)
        assert ts.tzinfo is not None
        assert before <= ts <= after


def test_literal_defaults() -> None:
    schema = compile_(
        Column("id", "int8"),
        Column("q", "string", default="'it\\'s'"),
        Column("dq", "string", default='"quoted"'),
        Column("bare", "string", default="plain"),
        Column("d", "date", default="2024-01-02"),
        Column("u", "uuid", default="12345678-1234-5678-1234-567812345678"),
        Column("b", "bool", default="true"),
        Column("m", "map(string, int8)", default='{"k": 1}'),
        Column("n", "nullable(int8)"),
        Column("n2", "int8", nullable=True),
        Column("e", "string", default=""),
    )
    assert ndjson_values(schema, b'{"id":1,"e":"x"}') == [
        b'{"id":1,"q":"it\'s","dq":"quoted","bare":"plain","d":"2024-01-02",'
        b'"u":"12345678-1234-5678-1234-567812345678","b":true,"m":{"k":1},"n":null,"n2":null,'
        b'"e":"x"}'
    ]


def test_mutable_defaults_are_not_shared_between_rows() -> None:
    schema = compile_(Column("id", "int8"), Column("tags", "array(int8)", default="[1]"))
    rows = schema.decode_ndjson(b'{"id":1}\n{"id":2}\n', 0)
    tags = [getattr(r, f) for r in rows for f in r.__struct_fields__ if f != "f0"]
    assert tags == [[1], [1]]
    assert tags[0] is not tags[1]


@pytest.mark.parametrize(
    "type_name", ["nullable(string)", "LowCardinality(Nullable(String))", "low_cardinality(nullable(int32))"]
)
def test_missing_nullable_column_defaults_to_null(type_name: str) -> None:
    schema = compile_(Column("id", "int8"), Column("x", type_name))
    assert ndjson_values(schema, b'{"id":1}') == [b'{"id":1,"x":null}']
    rows = schema.decode_compact_data(["id"], b"[[1]]")
    assert schema.encode(rows).values == [b'{"id":1,"x":null}']


def test_nullable_column_accepts_null(events: CompiledSchema) -> None:
    assert b'"ip":null' in ndjson_values(events, b'{"id":1,"ip":null,"ts":0}')[0]


def test_single_column_rows_from_strings() -> None:
    schema = compile_(Column("line", "string"))
    enc = schema.encode(schema.rows_from_strings(["a", 'b"\\', "é"]))
    assert enc.values == [b'{"line":"a"}', b'{"line":"b\\"\\\\"}', '{"line":"é"}'.encode()]


def test_rows_from_strings_needs_one_string_column(events: CompiledSchema) -> None:
    with pytest.raises(BadRequest):
        events.rows_from_strings(["x"])
    with pytest.raises(BadRequest):
        compile_(Column("n", "int64")).rows_from_strings(["1"])


# ---- NDJSON errors ------------------------------------------------------------------------------
def test_wrong_type_names_row_with_offset_and_column(events: CompiledSchema) -> None:
    err = ndjson_error(events, b'{"id":1}\n{"id":2}\n{"id":"x"}\n', first_row=10)
    assert (err.row, err.column) == (12, "id")
    assert err.status == 400
    assert err.message.startswith("row 12, column 'id': ")
    assert "str" in err.message


def test_missing_required_column(events: CompiledSchema) -> None:
    err = ndjson_error(events, b'{"id":1}\n{"name":"x"}\n', first_row=5)
    assert (err.row, err.column) == (6, "id")
    assert "id" in err.message


def test_out_of_range_int(events: CompiledSchema) -> None:
    err = ndjson_error(events, b'{"id":2147483648}\n')
    assert (err.row, err.column) == (0, "id")
    assert "2147483647" in err.message


def test_bad_ipv4_message_names_the_type_not_a_regex(events: CompiledSchema) -> None:
    err = ndjson_error(events, b'{"id":1}\n{"id":1,"ip":"1.2.3.400"}', first_row=3)
    assert (err.row, err.column) == (4, "ip")
    assert "ipv4" in err.message
    assert "regex" not in err.message and "25[0-5]" not in err.message


def test_nested_array_element_wrong_type(events: CompiledSchema) -> None:
    err = ndjson_error(events, b'{"id":1,"tags":[1,2,"x"]}', first_row=7)
    assert (err.row, err.column) == (7, "tags")
    assert "int" in err.message


def test_nested_map_value_names_the_column() -> None:
    schema = compile_(Column("m", "map(string, array(int8))"))
    err = ndjson_error(schema, b'{"m":{"a":[1],"b":[1,999]}}')
    assert (err.row, err.column) == (0, "m")


def test_epoch_out_of_range_for_datetime(events: CompiledSchema) -> None:
    err = ndjson_error(events, b'{"id":1,"ts":0}\n{"id":1,"ts":1e300}', first_row=2)
    assert (err.row, err.column) == (3, "ts")


def test_row_that_is_not_an_object(events: CompiledSchema) -> None:
    err = ndjson_error(events, b'{"id":1}\n[1]\n', first_row=1)
    assert err.row == 2


def test_unknown_field_ignored_by_default(events: CompiledSchema) -> None:
    assert ndjson_values(events, b'{"id":1,"zzz":[1,{"a":2}],"ts":0}') == ndjson_values(
        events, b'{"id":1,"ts":0}'
    )


def test_unknown_field_rejected_with_forbid_unknown() -> None:
    schema = compile_(*EVENTS, forbid_unknown=True)
    err = ndjson_error(schema, b'{"id":1}\n{"id":1,"zzz":3}\n', first_row=5)
    assert err.row == 6
    assert "zzz" in err.message
    assert err.column == "zzz"


@pytest.mark.parametrize("meta", [b'"\xff"', b'{"k":"\xc0\xaf"}', b'["a\xed\xa0\x80"]'])
def test_json_column_rejects_invalid_utf8(events: CompiledSchema, meta: bytes) -> None:
    """A `json` value is passed through as raw bytes, but it must still be UTF-8 (RFC 8259 §8.1):
    the Kafka record must be valid JSON text, like every `string` column is checked to be."""
    with pytest.raises(MalformedBody, match="UTF-8"):
        events.decode_ndjson(b'{"id":1,"meta":' + meta + b"}", 0)
    with pytest.raises(MalformedBody, match="UTF-8"):
        events.decode_compact_data(["id", "meta"], b"[[1," + meta + b"]]")


def test_row_error_without_path_names_the_body(events: CompiledSchema) -> None:
    err = events.row_error("Expected `array`, got `int`", 0, ["id"])
    assert err.row is None and err.column is None
    assert err.message == "body: Expected `array`, got `int`"


# ---- compact ------------------------------------------------------------------------------------
def test_compact_values_match_ndjson(events: CompiledSchema) -> None:
    rows = events.decode_compact_data(["id", "score", "ts"], b"[[1,2,0],[2,-1.5,0]]")
    values = events.encode(rows).values
    assert b'"score":2.0' in values[0]
    assert parsed(values) == parsed(
        ndjson_values(events, b'{"id":1,"score":2,"ts":0}\n{"id":2,"score":-1.5,"ts":0}\n')
    )


def test_compact_too_few_values(events: CompiledSchema) -> None:
    err = compact_error(events, ["id", "name"], b'[[1,"a"],[2]]')
    assert err.row == 1
    assert "exactly 2 values" in err.message


def test_compact_too_many_values(events: CompiledSchema) -> None:
    err = compact_error(events, ["id", "name"], b'[[1,"a"],[2,"b"],[3,"c",4]]')
    assert err.row == 2
    assert "exactly 2 values" in err.message


def test_compact_wrong_type_names_row_and_column(events: CompiledSchema) -> None:
    err = compact_error(events, ["id", "name"], b'[[1,"a"],[2,3]]')
    assert (err.row, err.column) == (1, "name")
    err = compact_error(events, ["id", "tags"], b'[[1,[1]],[2,[3,"x"]]]')
    assert (err.row, err.column) == (1, "tags")
    err = compact_error(events, ["ip", "id"], b'[["1.2.3.4",1],["1.2.3",2]]')
    assert (err.row, err.column) == (1, "ip")
    assert "ipv4" in err.message and "regex" not in err.message


def test_compact_columns_missing_required_column(events: CompiledSchema) -> None:
    err = compact_error(events, ["name"], b'[["a"]]')
    assert err.column == "id"
    assert "id" in err.message


def test_compact_duplicate_column(events: CompiledSchema) -> None:
    err = compact_error(events, ["id", "id"], b"[[1,1]]", kind=BadRequest)
    assert "twice" in err.message


def test_compact_unknown_column_ignored_by_default(events: CompiledSchema) -> None:
    expected = parsed(ndjson_values(events, b'{"id":1,"ts":0}\n{"id":2,"ts":0}'))
    rows = events.decode_compact_data(["zz", "id", "ts"], b'[[{"x":1},1,0],[null,2,0]]')
    assert parsed(events.encode(rows).values) == expected
    rows = events.decode_compact_data(["id", "yy", "ts"], b'[[1,"?",0],[2,[],0]]')
    assert parsed(events.encode(rows).values) == expected


def test_compact_unknown_column_next_to_single_known_column() -> None:
    schema = compile_(Column("id", "int8"))
    rows = schema.decode_compact_data(["zz", "id"], b"[[1,1],[2,2]]")
    assert schema.encode(rows).values == [b'{"id":1}', b'{"id":2}']


def test_compact_only_unknown_columns_with_all_defaults() -> None:
    schema = compile_(Column("a", "int8", default="1"), Column("b", "string", default="'x'"))
    rows = schema.decode_compact_data(["zz"], b"[[5],[6]]")
    assert schema.encode(rows).values == [b'{"a":1,"b":"x"}', b'{"a":1,"b":"x"}']


def test_compact_unknown_column_rejected_with_forbid_unknown() -> None:
    schema = compile_(*EVENTS, forbid_unknown=True)
    err = compact_error(schema, ["id", "zz"], b"[[1,2]]", kind=BadRequest)
    assert err.column == "zz"
    assert "zz" in err.message


def test_compact_decoder_is_cached_per_column_tuple(events: CompiledSchema) -> None:
    codec = events.compact_decoder(["id", "name"])
    again = events.compact_decoder(("id", "name"))
    assert again is codec
    decoder = codec[0]
    assert events.compact_decoder(["id"])[0] is not decoder


def test_compact_empty_data(events: CompiledSchema) -> None:
    assert events.decode_compact_data(["id"], b"[]") == []


@pytest.mark.parametrize("form", ["ndjson", "compact"])
def test_a_json_value_with_newlines_stays_one_record(events: CompiledSchema, form: str) -> None:
    """A `json` column keeps the client's bytes; newlines between its tokens would split the row
    into several Kafka records (the newlines are the record boundaries): they are compacted away,
    and newlines escaped inside its strings are kept."""
    meta = b'{\n  "k": [1,\n 2],\r\n  "s": "a\\nb"\n}'
    if form == "ndjson":
        rows = events.decode_ndjson(b'{"id":1,"meta":' + meta + b'}\n{"id":2}\n', 0)
    else:
        rows = events.decode_compact_data(["id", "meta"], b"[[1," + meta + b"],[2,{}]]")
    enc = events.encode(rows)
    assert enc.rows == 2 == enc.lines.count(b"\n")
    first, second = parsed(enc.values)
    assert first["meta"] == {"k": [1, 2], "s": "a\nb"} and second["id"] == 2  # type: ignore[index]


# ---- keys ---------------------------------------------------------------------------------------
def test_keyed_stream_with_composite_key_gives_json_array_keys() -> None:
    schema = compile_(
        Column("timestamp", "datetime64(3)"),
        Column("name", "string"),
        Column("v", "float64"),
        mode="versioned_kv",
        primary_key="timestamp, name",
    )
    enc = schema.encode(
        schema.decode_ndjson(
            '{"timestamp":"2024-01-02T03:04:05Z","name":"a","v":1}\n'
            '{"timestamp":1700000000.5,"name":"é","v":2.5}\n'.encode(),
            0,
        )
    )
    assert enc.keys == [b'["2024-01-02T03:04:05Z","a"]', '["2023-11-14T22:13:20.500000Z","é"]'.encode()]
    assert enc.values[1] == ('{"timestamp":"2023-11-14T22:13:20.500000Z","name":"é","v":2.5}'.encode())
    compact = schema.encode(
        schema.decode_compact_data(["name", "timestamp", "v"], b'[["a","2024-01-02T03:04:05Z",1]]')
    )
    assert compact.keys == [b'["2024-01-02T03:04:05Z","a"]']


@pytest.mark.parametrize("mode", ["versioned_kv", "changelog_kv"])
def test_single_string_primary_key_is_raw_utf8(mode: str) -> None:
    schema = compile_(Column("v", "int8"), Column("name", "string"), mode=mode, primary_key=" name ")
    enc = schema.encode(schema.decode_ndjson('{"name":"é \\"q\\"","v":1}\n{"name":"","v":2}'.encode(), 0))
    assert enc.keys == ['é "q"'.encode(), b""]


def test_single_int_primary_key_is_json() -> None:
    schema = compile_(Column("id", "int64"), mode="versioned_kv", primary_key="id")
    assert schema.encode(schema.decode_ndjson(b'{"id":7}', 0)).keys == [b"7"]


def test_unkeyed_modes_ignore_primary_key() -> None:
    schema = compile_(Column("id", "int64"), mode="append", primary_key="nope")
    assert schema.encode(schema.decode_ndjson(b'{"id":7}', 0)).keys is None


def test_primary_key_naming_missing_column_raises() -> None:
    with pytest.raises(SchemaError, match="'b'"):
        compile_(Column("a", "string"), mode="versioned_kv", primary_key="a, b")


def test_keyed_mode_without_primary_key_raises() -> None:
    with pytest.raises(SchemaError, match="primary_key"):
        compile_(Column("a", "string"), mode="changelog_kv", primary_key=" , ")


# ---- schema errors ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "column",
    [
        Column("a", "int8", default="300"),
        Column("a", "int8", default="x"),
        Column("a", "bool", default="1"),
        Column("a", "date", default="'2024-99-01'"),
        Column("a", "array(int8)", default="[1,'a']"),
        Column("a", "datetime", default="yesterday"),
        Column("a", "ipv4", default="1.2.3.999"),
        Column("a", "uuid", default="nope"),
        Column("a", "fixed_string(2)", default="'abc'"),
        Column("a", "map(string, int8)", default="[]"),
    ],
)
def test_invalid_defaults_raise(column: Column) -> None:
    with pytest.raises(SchemaError, match="'a'"):
        compile_(column)


@pytest.mark.parametrize(
    "columns",
    [
        [],
        [Column("a", "int8"), Column("a", "string")],
        [Column("", "int8")],
        [Column("x" * 256, "int8")],
        [Column("a", "frobnicate")],
        [Column("a", "map(int8, int8)")],
    ],
)
def test_invalid_columns_raise(columns: list[Column]) -> None:
    with pytest.raises(SchemaError):
        check_columns(stream(*columns))


def test_every_integer_type_compiles() -> None:
    names = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32"]  # uint64: see below
    schema = compile_(*(Column(n, n) for n in names))
    body = msgspec.json.encode({n: 1 for n in names})
    assert len(ndjson_values(schema, body)) == 1


def test_uint64_column_accepts_its_full_range() -> None:
    schema = compile_(Column("n", "uint64"))
    assert ndjson_values(schema, b'{"n":18446744073709551615}') == [b'{"n":18446744073709551615}']
    err = ndjson_error(schema, b'{"n":0}\n{"n":18446744073709551616}')
    assert (err.row, err.column) == (1, "n")


# ---- cache --------------------------------------------------------------------------------------
def test_schema_cache_recompiles_for_a_new_stream_object() -> None:
    cache = SchemaCache()
    first = stream(Column("a", "int8"), name="c")
    compiled = cache.get(first)
    assert cache.get(first) is compiled
    second = stream(Column("a", "int8"), Column("b", "string", default="''"), name="c")
    recompiled = cache.get(second)
    assert recompiled is not compiled
    assert recompiled.columns == ["a", "b"]
    assert cache.get(second) is recompiled
    cache.forget("c")
    cache.forget("c")
    assert cache.get(second) is not recompiled


def test_schema_cache_passes_forbid_unknown() -> None:
    cache = SchemaCache(forbid_unknown=True)
    schema = cache.get(stream(Column("a", "int8"), name="f"))
    with pytest.raises(InvalidRow):
        schema.decode_ndjson(b'{"a":1,"b":2}', 0)


def test_epoch_datetimes_take_the_lenient_path_only_when_present() -> None:
    """Rows with ISO datetimes decode with plain datetime types; one epoch number anywhere in the
    body switches to the lenient decoder, and every row still comes out as an ISO UTC string."""
    schema = CompiledSchema(
        Stream(name="e", topic="t", columns=[Column("t", "datetime64(3)"), Column("u", "nullable(datetime)")])
    )
    iso = schema.encode(schema.decode_ndjson(b'{"t":"2024-01-01T00:00:00Z","u":null}\n', 0))
    assert iso.values == [b'{"t":"2024-01-01T00:00:00Z","u":null}']
    mixed = schema.decode_ndjson(
        b'{"t":"2024-01-01T00:00:00Z","u":null}\n{"t":1700000000,"u":1700000000.5}\n', 0
    )
    assert schema.encode(mixed).values == [
        b'{"t":"2024-01-01T00:00:00Z","u":null}',
        b'{"t":"2023-11-14T22:13:20Z","u":"2023-11-14T22:13:20.500000Z"}',
    ]
    compact = schema.decode_compact_data(["t", "u"], b'[["2024-01-01T00:00:00Z",null],[0,1]]')
    assert schema.encode(compact).values[1] == b'{"t":"1970-01-01T00:00:00Z","u":"1970-01-01T00:00:01Z"}'
    with pytest.raises(InvalidRow) as err:
        schema.decode_ndjson(b'{"t":"2024-01-01T00:00:00Z"}\n{"t":true}\n', 0)
    assert err.value.row == 1 and err.value.column == "t"
