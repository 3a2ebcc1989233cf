"""Quarantine (Tinybird dialect): when a body fails validation, split it into the rows that fit the
schema and the rows that do not, instead of refusing the whole request.

The normal streamed decode stays the fast path (see StreamedBody in ingest/service.py);
`KeptChunks` keeps the body's chunks on the side so that, only when that decode meets an invalid
row, `split_rows` can decode the body again object by object. It decodes runs of objects in one C
call each, doubling the run while rows are good and fitting it to the gap between bad rows, so a
few bad rows cost little more than the fast path.
"""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Any

import msgspec

from gateway.errors import InvalidRow, MalformedBody
from gateway.ingest.formats import BOM, _malformed
from gateway.ingest.schema import CompiledSchema
from gateway.sinks.base import RecordMeta

FIRST_RUN = 256
MAX_RUN = 16_384
_framer = msgspec.json.Decoder(msgspec.Raw)


class KeptChunks:
    """Iterates a body's chunks while keeping them, so the whole body can be had again."""

    def __init__(self, chunks: AsyncIterable[bytes]) -> None:
        self._chunks: AsyncIterator[bytes] = aiter(chunks)
        self.kept: list[bytes] = []

    def __aiter__(self) -> KeptChunks:
        return self

    async def __anext__(self) -> bytes:
        chunk = await anext(self._chunks)
        self.kept.append(chunk)
        return chunk

    async def whole(self) -> bytes:
        """The whole body: what was read so far and the rest, read now."""
        async for _ in self:
            pass
        body = b"".join(self.kept)
        self.kept.clear()  # held once, not twice, while the body is split
        return body


@dataclass(slots=True)
class BadRow:
    """A row that does not fit the schema: where it was, why, and its original text."""

    row: int
    column: str | None
    message: str
    text: bytes


@dataclass(slots=True)
class Split:
    """A body's valid rows (decoded, in order) and its invalid ones."""

    rows: list[Any]
    bad: list[BadRow]
    meta: RecordMeta | None = None  # the rows' own Kafka keys, partitions, headers (REST proxy)

    def take_rows(self) -> list[Any]:
        """The valid rows, handed over: the split keeps no reference to them."""
        rows, self.rows = self.rows, []
        return rows


def split_rows(schema: CompiledSchema, body: bytes) -> Split:
    """Decode NDJSON (or concatenated objects) into valid rows and bad rows.

    A body that is not JSON at all (or is truncated) is still a MalformedBody: only rows that are
    JSON but do not fit the schema are set aside.
    """
    if body.startswith(BOM):
        body = body[len(BOM) :]
    try:
        objects = _framer.decode_lines(body)
    except msgspec.DecodeError as exc:
        raise _malformed(exc, 0, body) from None
    except RecursionError:
        raise MalformedBody("JSON is nested too deeply") from None
    rows: list[Any] = []
    bad: list[BadRow] = []
    i, n, run = 0, len(objects), FIRST_RUN
    # the next bad row found so far, if any (bad_at < n), and its error's column and message (not
    # the error: kept past its handler, its traceback would pin this frame and the body)
    bad_at, bad_column, bad_message = n, None, ""
    while i < n:
        if i == bad_at:
            bad.append(BadRow(i, bad_column, bad_message, bytes(objects[i])))
            i += 1
            bad_at = n
            continue
        end = min(bad_at, i + run)
        try:
            rows += schema.decode_ndjson(b"\n".join(objects[i:end]), i)
        except InvalidRow as err:
            if err.row is not None and i <= err.row < end:
                # the rows before it are decoded again next, in one run (they may still hold a bad
                # one: an out-of-range datetime is found only once the whole run has decoded);
                # runs then start at twice the gap between bad rows, so dense bad rows cost short
                # runs and sparse ones long runs
                bad_at, bad_column, bad_message = err.row, err.column, err.message
                run = max(1, 2 * (err.row - i))
            elif end - i == 1:
                bad_at, bad_column, bad_message = i, err.column, err.message
            else:
                run = 1  # cannot tell which row: look at them one by one
            continue
        i = end
        run = min(MAX_RUN, run * 2)
    return Split(rows, bad)


class _Error(msgspec.Struct):
    message: str
    row: int
    column: str | None


class _Quarantined(msgspec.Struct):
    time: str
    stream: str
    request_id: str
    schema_version: int
    error: _Error
    row_text: str


_encoder = msgspec.json.Encoder()


def quarantine_values(bad: list[BadRow], *, stream: str, request_id: str, schema_version: int) -> list[bytes]:
    """One JSON record per bad row: when, which stream, request and schema version (the one the
    row was checked against, as in the `schema-version` header), the error, the original text."""
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
    now = now.replace("+00:00", "Z")
    records = [
        _Quarantined(
            now,
            stream,
            request_id,
            schema_version,
            _Error(b.message, b.row, b.column),
            b.text.decode("utf-8", "replace"),
        )
        for b in bad
    ]
    values = _encoder.encode_lines(records).split(b"\n")
    values.pop()
    return values
