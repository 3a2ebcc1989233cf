"""Issue 9 items 4, 6, 9 and 11, over raw sockets: a request no queue can ever hold is a 413; a
client hanging up mid-body is no 500; a gzip bomb is refused within the memory cap; the "100
Continue" waits for the checks; /healthz is served over the connection cap; a transfer coding
other than chunked is refused."""

from __future__ import annotations

import gzip
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import ADMIN_KEY, Gateway, http, unique_name
from tests.reliability.rawhttp import connect, exchange, read_reply, request_bytes
from tests.security.conftest import COLUMNS, start_embedded, wait_logged

MiB = 1 << 20
QUEUE_ROWS = 100
MEMORY_CAP = 16 * MiB
MAX_CONNECTIONS = 8
NDJSON = "application/x-ndjson"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gateway = start_embedded(
        Path(tmp_path_factory.mktemp("proto")),
        [
            "--queue-max-rows",
            str(QUEUE_ROWS),
            "--memory-cap-bytes",
            str(MEMORY_CAP),
            "--queue-max-bytes",
            str(MEMORY_CAP),
            "--max-connections",
            str(MAX_CONNECTIONS),
            "--address-share",
            "1",  # every test connects from 127.0.0.1
            "--max-decompressed-bytes",
            str(1024 * MiB),
            "--max-body-bytes",
            str(64 * MiB),
        ],
    )
    yield gateway
    assert gateway.stop() == 0, gateway.log()[-3000:]


@pytest.fixture(scope="module")
def stream(gw: Gateway) -> str:
    name = unique_name("proto")
    gw.create_stream(name, COLUMNS)
    return name


def ingest_path(stream: str) -> str:
    return f"/api/v1beta2/streams/{stream}/ingest"


def test_a_request_larger_than_the_queue_is_413(gw: Gateway, stream: str) -> None:
    rows = "".join(f'{{"id": "r{i}", "n": {i}}}\n' for i in range(QUEUE_ROWS + 1))
    reply = gw.ingest(stream, rows, content_type=NDJSON)
    assert reply.status == 413, reply.body
    message = reply.json()["message"]
    assert "--queue-max-rows" in message and "split" in message and str(QUEUE_ROWS) in message
    assert gw.ingest(stream, rows[: rows.index("\n") + 1], content_type=NDJSON).status == 200


def test_client_hanging_up_mid_body_is_no_500(gw: Gateway, stream: str) -> None:
    for n, path in enumerate((ingest_path(stream), f"/v0/events?name={stream}", "/api/v1beta2/streams")):
        with connect(gw.port) as s:
            s.sendall(
                request_bytes(
                    "POST",
                    path,
                    {"X-Api-Key": ADMIN_KEY, "Content-Type": NDJSON, "X-Request-ID": f"hangup-{n}"},
                    b'{"id": "a", "n": 1}\n',
                    content_length=1000,
                )
            )
            s.shutdown(socket.SHUT_WR)
            read_reply(s)
    log = wait_logged(gw, "hangup-2")
    assert "Traceback" not in log and "unhandled error" not in log, log[-3000:]
    assert not re.search(r"-> 5\d\d", log), log[-3000:]
    metrics = http("GET", gw.url + "/metrics").body.decode()
    assert re.search(r'gateway_http_requests_total\{[^}]*status="499"[^}]*\} [1-9]', metrics)


def vm_hwm_kib(gw: Gateway) -> int:
    assert gw.proc is not None
    status = Path(f"/proc/{gw.proc.pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))  # type: ignore[union-attr]


def test_gzip_bomb_is_refused_within_the_memory_cap(gw: Gateway, stream: str) -> None:
    bomb = gzip.compress(b"\0" * (512 * MiB), compresslevel=1)
    assert len(bomb) < 4 * MiB
    before = vm_hwm_kib(gw)
    replies = [
        gw.ingest(stream, bomb, content_type=fmt, headers={"Content-Encoding": "gzip"})
        for fmt in (NDJSON, "application/json")
    ]
    grown_mib = (vm_hwm_kib(gw) - before) / 1024
    # The bomb is 512 MiB; what the gateway may hold is the 16 MiB cap plus one inflate step,
    # a copy in the decoder and allocator slack (measured: ~20 MiB). Before the fix: > 500 MiB.
    assert grown_mib < 160, grown_mib
    for reply in replies:
        assert reply.status == 413, reply.body
        # NDJSON: refused once one row's worth arrived without a newline (--max-row-bytes);
        # a body that is not a compact head is held whole, within the cap
        assert re.search("--memory-cap-bytes|row 0 is longer than", reply.json()["message"])
    assert gw.ingest(stream, '{"id": "after", "n": 1}\n', content_type=NDJSON).status == 200


def head_with_expect(path: str, key: str, length: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nX-Api-Key: {key}\r\nContent-Type: {NDJSON}\r\n"
        f"Content-Length: {length}\r\nExpect: 100-continue\r\n\r\n"
    ).encode()


def test_100_continue_waits_for_auth_and_size(gw: Gateway, stream: str) -> None:
    path = ingest_path(stream)
    assert exchange(gw.port, head_with_expect(path, "wrong-key", 20)).status == 401
    assert exchange(gw.port, head_with_expect(path, ADMIN_KEY, 65 * MiB)).status == 413
    body = b'{"id": "e", "n": 1}\n'
    with connect(gw.port) as s:
        s.sendall(head_with_expect(path, ADMIN_KEY, len(body)))
        assert read_reply(s).status == 100
        s.sendall(body)
        assert read_reply(s).status == 202


def test_healthz_is_served_over_the_connection_cap(tmp_path: Path) -> None:
    # A gateway of its own: the held connections must not crowd the other tests out.
    gw = start_embedded(tmp_path, ["--max-connections", str(MAX_CONNECTIONS), "--address-share", "1"])
    held: list[socket.socket] = []
    try:
        # Fill the cap with served connections (earlier tests' closed sockets may still count
        # for a moment, so fill until refused rather than counting).
        for _ in range(MAX_CONNECTIONS + 1):
            s = connect(gw.port)
            held.append(s)
            s.sendall(request_bytes("GET", "/readyz", {}))
            if read_reply(s).status == 503:
                break
        else:
            pytest.fail("the connection cap never refused")
        assert exchange(gw.port, request_bytes("GET", "/healthz", {})).status == 200
        with connect(gw.port) as s:  # the head arriving in pieces
            for piece in (b"GE", b"T /heal", b"thz HTTP/1.1\r\nHost: x\r\n\r\n"):
                s.sendall(piece)
            assert read_reply(s).status == 200
    finally:
        for s in held:
            s.close()
        assert gw.stop() == 0, gw.log()[-3000:]


def test_transfer_codings_other_than_chunked_are_refused(gw: Gateway, stream: str) -> None:
    row = b'{"id": "te", "n": 1}\n'
    chunked = f"{len(row):x}\r\n".encode() + row + b"\r\n0\r\n\r\n"
    for coding in ("gzip, chunked", "deflate, chunked"):
        data = (
            request_bytes(
                "POST",
                ingest_path(stream),
                {"X-Api-Key": ADMIN_KEY, "Content-Type": NDJSON, "Transfer-Encoding": coding},
            )
            + chunked
        )
        reply = exchange(gw.port, data)
        assert reply.status in (400, 415), (coding, reply.status, reply.body)
