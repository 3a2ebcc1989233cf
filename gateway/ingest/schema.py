"""A stream's columns compiled once into msgspec types: one C pass decodes and validates a body's rows,
and one C pass encodes them as the JSON values (and keys) of their Kafka records."""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import starmap
from operator import attrgetter, itemgetter
from typing import Any, Optional

import msgspec

from gateway.catalog.model import Column, Stream
from gateway.errors import BadRequest, InvalidRow, MalformedBody
from gateway.ingest.types import ColumnType, nullable_of, parse_type

UTC = datetime.UTC
_PATH = re.compile(r"^(.*?)(?: - at `\$\[(\d+)\](.*)`)?$", re.S)
_MISSING_FIELD = re.compile(r"missing required field `(.+)`")
TOO_DEEP = "JSON is nested too deeply"
NOW_DEFAULTS = ("now()", "now64()", "now64(3)", "now64(6)", "now64(9)")


def _now() -> datetime.datetime:
    return datetime.datetime.now(UTC)


class SchemaError(ValueError):
    """The columns of a stream definition are invalid (bad type, bad default, bad primary key)."""


@dataclass(slots=True)
class Encoded:
    """A request's rows as Kafka records: JSON values, optional keys, and their total size."""

    values: list[bytes]
    keys: list[bytes] | None
    nbytes: int


@dataclass(slots=True)
class _Field:
    column: Column
    ctype: ColumnType
    py: Any
    default: Any  # msgspec.NODEFAULT when the column is required


def _default_of(col: Column, ctype: ColumnType, py: Any) -> Any:
    if col.default is None or col.default == "":
        return None if (ctype.nullable or col.nullable) else msgspec.NODEFAULT
    text = col.default.strip()
    if ctype.is_datetime and text.lower() in NOW_DEFAULTS:
        return msgspec.field(default_factory=_now)
    if ctype.is_stringlike and not text.startswith('"'):
        if len(text) >= 2 and text[0] == text[-1] == "'":
            text = text[1:-1].replace("\\'", "'")
        text = msgspec.json.encode(text).decode()
    try:
        value = msgspec.json.decode(text, type=py)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise SchemaError(f"default {col.default!r} of column {col.name!r} is not a {col.type}: "
                          f"{exc}") from None
    if isinstance(value, list | dict):
        frozen = msgspec.json.encode(value)
        return msgspec.field(default_factory=lambda: msgspec.json.decode(frozen, type=py))
    return value


def _compile_field(col: Column) -> _Field:
    if not col.name or len(col.name) > 255:
        raise SchemaError(f"column name {col.name!r} must be 1 to 255 characters")
    try:
        ctype = parse_type(col.type)
    except ValueError as exc:
        raise SchemaError(f"column {col.name!r}: {exc}") from None
    py = ctype.py
    if ctype.is_datetime:  # top-level datetimes also accept epoch seconds; normalised after decode
        py = datetime.datetime | int | float
        if ctype.nullable:
            py = Optional[py]  # noqa: UP045
    if col.nullable and not ctype.nullable:
        py = nullable_of(py)
    return _Field(col, ctype, py, _default_of(col, ctype, py))


