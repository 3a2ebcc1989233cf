"""Issue 20 items 1 and 5: one client cannot take every decoding slot, every byte of the memory
cap or every connection. Measured with a real second client: while a hostile client holds all it
may (waited for through the gateway's own gauges and counters, never by sleeping), another key's,
the admin's and another address's requests succeed."""

from __future__ import annotations

import re
import select
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import Gateway, http, unique_name, wait_until
from tests.reliability.rawhttp import closed_by_peer, connect, read_reply, request_bytes
from tests.security.conftest import COLUMNS, start_embedded
from tests.security.test_keys_and_scopes import new_key

MiB = 1 << 20
SLOTS = 64  # the default --max-decoding-requests
PER_KEY = 16  # its --key-share (0.25)
FOR_OTHERS = SLOTS - 7  # less the --admin-reserve (0.1, rounded up)
MEMORY_CAP = 8 * MiB
NDJSON = "application/x-ndjson"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    # The minimum-rate rule is off and the read timeout long: the hostile bodies must hold
    # their slots for as long as the test needs, however loaded the machine is.
    gateway = start_embedded(
        Path(tmp_path_factory.mktemp("share")),
        [
            "--memory-cap-bytes",
            str(MEMORY_CAP),
            "--queue-max-bytes",
            str(MEMORY_CAP),
            "--body-min-bytes-per-s",
            "0",
            "--body-read-timeout-s",
            "600",
            "--body-total-timeout-s",
            "600",
        ],
    )
    yield gateway
    assert gateway.stop() == 0, gateway.log()[-3000:]


@pytest.fixture(scope="module")
def stream(gw: Gateway) -> str:
    name = unique_name("share")
    gw.create_stream(name, COLUMNS)
    return name


def metric(gw: Gateway, name: str, labels: str = "") -> float:
    text = http("GET", gw.url + "/metrics").body.decode()
    m = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def throttled(gw: Gateway, cause: str) -> float:
    return metric(gw, "gateway_throttled_requests_total", f'{{cause="{cause}",status="429"}}')


def start_slow_bodies(
    gw: Gateway, stream: str, key: str, count: int, sent: bytes, length: int
) -> list[socket.socket]:
    """`count` Tinybird requests with `key`, each declaring `length` body bytes and sending only
    `sent` (a public browser key's attack: the body never finishes)."""
    socks = []
    for _ in range(count):
        s = connect(gw.port, timeout=60)
        s.sendall(
            request_bytes(
                "POST",
                f"/v0/events?name={stream}",
                {"Authorization": f"Bearer {key}", "Content-Type": NDJSON},
                sent,
                content_length=length,
            )
        )
        socks.append(s)
    return socks


def refusals(socks: list[socket.socket], expected: int) -> list[dict[str, object]]:
    """The replies of the `expected` requests refused at once (the others hold their slots and
    have no reply yet: only sockets with something to read are read)."""
    replies: list[dict[str, object]] = []
    pending = list(socks)
    while len(replies) < expected:
        ready, _, _ = select.select(pending, [], [], 60)
        assert ready, f"only {len(replies)} of {expected} refusals came"
        for s in ready:
            pending.remove(s)
            reply = read_reply(s)
            assert reply.status == 429, (reply.status, reply.body)
            assert reply.headers.get("retry-after") == "1", reply.headers
            replies.append(reply.json())
    return replies


def second_clients_succeed(gw: Gateway, stream: str, key: str) -> None:
    row = '{"id": "second", "n": 2}\n'
    reply = gw.ingest(stream, row, content_type=NDJSON, headers={"X-Api-Key": key})
    assert reply.status == 200, reply.body
    reply = gw.ingest(stream, row, content_type=NDJSON)  # the admin key
    assert reply.status == 200, reply.body


def close_all(socks: list[socket.socket]) -> None:
    for s in socks:
        s.close()


def test_one_key_cannot_take_every_decoding_slot(gw: Gateway, stream: str) -> None:
    hostile = new_key(gw, [f"DATASOURCE:APPEND:{stream}"])
    other = new_key(gw, [f"DATASOURCE:APPEND:{stream}"])
    before = throttled(gw, "key_share")
    socks = start_slow_bodies(gw, stream, hostile, SLOTS, b'{"id":"a",', 100_000)
    try:
        # Every hostile request either holds a slot or was refused for its key's share (before
        # the fix all 64 held one, and every other client got 429 "decoding 64 requests").
        wait_until(
            lambda: metric(gw, "gateway_requests_decoding") + throttled(gw, "key_share") - before >= SLOTS,
            60,
            "the hostile requests to hold their slots or be refused",
        )
        second_clients_succeed(gw, stream, other)
        assert metric(gw, "gateway_requests_decoding") == PER_KEY
        replies = refusals(socks, SLOTS - PER_KEY)
        assert all("--key-share" in str(r) for r in replies), replies[:2]  # Tinybird's shape
    finally:
        close_all(socks)
    wait_until(lambda: metric(gw, "gateway_requests_decoding") == 0, 60, "the slots given back")


