"""Kafka REST Proxy produce bodies (v2 `{"records": [...]}` and v3 streamed record objects) parsed
into one normalised `ProxyRecord` list, and the `Payload` that validates them against a stream.

Values are either JSON (the `json` embedded format, v3 `JSON`) — validated as rows of the stream —
or bytes (`binary` base64, v3 `BINARY`/`STRING`), accepted only by streams whose schema is one
string column. Keys, explicit partitions and headers travel to Kafka as a `RecordMeta`.

A pass-through stream (`Stream.passthrough`) is not validated: each value is kept as sent — a
JSON value's exact bytes, a binary value's decoded bytes, a v3 STRING's UTF-8 — and a null (or
absent v3) value is a tombstone, taken only by a compacted stream for a keyed record.
"""

from __future__ import annotations

import binascii
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, cast

import msgspec

from gateway.catalog.model import Stream
from gateway.errors import GatewayError, InvalidRow, MalformedBody, detach
from gateway.ingest.quarantine import BadRow, Split
from gateway.ingest.schema import CompiledSchema
from gateway.sinks.base import Header, RecordMeta

Embedded = Literal["json", "binary"]
_framer = msgspec.json.Decoder(msgspec.Raw)


class ProxyError(GatewayError):
    """An error with the REST proxies' own `error_code` (e.g. 40402, 42205)."""

    def __init__(self, status: int, error_code: int, message: str, *, row: int | None = None) -> None:
        super().__init__(message, row=row)
        self.status = status
        self.error_code = error_code
        self.code = f"restproxy_{error_code}"


PARTITION_NOT_FOUND = 40402


def partition_not_found() -> ProxyError:
    """Confluent's and Karapace's 404 for a partition the topic does not have."""
    return ProxyError(404, PARTITION_NOT_FOUND, "Partition not found.")


def invalid_format(detail: str) -> ProxyError:
    """Karapace's 422 for a body whose shape is not a produce request."""
    return ProxyError(422, 422, f"Invalid request format: {detail}")


def invalid_payload(detail: str, row: int | None = None) -> ProxyError:
    """Confluent's 42206 ("Payload error.") for a value or key the stream cannot take."""
    return ProxyError(422, 42206, f"Payload error. {detail}", row=row)


def bad_request(detail: str, row: int | None = None) -> ProxyError:
    """Karapace's 400 (error_code 400) for a body it cannot read as a v2 produce request."""
    return ProxyError(400, 400, detail, row=row)


def unknown_partition(i: int, partition: int, shards: int) -> ProxyError:
    """One v2 record's own result when its partition does not exist: Karapace writes the other
    records and answers this one with error_code 2 (Kafka's retriable UNKNOWN_TOPIC_OR_PARTITION)."""
    return ProxyError(
        422, 2, f"record {i}: partition {partition} does not exist (the topic has {shards})", row=i
    )


# ---- wire shapes -------------------------------------------------------------------------------
class HeaderIn(msgspec.Struct, forbid_unknown_fields=True):
    """A record header as v3 sends it: a name and a base64 value (or null)."""

    name: str
    value: str | None = None


class V2Record(msgspec.Struct, forbid_unknown_fields=True):
    """One record of a v2 produce request."""

    value: msgspec.Raw = msgspec.Raw(b"null")
    key: msgspec.Raw = msgspec.Raw(b"null")
    partition: int | None = None
    headers: list[HeaderIn] | None = None  # an extension: Confluent's v2 has no headers


class V2Body(msgspec.Struct, forbid_unknown_fields=True):
    """A v2 produce request; the schema fields are accepted and ignored (json/binary only)."""

    records: list[V2Record]
    key_schema: str | None = None
    key_schema_id: int | None = None
    value_schema: str | None = None
    value_schema_id: int | None = None


class V3Data(msgspec.Struct, forbid_unknown_fields=True):
    """A v3 key or value: its type and data (`schema_id` etc. are not supported)."""

    type: Literal["JSON", "BINARY", "STRING"] = "JSON"
    data: msgspec.Raw = msgspec.Raw(b"null")


