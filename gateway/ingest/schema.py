"""A stream's columns compiled once into msgspec types: one C pass decodes and validates a body's rows,
and one C pass encodes them as the JSON values (and keys) of their Kafka records."""

from __future__ import annotations

import datetime
import functools
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
from gateway.sinks.base import lines_of

UTC = datetime.UTC
_PATH = re.compile(r"^(.*?)(?: - at `\$\[(\d+)\](.*)`)?$", re.S)
_EPOCH_IN_DATETIME = re.compile(r"Expected `datetime( \| null)?`, got `(int|float)`")
_MISSING_FIELD = re.compile(r"(?:missing required field|contains unknown field) `(.+)`")
NOW_DEFAULTS = ("now()", "now64()", "now64(3)", "now64(6)", "now64(9)")


def _now() -> datetime.datetime:
    return datetime.datetime.now(UTC)


class SchemaError(ValueError):
    """The columns of a stream definition are invalid (bad type, bad default, bad primary key)."""


@dataclass(slots=True)
class Encoded:
    """A request's rows as Kafka records: their JSON values as one run of newline-terminated
    lines, optional keys, and how many rows."""

    lines: bytes
    keys: list[bytes] | None
    rows: int

    @property
    def nbytes(self) -> int:
        """The values' size, a newline each included."""
        return len(self.lines)

    @property
    def values(self) -> list[bytes]:
        """One bytes object per row's value (made on each use: the common path needs none)."""
        return lines_of(self.lines)


def _one_line_each(encoder: msgspec.json.Encoder, items: list[Any]) -> bytes:
    """`items` as JSON, one line each: the newlines are the record boundaries downstream. A `json`
    column keeps the client's bytes (msgspec.Raw), which may hold newlines between tokens; rows
    holding one are compacted (a scan of the blob finds them, the rare path re-encodes)."""
    blob = encoder.encode_lines(items)
    if blob.count(b"\n") == len(items):
        return blob
    compact = msgspec.json.format
    return b"".join([compact(encoder.encode(item), indent=-1) + b"\n" for item in items])


@dataclass(slots=True)
class _Field:
    column: Column
    ctype: ColumnType
    py: Any  # the strict type: what almost every row matches
    default: Any  # msgspec.NODEFAULT when the column is required
    lenient_py: Any = None  # datetimes: also epoch seconds (int | float), converted after decoding


# A default of a range-checked type (decimal, uint64, arrays of them) is refused above this length
# before it is parsed: a 76-digit decimal is 80 characters written out, and a million digits cost.
MAX_CHECKED_DEFAULT = 4096


def _default_of(col: Column, ctype: ColumnType, py: Any) -> Any:
    if col.default is None or col.default == "":
        return None if (ctype.nullable or col.nullable) else msgspec.NODEFAULT
    text = col.default.strip()
    if ctype.is_datetime and text.lower() in NOW_DEFAULTS:
        return msgspec.field(default_factory=_now)
    if ctype.check is not None and len(text) > MAX_CHECKED_DEFAULT:  # before parsing it
        raise SchemaError(
            f"default of column {col.name!r} is longer than {MAX_CHECKED_DEFAULT} "
            f"characters, too long for a {col.type}"
        )
    if ctype.is_stringlike and not text.startswith('"'):
        if len(text) >= 2 and text[0] == text[-1] == "'":
            text = text[1:-1].replace("\\'", "'")
        text = msgspec.json.encode(text).decode()
    try:
        value = msgspec.json.decode(text, type=py)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise SchemaError(
            f"default {col.default!r} of column {col.name!r} is not a {col.type}: {exc}"
        ) from None
    if ctype.check is not None and not ctype.check(value):
        raise SchemaError(
            f"default {col.default[:80]!r} of column {col.name!r} is out of range "
            f"for {col.type}{ctype.check_hint}"
        )
    if isinstance(value, list | dict):
        frozen = msgspec.json.encode(value)
        return msgspec.field(default_factory=lambda: msgspec.json.decode(frozen, type=py))
    return value


