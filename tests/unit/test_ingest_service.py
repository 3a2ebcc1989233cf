"""The ingest entry point without HTTP: its order of checks, its outcome, quarantine, the
rejected-bytes metric (data sources included), and the Retry-After rule from the drain rate."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import REGISTRY

from gateway.admission import drain_seconds
from gateway.app import build_app, build_gateway
from gateway.auth import ADMIN, APPEND, Principal
from gateway.catalog.model import Column, Stream
from gateway.config import Settings
from gateway.context import GATEWAY, Gateway
from gateway.deadlines import Deadlines
from gateway.errors import Conflict, Forbidden, InvalidRow, NotConfirmed, NotFound, Overloaded, Unavailable
from gateway.ingest.formats import Format
from gateway.ingest.quarantine import Split
from gateway.ingest.schema import CompiledSchema
from gateway.ingest.service import IngestRequest, StreamedBody, Wording
from gateway.limiters.drain_rate import WINDOW_S, DrainRate
from gateway.limiters.retry_after import retry_after_header
from gateway.queues import Limits, MemoryBudget, StreamQueue

ADMIN_KEY = "unit-admin-key"
WHO = Principal("k1", "test", frozenset({ADMIN}))


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


class Untouchable:
    """A payload that fails the test if the entry point decodes it."""

    nbytes = 0

    async def rows(self, schema: CompiledSchema, hold: Callable[[int], None]) -> Split:
        raise AssertionError("the body was decoded although the request was refused first")


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    gw = build_gateway(Settings(data_dir=tmp_path), ADMIN_KEY)
    await gw.catalog.start()
    await gw.sink.start()
    gw.lifecycle.connected()
    await gw.streams.create(
        Stream("s", [Column("id", "string"), Column("n", "int64")], ""), created_by="test"
    )
    yield gw
    await gw.queues.stop()
    await gw.sink.close()
    await gw.catalog.close()


def rejected(stream: str, cause: str) -> float:
    value = REGISTRY.get_sample_value("gateway_bytes_rejected_total", {"stream": stream, "cause": cause})
    return value or 0.0


async def test_rows_are_queued_and_acknowledged(gw: Gateway, tmp_path: Path) -> None:
    body = StreamedBody(
        Format.COMPACT, chunks(b'{"columns": ["id", "n"], "data": [["a", 1],', b' ["b", 2]]}')
    )
    outcome = await gw.ingest.ingest(IngestRequest("s", body, WHO, wait=True))
    assert (outcome.rows, outcome.quarantined, outcome.acknowledged) == (2, 0, True)
    lines = (tmp_path / "sink" / "ingest.s.ndjson").read_bytes().splitlines()
    assert lines == [b'{"id":"a","n":1}', b'{"id":"b","n":2}']


def hold_acknowledgements(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch
) -> tuple[asyncio.Event, asyncio.Future[None]]:
    """Make the sink's acknowledgements (of `send` and `send_lines`) wait for the returned gate;
    the event is set once a flush was handed over."""
    sent, gate = asyncio.Event(), asyncio.get_running_loop().create_future()

    def held(
        send: Callable[..., Awaitable[asyncio.Future[Any]]],
    ) -> Callable[..., Awaitable[asyncio.Future[Any]]]:
        async def held_send(*args: Any, **kwargs: Any) -> asyncio.Future[Any]:
            landed = await send(*args, **kwargs)
            sent.set()

            async def acknowledged() -> Any:
                await gate
                return await landed

            return asyncio.ensure_future(acknowledged())

        return held_send

    monkeypatch.setattr(gw.sink, "send", held(gw.sink.send))
    monkeypatch.setattr(gw.sink, "send_lines", held(gw.sink.send_lines))
    return sent, gate


class KeptRows:
    """A streamed body that keeps the list of rows it decoded, to look at while the request waits."""

    __slots__ = ("body", "decoded", "nbytes")

    def __init__(self, body: StreamedBody) -> None:
        self.body = body
        self.decoded: list[Any] = []
        self.nbytes = 0

    async def rows(self, schema: CompiledSchema, hold: Callable[[int], None]) -> Split:
        split = await self.body.rows(schema, hold)
        self.decoded = split.rows
        return split


async def test_a_waiting_request_does_not_keep_its_decoded_rows(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the encoded records stay queued until Kafka acknowledges: 64 waiting requests holding
    their decoded rows too spread the working set beyond the CPU caches (S2: ~12 % more CPU)."""
    sent, gate = hold_acknowledgements(gw, monkeypatch)
    payload = KeptRows(
        StreamedBody(Format.STREAMING, chunks(b'{"id": "a", "n": 1}\n', b'{"id": "b", "n": 2}\n'))
    )
    task = asyncio.create_task(gw.ingest.ingest(IngestRequest("s", payload, WHO, wait=True)))
    await sent.wait()
    assert not task.done() and len(payload.decoded) == 2
    # encoded and queued: nothing of the waiting request holds its decoded rows any more
    assert gc.get_referrers(payload.decoded) == [payload]
    gate.set_result(None)
    outcome = await task
    assert (outcome.rows, outcome.acknowledged) == (2, True)


