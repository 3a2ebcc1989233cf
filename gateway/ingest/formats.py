"""Framing: how each ingest format splits a body into rows, handing them to the compiled schema."""

from __future__ import annotations

import enum
from collections.abc import AsyncIterable
from typing import Any

import msgspec

from gateway.errors import BadRequest, GatewayError, MalformedBody, detach
from gateway.ingest.schema import CompiledSchema

BOM = b"\xef\xbb\xbf"


class Format(enum.Enum):
    """The four body formats of the Timeplus ingest API."""

    COMPACT = "compact"
    STREAMING = "streaming"
    RAW = "raw"
    LINES = "lines"


class CompactBody(msgspec.Struct):
    """`{"columns": [...], "data": [[...], ...]}`; `data` is kept raw and decoded with typed tuples."""

    columns: list[str]
    data: msgspec.Raw


_compact_decoder = msgspec.json.Decoder(CompactBody)


def _malformed(exc: msgspec.DecodeError, consumed: int, segment: bytes | bytearray | memoryview
               ) -> MalformedBody:
    text = str(exc)
    if "truncated" in text:
        return MalformedBody("body is truncated: it ends inside a JSON value")
    line = None
    if "(byte " in text:
        pos = int(text.rsplit("(byte ", 1)[1].rstrip(")"))
        prefix = bytes(segment[:pos])
        line = prefix.count(b"\n")
        text = text.split(" (byte ")[0] + f" (byte {consumed + pos})"
    err = MalformedBody(text)
    if line is not None:
        err.message += f" (line {line + 1} of the part being decoded)"
    return err


async def decode_streaming(chunks: AsyncIterable[bytes], schema: CompiledSchema) -> list[Any]:
    """NDJSON, decoded as it arrives: every run of whole lines is decoded as soon as it is complete.

    Objects may span lines or run together; a run whose last object is cut off is retried once the
    buffer has doubled, which keeps the work linear. A malformed body is reported as malformed even
    when an earlier row is invalid, so that the reply does not depend on how the body was chunked.
    """
    rows: list[Any] = []
    invalid: GatewayError | None = None  # the first invalid row; later runs are only syntax-checked
    buf = bytearray()
    consumed = 0
    retry_at = 0
    bom_done = False
    async for chunk in chunks:
        buf += chunk
        if not bom_done:
            bom_done = _strip_bom(buf, final=False)
        if len(buf) < retry_at:
            continue
        cut = buf.rfind(b"\n") + 1
        if cut == 0:
            continue
        # A copy: rows may keep views into what they were decoded from (json columns), and the
        # buffer must stay resizable.
        part = buf[:cut]
        try:
            invalid = _decode_run(schema, part, rows, invalid)
        except msgspec.DecodeError as exc:
            if "truncated" not in str(exc):
                raise _malformed(exc, consumed, part) from None
            retry_at = 2 * len(buf)
            continue
        consumed += cut
        del buf[:cut]
        retry_at = 0
    if not bom_done:
        _strip_bom(buf, final=True)
    if buf.strip():
        try:
            invalid = _decode_run(schema, bytes(buf), rows, invalid)
        except msgspec.DecodeError as exc:
            raise _malformed(exc, consumed, buf) from None
    if invalid is not None:
        try:
            raise invalid
        finally:  # this frame, in the error's traceback, must not hold the error (a cycle)
            del invalid
    return rows


_syntax = msgspec.json.Decoder(msgspec.Raw)  # its decode_lines checks JSON syntax only


def _decode_run(schema: CompiledSchema, part: bytes | bytearray, rows: list[Any],
                invalid: GatewayError | None) -> GatewayError | None:
    """Decode a run of whole objects onto `rows`; return the first invalid-row error so far. Once a
    row was invalid, runs are only checked for malformed JSON (MalformedBody or msgspec's
    DecodeError), which wins over the invalid row."""
    if invalid is None:
        try:
            rows += schema.decode_ndjson(part, len(rows))
            return None
        except MalformedBody:
            raise
        except GatewayError as err:
            invalid = detach(err)  # kept past this block: no traceback pinning the body
    schema.check_utf8(part)
    try:
        _syntax.decode_lines(part)
    except RecursionError:
        raise MalformedBody("JSON is nested too deeply") from None
    return invalid


def _strip_bom(buf: bytearray, final: bool) -> bool:
    """Remove a leading UTF-8 BOM; True once decided (enough bytes seen, or the body ended)."""
    if len(buf) < len(BOM) and BOM.startswith(bytes(buf)) and not final:
        return False
    if buf.startswith(BOM):
        del buf[: len(BOM)]
    return True


async def _whole(chunks: AsyncIterable[bytes]) -> bytes:
    parts = [c async for c in chunks]
    body = parts[0] if len(parts) == 1 else b"".join(parts)
    return body[len(BOM):] if body.startswith(BOM) else body


async def decode_compact(chunks: AsyncIterable[bytes], schema: CompiledSchema) -> list[Any]:
    """`{"columns": [...], "data": [[...], ...]}`: rows as arrays in the order of `columns`."""
    body = await _whole(chunks)
    if not body.strip():
        return []
    try:
        compact = _compact_decoder.decode(body)
    except RecursionError:
        raise MalformedBody("JSON is nested too deeply") from None
    except msgspec.ValidationError as exc:
        raise BadRequest(f"compact body must be {{\"columns\": [...], \"data\": [[...], ...]}}: "
                         f"{exc}") from None
    except msgspec.DecodeError as exc:
        raise _malformed(exc, 0, body) from None
    except UnicodeDecodeError as exc:
        raise MalformedBody(f"body is not valid UTF-8: {exc.reason}") from None
    return schema.decode_compact_data(compact.columns, compact.data)


def _text(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedBody(f"body is not valid UTF-8 at byte {exc.start}") from None


async def decode_raw(chunks: AsyncIterable[bytes], schema: CompiledSchema) -> list[Any]:
    """The whole body is one row's value (stream with one string column)."""
    body = await _whole(chunks)
    return schema.rows_from_strings([_text(body)]) if body else []


async def decode_lines(chunks: AsyncIterable[bytes], schema: CompiledSchema) -> list[Any]:
    """Each line of the body is one row's value (stream with one string column)."""
    text = _text(await _whole(chunks))
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return schema.rows_from_strings([ln[:-1] if ln.endswith("\r") else ln for ln in lines])


DECODERS = {
    Format.COMPACT: decode_compact,
    Format.STREAMING: decode_streaming,
    Format.RAW: decode_raw,
    Format.LINES: decode_lines,
}


async def decode(fmt: Format, chunks: AsyncIterable[bytes], schema: CompiledSchema) -> list[Any]:
    """Decode and validate a whole body in the given format; raise a 4xx GatewayError when invalid."""
    return await DECODERS[fmt](chunks, schema)