# Column names: printable, and none of the characters that quote or escape in JSON, error messages
# (`name`) and logs: `"`, `\`, `` ` `` and control characters.
COLUMN_NAME = re.compile(r'[^\x00-\x1f\x7f-\x9f"\\`\u2028\u2029]{1,255}')
# A compact body may name columns the stream does not have (they are skipped), but not without bound:
# each distinct `columns` list compiles (and caches) decoders sized by its length.
MAX_EXTRA_COLUMNS = 64
MAX_CACHED_COLUMNS = 16_384


def _compile_field(col: Column) -> _Field:
    if not COLUMN_NAME.fullmatch(col.name):
        raise SchemaError(
            f"column name {col.name[:80]!r} must be 1 to 255 characters, none of them"
            ' a control character, ", \\ or `'
        )
    try:
        ctype = parse_type(col.type)
    except ValueError as exc:
        raise SchemaError(f"column {col.name!r}: {exc}") from None
    py = ctype.py
    lenient = py
    if ctype.is_datetime:  # top-level datetimes also accept epoch seconds
        lenient = datetime.datetime | int | float
        if ctype.nullable:
            lenient = Optional[lenient]  # noqa: UP045
    if col.nullable and not ctype.nullable:
        py, lenient = nullable_of(py), nullable_of(lenient)
    return _Field(col, ctype, py, _default_of(col, ctype, py), lenient)


_CompactCodec = tuple[msgspec.json.Decoder[Any], msgspec.json.Decoder[Any], Callable[..., Any]]


