"""v3 produce full duplex over real HTTP into the real broker: receipts arrive while the client is
still sending, one JSON object per HTTP chunk, each pointing at the record read back from Kafka.
"Streamed" is proved by order of events, never by time: a client that sends the next record only
after the previous one's receipt arrived completes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from tests.integration.harness import Gateway, read_topic, unique_name
from tests.integration.test_restproxy import COLUMNS, assert_error, basic, by_position

GUARD_S = 120  # a failure guard only: a client that never gets its receipt fails, not hangs
CLUSTER = "ingest-gateway"


def _path(topic: str) -> str:
    return f"/v3/clusters/{CLUSTER}/topics/{topic}/records"


def _record(i: int) -> dict[str, Any]:
    return {
        "key": {"type": "STRING", "data": f"k{i}"},
        "value": {"type": "JSON", "data": {"id": f"r{i}", "n": i}},
    }


class ChunkedReader:
    """The body of a chunked HTTP/1.1 response read from a raw socket, chunk by chunk."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader

    async def head(self) -> tuple[int, dict[str, str]]:
        status = int((await self.reader.readline()).split()[1])
        headers: dict[str, str] = {}
        while (line := (await self.reader.readline()).strip()) != b"":
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        return status, headers

    async def chunk(self) -> bytes:
        size = int((await self.reader.readline()).strip(), 16)
        data = await self.reader.readexactly(size + 2)
        return data[:-2]


async def test_receipt_before_next_record_is_sent(gateway: Gateway, kafka: str) -> None:
    """A client that waits for each receipt before sending the next record completes (the whole
    body arriving first would leave it waiting forever: the guard fails it)."""
    topic = gateway.create_stream(unique_name("v3d"), COLUMNS)["topic"]
    auth = basic()["Authorization"]

    async def client() -> list[dict[str, Any]]:
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        writer.write(
            (
                f"POST {_path(topic)} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n"
                "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            ).encode()
        )
        body = ChunkedReader(reader)
        receipts: list[dict[str, Any]] = []
        for i in range(4):
            data = json.dumps(_record(i)).encode()
            writer.write(b"%x\r\n%s\r\n" % (len(data), data))
            await writer.drain()
            if i == 0:
                status, headers = await body.head()
                assert status == 200 and headers["content-type"].startswith("application/json")
            chunk = await body.chunk()  # this record's receipt, before the next record exists
            receipts.append(json.loads(chunk))
            assert chunk.count(b"\n") == 1  # one JSON object per chunk
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        assert await body.chunk() == b""  # the end of the stream, after the body's end
        writer.close()
        await writer.wait_closed()
        return receipts

    receipts = await asyncio.wait_for(client(), GUARD_S)
    assert [r["error_code"] for r in receipts] == [200] * 4
    got = by_position(await read_topic(kafka, topic))
    for i, r in enumerate(receipts):
        assert r["cluster_id"] == CLUSTER and r["topic_name"] == topic
        assert r["key"] == {"type": "STRING", "size": 2} and r["value"]["type"] == "JSON"
        rec = got[(r["partition_id"], r["offset"])]
        assert rec.json() == {"id": f"r{i}", "n": i} and rec.key == f"k{i}".encode()


async def test_streaming_client_parses_receipts_as_they_come(gateway: Gateway, kafka: str) -> None:
    """Confluent's Python example, async: a generator body (records not newline separated), the
    receipts parsed chunk by chunk as they come; a bad record answered alone, in its place."""
    topic = gateway.create_stream(unique_name("v3s"), COLUMNS)["topic"]
    sent: list[dict[str, Any]] = [_record(i) for i in range(6)]
    sent[3] = {"value": {"type": "JSON", "data": {"id": "bad", "n": "not a number"}}}
    receipt_seen = [asyncio.Event() for _ in sent]

    async def body() -> AsyncIterator[bytes]:
        for i, rec in enumerate(sent):
            yield json.dumps(rec).encode()
            if i % 2 == 0:  # half of them wait for their receipt: mixed runs
                await asyncio.wait_for(receipt_seen[i].wait(), GUARD_S)

    receipts: list[dict[str, Any]] = []
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            gateway.url + _path(topic), data=body(), headers=basic() | {"Content-Type": "application/json"}
        ) as reply,
    ):
        assert reply.status == 200
        buffer = b""
        async for data, end_of_chunk in reply.content.iter_chunks():
            buffer += data
            # aiohttp reports a chunk's end as (b"", True) when it returned the chunk's bytes
            # before it had parsed the end (and for the last, empty chunk): nothing to check then
            if end_of_chunk and buffer:
                assert buffer.count(b"\n") == 1, buffer  # one receipt per HTTP chunk
                receipts.append(json.loads(buffer))
                receipt_seen[len(receipts) - 1].set()
                buffer = b""
    assert [r["error_code"] for r in receipts] == [200, 200, 200, 400, 200, 200]
    assert "row 3" in receipts[3]["message"]
    got = by_position(await read_topic(kafka, topic))
    assert len(got) == 5
    for rec, r in zip(sent, receipts, strict=True):
        if r["error_code"] == 200:
            assert got[(r["partition_id"], r["offset"])].json() == rec["value"]["data"]


