"""SIGTERM under load: the gateway stops taking requests, drains its queues into Kafka and exits 0,
and every row it acknowledged (200/202) is in the topic."""

from __future__ import annotations

import json
import re
import socket
import threading
from pathlib import Path

from tests.integration.harness import (
    ADMIN_KEY,
    Gateway,
    http,
    read_topic,
    unique_name,
    wait_until,
)


async def test_sigterm_under_load_loses_no_acknowledged_row(kafka: str, tmp_path: Path) -> None:
    # A long linger keeps rows queued when SIGTERM lands, so the drain really has work to do.
    gw = Gateway(tmp_path, kafka, extra=["--linger-ms", "3000"]).start()
    name = unique_name("term")
    topic = gw.create_stream(name, [{"name": "id", "type": "string"}, {"name": "seq", "type": "int64"}])[
        "topic"
    ]
    acked: list[str] = []
    refused: dict[int, int] = {}
    lock = threading.Lock()
    stop = threading.Event()
    loaded = threading.Event()  # set once 5000 rows were acknowledged

    def client(cid: int) -> None:
        seq = 0
        while not stop.is_set() and seq < 100_000:
            ids = [f"{cid}-{seq + i}" for i in range(50)]
            seq += 50
            body = "".join(json.dumps({"id": i, "seq": seq}) + "\n" for i in ids)
            wait = "true" if cid % 2 else "false"
            try:
                reply = http(
                    "POST",
                    f"{gw.url}/api/v1beta2/streams/{name}/ingest?wait={wait}",
                    body,
                    headers={"X-Api-Key": ADMIN_KEY, "Content-Type": "application/x-ndjson"},
                    timeout=120,
                )
            except OSError:
                return  # the listener is gone: the gateway has stopped accepting
            with lock:
                if reply.status in (200, 202):
                    acked.extend(ids)
                    if len(acked) >= 5000:
                        loaded.set()
                else:
                    refused[reply.status] = refused.get(reply.status, 0) + 1

    threads = [threading.Thread(target=client, args=(c,)) for c in range(8)]
    for t in threads:
        t.start()
    assert loaded.wait(120), "the load did not build up"  # a failure guard only
    gw.signal()
    assert gw.proc is not None
    code = gw.proc.wait(60)
    stop.set()
    for t in threads:
        t.join(60)
    assert code == 0, gw.log()  # within proc.wait's 60 s (a failure guard, not a timing test)
    assert "drained" in gw.log()
    found = re.search(r"draining (\d+) queued rows", gw.log())
    assert found is not None, gw.log()
    queued_at_drain = int(found.group(1))
    assert queued_at_drain > 0, "the drain had nothing to do: the test proves nothing"
    assert set(refused) <= {503}, refused  # while draining, only "nothing written, retry"
    delivered = {r.json()["id"] for r in await read_topic(kafka, topic)}
    missing = set(acked) - delivered
    assert not missing, f"{len(missing)} acknowledged rows missing of {len(acked)}"


def _read_head(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    return data


def _refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except OSError:
        return True
    return False


def test_body_arriving_during_the_drain_is_read_not_timed_out(tmp_path: Path) -> None:
    """A request whose head came before SIGTERM and whose body comes after it is finished or
    refused with 503 (nothing written, retry), never 408: aiohttp drops the bytes a connection
    receives once the server closes it, so the handler used to wait for its body until
    --body-read-timeout-s and answer 408 ("do not retry") in the middle of a rolling restart."""
    gw = Gateway(tmp_path, None, extra=["--body-read-timeout-s", "3"]).start()
    name = unique_name("late")
    gw.create_stream(name, [{"name": "id", "type": "string"}])
    body = b'{"id": "a"}\n'
    head = (
        f"POST /api/v1beta2/streams/{name}/ingest?wait=true HTTP/1.1\r\n"
        f"Host: 127.0.0.1\r\nX-Api-Key: {ADMIN_KEY}\r\n"
        "Content-Type: application/x-ndjson\r\nExpect: 100-continue\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", gw.port), timeout=120) as sock:
        sock.sendall(head)
        # "100 Continue" goes out when the handler first waits for the body: it is reading it now
        assert _read_head(sock).startswith(b"HTTP/1.1 100"), "no 100 Continue"
        gw.signal()
        # the listener closes right before aiohttp closes the open connections
        wait_until(lambda: _refuses_connections(gw.port), 60, "the listener to close")
        wait_until(lambda: "shutting down" in gw.log(), 60, "the drain to begin")
        sock.sendall(body)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    status = int(reply.split(b" ", 2)[1])
    assert status in (200, 503), reply
    if status == 503:
        assert b"retry" in reply, reply
    assert gw.proc is not None
    assert gw.proc.wait(60) == 0, gw.log()
