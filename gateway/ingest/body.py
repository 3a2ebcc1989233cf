"""Streamed request bodies: chunks as they arrive, incremental gzip/deflate, size limits (413)."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from aiohttp.http_exceptions import ContentLengthError

from gateway.errors import (
    ClientDisconnected,
    MalformedBody,
    PayloadTooLarge,
    RequestTimeout,
    UnsupportedMediaType,
)

# Output of one inflate step: a bomb is refused after this much more than its limit, never holding
# the whole limit twice (one step's output plus what the decoder buffered).
INFLATE_STEP = 1 << 20
MAX_MEMBERS = 1000  # --max-gzip-members: concatenated members one body may hold
ENCODINGS = {
    "": None,
    "identity": None,
    "gzip": 16 + zlib.MAX_WBITS,
    "x-gzip": 16 + zlib.MAX_WBITS,
    "deflate": zlib.MAX_WBITS,
}


class ChunkSource(Protocol):
    """Anything that hands out the body in chunks, `b""` at the end (aiohttp's StreamReader is one)."""

    async def readany(self) -> bytes: ...


def check_encoding(content_encoding: str) -> int | None:
    """The zlib window bits for a Content-Encoding, None for identity; 415 for anything else."""
    enc = content_encoding.strip().lower()
    if enc not in ENCODINGS:
        raise UnsupportedMediaType(
            f"unsupported Content-Encoding {content_encoding!r}; use gzip, deflate or none"
        )
    return ENCODINGS[enc]


def check_transfer_encoding(transfer_encoding: str) -> None:
    """415 for a Transfer-Encoding other than chunked: aiohttp de-chunks `gzip, chunked` but does
    not decompress it, and the bytes must not pass for a plain body (use Content-Encoding)."""
    if not transfer_encoding or transfer_encoding == "chunked":
        return
    codings = [c.strip().lower() for c in transfer_encoding.split(",") if c.strip()]
    if any(c != "chunked" for c in codings):
        raise UnsupportedMediaType(
            f"unsupported Transfer-Encoding {transfer_encoding[:80]!r}; "
            "only chunked (compress with Content-Encoding: gzip instead)"
        )


def _nothing() -> bytes:
    return b""


def _false() -> bool:
    return False


class _Window:
    """A body must keep arriving: at least `bytes_per_s`, averaged over `window_s` of waiting for
    it (408 otherwise); `got` bytes came while the gateway waited `waited` s in this window. Only
    time spent waiting for the client counts: a gateway busy decoding (or draining) never blames
    the client for its own delay."""

    __slots__ = ("bytes_per_s", "got", "waited", "window_s")

    def __init__(self, bytes_per_s: float, window_s: float) -> None:
        self.bytes_per_s = bytes_per_s
        self.window_s = window_s
        self.got = 0
        self.waited = 0.0


async def _raw_chunks(
    source: ChunkSource,
    max_bytes: int,
    read_timeout: float | None,
    total_timeout: float | None,
    min_rate: float = 0.0,
    rate_window: float = 10.0,
) -> AsyncIterator[bytes]:
    total = 0
    loop = asyncio.get_running_loop()
    deadline = None if total_timeout is None else loop.time() + total_timeout
    # aiohttp's StreamReader: what has arrived is taken without arming a timeout (usually the
    # whole body of a small request); only a wait for more needs one (-16% CPU per request, S3).
    read_nowait: Callable[[], bytes] = getattr(source, "read_nowait", _nothing)
    at_eof: Callable[[], bool] = getattr(source, "at_eof", _false)
    window: _Window | None = None  # made at the first wait: a body that has arrived needs none
    while True:
        try:
            chunk = read_nowait()
            if not chunk:
                if at_eof():
                    return
                if min_rate > 0 and window is None:
                    window = _Window(min_rate, rate_window)
                chunk = await _wait_for_chunk(source, loop, read_timeout, deadline, total_timeout, window)
                if not chunk:
                    return
        except (ConnectionResetError, ContentLengthError):  # the client hung up mid-body
            raise ClientDisconnected(
                "the client closed the connection before the body was "
                f"complete ({total} bytes read); nothing was written"
            ) from None
        total += len(chunk)
        if total > max_bytes:
            raise PayloadTooLarge(f"body exceeds {max_bytes} bytes")
        if window is not None:
            window.got += len(chunk)
        yield chunk


async def _wait_for_chunk(
    source: ChunkSource,
    loop: asyncio.AbstractEventLoop,
    read_timeout: float | None,
    deadline: float | None,
    total_timeout: float | None,
    window: _Window | None = None,
) -> bytes:
    """The next chunk, within `read_timeout`, before the whole body's `deadline`, and while the
    body keeps its minimum rate over the waits of its current `window` (408)."""
    if read_timeout is None and deadline is None and window is None:
        return await source.readany()
    entered = loop.time()  # the last chunk came then: `read_timeout` counts from it
    while True:
        wait = float("inf") if read_timeout is None else max(0.0, read_timeout - (loop.time() - entered))
        whole = deadline is not None and deadline - loop.time() < wait
        if deadline is not None:
            wait = min(wait, max(0.0, deadline - loop.time()))
        window_ends = False
        if window is not None:
            window_ends = window.window_s - window.waited <= wait
            wait = min(wait, window.window_s - window.waited)
        started = loop.time()
        chunk = None
        try:
            async with asyncio.timeout(wait):
                chunk = await source.readany()
        except TimeoutError:
            if not window_ends:
                what = (
                    f"the body did not arrive within {total_timeout:g} s"
                    if whole
                    else f"no body data for {read_timeout:g} s"
                )
                raise RequestTimeout(f"{what}; request dropped, nothing was written") from None
        if window is None or chunk == b"":  # b"": the end of the body
            return chunk or b""
        window.waited += loop.time() - started
        if chunk is not None and window.waited < window.window_s:
            return chunk
        chunk = chunk or b""
        # The window's waiting time is up: the body kept the rate (a new window), or is dropped.
        if window.got + len(chunk) < window.bytes_per_s * window.window_s:
            raise RequestTimeout(
                f"the body arrived at less than {window.bytes_per_s:g} "
                f"bytes/s over {window.window_s:g} s of waiting for it; "
                "request dropped, nothing was written"
            )
        window.got, window.waited = -len(chunk), 0.0  # the chunk is counted by the caller
        if chunk:
            return chunk


def read_chunks(
    source: ChunkSource,
    *,
    content_encoding: str,
    max_bytes: int,
    max_decompressed: int,
    read_timeout: float | None = None,
    total_timeout: float | None = None,
    min_rate: float = 0.0,
    rate_window: float = 10.0,
    max_members: int = MAX_MEMBERS,
) -> AsyncIterator[bytes]:
    """The body's (decompressed) chunks as they arrive, enforcing both size limits, the most
    gzip/deflate members a body may concatenate (`max_members`), the longest wait for the next
    chunk (`read_timeout`), for the whole body (`total_timeout`) and the slowest rate it may
    arrive at (`min_rate` bytes/s over `rate_window` s of waiting; 0 = any). An unsupported
    Content-Encoding raises (415) when the chunks are first read."""
    raw = _raw_chunks(source, max_bytes, read_timeout, total_timeout, min_rate, rate_window)
    if not content_encoding or content_encoding.strip().lower() in ("", "identity"):
        return raw  # no layer in between: one async-generator step less per chunk
    return _inflated(raw, content_encoding, max_decompressed, max_members)


async def _inflated(
    raw: AsyncIterator[bytes], content_encoding: str, max_decompressed: int, max_members: int = MAX_MEMBERS
) -> AsyncIterator[bytes]:
    wbits = check_encoding(content_encoding)
    assert wbits is not None  # identity bodies are not inflated
    inflater = zlib.decompressobj(wbits)
    members = 1
    produced = 0
    seen_any = False
    async for chunk in raw:
        seen_any = True
        data = chunk
        full = False  # the last step filled its output: zlib may hold more without new input
        while data or (full and not inflater.eof):
            step = min(INFLATE_STEP, max_decompressed - produced + 1)
            try:
                out = inflater.decompress(data, step)
            except zlib.error as exc:
                raise MalformedBody(f"body is not valid {content_encoding}: {exc}") from None
            produced += len(out)
            full = len(out) == step
            if produced > max_decompressed:
                raise PayloadTooLarge(f"body exceeds {max_decompressed} bytes after decompression")
            if out:
                yield out
            if inflater.eof:  # concatenated gzip members are one body (as `cat a.gz b.gz`)
                data = inflater.unused_data
                if data:
                    # each member costs a decoder and a turn of this loop, however little it
                    # holds: empty ones would take seconds of CPU per body without this bound
                    members += 1
                    if members > max_members:
                        raise PayloadTooLarge(
                            f"body has more than {max_members} {content_encoding} members "
                            "(--max-gzip-members); compress it as one member, or split it"
                        )
                    inflater = zlib.decompressobj(wbits)
            else:
                data = inflater.unconsumed_tail
    if seen_any and not inflater.eof:
        raise MalformedBody(f"{content_encoding} body is truncated")