async def test_request_errors_before_the_stream(gateway: Gateway, kafka: str) -> None:
    """An empty body is 422 (Confluent); a missing topic or cluster a normal JSON error; a body that
    starts malformed is 400 — each before any receipt, nothing written."""
    topic = gateway.create_stream(unique_name("v3e"), COLUMNS)["topic"]
    headers = basic() | {"Content-Type": "application/json"}
    assert_error(gateway.request("POST", _path(topic), "", key=None, headers=headers), 422, 422)
    assert_error(gateway.request("POST", _path(topic), "  \n", key=None, headers=headers), 422, 422)
    one = json.dumps(_record(0))
    assert_error(gateway.request("POST", _path("nope-" + topic), one, key=None, headers=headers), 404, 40401)
    other = f"/v3/clusters/other/topics/{topic}/records"
    assert_error(gateway.request("POST", other, one, key=None, headers=headers), 404, 404)
    assert_error(gateway.request("POST", _path(topic), "[1]", key=None, headers=headers), 400, 400)
    assert await read_topic(kafka, topic) == []


async def test_malformed_after_records_ends_the_stream(gateway: Gateway, kafka: str) -> None:
    """Records before a malformed tail are written and answered; the tail gets one error object
    and the stream ends."""
    topic = gateway.create_stream(unique_name("v3m"), COLUMNS)["topic"]
    body = json.dumps(_record(0)) + "\n" + json.dumps(_record(1)) + "\n]garbage"
    reply = gateway.request(
        "POST", _path(topic), body, key=None, headers=basic() | {"Content-Type": "application/json"}
    )
    assert reply.status == 200, reply.body
    results = [json.loads(line) for line in reply.body.splitlines()]
    assert [r["error_code"] for r in results] == [200, 200, 400], results
    assert len(await read_topic(kafka, topic)) == 2


async def test_v3_topic_reads_shapes_and_visibility(gateway: Gateway, kafka: str) -> None:
    """v3 topic, topic list, partition list and partition in Confluent's shapes, links included;
    a key sees only the topics of the streams it may append to (others: not found)."""
    mine, other = unique_name("v3r"), unique_name("v3o")
    topic = gateway.create_stream(mine, COLUMNS)["topic"]
    other_topic = gateway.create_stream(other, COLUMNS)["topic"]
    permissions = [f"DATASOURCE:APPEND:{mine}"]
    made = gateway.request(
        "POST", "/api/v1beta2/apikeys", {"name": unique_name("k"), "permissions": permissions}
    )
    auth = basic(made.json()["api_key"])
    base = f"/v3/clusters/{CLUSTER}/topics"

    def get(path: str, headers: dict[str, str] = auth) -> Any:
        reply = gateway.request("GET", path, key=None, headers=headers)
        assert reply.status == 200, (path, reply.status, reply.body)
        assert reply.headers["Content-Type"].startswith("application/json")
        return reply.json()

    listed = get(base)
    assert listed["kind"] == "KafkaTopicList" and listed["metadata"]["self"] == base
    assert [t["topic_name"] for t in listed["data"]] == [topic]
    assert other_topic in [t["topic_name"] for t in get(base, basic())["data"]]
    one = get(f"{base}/{topic}")
    assert one == listed["data"][0]
    assert one["kind"] == "KafkaTopic" and one["cluster_id"] == CLUSTER and one["is_internal"] is False
    assert one["partitions_count"] == 3 and one["replication_factor"] >= 1
    assert one["metadata"] == {
        "self": f"{base}/{topic}",
        "resource_name": f"crn:///kafka={CLUSTER}/topic={topic}",
    }
    assert one["partitions"] == {"related": f"{base}/{topic}/partitions"}
    parts = get(one["partitions"]["related"])
    assert parts["kind"] == "KafkaPartitionList"
    assert [p["partition_id"] for p in parts["data"]] == [0, 1, 2]
    p2 = get(f"{base}/{topic}/partitions/2")
    assert p2 == parts["data"][2] and p2["kind"] == "KafkaPartition" and p2["topic_name"] == topic
    assert p2["replicas"] == {"related": f"{base}/{topic}/partitions/2/replicas"}
    for path in (f"{base}/{other_topic}", f"{base}/{other_topic}/partitions", f"{base}/nope/partitions/0"):
        assert_error(gateway.request("GET", path, key=None, headers=auth), 404, 40401)
    for bad in ("3", "-1", "x", "99999999999"):
        assert_error(
            gateway.request("GET", f"{base}/{topic}/partitions/{bad}", key=None, headers=auth), 404, 40402
        )
    assert_error(gateway.request("GET", "/v3/clusters/other/topics", key=None, headers=auth), 404, 404)
    assert gateway.request("GET", base, key=None, headers={}).status == 401


async def test_client_leaving_mid_stream(gateway: Gateway, kafka: str) -> None:
    """A client that hangs up after its first receipt: that record stays written, the gateway
    logs no traceback and keeps answering."""
    topic = gateway.create_stream(unique_name("v3l"), COLUMNS)["topic"]
    auth = basic()["Authorization"]

    async def client() -> dict[str, Any]:
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        data = json.dumps(_record(7)).encode()
        writer.write(
            (
                f"POST {_path(topic)} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n"
                "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            ).encode()
            + b"%x\r\n%s\r\n" % (len(data), data)
        )
        body = ChunkedReader(reader)
        assert (await body.head())[0] == 200
        receipt: dict[str, Any] = json.loads(await body.chunk())
        writer.transport.abort()  # gone mid-body, without the final chunk
        return receipt

    receipt = await asyncio.wait_for(client(), GUARD_S)
    assert receipt["error_code"] == 200
    got = by_position(await read_topic(kafka, topic))
    assert got[(receipt["partition_id"], receipt["offset"])].json() == {"id": "r7", "n": 7}
    again = gateway.request(
        "POST",
        _path(topic),
        json.dumps(_record(8)),
        key=None,
        headers=basic() | {"Content-Type": "application/json"},
    )
    assert again.status == 200 and json.loads(again.body)["error_code"] == 200
    assert "Traceback" not in gateway.log()