async def test_a_wait_past_its_deadline_is_not_confirmed_and_the_rows_stay_queued(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _, gate = hold_acknowledgements(gw, monkeypatch)
    gw.pipeline.deadlines = Deadlines(0.01)
    body = StreamedBody(Format.STREAMING, chunks(b'{"id": "a", "n": 1}\n'))
    with pytest.raises(NotConfirmed):
        await gw.ingest.ingest(IngestRequest("s", body, WHO, wait=True))
    gate.set_result(None)
    assert await gw.queues.drain(30)
    lines = (tmp_path / "sink" / "ingest.s.ndjson").read_bytes().splitlines()
    assert lines == [b'{"id":"a","n":1}']


async def test_refusals_come_before_the_body_is_decoded(gw: Gateway) -> None:
    with pytest.raises(NotFound, match="no such thing: nope"):
        await gw.ingest.ingest(
            IngestRequest(
                "nope", Untouchable(), WHO, wording=Wording(not_found=lambda name: f"no such thing: {name}")
            )
        )
    reader = Principal("k2", "reader", frozenset({f"{APPEND}:other"}))
    with pytest.raises(Forbidden):
        await gw.ingest.ingest(IngestRequest("s", Untouchable(), reader))
    await gw.streams.update("s", {"archived": True}, updated_by="test")
    with pytest.raises(Conflict):
        await gw.ingest.ingest(IngestRequest("s", Untouchable(), WHO))
    gw.lifecycle.drain()

    async def name_from_body() -> str:
        raise AssertionError("the body was read although the gateway is draining")

    with pytest.raises(Unavailable):
        await gw.ingest.ingest(IngestRequest(name_from_body, Untouchable(), WHO))


async def test_quarantine_splits_invalid_rows_off(gw: Gateway, tmp_path: Path) -> None:
    body = StreamedBody(
        Format.STREAMING, chunks(b'{"id": "a", "n": 1}\n{"id": "b", "n": "x"}\n'), quarantine=True
    )
    outcome = await gw.ingest.ingest(IngestRequest("s", body, WHO, wait=True, request_id="r1"))
    assert (outcome.rows, outcome.quarantined) == (1, 1)
    bad = (tmp_path / "sink" / "ingest.s-quarantine.ndjson").read_bytes()
    assert b'"request_id":"r1"' in bad and b'"row":1' in bad


async def test_an_invalid_body_counts_its_bytes_as_rejected(gw: Gateway) -> None:
    before = rejected("s", "invalid_row")
    text = b'{"id": "a", "n": "not a number"}\n'
    with pytest.raises(InvalidRow):
        await gw.ingest.ingest(IngestRequest("s", StreamedBody(Format.STREAMING, chunks(text)), WHO))
    assert rejected("s", "invalid_row") - before == len(text)


async def test_data_sources_count_rejected_bytes(tmp_path: Path, aiohttp_client: Any) -> None:
    """Before the one entry point, /v1/data_sources/ingest bypassed the metric."""
    app = build_app(Settings(data_dir=tmp_path), ADMIN_KEY)
    client: TestClient[Any, Any] = await aiohttp_client(app)
    await app[GATEWAY].lifecycle.wait_catalog()
    reply = await client.post(
        "/api/v1beta2/streams",
        headers={"X-Api-Key": ADMIN_KEY},
        json={
            "name": "ds",
            "mode": "versioned_kv",
            "primary_key": "timestamp, name",
            "columns": [
                {"name": "timestamp", "type": "int64"},
                {"name": "name", "type": "string"},
                {"name": "value", "type": "float64"},
            ],
        },
    )
    assert reply.status == 201, await reply.text()
    before = rejected("ds", "invalid_row")
    body = b'{"data_source": "ds", "records": [{"timestamp": 1, "name": "a", "value": "x"}]}'
    reply = await client.post(
        "/v1/data_sources/ingest", data=body, headers={"Authorization": "Bearer " + ADMIN_KEY}
    )
    assert reply.status == 422
    assert rejected("ds", "invalid_row") - before == len(body)


class HeldBody:
    """A body that stops in the middle until `go` is set; `reading` is set once it is held."""

    def __init__(self) -> None:
        self.nbytes = 0
        self.reading = asyncio.Event()
        self.go = asyncio.Event()

    async def rows(self, schema: CompiledSchema, hold: Callable[[int], None]) -> Split:
        hold(10)
        self.reading.set()
        await self.go.wait()
        return Split([{"id": "a", "n": 1}], [])


async def test_requests_beyond_the_decoding_cap_get_429_at_once(gw: Gateway) -> None:
    gw.ingest.admission.decoding.cap = 2
    throttled = (
        REGISTRY.get_sample_value("gateway_throttled_requests_total", {"status": "429", "cause": "decoding"})
        or 0.0
    )
    held = [HeldBody(), HeldBody()]
    tasks = [asyncio.create_task(gw.ingest.ingest(IngestRequest("s", b, WHO))) for b in held]
    for body in held:
        await body.reading.wait()
    assert REGISTRY.get_sample_value("gateway_requests_decoding") == 2
    with pytest.raises(Overloaded) as refused:  # decided before its body is touched
        await gw.ingest.ingest(IngestRequest("s", Untouchable(), WHO))
    assert (refused.value.status, refused.value.retry_after) == (429, 1.0)
    assert (
        REGISTRY.get_sample_value("gateway_throttled_requests_total", {"status": "429", "cause": "decoding"})
        == throttled + 1
    )
    for body in held:
        body.go.set()
    assert [(await t).rows for t in tasks] == [1, 1]
    assert REGISTRY.get_sample_value("gateway_requests_decoding") == 0
    body = StreamedBody(Format.STREAMING, chunks(b'{"id": "c", "n": 3}\n'))
    assert (await gw.ingest.ingest(IngestRequest("s", body, WHO))).rows == 1  # drained: in again


# ---- Retry-After: the time the queue needs to drain room for the request ------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def queue_with(rows: int, nbytes: int, rate: DrainRate) -> StreamQueue:
    limits = Limits(
        max_rows=100,
        max_bytes=10_000,
        memory_cap=1_000_000,
        batch_max_bytes=1000,
        linger_s=0,
        max_in_flight=1,
    )
    q = StreamQueue("s", "t", None, limits, MemoryBudget(limits.memory_cap))  # type: ignore[arg-type]
    q.rows, q.nbytes, q.budget.used = rows, nbytes, nbytes
    q.drain_rate = rate
    return q


def test_retry_after_follows_the_measured_drain_rate() -> None:
    clock = Clock()
    rate = DrainRate(clock=clock)
    clock.now += WINDOW_S
    rate.record(50, 2_000)  # 10 rows/s, 400 bytes/s over the window
    q = queue_with(100, 1_000, rate)  # full by rows
    assert drain_seconds(q, 30, 300) == pytest.approx(3.0)  # 30 rows to drain at 10 rows/s
    q = queue_with(10, 9_000, rate)  # full by bytes
    assert drain_seconds(q, 1, 5_000) == pytest.approx(10.0)  # 4,000 bytes at 400 bytes/s
    assert drain_seconds(q, 1, 1_000_000) == 1  # no draining lets it in: retry is pointless soon
    assert drain_seconds(queue_with(100, 1_000, rate), 100, 100) == 10.0
    stalled = queue_with(100, 1_000, DrainRate(clock=clock))  # nothing acknowledged lately
    assert drain_seconds(stalled, 10, 100) == WINDOW_S
    assert retry_after_header(0.2) == {"Retry-After": "1"}
    assert retry_after_header(2.1) == {"Retry-After": "3"}
    assert retry_after_header(500) == {"Retry-After": "60"}


def test_drain_rate_forgets_what_left_the_window() -> None:
    clock = Clock()
    rate = DrainRate(window_s=5.0, clock=clock)
    clock.now += 10
    rate.record(10, 100)
    assert rate.rates() == (2.0, 20.0)
    clock.now += 6
    assert rate.rates() is None
