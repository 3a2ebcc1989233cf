"""Issue 20 items 2 and 15 (headers), and item 1's minimum body rate, over raw sockets: a request
head is bounded as a whole (--max-head-bytes) and an unfinished one is held against the memory
cap; too many headers is a 431 with a JSON body; a body that trickles is dropped (408) long
before its read timeout, giving its decoding slot back."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import ADMIN_KEY, Gateway, http, unique_name, wait_until
from tests.reliability.rawhttp import connect, exchange, read_reply, request_bytes
from tests.security.conftest import COLUMNS, start_embedded

KiB = 1024
MAX_HEAD = 32 * KiB  # the default --max-head-bytes
MEMORY_CAP = 1024 * KiB
NDJSON = "application/x-ndjson"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gateway = start_embedded(
        Path(tmp_path_factory.mktemp("heads")),
        [
            "--memory-cap-bytes",
            str(MEMORY_CAP),
            "--queue-max-bytes",
            str(MEMORY_CAP),
            "--header-read-timeout-s",
            "600",
            "--body-read-timeout-s",
            "600",
            "--body-total-timeout-s",
            "600",
            "--body-min-bytes-per-s",
            "1000",
            "--body-rate-window-s",
            "1",
        ],
    )
    yield gateway
    assert gateway.stop() == 0, gateway.log()[-3000:]


def metric(gw: Gateway, name: str, labels: str = "") -> float:
    text = http("GET", gw.url + "/metrics").body.decode()
    m = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def head_bytes(gw: Gateway) -> float:
    return metric(gw, "gateway_request_head_bytes")


def unfinished_head(size: int) -> bytes:
    """`GET /healthz` with headers of about `size` bytes in all, and never the final CRLF."""
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
    n = 0
    while len(head) < size:
        head += f"X-Pad-{n}: ".encode() + b"a" * 4000 + b"\r\n"
        n += 1
    return head[:size]


def assert_431(reply: object) -> None:
    assert getattr(reply, "status", None) == 431, reply
    body = reply.json()  # type: ignore[attr-defined]
    assert body["code"] == 431 and body["error"] == "request_header_fields_too_large", body


def test_a_head_larger_than_the_bound_is_431_whole_or_in_pieces(gw: Gateway) -> None:
    # Each header is within aiohttp's 8190-byte field limit; the head as a whole is not.
    whole = unfinished_head(MAX_HEAD + 8 * KiB) + b"\r\n\r\n"
    assert_431(exchange(gw.port, whole))  # before the fix: 200 (up to 128 x 8 KiB was taken)
    with connect(gw.port) as s:
        s.sendall(unfinished_head(MAX_HEAD - 4 * KiB))
        wait_until(lambda: head_bytes(gw) >= MAX_HEAD - 4 * KiB, 60, "the head to be held")
        s.sendall(b"X-More: " + b"b" * 6000 + b"\r\n")
        assert_431(read_reply(s))
    wait_until(lambda: head_bytes(gw) == 0, 60, "the head's bytes given back")


def test_unfinished_heads_are_held_against_the_memory_cap(gw: Gateway) -> None:
    # 1 MiB cap, 30 KiB heads counted twice (the parser keeps two copies): about 17 fit; the
    # rest are refused (503) instead of held.
    socks: list[socket.socket] = []
    try:
        for _ in range(60):
            s = connect(gw.port)
            socks.append(s)
            s.sendall(unfinished_head(30 * KiB))
        wait_until(lambda: head_bytes(gw) >= MEMORY_CAP - 2 * 2 * 30 * KiB, 60, "the heads to be held")
        assert head_bytes(gw) <= MEMORY_CAP
        refused = [read_reply(s) for s in socks[-10:]]
        assert all(r.status == 503 and r.headers["retry-after"] == "1" for r in refused), refused
        assert "memory cap" in refused[0].json()["message"]
    finally:
        for s in socks:
            s.close()
    wait_until(lambda: head_bytes(gw) == 0, 60, "the heads' bytes given back")
    assert http("GET", gw.url + "/readyz").status == 200


def test_too_many_headers_is_431_with_a_json_body(gw: Gateway) -> None:
    headers = {f"X-H-{i}": "v" for i in range(129)}
    assert_431(exchange(gw.port, request_bytes("GET", "/healthz", headers)))
    fine = {f"X-H-{i}": "v" for i in range(100)}
    assert exchange(gw.port, request_bytes("GET", "/healthz", fine)).status == 200


def test_a_trickling_body_is_dropped_and_gives_its_slot_back(gw: Gateway) -> None:
    stream = unique_name("trickle")
    gw.create_stream(stream, COLUMNS)
    with connect(gw.port) as s:
        s.sendall(
            request_bytes(
                "POST",
                f"/api/v1beta2/streams/{stream}/ingest",
                {"X-Api-Key": ADMIN_KEY, "Content-Type": NDJSON},
                b'{"id": "',
                content_length=10_000,
            )
        )
        # One byte whenever a fifth of a second passes without a reply: each byte resets the
        # 600 s read timeout (before the fix it was all there was); the rate rule (1,000
        # bytes/s over 1 s of waiting) drops it after about a second.
        s.settimeout(0.2)
        got = b""
        for _ in range(600):
            try:
                got = s.recv(65536)
                break
            except TimeoutError:
                s.sendall(b"a")
        s.settimeout(60)
        assert got, "no reply while trickling for 120 s"
        reply = read_reply(_Prefixed(s, got))  # type: ignore[arg-type]
    assert reply.status == 408, reply
    assert "bytes/s" in reply.json()["message"]
    wait_until(lambda: metric(gw, "gateway_requests_decoding") == 0, 60, "the slot given back")
    assert gw.ingest(stream, '{"id": "after", "n": 1}\n', content_type=NDJSON).status == 200


class _Prefixed:
    """A socket whose first recv returns bytes already read."""

    def __init__(self, sock: socket.socket, first: bytes) -> None:
        self._sock, self._first = sock, first

    def recv(self, n: int) -> bytes:
        if self._first:
            data, self._first = self._first, b""
            return data
        return self._sock.recv(n)