class V3Record(msgspec.Struct, forbid_unknown_fields=True):
    """One record of a v3 produce stream."""

    partition_id: int | None = None
    headers: list[HeaderIn] | None = None
    key: V3Data | None = None
    value: V3Data | None = None
    timestamp: str | None = None  # accepted; Kafka's timestamp is the gateway's append time


_v2_decoder = msgspec.json.Decoder(V2Body)
_v3_decoder = msgspec.json.Decoder(V3Record)


# ---- normalised records ------------------------------------------------------------------------
@dataclass(slots=True)
class ProxyRecord:
    """A produce record: its Kafka key, partition (-1: any), headers, and a JSON or text value."""

    key: bytes | None = None
    partition: int = -1
    headers: list[Header] = field(default_factory=list)
    json: bytes | None = None  # the value as JSON text (validated as a row)
    text: str | None = None  # the value as text (for a one-string-column stream)
    error: ProxyError | None = None  # set when the record is refused (v3 answers it alone)
    key_type: str = "BINARY"  # v3: the type the key and value were sent as, and their sizes
    key_size: int = 0
    value_type: str = "JSON"
    value_size: int = 0


@dataclass(slots=True)
class RawRecord(ProxyRecord):
    """A pass-through stream's record (a subclass: validated records carry no field of its own)."""

    raw: bytes | None = None  # the value as sent (None: a tombstone)


def _b64(text: str, what: str) -> bytes:
    try:
        return binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):
        raise invalid_payload(f"{what} is not valid base64") from None


def _utf8(text: str, what: str) -> bytes:
    """`text` as UTF-8; JSON may carry lone surrogates, which no Kafka client can encode."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise invalid_payload(f"{what} is not valid Unicode") from None


def _headers(headers: list[HeaderIn] | None) -> list[Header]:
    out: list[Header] = []
    for h in headers or ():
        _utf8(h.name, "a header name")
        out.append((h.name, _b64(h.value, "a header value") if h.value is not None else b""))
    return out


def _compact(raw: msgspec.Raw) -> bytes:
    """A JSON key as Kafka gets it from the proxies' json format: compact JSON."""
    try:
        return msgspec.json.encode(msgspec.json.decode(raw))
    except (msgspec.DecodeError, msgspec.EncodeError, UnicodeEncodeError, RecursionError):
        raise invalid_payload("the key is not JSON that Kafka can carry") from None