class CompiledSchema:
    """Decoders, encoders and error translation for one version of one stream's schema."""

    def __init__(self, stream: Stream, *, forbid_unknown: bool = False) -> None:
        names = [c.name for c in stream.columns]
        if not names:
            raise SchemaError("a stream needs at least one column")
        if len(set(names)) != len(names):
            raise SchemaError("column names must be unique")
        self.stream = stream
        self.forbid_unknown = forbid_unknown
        self.fields = [_compile_field(c) for c in stream.columns]
        self.columns = names
        self._attr = {c: f"f{i}" for i, c in enumerate(names)}
        self.row_type = self._struct("Row", self.fields, kw_only=True)
        self.ndjson_decoder = msgspec.json.Decoder(self.row_type)
        self.encoder = msgspec.json.Encoder()
        self._datetime_attrs = [self._attr[f.column.name] for f in self.fields if f.ctype.is_datetime]
        self._compact: dict[tuple[str, ...], tuple[msgspec.json.Decoder[Any], Callable[..., Any]]] = {}
        key_cols = stream.key_columns()
        for k in key_cols:
            if k not in self._attr:
                raise SchemaError(f"primary key column {k!r} is not a column of the stream")
        if stream.keyed and not key_cols:
            raise SchemaError(f"mode {stream.mode!r} needs a primary_key")
        self._key_getter: Callable[[Any], Any] | None = (
            attrgetter(*(self._attr[k] for k in key_cols)) if key_cols else None
        )
        self._key_is_text = len(key_cols) == 1 and self.fields[names.index(key_cols[0])].py is str
        self._lines_attr = self._attr[names[0]] if len(names) == 1 else None

    def _struct(self, name: str, fields: Sequence[_Field], *, kw_only: bool) -> Any:
        spec: list[Any] = []
        for f in fields:
            attr = self._attr[f.column.name]
            spec.append((attr, f.py) if f.default is msgspec.NODEFAULT else (attr, f.py, f.default))
        return msgspec.defstruct(
            f"{name}_{self.stream.name}", spec, kw_only=kw_only,
            rename={self._attr[f.column.name]: f.column.name for f in fields},
            forbid_unknown_fields=self.forbid_unknown, gc=False,
        )

    # ---- decoding ---------------------------------------------------------------------------
    def decode_ndjson(self, data: bytes | memoryview, first_row: int) -> list[Any]:
        """Decode and validate a run of whole JSON objects (NDJSON, or `{..}{..}` unseparated)."""
        try:
            rows: list[Any] = self.ndjson_decoder.decode_lines(data)
        except msgspec.ValidationError as exc:
            raise self.row_error(str(exc), first_row, None) from None
        except UnicodeDecodeError as exc:
            raise MalformedBody(f"body is not valid UTF-8: {exc.reason}") from None
        except RecursionError:
            raise MalformedBody(TOO_DEEP) from None
        self._normalise(rows, first_row)
        return rows

    def compact_decoder(self, columns: Sequence[str]) -> tuple[msgspec.json.Decoder[Any],
                                                              Callable[..., Any]]:
        """A decoder for `data` arrays in the given column order, and the row builder it feeds."""
        key = tuple(columns)
        hit = self._compact.get(key)
        if hit is not None:
            return hit
        if len(self._compact) > 64:
            self._compact.clear()
        if len(set(key)) != len(key):
            raise BadRequest("`columns` lists a column twice")
        known = [c for c in key if c in self._attr]
        unknown = [c for c in key if c not in self._attr]
        if unknown and self.forbid_unknown:
            raise BadRequest(f"unknown column {unknown[0]!r}", column=unknown[0])
        by_name = {f.column.name: f for f in self.fields}
        missing = [f for f in self.fields
                   if f.column.name not in key and f.default is msgspec.NODEFAULT]
        if missing:
            raise InvalidRow(f"required column {missing[0].column.name!r} is not in `columns`",
                             column=missing[0].column.name)
        present = [by_name[c] for c in known]
        required_first = [_Field(f.column, f.ctype, f.py, msgspec.NODEFAULT) for f in present]
        rest = [f for f in self.fields if f.column.name not in key]
        row_type = self._struct("Compact", required_first + rest, kw_only=False)
        item_types = tuple(by_name[c].py if c in by_name else msgspec.Raw for c in key)
        decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(list[tuple[item_types]])  # type: ignore[valid-type]
        if unknown:
            keep = itemgetter(*[i for i, c in enumerate(key) if c in self._attr])
            if len(known) == 1:
                def build(rows: Iterable[Any]) -> list[Any]:
                    return [row_type(keep(t)) for t in rows]
            else:
                def build(rows: Iterable[Any]) -> list[Any]:
                    return list(starmap(row_type, map(keep, rows)))
        else:
            def build(rows: Iterable[Any]) -> list[Any]:
                return list(starmap(row_type, rows))
        self._compact[key] = (decoder, build)
        return decoder, build

    def decode_compact_data(self, columns: Sequence[str], data: bytes) -> list[Any]:
        """Decode a compact body's `data` (an array of arrays) given its `columns`."""
        decoder, build = self.compact_decoder(columns)
        try:
            tuples = decoder.decode(data)
        except msgspec.ValidationError as exc:
            raise self.row_error(str(exc), 0, columns) from None
        except UnicodeDecodeError as exc:
            raise MalformedBody(f"body is not valid UTF-8: {exc.reason}") from None
        except RecursionError:
            raise MalformedBody(TOO_DEEP) from None
        rows: list[Any] = build(tuples)
        self._normalise(rows, 0)
        return rows

    def rows_from_strings(self, texts: Sequence[str]) -> list[Any]:
        """Rows of a one-string-column stream from raw strings (`raw` and `lines` formats)."""
        if self._lines_attr is None or self.fields[0].py is not str:
            raise BadRequest("the raw and lines formats need a stream with one string column")
        name = self._lines_attr
        make = self.row_type
        return [make(**{name: t}) for t in texts]

    def _normalise(self, rows: list[Any], first_row: int) -> None:
        """Turn epoch seconds in datetime columns into datetimes (UTC)."""
        for attr in self._datetime_attrs:
            get = attrgetter(attr)
            for i, row in enumerate(rows):
                v = get(row)
                if v is not None and v.__class__ is not datetime.datetime:
                    try:
                        setattr(row, attr, datetime.datetime.fromtimestamp(v, UTC))
                    except (OverflowError, OSError, ValueError):
                        column = self.columns[int(attr[1:])]
                        raise InvalidRow(f"row {first_row + i}, column {column!r}: epoch value "
                                         f"{v!r} is out of range for a datetime",
                                         row=first_row + i, column=column) from None

    def row_error(self, message: str, first_row: int, columns: Sequence[str] | None) -> InvalidRow:
        """Turn a msgspec validation message with a `$[i]…` path into a row/column error."""
        m = _PATH.match(message)
        assert m is not None
        what, idx, rest = m.group(1), m.group(2), m.group(3) or ""
        row = first_row + int(idx) if idx is not None else None
        column: str | None = None
        if columns is not None and rest.startswith("["):
            pos = int(rest[1 : rest.index("]")])
            column = columns[pos] if pos < len(columns) else None
            if column is None:
                what = f"row has more values than `columns` ({len(columns)})"
        elif rest.startswith("."):
            tail = rest[1:]
            column = max((c for c in self.columns if tail == c or tail.startswith((c + ".", c + "["))),
                         key=len, default=tail)
        if column is None:
            miss = _MISSING_FIELD.search(what)
            column = miss.group(1) if miss else None
        if "matching regex" in what and column in self.columns:
            what = f"Expected a value of type {self.fields[self.columns.index(column)].column.type}"
        if columns is not None and what.startswith("Expected `array` of length"):
            what = f"row must have exactly {len(columns)} values, one per entry of `columns`"
        where = f"row {row}" if row is not None else "body"
        if column is not None:
            where += f", column {column!r}"
        return InvalidRow(f"{where}: {what}", row=row, column=column)

    # ---- encoding ---------------------------------------------------------------------------
    def encode(self, rows: list[Any]) -> Encoded:
        """Encode rows as Kafka record values (JSON objects, every column) and keys (kv modes)."""
        blob = self.encoder.encode_lines(rows)
        values = blob.split(b"\n")
        values.pop()  # encode_lines ends every row with a newline
        keys: list[bytes] | None = None
        if self._key_getter is not None:
            parts = list(map(self._key_getter, rows))
            if self._key_is_text:
                keys = [p.encode() for p in parts]
            else:
                kblob = self.encoder.encode_lines(parts)
                keys = kblob.split(b"\n")
                keys.pop()
        return Encoded(values, keys, len(blob))


@dataclass
class SchemaCache:
    """Compiled schemas by stream name, recompiled when the catalog hands out a new Stream object."""

    forbid_unknown: bool = False
    _cache: dict[str, CompiledSchema] = field(default_factory=dict)

    def get(self, stream: Stream) -> CompiledSchema:
        """The compiled schema of `stream` (compiled on first use, then cached)."""
        hit = self._cache.get(stream.name)
        if hit is None or hit.stream is not stream:
            hit = CompiledSchema(stream, forbid_unknown=self.forbid_unknown)
            self._cache[stream.name] = hit
        return hit

    def forget(self, name: str) -> None:
        """Drop a stream's compiled schema (after delete)."""
        self._cache.pop(name, None)


def check_columns(stream: Stream) -> None:
    """Raise SchemaError when the stream's columns or primary key cannot be compiled."""
    CompiledSchema(stream)
