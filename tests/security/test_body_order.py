"""Issue 20 item 3, over raw sockets: authentication, the stream lookup and the scope check come
before a body is read, on every route that takes one, and a body that names its own stream (the
data-source API) is read under a decoding slot. Each hostile request sends its head and the start
of a large body, then withholds the rest: the gateway must answer without it (a gateway that waited
for the body would answer 408 once --body-read-timeout-s passed)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import ADMIN_KEY, Gateway, unique_name
from tests.reliability.rawhttp import RawReply, connect, read_reply, request_bytes
from tests.security.conftest import start_embedded

MiB = 1 << 20
READ_TIMEOUT_S = 5  # a gateway waiting for the withheld rest answers 408 after this
DS = "/v1/data_sources/ingest"
DS_COLUMNS = [
    {"name": "timestamp", "type": "int64"},
    {"name": "name", "type": "string"},
    {"name": "value", "type": "float64"},
]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gateway = start_embedded(
        Path(tmp_path_factory.mktemp("order")),
        ["--body-read-timeout-s", str(READ_TIMEOUT_S), "--max-decoding-requests", "1"],
    )
    yield gateway
    assert gateway.stop() == 0, gateway.log()[-3000:]


@pytest.fixture(scope="module")
def ds(gw: Gateway) -> str:
    name = unique_name("ds")
    gw.create_stream(name, DS_COLUMNS, mode="versioned_kv", primary_key="timestamp, name")
    return name


def key_with(gw: Gateway, *permissions: str) -> str:
    reply = gw.request("POST", "/api/v1beta2/apikeys", {"permissions": list(permissions)})
    assert reply.status == 201, reply.body
    key: str = reply.json()["api_key"]
    return key


def withheld(gw: Gateway, method: str, path: str, key: str, start: bytes, total: int = 50 * MiB) -> RawReply:
    """Send the head and `start` of a body of `total` bytes, withhold the rest, read the reply."""
    with connect(gw.port, timeout=READ_TIMEOUT_S * 6) as s:
        s.sendall(
            request_bytes(
                method,
                path,
                {"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
                start,
                content_length=total,
            )
        )
        return read_reply(s)


def ds_head(name: str) -> bytes:
    return (
        b'{"data_source": "%s", "records": [' % name.encode()
        + b'{"timestamp": 1, "name": "a", "value": 1.5},' * 100
    )


def test_a_read_only_key_is_refused_before_the_body(gw: Gateway, ds: str) -> None:
    key = key_with(gw, "DATASOURCE:READ")
    reply = withheld(gw, "POST", DS, key, ds_head(ds))
    assert reply.status == 403, reply


def test_a_key_for_another_stream_is_refused_once_the_name_is_read(gw: Gateway, ds: str) -> None:
    key = key_with(gw, f"DATASOURCE:APPEND:{unique_name('other')}")
    reply = withheld(gw, "POST", DS, key, ds_head(ds))
    # outside the key's scope: the data-source contract's one answer, as for a missing one
    assert reply.status == 404, reply
    assert reply.json() == {"detail": "Data source not found."}


def test_an_unknown_data_source_is_refused_once_the_name_is_read(gw: Gateway) -> None:
    reply = withheld(gw, "POST", DS, ADMIN_KEY, ds_head(unique_name("missing")))
    assert reply.status == 404, reply
    assert reply.json() == {"detail": "Data source not found."}


def test_a_data_source_body_is_read_under_a_decoding_slot(gw: Gateway, ds: str) -> None:
    """With --max-decoding-requests 1, a data-source body being read holds the one slot."""
    with connect(gw.port, timeout=READ_TIMEOUT_S * 6) as slow:
        slow.sendall(
            request_bytes(
                "POST", DS, {"Authorization": f"Bearer {ADMIN_KEY}"}, ds_head(ds), content_length=50 * MiB
            )
        )
        whole = b'{"records": [{"timestamp": 2, "name": "b", "value": 2}], "data_source": "%s"}'
        reply = gw.request("POST", DS, whole % ds.encode(), headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        assert reply.status == 429, reply.body
        assert "--max-decoding-requests" in reply.json()["detail"]
        slow.shutdown(socket.SHUT_WR)
        read_reply(slow)
    reply = gw.request("POST", DS, whole % ds.encode(), headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert reply.status == 204, reply.body


def test_patching_a_missing_stream_is_404_before_the_body(gw: Gateway) -> None:
    reply = withheld(
        gw,
        "PATCH",
        f"/api/v1beta2/streams/{unique_name('missing')}",
        ADMIN_KEY,
        b'{"description": "',
        total=512 * 1024,
    )
    assert reply.status == 404, reply


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/v1beta2/streams"),
        ("PATCH", "/api/v1beta2/streams/{ds}"),
        ("POST", "/api/v1beta2/apikeys"),
        ("POST", "/api/v1beta2/streams/{ds}/ingest"),
        ("POST", "/v0/events?name={ds}"),
        ("POST", "/topics/{ds}"),
        ("POST", "/v3/clusters/ingest-gateway/topics/{ds}/records"),
    ],
)
def test_every_body_route_refuses_a_read_only_key_before_the_body(
    gw: Gateway, ds: str, method: str, path: str
) -> None:
    key = key_with(gw, f"DATASOURCE:READ:{ds}")
    reply = withheld(gw, method, path.format(ds=ds), key, b'{"', total=512 * 1024)
    assert reply.status in (401, 403), reply


def test_a_management_body_is_held_against_the_memory_cap(tmp_path_factory: pytest.TempPathFactory) -> None:
    small = start_embedded(Path(tmp_path_factory.mktemp("cap")), ["--memory-cap-bytes", str(256 * 1024)])
    try:
        name = unique_name("cap")
        reply = small.request(
            "POST",
            "/api/v1beta2/streams",
            {"name": name, "columns": DS_COLUMNS, "description": "x" * (512 * 1024)},
        )
        assert reply.status == 413, reply.body
        assert "--memory-cap-bytes" in reply.json()["message"]
        small.create_stream(name, DS_COLUMNS)  # the hold was given back
    finally:
        assert small.stop() == 0, small.log()[-3000:]
