"""read_chunks: identity and gzip/deflate bodies, both size limits, truncation, timeouts."""

from __future__ import annotations

import asyncio
import gzip
import tracemalloc
import zlib
from collections.abc import Iterable

import pytest
from aiohttp.base_protocol import BaseProtocol
from aiohttp.streams import StreamReader
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import (
    GatewayError,
    MalformedBody,
    PayloadTooLarge,
    RequestTimeout,
    UnsupportedMediaType,
)
from gateway.ingest.body import check_encoding, read_chunks

MiB = 1024 * 1024


class FakeSource:
    """A ChunkSource handing out queued chunks, then b"" forever; counts reads."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self.chunks = list(chunks)
        self.reads = 0

    async def readany(self) -> bytes:
        self.reads += 1
        return self.chunks.pop(0) if self.chunks else b""


class SilentSource:
    """A client that sends headers and then nothing at all."""

    def __init__(self) -> None:
        self.never: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def readany(self) -> bytes:
        return await self.never


async def read_all(
    chunks: Iterable[bytes],
    *,
    encoding: str = "",
    max_bytes: int = 64 * MiB,
    max_decompressed: int = 64 * MiB,
    read_timeout: float | None = None,
) -> list[bytes]:
    return [
        c
        async for c in read_chunks(
            FakeSource(chunks),
            content_encoding=encoding,
            max_bytes=max_bytes,
            max_decompressed=max_decompressed,
            read_timeout=read_timeout,
        )
    ]


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


BODY = b"".join(b'{"id":%d,"name":"row %d"}\n' % (i, i) for i in range(3000))


# ---- identity -----------------------------------------------------------------------------------
@pytest.mark.parametrize("encoding", ["", "identity", " Identity "])
async def test_identity_passes_chunks_through(encoding: str) -> None:
    chunks = [b"abc", b"d", b"\x00\xff" * 10]
    assert await read_all(chunks, encoding=encoding) == chunks


async def test_identity_empty_body() -> None:
    assert await read_all([]) == []


async def test_identity_at_the_limit_is_accepted() -> None:
    assert b"".join(await read_all([b"x" * 6, b"y" * 4], max_bytes=10)) == b"x" * 6 + b"y" * 4


async def test_identity_over_the_limit() -> None:
    source = FakeSource([b"x" * 6, b"y" * 5, b"z" * 100])
    got: list[bytes] = []
    with pytest.raises(PayloadTooLarge) as info:
        async for chunk in read_chunks(source, content_encoding="", max_bytes=10, max_decompressed=MiB):
            got.append(chunk)
    assert info.value.status == 413
    assert "10" in info.value.message
    assert got == [b"x" * 6]
    assert source.reads == 2  # stopped reading at the chunk that crossed the limit


# ---- gzip / deflate -----------------------------------------------------------------------------
@pytest.mark.parametrize("encoding", ["gzip", "x-gzip", "GZIP", " gzip "])
async def test_gzip_in_small_chunks_equals_original(encoding: str) -> None:
    compressed = gzip.compress(BODY)
    for size in (1, 7, 1000, len(compressed)):
        assert b"".join(await read_all(pieces(compressed, size), encoding=encoding)) == BODY


async def test_deflate() -> None:
    compressed = zlib.compress(BODY)
    assert b"".join(await read_all(pieces(compressed, 13), encoding="deflate")) == BODY


async def test_gzip_output_is_streamed_not_buffered() -> None:
    data = bytes(range(256)) * 4096  # 1 MiB, poorly compressible
    chunks = await read_all(pieces(gzip.compress(data), 4096), encoding="gzip")
    assert len(chunks) > 1
    assert b"".join(chunks) == data


async def test_max_bytes_counts_compressed_bytes() -> None:
    compressed = gzip.compress(BODY)
    assert (
        b"".join(
            await read_all(
                [compressed], encoding="gzip", max_bytes=len(compressed), max_decompressed=len(BODY)
            )
        )
        == BODY
    )
    with pytest.raises(PayloadTooLarge):
        await read_all(pieces(compressed, 100), encoding="gzip", max_bytes=len(compressed) - 1)


async def test_decompressed_limit_exact() -> None:
    compressed = gzip.compress(BODY)
    assert b"".join(await read_all([compressed], encoding="gzip", max_decompressed=len(BODY))) == BODY
    with pytest.raises(PayloadTooLarge, match="decompression"):
        await read_all([compressed], encoding="gzip", max_decompressed=len(BODY) - 1)


@pytest.fixture(scope="module")
def gzip_bomb() -> bytes:
    """50 MiB of zeros, gzipped (~50 KB), built without ever holding the 50 MiB."""
    packer = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(MiB)
    out = [packer.compress(zeros) for _ in range(50)]
    out.append(packer.flush())
    return b"".join(out)


async def test_gzip_bomb_is_refused_without_inflating_it(gzip_bomb: bytes) -> None:
    assert len(gzip_bomb) < 1 * MiB
    source = FakeSource(pieces(gzip_bomb, 16 * 1024))
    received = 0
    biggest = 0
    tracemalloc.start()
    try:
        with pytest.raises(PayloadTooLarge, match="after decompression"):
            async for chunk in read_chunks(
                source, content_encoding="gzip", max_bytes=64 * MiB, max_decompressed=1 * MiB
            ):
                received += len(chunk)
                biggest = max(biggest, len(chunk))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert received <= 1 * MiB
    assert biggest <= 1 * MiB
    assert peak < 8 * MiB, f"peak {peak} bytes while refusing a 50 MiB bomb"
    assert source.chunks, "the whole bomb was read although the limit was hit early"


async def test_gzip_bomb_in_one_chunk(gzip_bomb: bytes) -> None:
    with pytest.raises(PayloadTooLarge):
        await read_all([gzip_bomb], encoding="gzip", max_decompressed=1 * MiB)


async def test_concatenated_gzip_members() -> None:
    a, b = gzip.compress(b"first\n" * 100), gzip.compress(b"second\n" * 10)
    expected = b"first\n" * 100 + b"second\n" * 10
    assert b"".join(await read_all([a + b], encoding="gzip")) == expected
    assert b"".join(await read_all([a, b], encoding="gzip")) == expected  # boundary = chunk edge
    assert b"".join(await read_all(pieces(a + b, 5), encoding="gzip")) == expected
    c = gzip.compress(b"")
    assert b"".join(await read_all([a, c, b], encoding="gzip")) == expected


@settings(max_examples=40, deadline=None, database=None)
@given(cuts=st.lists(st.integers(1, 400), max_size=6), members=st.integers(1, 4))
def test_concatenated_gzip_members_any_split(cuts: list[int], members: int) -> None:
    parts = [b"member %d\n" % i * (i + 3) for i in range(members)]
    body = b"".join(gzip.compress(p) for p in parts)
    points = sorted({c for c in cuts if c < len(body)})
    chunks = [body[x:y] for x, y in zip([0, *points], [*points, len(body)], strict=True)]
    got = asyncio.run(read_all(chunks, encoding="gzip"))
    assert b"".join(got) == b"".join(parts)


@pytest.mark.parametrize("cut", [1, 10, 20, -8, -1])
async def test_truncated_gzip(cut: int) -> None:
    compressed = gzip.compress(BODY)
    with pytest.raises(MalformedBody, match="truncated"):
        await read_all(pieces(compressed[:cut], 50), encoding="gzip")


async def test_second_member_truncated() -> None:
    a, b = gzip.compress(b"a" * 100), gzip.compress(b"b" * 100)
    with pytest.raises(MalformedBody, match="truncated"):
        await read_all([a, b[:5]], encoding="gzip")


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        ("gzip", b"this is not gzip at all"),
        ("gzip", zlib.compress(b"zlib, not gzip")),
        ("deflate", gzip.compress(b"gzip, not zlib")),
        ("gzip", b"\x1f\x8b\x08\x00" + b"\xff" * 40),
    ],
)
async def test_not_compressed_as_declared(encoding: str, body: bytes) -> None:
    with pytest.raises(MalformedBody) as info:
        await read_all([body], encoding=encoding)
    assert info.value.status == 400


async def test_corrupt_gzip_payload() -> None:
    compressed = bytearray(gzip.compress(BODY))
    compressed[len(compressed) // 2] ^= 0xFF
    with pytest.raises(MalformedBody):
        await read_all(pieces(bytes(compressed), 64), encoding="gzip")


async def test_empty_gzip_body_is_empty() -> None:
    assert await read_all([], encoding="gzip") == []


@pytest.mark.parametrize("encoding", ["br", "zstd", "compress", "gzip, br", "gzip;q=1"])
async def test_unknown_content_encoding(encoding: str) -> None:
    source = FakeSource([b"x"])
    with pytest.raises(UnsupportedMediaType) as info:
        async for _ in read_chunks(source, content_encoding=encoding, max_bytes=10, max_decompressed=10):
            pass
    assert info.value.status == 415
    assert source.reads == 0
    with pytest.raises(UnsupportedMediaType):
        check_encoding(encoding)


def test_check_encoding() -> None:
    assert check_encoding("") is None
    assert check_encoding("identity") is None
    assert check_encoding("gzip") == check_encoding("X-GZIP") == 16 + zlib.MAX_WBITS
    assert check_encoding("deflate") == zlib.MAX_WBITS


# ---- timeouts -----------------------------------------------------------------------------------
@pytest.mark.parametrize("encoding", ["", "gzip"])
async def test_read_timeout_when_the_client_sends_nothing(encoding: str) -> None:
    source = SilentSource()
    with pytest.raises(RequestTimeout, match="no body data") as info:
        async for _ in read_chunks(
            source, content_encoding=encoding, max_bytes=10, max_decompressed=10, read_timeout=0.05
        ):
            pass
    assert isinstance(info.value, GatewayError) and info.value.status == 408


async def test_read_timeout_does_not_affect_a_prompt_client() -> None:
    compressed = gzip.compress(BODY)
    got = await read_all(pieces(compressed, 500), encoding="gzip", read_timeout=30)
    assert b"".join(got) == BODY


def aiohttp_reader() -> StreamReader:
    """aiohttp's own body reader (what handlers get as request.content), fed by the test."""
    protocol = BaseProtocol(asyncio.get_running_loop())
    protocol.connection_made(asyncio.Transport())  # an open connection: readany() may wait
    return StreamReader(protocol, 2**16, loop=asyncio.get_running_loop())