def _text_of(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise invalid_payload(
            f"{what} is not UTF-8 text, and the stream's one string column holds text"
        ) from None


def _base64_string(raw: msgspec.Raw, what: str) -> bytes | None:
    """A v2 binary key or value; Karapace answers 400 (error_code 400) when it is not base64."""
    value = msgspec.json.decode(raw)
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad_request(f"{what} is not a base64 string")
    try:
        return binascii.a2b_base64(value, strict_mode=True)
    except (binascii.Error, ValueError):
        raise bad_request(f"{what} is not a base64 string") from None


class V2Records(list[ProxyRecord]):
    """The records of a v2 produce body that named schema ids (echoed in the reply); without
    them a plain list (indexing a subclass of list costs more, on the hot path)."""

    key_schema_id: int | None = None
    value_schema_id: int | None = None


def _int_or_keep(value: Any) -> Any:
    """A decimal string as its int (Karapace converts `partition` and schema ids so)."""
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return value


def _reshaped(body: bytes, exc: msgspec.ValidationError) -> V2Body:
    """A body that did not decode as a V2Body: Karapace's 400s for the wrong JSON types, its
    422 for the wrong fields, and numbers sent as strings converted (error path only)."""
    data = msgspec.json.decode(body)
    if not isinstance(data, dict):
        raise bad_request("Malformed request: the body must be a JSON object")
    records = data.get("records")
    if records is not None and not isinstance(records, list):
        raise bad_request("'records' must be an array")
    for i, r in enumerate(records or ()):
        if not isinstance(r, dict):
            raise bad_request(f"Produce record must be an object (record {i})", row=i)
        if "partition" in r:
            r["partition"] = _int_or_keep(r["partition"])
    for k in ("key_schema_id", "value_schema_id"):
        if k in data:
            data[k] = _int_or_keep(data[k])
    try:
        return _v2_decoder.decode(msgspec.json.encode(data))
    except msgspec.ValidationError:
        raise invalid_format(str(exc)) from None


def _v2_body(body: bytes) -> V2Body:
    try:
        try:
            parsed = _v2_decoder.decode(body)
        except msgspec.ValidationError as exc:
            parsed = _reshaped(body, exc)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise MalformedBody(f"request body is not valid JSON: {exc}") from None
    if not parsed.records:
        raise invalid_format("`records` is empty")
    return parsed


def v2_records(body: bytes, embedded: Embedded, raw: bool = False) -> list[ProxyRecord]:
    """The records of a v2 produce body (a 4xx ProxyError when its shape is wrong); `raw`: for a
    pass-through stream (`RawRecord`s, values kept as sent)."""
    parsed = _v2_body(body)
    if raw:
        return _v2_as_sent(parsed, embedded)
    out: list[ProxyRecord] = []
    for i, r in enumerate(parsed.records):
        # -1 (or none): any partition, as librdkafka's UA partition; other missing ones are
        # answered per record once the stream's partition count is known (ProxyPayload)
        rec = ProxyRecord(partition=-1 if r.partition is None else r.partition, headers=_headers(r.headers))
        try:
            if embedded == "json":
                rec.key = None if bytes(r.key) == b"null" else _compact(r.key)
                rec.json = bytes(r.value)
            else:
                rec.key = _base64_string(r.key, f"the key of record {i}")
                value = _base64_string(r.value, f"the value of record {i}")
                rec.text = None if value is None else _text_of(value, f"the value of record {i}")
        except ProxyError as exc:
            exc.row = i
            raise
        out.append(rec)
    return _named(out, parsed)


def _named(out: list[ProxyRecord], parsed: V2Body) -> list[ProxyRecord]:
    """The records, carrying the body's schema ids when it names any (echoed in the reply)."""
    if parsed.key_schema_id is None and parsed.value_schema_id is None:
        return out
    named = V2Records(out)
    named.key_schema_id, named.value_schema_id = parsed.key_schema_id, parsed.value_schema_id
    return named


def _v2_as_sent(parsed: V2Body, embedded: Embedded) -> list[ProxyRecord]:
    """A pass-through stream's v2 records: a JSON value's bytes as sent, a binary one decoded."""
    out: list[ProxyRecord] = []
    for i, r in enumerate(parsed.records):
        rec = RawRecord(partition=-1 if r.partition is None else r.partition, headers=_headers(r.headers))
        if r.partition is not None and r.partition < -1:  # -1: any partition, as validated
            raise partition_not_found()
        try:
            if embedded == "json":
                rec.key = None if bytes(r.key) == b"null" else _compact(r.key)
                rec.raw = None if bytes(r.value) == b"null" else bytes(r.value)
            else:
                rec.key = _base64_string(r.key, f"the key of record {i}")
                rec.raw = _base64_string(r.value, f"the value of record {i}")
        except ProxyError as exc:
            exc.row = i
            raise
        out.append(rec)
    return _named(out, parsed)


SCHEMA_FORMATS = ("avro", "jsonschema", "protobuf")  # embedded formats that need a registry


def schema_format_refusal(body: bytes, fmt: str) -> list[ProxyRecord]:
    """A v2 body in a schema format (avro, jsonschema, protobuf): Karapace's 422 (42201 keys,
    42202 values) when keys or values come without their schema or schema id; else 415, as the
    gateway has no schema registry. Raises always (after the body's shape checks)."""
    v2_records(body, "json")  # the shape errors first, as Karapace
    data = msgspec.json.decode(body)
    for part, code in (("key", 42201), ("value", 42202)):
        if all(r.get(part) is None for r in data["records"]):
            continue
        if not (data.get(f"{part}_schema") or data.get(f"{part}_schema_id")):
            raise ProxyError(
                422,
                code,
                f"Request includes {part}s and uses a format that requires schemas but does "
                f"not include the {part}_schema or {part}_schema_id fields",
            )
    raise ProxyError(
        415,
        415,
        f"the {fmt} embedded format needs a schema registry, which the gateway does not have: "
        "send json or binary",
    )


def v3_record(text: bytes, raw: bool = False) -> ProxyRecord:
    """One v3 record object; a record that does not parse carries its error (v3 answers each
    record on its own). `raw`: for a pass-through stream (the value as sent, in `raw`; an absent
    or null value is a tombstone)."""
    try:
        r = _v3_decoder.decode(text)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError) as exc:
        return ProxyRecord(error=ProxyError(400, 400, f"invalid record: {exc}"))
    partition = -1 if r.partition_id is None else r.partition_id
    rec = RawRecord(partition=partition) if raw else ProxyRecord(partition=partition)
    try:
        if r.partition_id is not None and r.partition_id < 0:
            raise partition_not_found()
        rec.headers = _headers(r.headers)
        if r.key is not None:
            rec.key = _v3_bytes(r.key, "the key")
            rec.key_type, rec.key_size = r.key.type, len(rec.key or b"")
        if isinstance(rec, RawRecord):
            _v3_raw_value(rec, r.value)
            return rec
        if r.value is None:
            raise invalid_payload("a record needs a value")
        rec.value_type = r.value.type
        if r.value.type == "JSON":
            rec.json = bytes(r.value.data)
            rec.value_size = len(rec.json)
        else:
            data = _v3_bytes(r.value, "the value")
            rec.text = None if data is None else _text_of(data, "the value")
            rec.value_size = len(data or b"")
    except ProxyError as exc:
        rec.error = detach(exc)  # kept on the record: no traceback back to this frame (a cycle)
    return rec