def test_the_admin_keeps_its_reserve_when_every_other_key_holds_its_share(gw: Gateway, stream: str) -> None:
    keys = [new_key(gw, [f"DATASOURCE:APPEND:{stream}"]) for _ in range(4)]
    before = throttled(gw, "key_share") + throttled(gw, "decoding")
    socks = [s for key in keys for s in start_slow_bodies(gw, stream, key, PER_KEY, b'{"id":"a",', 100_000)]
    try:
        wait_until(
            lambda: (
                metric(gw, "gateway_requests_decoding")
                + throttled(gw, "key_share")
                + throttled(gw, "decoding")
                - before
                >= len(socks)
            ),
            60,
            "the hostile requests to hold their slots or be refused",
        )
        reply = gw.ingest(stream, '{"id": "admin", "n": 3}\n', content_type=NDJSON)
        assert reply.status == 200, reply.body  # before the fix: 429, every slot taken
        assert metric(gw, "gateway_requests_decoding") == FOR_OTHERS
        fifth = new_key(gw, [f"DATASOURCE:APPEND:{stream}"])
        reply = gw.ingest(
            stream, '{"id": "fifth", "n": 4}\n', content_type=NDJSON, headers={"X-Api-Key": fifth}
        )
        assert reply.status == 429 and "--admin-reserve" in reply.json()["message"], reply.body
        assert reply.headers["Retry-After"] == "1"
        refusals(socks, len(socks) - FOR_OTHERS)
    finally:
        close_all(socks)
    wait_until(lambda: metric(gw, "gateway_requests_decoding") == 0, 60, "the slots given back")


def test_one_key_cannot_take_the_memory_cap_with_bodies_in_flight(gw: Gateway, stream: str) -> None:
    hostile = new_key(gw, [f"DATASOURCE:APPEND:{stream}"])
    other = new_key(gw, [f"DATASOURCE:APPEND:{stream}"])
    piece = b'{"id": "' + b"x" * (600 * 1024)  # one row, never finished
    count = 13  # 7.8 MiB: all of them fitted under the 8 MiB cap before the fix
    before = throttled(gw, "key_share")
    socks = start_slow_bodies(gw, stream, hostile, count, piece, 1 * MiB)
    try:
        wait_until(
            lambda: metric(gw, "gateway_requests_decoding") + throttled(gw, "key_share") - before >= count,
            60,
            "the hostile bodies to be held or refused",
        )
        big = "".join(f'{{"id": "{"y" * 1000}", "n": {i}}}\n' for i in range(1000))  # 1 MB
        reply = gw.ingest(stream, big, content_type=NDJSON, headers={"X-Api-Key": other})
        assert reply.status == 200, reply.body  # before the fix: 429, the cap in use
        # A key may hold a quarter of the cap: 2 MiB, three of these bodies.
        assert metric(gw, "gateway_requests_decoding") == 3
        replies = refusals(socks, count - 3)
        assert all("--key-share" in str(r) for r in replies), replies[:2]
    finally:
        close_all(socks)
    wait_until(lambda: metric(gw, "gateway_requests_decoding") == 0, 60, "the slots given back")


# ---- connections: a share per client address, and the head deadline from accept ---------------
MAX_CONNECTIONS = 20
PER_ADDRESS = 5  # --address-share 0.25


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gateway = start_embedded(
        Path(tmp_path_factory.mktemp("conns")),
        [
            "--max-connections",
            str(MAX_CONNECTIONS),
            "--address-share",
            "0.25",
            "--header-read-timeout-s",
            "1",
            "--keepalive-timeout-s",
            "600",
        ],
    )
    yield gateway
    assert gateway.stop() == 0, gateway.log()[-3000:]


def connect_from(address: str, port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(60)
    s.bind((address, 0))
    s.connect(("127.0.0.1", port))
    return s


def test_one_address_cannot_hold_every_connection(small: Gateway) -> None:
    held: list[socket.socket] = []
    statuses = []
    try:
        # Idle keep-alive connections, each after one request served.
        for _ in range(MAX_CONNECTIONS):
            s = connect_from("127.0.0.1", small.port)
            held.append(s)
            s.sendall(request_bytes("GET", "/readyz", {}))
            reply = read_reply(s)
            statuses.append(reply.status)
            if reply.status == 429:
                assert reply.json()["error"] == "too_many_connections", reply.body
                assert "--address-share" in reply.json()["message"]
                assert reply.headers["retry-after"] == "1"
        assert statuses == [200] * PER_ADDRESS + [429] * (MAX_CONNECTIONS - PER_ADDRESS)
        # Another address is served (before the fix: 503, all 20 connections taken), and a
        # liveness probe from the full address too.
        with connect_from("127.0.0.2", small.port) as s:
            s.sendall(request_bytes("GET", "/readyz", {}))
            assert read_reply(s).status == 200
        with connect_from("127.0.0.1", small.port) as s:
            s.sendall(request_bytes("GET", "/healthz", {}))
            assert read_reply(s).status == 200
    finally:
        close_all(held)


def test_a_silent_connection_is_closed_at_the_head_deadline(small: Gateway) -> None:
    # Before the fix the head timer started at the first byte: a connection that sends nothing
    # stayed open until the keep-alive timer (600 s here).
    with connect(small.port) as s:
        reply = read_reply(s)
        assert reply.status == 408, reply
        assert reply.json()["error"] == "request_timeout"
        assert closed_by_peer(s, 60)