async def test_buffered_body_of_aiohttp_reader_is_read_whole() -> None:
    reader = aiohttp_reader()
    for part in (b'{"a": 1}\n', b'{"a": 2}\n'):
        reader.feed_data(part)
    reader.feed_eof()
    chunks = [
        c
        async for c in read_chunks(
            reader, content_encoding="", max_bytes=MiB, max_decompressed=MiB, read_timeout=0.01
        )
    ]
    assert b"".join(chunks) == b'{"a": 1}\n{"a": 2}\n'


async def test_aiohttp_reader_that_stalls_after_buffered_data_times_out() -> None:
    reader = aiohttp_reader()
    reader.feed_data(b'{"a": 1}\n')  # taken without waiting; then nothing more arrives
    got: list[bytes] = []
    with pytest.raises(RequestTimeout):
        async for chunk in read_chunks(
            reader, content_encoding="", max_bytes=MiB, max_decompressed=MiB, read_timeout=0.05
        ):
            got.append(chunk)
    assert got == [b'{"a": 1}\n']


async def test_aiohttp_reader_over_the_limit_without_waiting() -> None:
    reader = aiohttp_reader()
    reader.feed_data(b"x" * 101)
    reader.feed_eof()
    with pytest.raises(PayloadTooLarge):
        async for _ in read_chunks(
            reader, content_encoding="", max_bytes=100, max_decompressed=MiB, read_timeout=0.05
        ):
            pass
