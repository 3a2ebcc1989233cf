"""Framing: how each ingest format splits a body into rows, handing them to the compiled schema."""

from __future__ import annotations

import enum
import re
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import msgspec

from gateway.errors import BadRequest, GatewayError, MalformedBody, PayloadTooLarge, detach
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


def _malformed(
    exc: msgspec.DecodeError, consumed: int, segment: bytes | bytearray | memoryview
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
    No more than `schema.max_row_bytes` of a row are held: a longer row is 413 at once.
    """
    rows: list[Any] = []
    invalid: GatewayError | None = None  # the first invalid row; later runs are only syntax-checked
    framed = 0  # rows framed so far (decoded or syntax-checked): the next row's index
    buf = bytearray()
    consumed = 0
    retry_at = 0
    bom_done = False
    limit = schema.max_row_bytes
    async for chunk in chunks:
        buf += chunk
        if not bom_done:
            bom_done = _strip_bom(buf, final=False)
        if len(buf) >= retry_at:
            cut = buf.rfind(b"\n") + 1
            if cut:
                # A copy: rows may keep views into what they were decoded from (json columns),
                # and the buffer must stay resizable.
                part = buf[:cut]
                try:
                    invalid, n = _decode_run(schema, part, rows, invalid)
                except msgspec.DecodeError as exc:
                    if "truncated" not in str(exc):
                        raise _malformed(exc, consumed, part) from None
                    retry_at = 2 * len(buf)
                else:
                    framed += n
                    consumed += cut
                    del buf[:cut]
                    retry_at = 0
        if len(buf) > limit:  # rare: find where the last whole object ends, keep only the rest
            cut = _whole_prefix(buf)
            if cut:
                part = buf[:cut]
                try:
                    invalid, n = _decode_run(schema, part, rows, invalid)
                except msgspec.DecodeError as exc:
                    raise _malformed(exc, consumed, part) from None
                framed += n
                consumed += cut
                del buf[:cut]
                retry_at = 0
            if len(buf) > limit:
                raise _row_too_long(framed, limit)
    if not bom_done:
        _strip_bom(buf, final=True)
    if buf.strip():
        try:
            invalid, _ = _decode_run(schema, bytes(buf), rows, invalid)
        except msgspec.DecodeError as exc:
            raise _malformed(exc, consumed, buf) from None
    if invalid is not None:
        try:
            raise invalid
        finally:  # this frame, in the error's traceback, must not hold the error (a cycle)
            del invalid
    return rows


def _row_too_long(row: int, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"row {row} is longer than {limit} bytes, the longest row the gateway "
        "accepts (a record must fit a Kafka batch: --max-row-bytes, "
        "--batch-max-bytes); nothing was written",
        row=row,
    )


_one = msgspec.json.Decoder(msgspec.Raw)  # one JSON value; what follows it is reported
_TRAILING = "JSON is malformed: trailing characters (byte "


def _next_value(view: memoryview, pos: int) -> int | None:
    """Where the text after the JSON value at `pos` resumes (its first non-blank byte), or None
    when the value is cut off (or ends the buffer, or is malformed: left to the run's decode)."""
    try:
        _one.decode(view[pos:])
    except msgspec.DecodeError as exc:
        text = str(exc)
        if text.startswith(_TRAILING):
            return pos + int(text[len(_TRAILING) : -1]) - 1
        return None
    except (RecursionError, UnicodeDecodeError):
        return None
    return None


def _whole_prefix(buf: bytearray) -> int:
    """The end of the last whole JSON value of a run of values (0: none is whole yet). One C call
    per value: used only when a row has outgrown the longest row."""
    pos = 0
    with memoryview(buf) as view:
        while (nxt := _next_value(view, pos)) is not None:
            pos = nxt
    return pos


_syntax = msgspec.json.Decoder(msgspec.Raw)  # its decode_lines checks JSON syntax only


def _decode_run(
    schema: CompiledSchema, part: bytes | bytearray, rows: list[Any], invalid: GatewayError | None
) -> tuple[GatewayError | None, int]:
    """Decode a run of whole objects onto `rows`; return the first invalid-row error so far and
    how many objects the run held. Once a row was invalid, runs are only checked for malformed
    JSON (MalformedBody or msgspec's DecodeError), which wins over the invalid row."""
    if invalid is None:
        try:
            decoded = schema.decode_ndjson(part, len(rows))
            rows += decoded
            return None, len(decoded)
        except MalformedBody:
            raise
        except GatewayError as err:
            invalid = detach(err)  # kept past this block: no traceback pinning the body
    schema.check_utf8(part)
    try:
        return invalid, len(_syntax.decode_lines(part))
    except RecursionError:
        raise MalformedBody("JSON is nested too deeply") from None


def _strip_bom(buf: bytearray, final: bool) -> bool:
    """Remove a leading UTF-8 BOM; True once decided (enough bytes seen, or the body ended)."""
    if len(buf) < len(BOM) and BOM.startswith(bytes(buf)) and not final:
        return False
    if buf.startswith(BOM):
        del buf[: len(BOM)]
    return True


async def _whole(chunks: AsyncIterable[bytes], limit: int) -> bytes:
    """The whole body (BOM removed); 413 once it is longer than `limit`."""
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit + len(BOM) and size - _bom_len(parts, chunk) > limit:
            raise _row_too_long(0, limit)
        parts.append(chunk)
    body = parts[0] if len(parts) == 1 else b"".join(parts)
    return body[len(BOM) :] if body.startswith(BOM) else body


def _bom_len(parts: list[bytes], chunk: bytes) -> int:
    first = parts[0] if parts else chunk
    return len(BOM) if bytes(first[: len(BOM)]) == BOM else 0


class CompactHead(msgspec.Struct):
    """What follows `data`'s array in a compact body (checked once the rows are framed)."""

    columns: list[str] | None = None
    data: msgspec.Raw | None = None


_compact_tail = msgspec.json.Decoder(CompactHead)
_elements = msgspec.json.Decoder(list[msgspec.Raw])  # a run of `data` elements, syntax only
# `{"columns": [...], "data": [` at the start of a compact body: its rows are then framed as they
# arrive (column names hold no `]`; a body whose columns do not fit this is read whole)
_COMPACT_HEAD = re.compile(rb'\s*\{\s*"columns"\s*:\s*(\[[^\]]*\])\s*,\s*"data"\s*:\s*\[')
HEAD_MAX = 64 * 1024  # how far into a compact body its head is looked for


async def decode_compact(chunks: AsyncIterable[bytes], schema: CompiledSchema) -> list[Any]:
    """`{"columns": [...], "data": [[...], ...]}`: rows as arrays in the order of `columns`. A body
    that arrived whole (one chunk) is decoded in one call; a longer one has its `data` framed row
    by row as it arrives, holding no more than `schema.max_row_bytes` of a row (413 beyond)."""
    it = aiter(chunks)
    first = await anext(it, b"")
    second = await anext(it, b"")
    if not second:
        body = bytes(first[len(BOM) :]) if first.startswith(BOM) else first
        try:
            return _compact_whole(body, schema)
        except MalformedBody as malformed:
            # The error path: a row before the malformed bytes may be invalid, which a body read
            # in pieces answers first (its rows are decoded in order); answer the same here.
            try:
                return await _CompactFramer(schema).feed(body, b"", _nothing())
            except MalformedBody:
                raise malformed from None
    return await _CompactFramer(schema).feed(first, second, it)


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield b""  # an async generator that yields nothing


def _compact_whole(body: bytes | bytearray, schema: CompiledSchema) -> list[Any]:
    if not body.strip():
        return []
    try:
        compact = _compact_decoder.decode(body)
    except RecursionError:
        raise MalformedBody("JSON is nested too deeply") from None
    except msgspec.ValidationError as exc:
        raise BadRequest(f'compact body must be {{"columns": [...], "data": [[...], ...]}}: {exc}') from None
    except msgspec.DecodeError as exc:
        raise _malformed(exc, 0, body) from None
    except UnicodeDecodeError as exc:
        raise MalformedBody(f"body is not valid UTF-8: {exc.reason}") from None
    return schema.decode_compact_data(compact.columns, compact.data)


class _CompactFramer:
    """A compact body's rows decoded run by run as the body arrives: the head (`columns`) first,
    then each run of whole `data` elements, then what follows the array."""

    def __init__(self, schema: CompiledSchema) -> None:
        self.schema = schema
        self.rows: list[Any] = []
        self.buf = bytearray()
        self.consumed = 0  # body bytes before `buf`
        self.columns: list[str] | None = None
        self.tail: bytearray | None = None  # what follows `data`'s array, once it ended
        self.retry_at = 0
        self.after_comma = False  # the buffer starts after a comma: another element must follow

    async def feed(self, first: bytes, second: bytes, rest: AsyncIterator[bytes]) -> list[Any]:
        buf = self.buf
        buf += first
        buf += second
        while not _strip_bom(buf, final=False):  # a BOM split across the first chunks
            more = await anext(rest, None)
            if more is None:
                _strip_bom(buf, final=True)
                break
            buf += more
        limit = self.schema.max_row_bytes
        if not self._head():
            async for chunk in rest:
                buf += chunk
                if self._head():
                    break
                if len(buf) > HEAD_MAX:  # not the documented head: read whole, as before
                    async for more in rest:
                        buf += more
                    return _compact_whole(buf, self.schema)
            else:
                return _compact_whole(buf, self.schema)
        self._frame(limit)
        async for chunk in rest:
            if self.tail is not None:
                self.tail += chunk
                if len(self.tail) > limit:
                    raise _row_too_long(len(self.rows), limit)
                continue
            buf += chunk
            if len(buf) >= self.retry_at or len(buf) > limit:
                self._frame(limit)
        if self.tail is None:
            self._frame(limit, final=True)
        self._check_tail()
        return self.rows

    def _head(self) -> bool:
        """Read `{"columns": [...], "data": [` off the buffer; False while it is incomplete."""
        m = _COMPACT_HEAD.match(self.buf)
        if m is None:
            return False
        try:
            self.columns = msgspec.json.decode(m.group(1), type=list[str])
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
            return False  # the whole body's decode words it
        self.schema.compact_decoder(self.columns)  # a bad `columns` is refused before any row
        self.consumed = m.end()
        del self.buf[: m.end()]
        return True

    def _frame(self, limit: int, final: bool = False) -> None:
        """Decode the whole elements at the front of the buffer; 413 when the one left is longer
        than `limit`. The last `],` is tried first (one C call per run: a cut inside a value
        leaves a bracket open, or a string, and fails to parse); when it is not an element's end,
        the elements are walked one by one (only for a row near `limit`, or at the body's end)."""
        buf = self.buf
        cut = buf.rfind(b"],") + 1
        if cut and self._run(cut):
            del buf[:1]  # the comma
            self.consumed += 1
            self.after_comma = True
            self.retry_at = 0
        else:
            self.retry_at = 2 * len(buf)
        if final or len(buf) > limit:
            self._walk()
        if self.tail is None:
            if len(buf) > limit:
                raise _row_too_long(len(self.rows), limit)
            if final:
                raise MalformedBody("body is truncated: it ends inside `data`")

    def _run(self, end: int) -> bool:
        """Decode the elements in buf[:end] and drop them; False (nothing done) when that text
        is not a run of whole elements."""
        assert self.columns is not None
        part = b"[" + bytes(self.buf[:end]) + b"]"
        try:  # syntax first: a wrong cut may close an element early, a false "invalid row"
            _elements.decode(part)
        except (msgspec.DecodeError, RecursionError):
            return False
        except UnicodeDecodeError as exc:  # a cut never splits a character: the body's own
            raise MalformedBody(f"body is not valid UTF-8: {exc.reason}") from None
        self.rows += self.schema.decode_compact_data(self.columns, part, len(self.rows))
        self.consumed += end
        del self.buf[:end]
        return True

    def _walk(self) -> None:
        """Find the exact end of the last whole element (one C call per element), decode up to
        it and notice the end of `data`."""
        buf = self.buf
        pos = run_end = 0
        closed_at = -1
        with memoryview(buf) as view:
            while True:
                while pos < len(buf) and buf[pos] in b" \t\r\n":
                    pos += 1
                if pos == len(buf):
                    break
                if buf[pos] == 0x5D:  # `]` where an element would start
                    if run_end or self.after_comma:
                        raise MalformedBody(f"`data` ends with a comma (byte {self.consumed + pos})")
                    closed_at = pos
                    break
                nxt = _next_value(view, pos)
                if nxt is None:
                    break
                if buf[nxt] == 0x2C:  # `,`
                    run_end, pos = nxt, nxt + 1
                    continue
                if buf[nxt] != 0x5D:
                    raise MalformedBody(
                        f"`data` elements must be separated by commas (byte {self.consumed + nxt})"
                    )
                run_end = closed_at = nxt
                break
        tail = bytearray(buf[closed_at + 1 :]) if closed_at >= 0 else None
        if run_end:
            if not self._run(run_end):
                self._run_strict(run_end)
            self.consumed += 1
            del buf[:1]  # the comma, or the `]` that ends `data`
            self.after_comma = True
        if tail is not None:
            self.tail = tail
            self.consumed += len(buf) - len(tail)
            buf.clear()

    def _run_strict(self, end: int) -> None:
        """The elements in buf[:end] do not parse as an array: the body is malformed there."""
        part = b"[" + bytes(self.buf[:end]) + b"]"
        try:
            msgspec.json.decode(part)
        except msgspec.DecodeError as exc:
            raise _malformed(exc, self.consumed - 1, part) from None
        except RecursionError:
            raise MalformedBody("JSON is nested too deeply") from None
        except UnicodeDecodeError as exc:
            raise MalformedBody(f"body is not valid UTF-8: {exc.reason}") from None
        raise MalformedBody("`data` must be an array of arrays")

    def _check_tail(self) -> None:
        """What follows `data`'s array: the end of the object, or other members (no second
        `columns` or `data`)."""
        assert self.tail is not None
        rest = bytes(self.tail).lstrip(b" \t\r\n")
        try:
            extra = _compact_tail.decode(b"{" + (rest[1:] if rest.startswith(b",") else rest))
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError, UnicodeDecodeError):
            raise MalformedBody("compact body: what follows `data` is not the end of the object") from None
        if extra.columns is not None or extra.data is not None:
            raise BadRequest("compact body names `columns` or `data` twice")


def _text(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedBody(f"body is not valid UTF-8 at byte {exc.start}") from None


async def decode_raw(chunks: AsyncIterable[bytes], schema: CompiledSchema) -> list[Any]:
    """The whole body is one row's value (stream with one string column)."""
    body = await _whole(chunks, schema.max_row_bytes)
    return schema.rows_from_strings([_text(body)]) if body else []


async def decode_lines(chunks: AsyncIterable[bytes], schema: CompiledSchema) -> list[Any]:
    """Each line of the body is one row's value (stream with one string column); lines are split
    off as they arrive, and a line longer than `schema.max_row_bytes` is 413 at once."""
    texts: list[str] = []
    buf = bytearray()
    consumed = 0
    bom_done = False
    limit = schema.max_row_bytes
    async for chunk in chunks:
        buf += chunk
        if not bom_done:
            bom_done = _strip_bom(buf, final=False)
        cut = buf.rfind(b"\n") + 1
        if cut:
            _lines_of(buf[:cut], consumed, texts)
            consumed += cut
            del buf[:cut]
        if len(buf) > limit:
            raise _row_too_long(len(texts), limit)
    if not bom_done:
        _strip_bom(buf, final=True)
    if buf:
        _lines_of(buf, consumed, texts)
    return schema.rows_from_strings(texts)


def _lines_of(part: bytes | bytearray, consumed: int, texts: list[str]) -> None:
    """Add the lines of `part` (whole lines, the last maybe without its newline) to `texts`."""
    try:
        text = part.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedBody(f"body is not valid UTF-8 at byte {consumed + exc.start}") from None
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    texts += [ln[:-1] if ln.endswith("\r") else ln for ln in lines]


DECODERS = {
    Format.COMPACT: decode_compact,
    Format.STREAMING: decode_streaming,
    Format.RAW: decode_raw,
    Format.LINES: decode_lines,
}


async def decode(fmt: Format, chunks: AsyncIterable[bytes], schema: CompiledSchema) -> list[Any]:
    """Decode and validate a whole body in the given format; raise a 4xx GatewayError when invalid."""
    return await DECODERS[fmt](chunks, schema)
