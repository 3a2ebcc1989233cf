"""Issue 20 items 4 and 6, over raw sockets: the memory a body makes the gateway hold for one row
is bounded by the longest row it can accept (--max-row-bytes, by default --batch-max-bytes), not by
the body limit, in every framing; a gzip body of many (empty) members is refused at a bound.

A row that outgrows the bound is refused as soon as that many bytes arrived: the tests send the
start of a body much larger than that and withhold the rest (a gateway waiting for it would answer
408 after --body-read-timeout-s)."""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import ADMIN_KEY, Gateway, unique_name
from tests.reliability.rawhttp import RawReply, connect, read_reply, request_bytes
from tests.security.conftest import COLUMNS, start_embedded

MiB = 1 << 20
ROW_LIMIT = MiB  # --batch-max-bytes' default
READ_TIMEOUT_S = 5


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gateway = start_embedded(
        Path(tmp_path_factory.mktemp("bounds")),
        [
            "--body-read-timeout-s",
            str(READ_TIMEOUT_S),
            "--max-decompressed-bytes",
            str(1024 * MiB),
            "--max-body-bytes",
            str(256 * MiB),
            "--memory-cap-bytes",
            str(1024 * MiB),
        ],
    )
    yield gateway
    assert gateway.stop() == 0, gateway.log()[-3000:]


@pytest.fixture(scope="module")
def stream(gw: Gateway) -> str:
    name = unique_name("bounds")
    gw.create_stream(name, COLUMNS)
    return name


@pytest.fixture(scope="module")
def text_stream(gw: Gateway) -> str:
    name = unique_name("text")
    gw.create_stream(name, [{"name": "line", "type": "string"}])
    return name


def withheld(gw: Gateway, path: str, content_type: str, start: bytes, total: int = 64 * MiB) -> RawReply:
    """Send the head and `start` of a body of `total` bytes, withhold the rest, read the reply."""
    with connect(gw.port, timeout=READ_TIMEOUT_S * 6) as s:
        s.sendall(
            request_bytes(
                "POST",
                path,
                {"X-Api-Key": ADMIN_KEY, "Content-Type": content_type},
                start,
                content_length=total,
            )
        )
        return read_reply(s)


def assert_row_refused(reply: RawReply, row: int) -> None:
    assert reply.status == 413, reply
    body = reply.json()
    assert f"row {row} is longer than {ROW_LIMIT} bytes" in body["message"], body


ROWS = b"".join(b'{"id": "r%d", "n": %d}\n' % (i, i) for i in range(10))


def test_an_undelimited_ndjson_row_is_refused_at_the_bound(gw: Gateway, stream: str) -> None:
    start = ROWS + b'{"id": "' + b"x" * (2 * ROW_LIMIT)
    reply = withheld(gw, f"/api/v1beta2/streams/{stream}/ingest", "application/x-ndjson", start)
    assert_row_refused(reply, 10)


def test_an_undelimited_tinybird_row_is_refused_at_the_bound(gw: Gateway, stream: str) -> None:
    start = ROWS + b" " * (2 * ROW_LIMIT)  # blanks between rows count too
    reply = withheld(gw, f"/v0/events?name={stream}", "application/x-ndjson", start)
    assert reply.status == 413 and "row 10 is longer than" in reply.json()["error"], reply


def test_a_long_line_is_refused_at_the_bound(gw: Gateway, text_stream: str) -> None:
    start = b"one\ntwo\n" + b"x" * (2 * ROW_LIMIT)
    reply = withheld(gw, f"/api/v1beta2/streams/{text_stream}/ingest?format=lines", "text/plain", start)
    assert_row_refused(reply, 2)


def test_a_long_raw_body_is_refused_at_the_bound(gw: Gateway, text_stream: str) -> None:
    reply = withheld(
        gw, f"/api/v1beta2/streams/{text_stream}/ingest?format=raw", "text/plain", b"x" * (2 * ROW_LIMIT)
    )
    assert_row_refused(reply, 0)