def _v3_raw_value(rec: RawRecord, value: V3Data | None) -> None:
    """A pass-through stream's v3 value as sent: JSON's bytes, BINARY decoded, STRING as UTF-8."""
    if value is None:
        return  # a tombstone
    rec.value_type = value.type
    if value.type == "JSON":
        rec.raw = None if bytes(value.data) == b"null" else bytes(value.data)
    else:
        rec.raw = _v3_bytes(value, "the value")
    rec.value_size = len(rec.raw or b"")


def _v3_bytes(data: V3Data, what: str) -> bytes | None:
    if data.type == "JSON":
        return None if bytes(data.data) == b"null" else _compact(data.data)
    value = msgspec.json.decode(data.data)
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid_payload(f"{what} of type {data.type} must be a string")
    return _b64(value, what) if data.type == "BINARY" else _utf8(value, what)


def split_objects(body: bytes) -> list[bytes]:
    """A v3 stream of record objects (whitespace or newline separated) into each object's text."""
    try:
        return [bytes(o) for o in _framer.decode_lines(body)]
    except msgspec.DecodeError as exc:
        raise MalformedBody(f"request body is not a stream of JSON objects: {exc}") from None


# ---- validation against the stream ----------------------------------------------------------
def _value_row(schema: CompiledSchema, rec: ProxyRecord, i: int) -> Any:
    """The row one record's value makes (a ProxyError, or InvalidRow naming the record)."""
    if rec.json is not None:
        return schema.decode_ndjson(rec.json, i)[0]
    if rec.text is None:
        raise invalid_payload(f"record {i} has a null value; the gateway stores rows, not tombstones", row=i)
    if not schema.one_string_column:
        raise invalid_payload(
            f"record {i} has a binary value, but stream "
            f"{schema.stream.name!r} is not one string column: send its rows "
            "as JSON (application/vnd.kafka.json.v2+json)",
            row=i,
        )
    return schema.rows_from_strings([rec.text])[0]