class CompiledSchema:
    """Decoders, encoders and error translation for one version of one stream's schema."""

    def __init__(self, stream: Stream, *, forbid_unknown: bool = False, max_row_bytes: int = 1 << 62) -> None:
        self.max_row_bytes = max_row_bytes  # the framers refuse a longer row text (413) at once
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
        # Epoch numbers in datetime columns are rare: rows are decoded with plain datetime types,
        # and only a body that has such a number is decoded again with (datetime | int | float).
        self._lenient_ndjson = msgspec.json.Decoder(
            self._struct("LenientRow", self.fields, kw_only=True, lenient=True)
        )
        self.encoder = msgspec.json.Encoder()
        self._datetime_attrs = [self._attr[f.column.name] for f in self.fields if f.ctype.is_datetime]
        self._checks = [
            (self._attr[f.column.name], f.ctype.check, f.column, f.ctype.check_hint)
            for f in self.fields
            if f.ctype.check is not None
        ]
        self._compact: dict[tuple[str, ...], _CompactCodec] = {}
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

    def _struct(self, name: str, fields: Sequence[_Field], *, kw_only: bool, lenient: bool = False) -> Any:
        spec: list[Any] = []
        for f in fields:
            attr = self._attr[f.column.name]
            py = f.lenient_py if lenient else f.py
            spec.append((attr, py) if f.default is msgspec.NODEFAULT else (attr, py, f.default))
        return msgspec.defstruct(
            f"{name}_{self.stream.name}",
            spec,
            kw_only=kw_only,
            rename={self._attr[f.column.name]: f.column.name for f in fields},
            forbid_unknown_fields=self.forbid_unknown,
            gc=False,
        )

    # ---- decoding ---------------------------------------------------------------------------
    def decode_ndjson(self, data: bytes | bytearray | memoryview, first_row: int) -> list[Any]:
        """Decode and validate a run of whole JSON objects (NDJSON, or `{..}{..}` unseparated)."""
        self.check_utf8(data)
        try:
            try:
                rows: list[Any] = self.ndjson_decoder.decode_lines(data)
            except msgspec.ValidationError as exc:
                if not _EPOCH_IN_DATETIME.search(str(exc)):
                    raise
                rows = self._lenient_ndjson.decode_lines(data)
                self._epochs_to_datetimes(rows, first_row)
        except msgspec.ValidationError as exc:
            raise self.row_error(str(exc), first_row, None) from None
        except UnicodeDecodeError as exc:
            raise MalformedBody(f"body is not valid UTF-8: {exc.reason}") from None
        except RecursionError:
            raise MalformedBody("JSON is nested too deeply") from None
        self._check_ranges(rows, first_row)
        return rows

    @functools.cached_property
    def array_decoder(self) -> msgspec.json.Decoder[list[Any]]:
        """A decoder for a JSON array of row objects (made on first use). Raises msgspec's
        ValidationError as it is, so that a dialect can word the `$[i].column` path its own way."""
        return msgspec.json.Decoder(list[self.row_type])  # type: ignore[name-defined]

    def check_utf8(self, data: bytes | bytearray | memoryview) -> None:
        """msgspec checks no UTF-8 in what it skips or keeps raw (unknown fields' keys and values,
        `json` columns): the whole body is checked here (a no-op scan for ASCII bodies)."""
        raw = data if isinstance(data, bytes | bytearray) else bytes(data)
        if not raw.isascii():
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise MalformedBody(f"body is not valid UTF-8 at byte {exc.start}") from None

    def compact_decoder(self, columns: Sequence[str]) -> _CompactCodec:
        """Decoders (strict, lenient) for `data` arrays in this column order, and the row builder."""
        key = tuple(columns)
        hit = self._compact.get(key)
        if hit is not None:
            return hit
        if len(key) > len(self.fields) + MAX_EXTRA_COLUMNS:
            raise BadRequest(
                f"`columns` lists {len(key)} names; this stream has "
                f"{len(self.fields)} columns (at most {MAX_EXTRA_COLUMNS} extra "
                "names are skipped)"
            )
        if len(set(key)) != len(key):
            raise BadRequest("`columns` lists a column twice")
        # Bounded by the columns the cached decoders cover (their size), not only by entries.
        if len(self._compact) >= 64 or sum(map(len, self._compact)) + len(key) > MAX_CACHED_COLUMNS:
            self._compact.clear()
        known = [c for c in key if c in self._attr]
        unknown = [c for c in key if c not in self._attr]
        if unknown and self.forbid_unknown:
            raise BadRequest(f"unknown column {unknown[0]!r}", column=unknown[0])
        by_name = {f.column.name: f for f in self.fields}
        missing = [f for f in self.fields if f.column.name not in key and f.default is msgspec.NODEFAULT]
        if missing:
            raise InvalidRow(
                f"required column {missing[0].column.name!r} is not in `columns`",
                column=missing[0].column.name,
            )
        present = [by_name[c] for c in known]
        required_first = [_Field(f.column, f.ctype, f.py, msgspec.NODEFAULT) for f in present]
        rest = [f for f in self.fields if f.column.name not in key]
        row_type = self._struct("Compact", required_first + rest, kw_only=False)

        def tuples_of(lenient: bool) -> msgspec.json.Decoder[Any]:
            items = tuple(
                (by_name[c].lenient_py if lenient else by_name[c].py) if c in by_name else msgspec.Raw
                for c in key
            )
            return msgspec.json.Decoder(list[tuple[items]])  # type: ignore[valid-type]

        decoder = tuples_of(lenient=False)
        lenient_decoder = tuples_of(lenient=True)
        if unknown and not known:

            def build(rows: Iterable[Any]) -> list[Any]:
                return [row_type() for _ in rows]
        elif unknown:
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

        codec = self._compact[key] = (decoder, lenient_decoder, build)
        return codec

    def decode_compact_data(
        self, columns: Sequence[str], data: bytes | bytearray | msgspec.Raw, first_row: int = 0
    ) -> list[Any]:
        """Decode a compact body's `data` (an array of arrays) given its `columns`; `first_row`:
        the index of its first row in the body (for errors)."""
        decoder, lenient_decoder, build = self.compact_decoder(columns)
        self.check_utf8(memoryview(data))
        epochs = False
        try:
            try:
                tuples = decoder.decode(data)
            except msgspec.ValidationError as exc:
                if not _EPOCH_IN_DATETIME.search(str(exc)):
                    raise
                tuples = lenient_decoder.decode(data)
                epochs = True
        except msgspec.ValidationError as exc:
            raise self.row_error(str(exc), first_row, columns) from None
        except UnicodeDecodeError as exc:
            raise MalformedBody(f"body is not valid UTF-8: {exc.reason}") from None
        except RecursionError:
            raise MalformedBody("JSON is nested too deeply") from None
        rows: list[Any] = build(tuples)
        if epochs:
            self._epochs_to_datetimes(rows, first_row)
        self._check_ranges(rows, first_row)
        return rows

    @property
    def one_string_column(self) -> bool:
        """True when the stream's rows are one string each (the `raw` and `lines` formats fit)."""
        return self._lines_attr is not None and self.fields[0].py is str

    def rows_from_strings(self, texts: Sequence[str]) -> list[Any]:
        """Rows of a one-string-column stream from raw strings (`raw` and `lines` formats)."""
        name = self._lines_attr
        if name is None or not self.one_string_column:
            raise BadRequest("the raw and lines formats need a stream with one string column")
        make = self.row_type
        return [make(**{name: t}) for t in texts]

    def _check_ranges(self, rows: list[Any], first_row: int) -> None:
        """Bounds msgspec cannot check itself (uint64's upper bound, decimal precision and scale);
        no work for other schemas."""
        for attr, check, col, hint in self._checks:
            get = attrgetter(attr)
            for i, row in enumerate(rows):
                if not check(get(row)):
                    raise InvalidRow(
                        f"row {first_row + i}, column {col.name!r}: value out of range for {col.type}{hint}",
                        row=first_row + i,
                        column=col.name,
                    )

    def _epochs_to_datetimes(self, rows: list[Any], first_row: int) -> None:
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
                        raise InvalidRow(
                            f"row {first_row + i}, column {column!r}: epoch value "
                            f"{v!r} is out of range for a datetime",
                            row=first_row + i,
                            column=column,
                        ) from None

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
            column = max(
                (c for c in self.columns if tail == c or tail.startswith((c + ".", c + "["))),
                key=len,
                default=tail,
            )
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
        blob = _one_line_each(self.encoder, rows)
        keys: list[bytes] | None = None
        if self._key_getter is not None:
            parts = list(map(self._key_getter, rows))
            if self._key_is_text:
                keys = [p.encode() for p in parts]
            else:
                keys = lines_of(_one_line_each(self.encoder, parts))
        return Encoded(blob, keys, len(rows))


@dataclass
class SchemaCache:
    """Compiled schemas by stream name, recompiled when the catalog hands out a new Stream object."""

    forbid_unknown: bool = False
    max_row_bytes: int = 1 << 62  # the longest row text a body may hold (413 beyond)
    _cache: dict[str, CompiledSchema] = field(default_factory=dict)

    def get(self, stream: Stream) -> CompiledSchema:
        """The compiled schema of `stream` (compiled on first use, then cached)."""
        hit = self._cache.get(stream.name)
        if hit is None or hit.stream is not stream:
            compiled = CompiledSchema(
                stream, forbid_unknown=self.forbid_unknown, max_row_bytes=self.max_row_bytes
            )
            # a request admitted under an older schema version (it changed while the body was
            # read) keeps its version, without evicting the current one
            if hit is not None and hit.stream.schema_version > stream.schema_version:
                return compiled
            hit = self._cache[stream.name] = compiled
        return hit

    def forget(self, name: str) -> None:
        """Drop a stream's compiled schema (after delete)."""
        self._cache.pop(name, None)


def check_columns(stream: Stream) -> None:
    """Raise SchemaError when the stream's columns or primary key cannot be compiled."""
    CompiledSchema(stream)
