"""Pass-through streams' value path: REST proxy records kept as sent (no validation), tombstones
only on compacted streams for keyed records, and the spool keeping such values exactly."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.catalog.model import CatalogState, Column, Stream
from gateway.dialects.restproxy_records import ProxyError, ProxyPayload, v2_records, v3_records
from gateway.errors import BadRequest
from gateway.ingest.as_sent import AsSent
from gateway.ingest.quarantine import Split
from gateway.ingest.schema import CompiledSchema
from gateway.sinks.base import RecordMeta
from gateway.sinks.kafka_topics import quarantine_configs, topic_configs
from gateway.spool import Spool, SpoolRecord
from gateway.streams import check_passthrough

COLUMNS = [Column("message", "string")]
PLAIN = CompiledSchema(Stream("p", COLUMNS, "tp", shards=2, passthrough=True))
COMPACTED = CompiledSchema(Stream("c", COLUMNS, "tc", shards=2, passthrough=True, compacted=True))


async def _chunks(body: bytes) -> AsyncIterator[bytes]:
    yield body


def as_sent(
    body: bytes, schema: CompiledSchema, *, embedded: str = "json", v3: bool = False
) -> tuple[ProxyPayload, Split]:
    def parse(data: bytes, raw: bool = False) -> list:  # type: ignore[type-arg]
        return (
            v3_records(data, raw) if v3 else v2_records(data, "json" if embedded == "json" else "binary", raw)
        )

    payload = ProxyPayload(_chunks(body), parse, each=v3)
    return payload, asyncio.run(payload.rows(schema, lambda n: None))


def test_json_values_are_the_bytes_sent() -> None:
    values = [b'{ "z":1 ,"a" : [ 2,1 ], "not_a_column": null }', b"[1, 2]", b'"x"', b"  -0.50e3"[2:]]
    body = b'{"records":[' + b",".join(b'{"value":\t' + v + b"\n}" for v in values) + b"]}"
    payload, split = as_sent(body, PLAIN)
    assert split.rows == values and split.bad == []
    assert split.meta is not None and split.meta.keys == [None] * 4 and split.meta.partitions == [-1] * 4
    assert payload.written == [0, 1, 2, 3]


def test_binary_values_are_the_decoded_bytes_and_keys_partitions_headers_kept() -> None:
    raw = b"\xff\x00\n\x80 not UTF-8"
    body = json.dumps(
        {
            "records": [
                {
                    "value": base64.b64encode(raw).decode(),
                    "key": base64.b64encode(b"\x01").decode(),
                    "partition": 1,
                },
                {"value": "", "headers": [{"name": "h", "value": base64.b64encode(b"v").decode()}]},
            ]
        }
    ).encode()
    _, split = as_sent(body, PLAIN, embedded="binary")
    assert split.rows == [raw, b""]
    assert split.meta == RecordMeta([b"\x01", None], [1, -1], [[], [("h", b"v")]])


def test_validated_stream_still_refuses_non_utf8_binary() -> None:
    body = json.dumps({"records": [{"value": base64.b64encode(b"\xff").decode()}]}).encode()
    validated = CompiledSchema(Stream("v", COLUMNS, "tv", shards=2))
    with pytest.raises(ProxyError) as err:
        as_sent(body, validated, embedded="binary")
    assert err.value.error_code == 42206


def test_tombstones_only_on_compacted_streams_and_keyed_records() -> None:
    body = b'{"records":[{"key":"a","value":{"v":1}},{"key":"a","value":null},{"key":"b"}]}'
    _, split = as_sent(body, COMPACTED)
    assert split.rows == [b'{"v":1}', None, None]
    assert split.meta is not None and split.meta.keys == [b'"a"', b'"a"', b'"b"']
    with pytest.raises(ProxyError, match="tombstone") as err:  # not compacted: nothing written
        as_sent(body, PLAIN)
    assert (err.value.status, err.value.error_code, err.value.row) == (422, 42206, 1)
    with pytest.raises(ProxyError, match="no key") as err:  # compacted topics keep keyed records only
        as_sent(b'{"records":[{"key":"a","value":1},{"value":2}]}', COMPACTED)
    assert err.value.row == 1
    with pytest.raises(ProxyError) as err:
        as_sent(b'{"records":[{"value":1,"partition":2}]}', PLAIN)
    assert err.value.error_code == 40402


def test_v3_each_record_alone() -> None:
    body = (
        b'{"key":{"type":"BINARY","data":"AQ=="}}'  # no value: a tombstone
        b'{"value":{"type":"STRING","data":"\\u00e9"}}'  # unkeyed on a compacted stream: refused
        b'{"key":{"type":"JSON","data":1},"value":{"type":"BINARY","data":"/w=="}}'
        b'{"key":{"type":"JSON","data":1},"value":{"type":"BINARY","data":"***"}}'  # bad base64
    )
    payload, split = as_sent(body, COMPACTED, v3=True)
    assert split.rows == [None, b"\xff"]
    assert payload.written == [0, 2]
    errors = [r.error.error_code if r.error else None for r in payload.records]
    assert errors == [None, 42206, None, 42206]
    assert [r.value_size for r in payload.records[:3]] == [0, 2, 1]


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(st.binary(max_size=64), min_size=1, max_size=5))
def test_any_bytes_come_back_exactly(values: list[bytes]) -> None:
    body = json.dumps({"records": [{"value": base64.b64encode(v).decode()} for v in values]}).encode()
    _, split = as_sent(body, PLAIN, embedded="binary")
    assert split.rows == values
    assert AsSent(list(split.rows)).nbytes == sum(map(len, values)) + len(values)


def test_declaration_defaults_checks_and_topic_configs() -> None:
    old = msgspec.json.decode(b'{"streams":{"s":{"name":"s","columns":[],"topic":"t"}}}', type=CatalogState)
    assert old.streams["s"].passthrough is False and old.streams["s"].compacted is False  # validated
    stream = Stream("s", COLUMNS, "t", passthrough=True, compacted=True)
    again = msgspec.json.decode(msgspec.json.encode(CatalogState({"s": stream})), type=CatalogState)
    assert again.streams["s"] == stream
    assert topic_configs(stream)["cleanup.policy"] == "compact"
    assert "cleanup.policy" not in quarantine_configs(stream)
    assert "cleanup.policy" not in topic_configs(Stream("s", COLUMNS, "t", passthrough=True))
    check_passthrough(stream)
    with pytest.raises(BadRequest):
        check_passthrough(Stream("s", COLUMNS, "t", compacted=True))
    with pytest.raises(BadRequest):
        check_passthrough(
            Stream("s", COLUMNS, "t", passthrough=True, mode="changelog_kv", primary_key="message")
        )


async def test_spool_keeps_tombstones_and_binary_values(tmp_path: Path) -> None:
    values: list[bytes | None] = [b"\xff\x00\n", None, b"", b'{ "a" :1 }']
    meta = RecordMeta([b"k", b"k", None, b"\x80"], [-1, 1, -1, 0], [[], [("h", b"\x00")], [], []])
    spool = Spool(tmp_path, segment_bytes=1 << 20)
    await spool.open()
    _, committed = spool.append("s", "t", values, None, None, meta)  # type: ignore[arg-type]
    await committed
    await spool.close()
    again = Spool(tmp_path, segment_bytes=1 << 20)
    await again.open()
    got: list[SpoolRecord] = []

    async def take(rec: SpoolRecord, pos: int) -> bool:
        got.append(rec)
        return True

    await again.replay(take)
    await again.close()
    [rec] = got
    assert rec.values == values and rec.meta() == meta and rec.headers is None


class _OpenGate:
    def gate(self, *, wait: bool) -> None:
        pass


async def test_a_value_larger_than_a_record_is_413_and_a_tombstone_counts_nothing() -> None:
    from gateway.errors import PayloadTooLarge
    from gateway.ingest.schema import SchemaCache
    from gateway.pipeline import Pipeline

    stream = Stream("s", COLUMNS, "ingest.s", passthrough=True, compacted=True)
    pipeline = Pipeline(None, SchemaCache(), _OpenGate(), wait_timeout_s=1.0, max_record_bytes=100)  # type: ignore[arg-type]
    meta = RecordMeta([b"k", b"k", b"k"], [-1, -1, -1], [[], [], []])
    with pytest.raises(PayloadTooLarge) as refused:
        await pipeline.admit(stream, [None, b"\xff" * 98, b"\x00" * 101], wait=False, meta=meta)
    assert refused.value.row == 2


async def test_local_sink_writes_a_tombstone_as_null(tmp_path: Path) -> None:
    from gateway.sinks.local import LocalSink

    sink = LocalSink(tmp_path)
    await sink.start()
    try:
        await (await sink.send("t", [b"{ }", None], None))  # type: ignore[list-item]
        assert sink.path_of("t").read_bytes() == b"{ }\nnull\n"
    finally:
        await sink.close()