def _check_placement(schema: CompiledSchema, rec: ProxyRecord, i: int) -> None:
    if not -1 <= rec.partition < schema.stream.shards:
        raise partition_not_found()
    if rec.key is not None and schema.stream.keyed:
        raise invalid_payload(
            f"record {i} has a key, but stream {schema.stream.name!r} takes "
            "its Kafka key from its primary key",
            row=i,
        )


class Parse(Protocol):
    """Makes a body's records; `raw`: for a pass-through stream (values kept as sent)."""

    def __call__(self, body: bytes, raw: bool = False, /) -> list[ProxyRecord]: ...


class ProxyPayload:
    """The records of a produce request, read after admission and validated against the stream.

    v2 (default): one invalid record refuses the whole request (422, nothing written), as both
    proxies do for data that does not fit a schema, except a record naming a partition the topic
    does not have: it keeps its error and the others are written (as Karapace); with
    `quarantine`, records whose JSON value does not fit go to the stream's quarantine topic
    instead, each keeping its error. v3 (`each`): each record stands alone; refused ones keep
    their error, the others are written. `parse(body, raw)` makes the records; `raw` for a
    pass-through stream, whose values are not rows: they are written as sent (see `_as_sent`),
    `quarantine` has nothing to do."""

    def __init__(
        self,
        chunks: AsyncIterable[bytes],
        parse: Parse,
        *,
        each: bool = False,
        quarantine: bool = False,
    ) -> None:
        self._chunks = chunks
        self._parse = parse
        self.each = each
        self.quarantine = quarantine
        self.nbytes = 0
        self.records: list[ProxyRecord] = []
        self.written: list[int] = []  # indices of the records that were queued, in order

    as_sent = True  # writes a pass-through stream's values as sent

    async def rows(self, schema: CompiledSchema, hold: Callable[[int], None]) -> Split:
        parts = []
        async for chunk in self._chunks:
            self.nbytes += len(chunk)
            hold(len(chunk))  # the whole body is buffered: counted against the memory cap
            parts.append(chunk)
        if schema.stream.passthrough:
            self.records = self._parse(b"".join(parts), True)
            return self._as_sent(schema.stream)
        self.records = self._parse(b"".join(parts))
        rows: list[Any] | None = None
        bad: list[BadRow] = []
        if not self.each and all(r.json is not None for r in self.records) and self._placed(schema):
            try:  # the common case: every value fits, one C call decodes them all
                rows = schema.decode_ndjson(b"\n".join(r.json or b"" for r in self.records), 0)
                self.written = list(range(len(self.records)))
            except InvalidRow:
                if not self.quarantine:
                    raise
        if rows is None:
            rows = self._one_by_one(schema, bad)
        return placed_split(rows, bad, self.records, self.written)

    def _placed(self, schema: CompiledSchema) -> bool:
        """Check every record's placement; False when one names a missing partition (v2 answers
        it on its own: `_one_by_one`)."""
        try:
            for i, rec in enumerate(self.records):
                _check_placement(schema, rec, i)
        except ProxyError as err:
            if err.error_code != PARTITION_NOT_FOUND:
                raise
            return False
        return True

    def _one_by_one(self, schema: CompiledSchema, bad: list[BadRow]) -> list[Any]:
        """Validate each record alone: a refused one keeps its error (v3), an invalid JSON value
        is quarantined (v2 with quarantine); otherwise the first refusal fails the request."""
        if self.each:
            return each_alone(schema, self.records, self.written)
        rows: list[Any] = []
        for i, rec in enumerate(self.records):
            if rec.error is not None:
                continue
            try:
                _check_placement(schema, rec, i)
                rows.append(_value_row(schema, rec, i))
            except InvalidRow as err:
                if self.quarantine and rec.json is not None:
                    bad.append(BadRow(i, err.column, err.message, rec.json))
                    rec.error = ProxyError(422, 42205, err.message, row=i)
                else:
                    raise
                continue
            except ProxyError as err:
                if err.error_code == PARTITION_NOT_FOUND:  # v2: answered alone (Karapace)
                    rec.error = unknown_partition(i, rec.partition, schema.stream.shards)
                else:
                    raise
                continue
            self.written.append(i)
        return rows

    def _as_sent(self, stream: Stream) -> Split:
        return as_sent_split(stream, self.records, self.written, each=self.each)


