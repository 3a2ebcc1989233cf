"""Kafka REST Proxy bodies: parsing v2/v3 records, validating them against a stream, and any bytes
giving either records or a 4xx GatewayError (never anything that would be a 500)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.catalog.model import Column, Stream
from gateway.dialects.restproxy_records import (
    ProxyError,
    ProxyPayload,
    ProxyRecord,
    V2Records,
    schema_format_refusal,
    split_objects,
    v2_records,
    v3_record,
)
from gateway.errors import GatewayError, InvalidRow
from gateway.ingest.quarantine import Split
from gateway.ingest.schema import CompiledSchema

ROWS = CompiledSchema(Stream("r", [Column("id", "string"), Column("n", "int32")], "t", shards=3))
TEXT = CompiledSchema(Stream("x", [Column("message", "string")], "tx", shards=2))
KEYED = CompiledSchema(
    Stream(
        "k",
        [Column("id", "string"), Column("n", "int32")],
        "tk",
        mode="changelog_kv",
        primary_key="id",
        shards=1,
    )
)
PROPS = settings(
    max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)


def b64(data: str) -> str:
    return base64.b64encode(data.encode()).decode()


async def _chunks(body: bytes) -> AsyncIterator[bytes]:
    yield body


def validate(
    body: bytes, schema: CompiledSchema, *, v3: bool = False, embedded: str = "json", quarantine: bool = False
) -> tuple[ProxyPayload, Split]:
    def parse(data: bytes) -> list[ProxyRecord]:
        if v3:
            return [v3_record(o) for o in split_objects(data)]
        return v2_records(data, "json" if embedded == "json" else "binary")

    payload = ProxyPayload(_chunks(body), parse, each=v3, quarantine=quarantine)
    split = asyncio.run(payload.rows(schema, lambda n: None))
    return payload, split


def as_json(schema: CompiledSchema, rows: list[Any]) -> list[Any]:
    return [json.loads(v) for v in schema.encode(rows).values] if rows else []


def v2(*records: dict[str, Any]) -> bytes:
    return json.dumps({"records": list(records)}).encode()


def test_json_records_keys_partitions_headers() -> None:
    body = v2(
        {
            "key": {"b": 1, "a": [1, 2]},
            "value": {"id": "x", "n": 1},
            "partition": 2,
            "headers": [{"name": "h", "value": b64("v")}, {"name": "e", "value": None}],
        },
        {"value": {"id": "y", "n": 2}},
    )
    payload, split = validate(body, ROWS)
    assert as_json(ROWS, split.rows) == [{"id": "x", "n": 1}, {"id": "y", "n": 2}]
    assert split.meta is not None
    assert split.meta.keys == [b'{"b":1,"a":[1,2]}', None]
    assert split.meta.partitions == [2, -1]
    assert split.meta.headers == [[("h", b"v"), ("e", b"")], []]
    assert payload.written == [0, 1] and payload.nbytes == len(body)


def test_records_without_details_leave_placement_to_the_sink() -> None:
    _, split = validate(v2({"value": {"id": "x", "n": 1}}, {"value": {"id": "y", "n": 2}}), ROWS)
    assert split.meta is None and len(split.rows) == 2


def test_quarantine_sets_invalid_values_aside() -> None:
    body = v2(
        {"value": {"id": "a", "n": 1}},
        {"value": {"id": "b", "n": "x"}, "key": "k"},
        {"value": {"id": "c", "n": 3}, "partition": 1},
    )
    payload, split = validate(body, ROWS, quarantine=True)
    assert payload.written == [0, 2]
    assert [r["id"] for r in as_json(ROWS, split.rows)] == ["a", "c"]
    assert [(b.row, b.column, json.loads(b.text)) for b in split.bad] == [(1, "n", {"id": "b", "n": "x"})]
    assert split.meta is not None and split.meta.partitions == [-1, 1]
    error = payload.records[1].error
    assert error is not None and error.error_code == 42205
    payload, split = validate(v2({"value": {"id": "a", "n": 1}, "partition": 5}), ROWS, quarantine=True)
    assert split.rows == [] and payload.written == []  # a missing partition: answered alone
    error = payload.records[0].error
    assert error is not None and error.error_code == 2


def test_v2_missing_partitions_are_answered_per_record() -> None:
    body = v2(
        {"value": {"id": "a", "n": 1}},
        {"value": {"id": "b", "n": 2}, "partition": 99},
        {"value": {"id": "c", "n": 3}, "partition": -1},  # -1: any partition (librdkafka's UA)
        {"value": {"id": "d", "n": 4}, "partition": -2},
        {"value": {"id": "e", "n": 5}, "partition": "1"},  # a number as a string: Karapace's int()
    )
    payload, split = validate(body, ROWS)
    assert payload.written == [0, 2, 4]
    assert [r["id"] for r in as_json(ROWS, split.rows)] == ["a", "c", "e"]
    assert split.meta is not None and split.meta.partitions == [-1, -1, 1]
    errors = [r.error for r in payload.records]
    assert [(e.status, e.error_code, e.row) if e else None for e in errors] == [
        None,
        (422, 2, 1),
        None,
        (422, 2, 3),
        None,
    ]
    assert errors[1] is not None and "partition 99" in errors[1].message
    # binary records too; an invalid value still refuses the whole request
    payload, split = validate(
        v2({"value": b64("x"), "partition": 7}, {"value": b64("y")}), TEXT, embedded="binary"
    )
    assert payload.written == [1] and as_json(TEXT, split.rows) == [{"message": "y"}]
    with pytest.raises(InvalidRow):
        validate(v2({"value": {"id": "a", "n": "x"}}, {"value": {"id": "b", "n": 1}, "partition": 9}), ROWS)


def test_v2_schema_ids_are_kept_for_the_reply() -> None:
    records = v2_records(b'{"records": [{"value": 1}], "value_schema_id": "7", "key_schema_id": 3}', "json")
    assert isinstance(records, V2Records)
    assert (records.key_schema_id, records.value_schema_id) == (3, 7)
    assert type(v2_records(v2({"value": 1}), "json")) is list  # none named: a plain list


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (v2({"value": {"name": "x"}}), 42202),
        (v2({"key": 1, "value": {"name": "x"}}), 42201),
        (b'{"records": [{"key": 1, "value": 2}], "key_schema_id": 1}', 42202),
        (b'{"records": [{"value": 2}], "value_schema": "\\"int\\""}', 415),
        (b'{"records": [{"value": 2}], "value_schema_id": 4}', 415),
        (b'{"records": {}}', 400),
    ],
)
def test_schema_formats_need_their_schema_then_a_registry(body: bytes, code: int) -> None:
    with pytest.raises(GatewayError) as err:
        schema_format_refusal(body, "avro")
    assert isinstance(err.value, ProxyError) and err.value.error_code == code
    assert err.value.status == {42201: 422, 42202: 422}.get(code, code)


def test_binary_records_need_one_string_column() -> None:
    body = v2({"key": b64("k"), "value": b64("héllo")}, {"value": b64("two"), "partition": 1})
    _, split = validate(body, TEXT, embedded="binary")
    assert as_json(TEXT, split.rows) == [{"message": "héllo"}, {"message": "two"}]
    assert split.meta is not None and split.meta.keys == [b"k", None]
    with pytest.raises(ProxyError, match="one string column") as err:
        validate(body, ROWS, embedded="binary")
    assert err.value.error_code == 42206


@pytest.mark.parametrize(
    ("body", "schema", "embedded", "status", "code"),
    [
        (v2({"value": {"id": "x", "n": "no"}}), ROWS, "json", 400, None),  # InvalidRow: 42205
        (v2({"value": {"id": "x", "n": 1}, "key": "k"}), KEYED, "json", 422, 42206),
        (v2({"value": "not base64!"}), TEXT, "binary", 400, 400),  # Karapace: 400
        (v2({"value": base64.b64encode(b"\xff\xfe").decode()}), TEXT, "binary", 422, 42206),
        (v2({"value": None}), TEXT, "binary", 422, 42206),
        (v2({"value": 5}), TEXT, "binary", 400, 400),
        (v2({"value": {"id": "x"}}), TEXT, "binary", 400, 400),  # no Content-Type: binary
        (v2({"key": "%%", "value": b64("x")}), TEXT, "binary", 400, 400),
        (
            v2({"value": {"id": "x", "n": 1}, "headers": [{"name": "h", "value": "%%"}]}),
            ROWS,
            "json",
            422,
            42206,
        ),
        (v2(), ROWS, "json", 422, 422),
        (b'{"records": [], "extra": 1}', ROWS, "json", 422, 422),
        (b'{"records": [{"value": {"id": "x", "n": 1}, "offset": 3}]}', ROWS, "json", 422, 422),
        (b'{"records": {}}', ROWS, "json", 400, 400),  # Karapace: 'records' must be an array
        (b'[{"records": []}]', ROWS, "json", 400, 400),  # a JSON array: "Malformed request"
        (b'{"records": [1]}', ROWS, "json", 400, 400),  # "Produce record must be an object"
        (b'{"records": [{"value": 1}, "x"]}', ROWS, "json", 400, 400),
        (v2({"value": {"id": "x", "n": 1}, "partition": "one"}), ROWS, "json", 422, 422),
        (b"not json", ROWS, "json", 400, None),
    ],
)
def test_v2_refusals(
    body: bytes, schema: CompiledSchema, embedded: str, status: int, code: int | None
) -> None:
    with pytest.raises(GatewayError) as err:
        validate(body, schema, embedded=embedded)
    assert err.value.status == status
    if code is not None:
        assert isinstance(err.value, ProxyError) and err.value.error_code == code
    if status == 400 and code is None and body.startswith(b"{"):
        assert isinstance(err.value, InvalidRow) and err.value.row == 0


def test_v3_records_stand_alone() -> None:
    objects = [
        {"value": {"type": "JSON", "data": {"id": "a", "n": 1}}},
        {"value": {"type": "JSON", "data": {"id": "b", "n": "x"}}},
        {"partition_id": 9, "value": {"type": "JSON", "data": {"id": "c", "n": 3}}},
        {"key": {"type": "STRING", "data": "s"}, "value": {"type": "BINARY", "data": b64("t")}},
        {"bogus": 1},
        {
            "key": {"type": "BINARY", "data": b64("kk")},
            "partition_id": 1,
            "value": {"type": "JSON", "data": {"id": "d", "n": 4}},
        },
    ]
    body = "\n".join(json.dumps(o) for o in objects).encode()
    payload, split = validate(body, ROWS, v3=True)
    assert payload.written == [0, 5]
    assert [r["id"] for r in as_json(ROWS, split.rows)] == ["a", "d"]
    assert split.meta is not None and split.meta.keys == [None, b"kk"]
    assert split.meta.partitions == [-1, 1]
    errors = [r.error for r in payload.records]
    assert [e.error_code if e else None for e in errors] == [None, 400, 40402, 42206, 400, None]
    assert errors[1] is not None and "row 1" in errors[1].message


def _outcome(body: bytes, schema: CompiledSchema, v3: bool, embedded: str) -> Split | None:
    try:
        return validate(body, schema, v3=v3, embedded=embedded)[1]
    except GatewayError as err:
        assert 400 <= err.status < 500, err
        return None


record_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.text(max_size=12)
    | st.sampled_from([b64("ok"), "@@", {"id": "x", "n": 1}, {"id": 1}]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "id",
                    "n",
                    "key",
                    "value",
                    "partition",
                    "headers",
                    "type",
                    "data",
                    "name",
                    "partition_id",
                    "x",
                ]
            ),
            inner,
            max_size=4,
        )
    ),
    max_leaves=10,
)


@PROPS
@given(
    st.lists(
        st.dictionaries(
            st.sampled_from(["key", "value", "partition", "headers", "x"]), record_values, max_size=4
        ),
        max_size=5,
    ),
    st.sampled_from([ROWS, TEXT, KEYED]),
    st.sampled_from(["json", "binary"]),
)
def test_any_v2_records_give_rows_or_4xx(
    records: list[dict[str, Any]], schema: CompiledSchema, embedded: str
) -> None:
    split = _outcome(json.dumps({"records": records}).encode(), schema, False, embedded)
    if split is not None:
        assert len(split.rows) <= len(records)
        if split.meta is not None:
            assert len(split.meta.keys) == len(split.rows)
            assert all(0 <= p < schema.stream.shards or p == -1 for p in split.meta.partitions)


@PROPS
@given(st.lists(record_values, max_size=5), st.sampled_from([ROWS, TEXT]))
def test_any_v3_objects_give_rows_or_4xx(objects: list[Any], schema: CompiledSchema) -> None:
    split = _outcome("\n".join(json.dumps(o) for o in objects).encode(), schema, True, "json")
    if split is not None:
        assert split.meta is None or len(split.meta.keys) == len(split.rows)


@PROPS
@given(st.binary(max_size=200), st.booleans(), st.sampled_from(["json", "binary"]))
def test_any_bytes_give_rows_or_4xx(body: bytes, v3: bool, embedded: str) -> None:
    _outcome(body, TEXT, v3, embedded)
