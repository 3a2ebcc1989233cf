"""Bad and hostile input: every case gets its status and a JSON error, the server keeps serving,
and nothing reaches Kafka. Protocol-level cases (lying Content-Length, bodies that never end,
huge headers, slowloris) go over raw sockets."""

from __future__ import annotations

import asyncio
import gzip
import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import (
    ADMIN_KEY,
    Gateway,
    end_offsets,
    http,
    read_topic,
    unique_name,
)
from tests.reliability.rawhttp import (
    RawReply,
    closed_by_peer,
    connect,
    exchange,
    read_reply,
    request_bytes,
)

READ_TIMEOUT_S = 1.5
TOTAL_TIMEOUT_S = 5.0
MiB = 1 << 20
COLUMNS = [
    {"name": "id", "type": "string"},
    {"name": "n", "type": "int32"},
    {"name": "f", "type": "nullable(float64)"},
    {"name": "j", "type": "nullable(json)"},
]
NDJSON = "application/x-ndjson"
GOOD = '{"id": "a", "n": 1}\n'
BOM = "\ufeff"
DEEP = "[" * 10_000 + "]" * 10_000


@pytest.fixture(scope="module")
def gw(kafka: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gateway = Gateway(
        Path(tmp_path_factory.mktemp("hostile")),
        kafka,
        extra=[
            "--max-body-bytes",
            str(32 * MiB),
            "--max-decompressed-bytes",
            str(32 * MiB),
            "--body-read-timeout-s",
            str(READ_TIMEOUT_S),
            "--body-total-timeout-s",
            str(TOTAL_TIMEOUT_S),
            "--header-read-timeout-s",
            str(READ_TIMEOUT_S),
        ],
    ).start()
    yield gateway
    assert gateway.stop() == 0, gateway.log()[-3000:]


@pytest.fixture(scope="module")
def refused(gw: Gateway) -> tuple[str, str]:
    """The stream every refused case targets: its topic must stay empty."""
    name = unique_name("hostile")
    return name, gw.create_stream(name, COLUMNS)["topic"]


@pytest.fixture(scope="module")
def accepted(gw: Gateway) -> tuple[str, str]:
    """A stream for the odd inputs that are accepted with a defined meaning."""
    name = unique_name("odd")
    return name, gw.create_stream(name, COLUMNS)["topic"]


def assert_json_error(status: int, headers: dict[str, str], body: bytes, expected: int) -> None:
    assert status == expected, (status, body[:300])
    ctype = {k.lower(): v for k, v in headers.items()}.get("content-type", "")
    assert ctype.startswith("application/json"), (ctype, body[:300])
    err = json.loads(body)
    assert err["code"] == expected and err["message"] and err["request_id"], err


def assert_still_serving_nothing_written(gw: Gateway, kafka: str, topic: str) -> None:
    assert http("GET", gw.url + "/healthz", timeout=10).status == 200
    assert sum(asyncio.run(end_offsets(kafka, topic)).values()) == 0, "a refused row was written"


def rows(n: int, **extra: Any) -> str:
    return "".join(json.dumps({"id": f"r{i}", "n": i, **extra}) + "\n" for i in range(n))


def gz(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=9)


# (case, body, content type, extra headers, query, status)
CASES: list[tuple[str, bytes, str | None, dict[str, str], str, int]] = [
    ("malformed json", (GOOD + '{"id": "b", "n": 1,,}\n').encode(), NDJSON, {}, "", 400),
    ("not json at all", b"hello world", NDJSON, {}, "", 400),
    ("truncated ndjson", (GOOD + '{"id": "b", "n"').encode(), NDJSON, {}, "", 400),
    ("truncated compact", b'{"columns": ["id", "n"], "data": [["a", 1]', None, {}, "", 400),
    ("invalid utf-8 ndjson", b'{"id": "\xff\xfe", "n": 1}\n', NDJSON, {}, "", 400),
    ("invalid utf-8 compact", b'{"columns": ["id", "n"], "data": [["\xc3\x28", 1]]}', None, {}, "", 400),
    ("utf-16 surrogate escape", b'{"id": "\\ud800", "n": 1}\n', NDJSON, {}, "", 400),
    ("BOM between rows", (GOOD + BOM + GOOD).encode(), NDJSON, {}, "", 400),
    (
        "depth 10000 in a json column",
        ('{"id": "a", "n": 1, "j": ' + DEEP + "}\n").encode(),
        NDJSON,
        {},
        "",
        400,
    ),
    (
        "depth 10000 in an unknown field",
        ('{"id": "a", "n": 1, "x": ' + DEEP + "}\n").encode(),
        NDJSON,
        {},
        "",
        400,
    ),
    ("depth 10000 as the body", DEEP.encode(), NDJSON, {}, "", 400),
    (
        "depth 10000 in compact data",
        ('{"columns": ["id", "n", "j"], "data": [["a", 1, ' + DEEP + "]]}").encode(),
        None,
        {},
        "",
        400,
    ),
    (
        "depth 10000 as compact data",
        ('{"columns": ["id"], "data": ' + DEEP + "}").encode(),
        None,
        {},
        "",
        400,
    ),
    ("10 MB string", (json.dumps({"id": "x" * (10 * MiB), "n": 1}) + "\n").encode(), NDJSON, {}, "", 413),
    ("int32 overflow", (GOOD + '{"id": "b", "n": 2147483648}\n').encode(), NDJSON, {}, "", 400),
    ("int beyond 64 bits", b'{"id": "b", "n": 123456789012345678901234567890}\n', NDJSON, {}, "", 400),
    ("float for int", b'{"id": "b", "n": 1.5}\n', NDJSON, {}, "", 400),
    ("NaN", b'{"id": "b", "n": 1, "f": NaN}\n', NDJSON, {}, "", 400),
    ("Infinity", b'{"id": "b", "n": 1, "f": Infinity}\n', NDJSON, {}, "", 400),
    ("-Infinity compact", b'{"columns": ["id", "n", "f"], "data": [["a", 1, -Infinity]]}', None, {}, "", 400),
    ("float overflow 1e400", b'{"id": "b", "n": 1, "f": 1e400}\n', NDJSON, {}, "", 400),
    ("string for int", b'{"id": "b", "n": "1"}\n', NDJSON, {}, "", 400),
    ("int for string", b'{"id": 5, "n": 1}\n', NDJSON, {}, "", 400),
    ("bool for int", b'{"id": "b", "n": true}\n', NDJSON, {}, "", 400),
    ("null for non-nullable", b'{"id": null, "n": 1}\n', NDJSON, {}, "", 400),
    ("array row in ndjson", b'["b", 1]\n', NDJSON, {}, "", 400),
    ("missing required column", b'{"id": "b"}\n', NDJSON, {}, "", 400),
    ("only unknown columns", b'{"zz": 1}\n', NDJSON, {}, "", 400),
    ("empty body ndjson", b"", NDJSON, {}, "", 400),
    ("empty body compact", b"", None, {}, "", 400),
    ("whitespace body", b" \n\t\n", NDJSON, {}, "", 400),
    ("empty data", b'{"columns": ["id", "n"], "data": []}', None, {}, "", 400),
    ("empty columns", b'{"columns": [], "data": [[]]}', None, {}, "", 400),
    ("data row longer than columns", b'{"columns": ["id", "n"], "data": [["a", 1, 2]]}', None, {}, "", 400),
    ("data row shorter than columns", b'{"columns": ["id", "n"], "data": [["a"]]}', None, {}, "", 400),
    ("columns listed twice", b'{"columns": ["id", "id", "n"], "data": [["a", "b", 1]]}', None, {}, "", 400),
    ("columns not a list", b'{"columns": "id", "data": [["a"]]}', None, {}, "", 400),
    ("data not an array", b'{"columns": ["id", "n"], "data": {"a": 1}}', None, {}, "", 400),
    ("compact body that is an array", b'[["a", 1]]', None, {}, "", 400),
    ("wrong content type", GOOD.encode(), "application/xml", {}, "", 415),
    ("html content type", GOOD.encode(), "text/html", {}, "", 415),
    ("ndjson sent as form data", GOOD.encode(), "application/x-www-form-urlencoded", {}, "", 400),
    ("unknown format parameter", GOOD.encode(), NDJSON, {}, "format=xml", 400),
    ("raw format on a multi-column stream", b"hello", "text/plain", {}, "", 400),
    ("bad wait parameter", GOOD.encode(), NDJSON, {}, "wait=maybe", 400),
    ("gzip that is not gzip", GOOD.encode(), NDJSON, {"Content-Encoding": "gzip"}, "", 400),
    ("truncated gzip", gz(rows(100).encode())[:-30], NDJSON, {"Content-Encoding": "gzip"}, "", 400),
    ("gzip bomb", gz(b"\n" * (200 * MiB)), NDJSON, {"Content-Encoding": "gzip"}, "", 413),
    ("unknown content encoding", GOOD.encode(), NDJSON, {"Content-Encoding": "br"}, "", 415),
]


@pytest.mark.parametrize(
    ("case", "body", "ctype", "headers", "query", "status"), CASES, ids=[c[0] for c in CASES]
)
def test_refused_with_json_error_and_nothing_written(
    gw: Gateway,
    kafka: str,
    refused: tuple[str, str],
    case: str,
    body: bytes,
    ctype: str | None,
    headers: dict[str, str],
    query: str,
    status: int,
) -> None:
    name, topic = refused
    q = query if "wait=" in query else ("wait=false" + (f"&{query}" if query else ""))
    h = {**headers, "X-Api-Key": ADMIN_KEY}
    if ctype is not None:
        h["Content-Type"] = ctype
    reply = http("POST", f"{gw.url}/api/v1beta2/streams/{name}/ingest?{q}", body, headers=h)
    assert_json_error(reply.status, reply.headers, reply.body, status)
    assert_still_serving_nothing_written(gw, kafka, topic)


# ---- odd input that is accepted, with a defined meaning ---------------------------------------
def new_rows(kafka: str, topic: str, before: dict[int, int]) -> list[Any]:
    """The rows written to `topic` since its end offsets were `before`."""
    return [r.json() for r in asyncio.run(read_topic(kafka, topic)) if r.offset >= before.get(r.partition, 0)]


def test_leading_bom_is_ignored(gw: Gateway, kafka: str, accepted: tuple[str, str]) -> None:
    name, topic = accepted
    before = asyncio.run(end_offsets(kafka, topic))
    reply = gw.ingest(name, (BOM + '{"id": "bom", "n": 7}\n').encode(), content_type=NDJSON)
    assert reply.status == 200, reply.body
    got = new_rows(kafka, topic, before)
    assert got == [{"id": "bom", "n": 7, "f": None, "j": None}]


def test_duplicate_keys_last_one_wins(gw: Gateway, kafka: str, accepted: tuple[str, str]) -> None:
    """msgspec (like most JSON parsers) keeps the last of duplicate keys: documented behaviour."""
    name, topic = accepted
    before = asyncio.run(end_offsets(kafka, topic))
    reply = gw.ingest(name, b'{"id": "first", "n": 1, "id": "last"}\n', content_type=NDJSON)
    assert reply.status == 200, reply.body
    got = new_rows(kafka, topic, before)
    assert got == [{"id": "last", "n": 1, "f": None, "j": None}]


def test_unknown_columns_are_ignored_by_default(gw: Gateway, kafka: str, accepted: tuple[str, str]) -> None:
    name, topic = accepted
    before = asyncio.run(end_offsets(kafka, topic))
    reply = gw.ingest(name, b'{"columns": ["id", "zz", "n"], "data": [["u", 9, 3]]}')
    assert reply.status == 200, reply.body
    got = new_rows(kafka, topic, before)
    assert got == [{"id": "u", "n": 3, "f": None, "j": None}]


def test_nullable_json_takes_any_value(gw: Gateway, kafka: str, accepted: tuple[str, str]) -> None:
    name, topic = accepted
    before = asyncio.run(end_offsets(kafka, topic))
    reply = gw.ingest(name, b'{"id": "j", "n": 1, "j": {"a": [1, "x", null]}}\n', content_type=NDJSON)
    assert reply.status == 200, reply.body
    got = new_rows(kafka, topic, before)
    assert got == [{"id": "j", "n": 1, "f": None, "j": {"a": [1, "x", None]}}]


# ---- protocol-level abuse over raw sockets ----------------------------------------------------
def ingest_head(name: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    return {"X-Api-Key": ADMIN_KEY, "Content-Type": NDJSON, **(extra or {})}


def check_raw(gw: Gateway, kafka: str, topic: str, reply: RawReply, status: int) -> None:
    assert_json_error(reply.status, reply.headers, reply.body, status)
    assert_still_serving_nothing_written(gw, kafka, topic)


def assert_timeout_was(reply: RawReply, which: str) -> None:
    """The 408 names the timeout that ended the request (its message, not the elapsed time: a
    busy machine makes any reply late)."""
    assert json.loads(reply.body)["message"].startswith(which), reply.body


def test_content_length_shorter_than_body(gw: Gateway, kafka: str, refused: tuple[str, str]) -> None:
    name, topic = refused
    body = rows(20).encode()
    data = request_bytes(
        "POST", f"/api/v1beta2/streams/{name}/ingest", ingest_head(name), body, content_length=len(body) - 25
    )
    check_raw(gw, kafka, topic, exchange(gw.port, data), 400)


def test_content_length_longer_than_body(gw: Gateway, kafka: str, refused: tuple[str, str]) -> None:
    name, topic = refused
    body = rows(20).encode()
    data = request_bytes(
        "POST",
        f"/api/v1beta2/streams/{name}/ingest",
        ingest_head(name),
        body,
        content_length=len(body) + 1000,
    )
    reply = exchange(gw.port, data)
    check_raw(gw, kafka, topic, reply, 408)
    assert_timeout_was(reply, f"no body data for {READ_TIMEOUT_S:g} s")  # not the whole-body one


def test_chunked_body_that_stalls(gw: Gateway, kafka: str, refused: tuple[str, str]) -> None:
    name, topic = refused
    chunk = rows(5).encode()
    data = request_bytes(
        "POST", f"/api/v1beta2/streams/{name}/ingest", ingest_head(name, {"Transfer-Encoding": "chunked"})
    )
    data += f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"  # and never the last chunk
    reply = exchange(gw.port, data)
    check_raw(gw, kafka, topic, reply, 408)
    assert_timeout_was(reply, f"no body data for {READ_TIMEOUT_S:g} s")  # not the whole-body one


@pytest.mark.slow
def test_chunked_body_that_trickles_forever(gw: Gateway, kafka: str, refused: tuple[str, str]) -> None:
    """One byte every half second never trips the per-read timeout: the whole-body one ends it."""
    name, topic = refused
    with connect(gw.port) as s:
        started = time.monotonic()
        s.sendall(
            request_bytes(
                "POST",
                f"/api/v1beta2/streams/{name}/ingest",
                ingest_head(name, {"Transfer-Encoding": "chunked"}),
            )
        )
        reply = None
        for byte in (GOOD * 100).encode():
            try:
                s.sendall(b"1\r\n" + bytes([byte]) + b"\r\n")
            except (BrokenPipeError, ConnectionResetError):
                break
            if select.select([s], [], [], 0.5)[0]:  # the server answered (or closed)
                reply = read_reply(s, started)
                break
        assert reply is not None
    check_raw(gw, kafka, topic, reply, 408)
    assert_timeout_was(reply, f"the body did not arrive within {TOTAL_TIMEOUT_S:g} s")
    assert reply.elapsed > TOTAL_TIMEOUT_S - 1  # not early (a busy machine only makes it later)


@pytest.mark.parametrize("where", ["value", "count", "request line"])
def test_huge_headers(gw: Gateway, kafka: str, refused: tuple[str, str], where: str) -> None:
    name, topic = refused
    path = f"/api/v1beta2/streams/{name}/ingest"
    headers = ingest_head(name)
    if where == "value":
        headers["X-Huge"] = "h" * 100_000
    elif where == "count":
        headers.update({f"X-Many-{i}": "x" for i in range(500)})
    else:
        path += "?pad=" + "p" * 100_000
    reply = exchange(gw.port, request_bytes("POST", path, headers, GOOD.encode()))
    assert reply.status in (400, 414, 431), reply
    check_raw(gw, kafka, topic, reply, reply.status)


def test_garbage_instead_of_http(gw: Gateway, kafka: str, refused: tuple[str, str]) -> None:
    _, topic = refused
    reply = exchange(gw.port, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n")
    check_raw(gw, kafka, topic, reply, 400)


def test_slowloris_headers_are_dropped_and_others_served(
    gw: Gateway, kafka: str, refused: tuple[str, str]
) -> None:
    """Clients that send their headers a byte at a time are answered 408 and disconnected after
    --header-read-timeout-s (long before their headers are complete); meanwhile ordinary requests
    are served. No timing assertion: the order of events is checked, which load cannot change."""
    name, topic = refused
    head = request_bytes("POST", f"/api/v1beta2/streams/{name}/ingest", ingest_head(name), GOOD.encode())
    slow = [connect(gw.port) for _ in range(20)]
    stop = threading.Event()
    dropped: list[int] = []  # per client dropped by the server: how many bytes it had sent

    def drip(sock: socket.socket) -> None:
        sock.settimeout(0.3)
        for sent, byte in enumerate(head):
            if stop.is_set():
                return
            try:
                sock.sendall(bytes([byte]))
                sock.recv(65536)  # a reply (the 408) or EOF: the server gave up on us
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                pass
            dropped.append(sent + 1)
            return

    threads = [threading.Thread(target=drip, args=(s,), daemon=True) for s in slow]
    for t in threads:
        t.start()
    served_meanwhile = 0  # ordinary requests answered while some slow client was still connected
    deadline = time.monotonic() + 120  # a failure guard only: dripping the head takes longer
    try:
        while len(dropped) < len(slow) and time.monotonic() < deadline:
            assert http("GET", gw.url + "/healthz", timeout=30).status == 200
            served_meanwhile += len(dropped) < len(slow)
            time.sleep(0.05)  # pacing of the well-behaved client, not synchronisation
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        for s in slow:
            s.close()
    assert len(dropped) == len(slow), "some slowloris clients were never dropped"
    assert max(dropped) < len(head), dropped  # dropped before their headers were complete
    assert served_meanwhile > 0
    assert_still_serving_nothing_written(gw, kafka, topic)


def test_body_slower_than_read_timeout_is_dropped(gw: Gateway, kafka: str, refused: tuple[str, str]) -> None:
    name, topic = refused
    body = rows(3).encode()
    with connect(gw.port) as s:
        started = time.monotonic()
        s.sendall(
            request_bytes(
                "POST",
                f"/api/v1beta2/streams/{name}/ingest",
                ingest_head(name),
                body[:10],
                content_length=len(body),
            )
        )
        reply = read_reply(s, started)
        assert closed_by_peer(s, 15), "the connection was kept open after the 408"
    check_raw(gw, kafka, topic, reply, 408)