def each_alone(
    schema: CompiledSchema, records: list[ProxyRecord], written: list[int], first: int = 0
) -> list[Any]:
    """v3: validate each record alone; a refused one keeps its error (400 for a value that does
    not fit), the others' rows are returned and their indices appended to `written`. `first`: the
    first record's place in the request (rows are numbered from it)."""
    rows: list[Any] = []
    for j, rec in enumerate(records):
        if rec.error is not None:
            continue
        i = first + j
        try:
            _check_placement(schema, rec, i)
            rows.append(_value_row(schema, rec, i))
        except InvalidRow as err:
            rec.error = ProxyError(400, 400, err.message, row=i)
            continue
        except ProxyError as err:
            rec.error = detach(err)
            continue
        written.append(j)
    return rows


def placed_split(rows: list[Any], bad: list[BadRow], records: list[ProxyRecord], written: list[int]) -> Split:
    """The rows, with every written record's key, partition and headers when one has any."""
    kept = [records[i] for i in written]
    if not any(r.key is not None or r.partition >= 0 or r.headers for r in kept):
        return Split(rows, bad)  # nothing of their own: the sink's fast paths place them
    meta = RecordMeta([r.key for r in kept], [r.partition for r in kept], [r.headers for r in kept])
    return Split(rows, bad, meta)


def as_sent_split(
    stream: Stream, records: list[ProxyRecord], written: list[int], *, each: bool, first: int = 0
) -> Split:
    """A pass-through stream's records (parsed `raw`): each value as sent (None: a tombstone),
    checked only for what Kafka needs (see `_check_as_sent`), every record's own details in the
    meta; the indices of those written go to `written`. `each`: a refused record keeps its error
    (v3) instead of failing the request; `first`: the first record's place in the request."""
    values: list[bytes | None] = []
    meta = RecordMeta([], [], [])
    # the parser was told `raw`: every record is a RawRecord
    for i, rec in enumerate(cast(list[RawRecord], records)):
        if rec.error is not None:
            continue
        try:
            _check_as_sent(stream, rec, first + i)
        except ProxyError as err:
            if not each:
                raise
            rec.error = detach(err)
            continue
        written.append(i)
        values.append(rec.raw)
        meta.keys.append(rec.key)
        meta.partitions.append(rec.partition)
        meta.headers.append(rec.headers)
    return Split(values, [], meta)


def _check_as_sent(stream: Stream, rec: RawRecord, i: int) -> None:
    """A pass-through record Kafka takes: a partition the topic has; on a compacted topic a key
    (Kafka refuses unkeyed records there); a tombstone only there (elsewhere a null value would
    be a record with no value, which no consumer of the proxies' topics expects)."""
    if rec.partition >= stream.shards:
        raise partition_not_found()
    if rec.raw is None and not stream.compacted:
        raise invalid_payload(
            f"record {i} has a null value (a tombstone), but stream {stream.name!r} is not "
            "compacted: only a compacted pass-through stream takes tombstones",
            row=i,
        )
    if rec.key is None and stream.compacted:
        raise invalid_payload(
            f"record {i} has no key, but stream {stream.name!r} is compacted: Kafka keeps only "
            "keyed records in a compacted topic",
            row=i,
        )


def v3_records(body: bytes, raw: bool = False) -> list[ProxyRecord]:
    """The records of a v3 produce stream, each parsed alone (see `v3_record`)."""
    return [v3_record(o, raw) for o in split_objects(body)]
