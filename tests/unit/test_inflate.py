"""Bounded inflation (issue 9 item 9): gzip is inflated in steps, whatever the chunking, and
Transfer-Encoding other than chunked is refused."""

from __future__ import annotations

import asyncio
import gzip
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import PayloadTooLarge, UnsupportedMediaType
from gateway.ingest.body import INFLATE_STEP, check_transfer_encoding, read_chunks


class Chunks:
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    async def readany(self) -> bytes:
        return self.chunks.pop(0) if self.chunks else b""


async def inflate(data: bytes, cut: int, cap: int) -> list[bytes]:
    source = Chunks([data[i : i + cut] for i in range(0, len(data), cut)])
    return [
        c async for c in read_chunks(source, content_encoding="gzip", max_bytes=1 << 30, max_decompressed=cap)
    ]


@settings(max_examples=40, derandomize=True, deadline=None)
@given(st.integers(0, 3 * INFLATE_STEP), st.binary(max_size=2000), st.integers(1, 1 << 16))
def test_round_trip_in_bounded_steps(zeros: int, tail: bytes, cut: int) -> None:
    payload = b"\0" * zeros + tail
    out = asyncio.run(inflate(gzip.compress(payload), cut, 1 << 30))
    assert b"".join(out) == payload
    assert all(len(c) <= INFLATE_STEP for c in out)


def test_bomb_refused_at_the_cap() -> None:
    bomb = zlib.compressobj(9, zlib.DEFLATED, 31)
    data = bomb.compress(b"\0" * (64 << 20)) + bomb.flush()
    with pytest.raises(PayloadTooLarge):
        asyncio.run(inflate(data, 1 << 16, 4 << 20))


@pytest.mark.parametrize("value", ["gzip, chunked", "deflate,chunked", "chunked, chunked, br"])
def test_transfer_codings_other_than_chunked(value: str) -> None:
    with pytest.raises(UnsupportedMediaType):
        check_transfer_encoding(value)
    check_transfer_encoding("chunked")
    check_transfer_encoding("")