def test_a_long_compact_element_is_refused_at_the_bound(gw: Gateway, stream: str) -> None:
    start = b'{"columns": ["id", "n"], "data": [' + b'["a", 1],' * 1000 + b'["' + b"x" * (2 * ROW_LIMIT)
    reply = withheld(gw, f"/api/v1beta2/streams/{stream}/ingest", "application/json", start)
    assert_row_refused(reply, 1000)


def vm_hwm_kib(gw: Gateway) -> int:
    assert gw.proc is not None
    status = Path(f"/proc/{gw.proc.pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))  # type: ignore[union-attr]


def test_a_gzip_of_zeros_is_refused_within_one_row(gw: Gateway, stream: str) -> None:
    """256 MiB of zeros, ~250 KB on the wire: refused once one row's worth was inflated."""
    before = vm_hwm_kib(gw)
    bomb = gzip.compress(b"\0" * (256 * MiB), compresslevel=1)
    with connect(gw.port, timeout=60) as s:
        s.sendall(
            request_bytes(
                "POST",
                f"/api/v1beta2/streams/{stream}/ingest",
                {"X-Api-Key": ADMIN_KEY, "Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"},
                bomb,
            )
        )
        reply = read_reply(s)
    assert_row_refused(reply, 0)
    grown_mib = (vm_hwm_kib(gw) - before) / 1024
    assert grown_mib < 64, f"peak RSS grew {grown_mib:.0f} MiB for one refused gzip body"


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_many_empty_members_are_refused(gw: Gateway, stream: str, encoding: str) -> None:
    import zlib

    member = gzip.compress(b"") if encoding == "gzip" else zlib.compress(b"")
    body = member * 2000 + (gzip.compress(ROWS) if encoding == "gzip" else zlib.compress(ROWS))
    with connect(gw.port, timeout=60) as s:
        s.sendall(
            request_bytes(
                "POST",
                f"/api/v1beta2/streams/{stream}/ingest",
                {
                    "X-Api-Key": ADMIN_KEY,
                    "Content-Type": "application/x-ndjson",
                    "Content-Encoding": encoding,
                },
                body,
            )
        )
        reply = read_reply(s)
    assert reply.status == 413, reply
    assert "--max-gzip-members" in reply.json()["message"]
    few = member * 10 + gzip.compress(ROWS) if encoding == "gzip" else None
    if few is not None:  # concatenated members within the bound are one body, as before
        reply = gw.request(
            "POST",
            f"/api/v1beta2/streams/{stream}/ingest?wait=true",
            few,
            headers={"Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"},
        )
        assert reply.status == 200 and reply.json()["rows"] == 10, reply.body


def test_the_rest_of_a_quarantined_body_is_held_against_the_keys_share(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Once a row is invalid, the quarantine path reads the rest of the body to split it: those
    bytes count against the memory cap and the key's share like the ones before them (they did
    not: a bad first row let a key hold any body up to the decompressed limit, uncounted)."""
    small = start_embedded(
        Path(tmp_path_factory.mktemp("quarantine-share")), ["--memory-cap-bytes", str(8 * MiB)]
    )
    try:
        name = unique_name("qshare")
        small.create_stream(name, COLUMNS)
        key = small.request(
            "POST", "/api/v1beta2/apikeys", {"name": "edge", "permissions": [f"DATASOURCE:APPEND:{name}"]}
        ).json()["api_key"]
        # a bad first row, then 3 MiB of good rows: more than the key's share (0.25 of 8 MiB)
        row = b'{"id": "r", "n": 1}\n'
        body = b'{"id": "bad", "n": "x"}\n' + row * (3 * MiB // len(row))
        reply = small.request(
            "POST",
            f"/v0/events?name={name}",
            body,
            key=None,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/x-ndjson"},
        )
        assert reply.status == 413, (reply.status, reply.body[:300])
        assert b"--key-share" in reply.body, reply.body[:300]
    finally:
        assert small.stop() == 0, small.log()[-3000:]
