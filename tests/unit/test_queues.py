"""StreamQueue / Queues against an in-memory sink whose acknowledgements the tests control."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from prometheus_client import REGISTRY

from gateway.catalog.model import Stream
from gateway.queues import Discarded, Entry, Limits, MemoryBudget, QueueFull, Queues, StreamQueue
from gateway.sinks.base import Headers, Lines, OnBatch, Sink, SinkUnavailable, lines_of

GUARD = 2.0  # upper bound on waiting for an event that must happen; never reached when green


@dataclass
class Send:
    topic: str
    values: list[bytes]
    keys: list[bytes] | None
    future: asyncio.Future[None]
    headers: list[Headers] | None = None

    def ack(self) -> None:
        self.future.set_result(None)

    def fail(self, exc: BaseException | None = None) -> None:
        self.future.set_exception(exc or SinkUnavailable("broker went away"))


class FakeSink:
    """Records every send; each returns a future the test resolves (or fails) by hand."""

    name = "fake"

    def __init__(self) -> None:
        self.calls: asyncio.Queue[Send] = asyncio.Queue()
        self.history: list[Send] = []
        self.raise_next: list[BaseException] = []
        self.lines_sent = 0  # sends that came as runs of lines

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def available(self) -> bool:
        return True

    def held_back(self, topic: str, keyed: bool) -> int | None:
        return None

    async def ensure_topic(self, stream: Stream) -> None:
        pass

    async def delete_topic(self, stream: Stream) -> None:
        pass

    async def send(
        self,
        topic: str,
        values: list[bytes],
        keys: list[bytes] | None,
        headers: list[Headers] | None = None,
        on_batch: OnBatch | None = None,
    ) -> asyncio.Future[None]:
        if self.raise_next:
            raise self.raise_next.pop(0)
        send = Send(
            topic,
            list(values),
            None if keys is None else list(keys),
            asyncio.get_running_loop().create_future(),
            headers,
        )
        self.history.append(send)
        self.calls.put_nowait(send)
        return send.future

    async def send_lines(
        self, topic: str, lines: Lines, on_batch: OnBatch | None = None
    ) -> asyncio.Future[None]:
        """Recorded as a `send` of the same records, one value and header list each."""
        values = [v for run in lines.runs for v in lines_of(run)]
        assert len(values) == lines.rows
        self.lines_sent += 1
        if lines.headers is None:
            return await self.send(topic, values, None)
        return await self.send(
            topic,
            values,
            None,
            [h or [] for run, h in zip(lines.runs, lines.headers, strict=True) for _ in lines_of(run)],
        )

    async def next_send(self) -> Send:
        async with asyncio.timeout(GUARD):
            return await self.calls.get()


def limits(**kw: float) -> Limits:
    base = {
        "max_rows": 100,
        "max_bytes": 10_000,
        "memory_cap": 100_000,
        "batch_max_bytes": 1000,
        "linger_s": 0,
        "max_in_flight": 1,
    }
    base.update(kw)
    return Limits(**base)  # type: ignore[arg-type]


AS_LINES = False  # set by the `form` fixture: unkeyed entries as one run of lines, as the pipeline makes


@pytest.fixture(autouse=True, params=["values", "lines"])
def form(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test here runs with unkeyed entries as lists of values and as runs of lines."""
    monkeypatch.setattr(sys.modules[__name__], "AS_LINES", request.param == "lines")
    return str(request.param)


def entry(*values: bytes, keys: list[bytes] | None = None, wait: bool = True) -> Entry:
    done = asyncio.get_running_loop().create_future() if wait else None
    records: list[bytes] | bytes = list(values)
    if AS_LINES and keys is None:
        records = b"".join(v + b"\n" for v in values)
    return Entry(records, keys, sum(len(v) for v in values), done)


async def let_run() -> None:
    """Yield to the event loop a few times so ready callbacks and tasks can run (no waiting)."""
    for _ in range(10):
        await asyncio.sleep(0)


def _check_protocol(sink: FakeSink) -> Sink:
    return sink  # type-checks FakeSink against the Sink protocol


@pytest.fixture
async def sink() -> FakeSink:
    return FakeSink()


@pytest.fixture
async def queues(sink: FakeSink) -> AsyncIterator[Queues]:
    qs = Queues(_check_protocol(sink), limits())
    yield qs
    await qs.stop()


def make_queues(sink: FakeSink, **kw: float) -> Queues:
    return Queues(sink, limits(**kw))


# ---- admission ----------------------------------------------------------------------------------
def unstarted(sink: FakeSink, budget: MemoryBudget | None = None, **kw: float) -> StreamQueue:
    lim = limits(**kw)
    return StreamQueue("s", "t", sink, lim, budget or MemoryBudget(lim.memory_cap))


def assert_empty(q: StreamQueue) -> None:
    assert (q.rows, q.nbytes, q.budget.used) == (0, 0, 0)


async def test_offer_beyond_max_rows(sink: FakeSink) -> None:
    q = unstarted(sink, max_rows=3)
    q.offer(entry(b"a", b"b"))
    with pytest.raises(QueueFull) as info:
        q.offer(entry(b"c", b"d"))
    assert info.value.cause == "stream_rows"
    assert (q.rows, q.nbytes, q.budget.used) == (2, 2, 2)
    q.offer(entry(b"c"))  # exactly at the limit
    assert q.rows == 3


async def test_offer_beyond_max_bytes(sink: FakeSink) -> None:
    q = unstarted(sink, max_bytes=10)
    with pytest.raises(QueueFull) as info:
        q.offer(entry(b"x" * 11))
    assert info.value.cause == "stream_bytes"
    assert_empty(q)
    q.offer(entry(b"x" * 10))
    with pytest.raises(QueueFull, match="stream_bytes"):
        q.offer(entry(b"y"))
    assert (q.rows, q.nbytes, q.budget.used) == (1, 10, 10)


async def test_offer_beyond_shared_memory_cap(sink: FakeSink) -> None:
    budget = MemoryBudget(cap=15)
    a = unstarted(sink, budget)
    b = StreamQueue("other", "t2", sink, limits(), budget)
    a.offer(entry(b"x" * 10))
    with pytest.raises(QueueFull) as info:
        b.offer(entry(b"y" * 6))
    assert info.value.cause == "memory"
    assert (b.rows, b.nbytes) == (0, 0)
    assert budget.used == 10
    b.offer(entry(b"y" * 5))
    assert budget.used == 15


async def test_refused_entries_are_never_sent(sink: FakeSink) -> None:
    qs = make_queues(sink, max_rows=1)
    q = qs.queue("s", "t")
    refused = entry(b"r1", b"r2")
    with pytest.raises(QueueFull):
        q.offer(refused)
    accepted = entry(b"ok")
    q.offer(accepted)
    send = await sink.next_send()
    assert send.values == [b"ok"]
    send.ack()
    await accepted.done  # type: ignore[misc]
    assert not refused.done.done()  # type: ignore[union-attr]
    assert sink.calls.empty()
    await qs.stop()


async def test_offer_after_stop_is_refused(sink: FakeSink) -> None:
    qs = make_queues(sink)
    q = qs.queue("s", "t")
    await q.stop()
    with pytest.raises(QueueFull) as info:
        q.offer(entry(b"x"))
    assert info.value.cause == "closed"
    assert_empty(q)


# ---- delivery -----------------------------------------------------------------------------------
async def test_entries_reach_the_sink_in_order_and_waiters_follow_acks(
    sink: FakeSink, queues: Queues
) -> None:
    q = queues.queue("s", "topic.s")
    e1, e2 = entry(b"1a", b"1b"), entry(b"2a")
    q.offer(e1)
    send1 = await sink.next_send()
    assert (send1.topic, send1.values, send1.keys) == ("topic.s", [b"1a", b"1b"], None)
    q.offer(e2)
    await let_run()
    assert not e1.done.done()  # type: ignore[union-attr]
    assert sink.calls.empty()  # max_in_flight=1: the second flush waits for the first ack
    send1.ack()
    await e1.done  # type: ignore[misc]
    assert not e2.done.done()  # type: ignore[union-attr]
    send2 = await sink.next_send()
    assert send2.values == [b"2a"]
    await let_run()
    assert not e2.done.done()  # type: ignore[union-attr]
    send2.ack()
    await e2.done  # type: ignore[misc]
    assert_empty(q)
    assert queues.total_rows() == 0


async def test_counters_and_budget_return_to_zero(sink: FakeSink, queues: Queues) -> None:
    q = queues.queue("s", "t")
    entries = [entry(b"x" * n) for n in (3, 5, 7)]
    for e in entries:
        q.offer(e)
    assert (q.rows, q.nbytes, queues.budget.used) == (3, 15, 15)
    send = await sink.next_send()
    assert (q.rows, q.nbytes, queues.budget.used) == (3, 15, 15)  # in flight still counts
    send.ack()
    await asyncio.gather(*(e.done for e in entries))  # type: ignore[misc]
    assert_empty(q)
    assert queues.budget.used == 0


async def test_entries_without_waiters_are_delivered(sink: FakeSink, queues: Queues) -> None:
    q = queues.queue("s", "t")
    q.offer(entry(b"fire", wait=False))
    (await sink.next_send()).ack()
    assert await q.drain(GUARD)
    assert_empty(q)


async def test_failed_flush_is_resent_and_waiters_resolve_after_retry(sink: FakeSink, queues: Queues) -> None:
    q = queues.queue("s", "t")
    e1 = entry(b"a", b"b")
    q.offer(e1)
    first = await sink.next_send()
    e2 = entry(b"c")
    q.offer(e2)
    first.fail()
    retry = await sink.next_send()
    assert retry.values[:2] == [b"a", b"b"]  # same records, still first
    assert not e1.done.done()  # type: ignore[union-attr]
    assert (q.rows, q.nbytes) == (3, 3)
    if retry.values == [b"a", b"b"]:
        retry.ack()
        (await sink.next_send()).ack()
    else:
        assert retry.values == [b"a", b"b", b"c"]
        retry.ack()
    await asyncio.gather(e1.done, e2.done)  # type: ignore[arg-type]
    assert_empty(q)
    delivered = [v for s in sink.history if s.future.exception() is None for v in s.values]
    assert delivered == [b"a", b"b", b"c"]


@pytest.mark.parametrize("exc", [SinkUnavailable("x"), RuntimeError("boom"), TimeoutError()])
async def test_any_failed_future_is_retried(sink: FakeSink, queues: Queues, exc: BaseException) -> None:
    q = queues.queue("s", "t")
    e = entry(b"v")
    q.offer(e)
    for _ in range(3):
        (await sink.next_send()).fail(exc)
    final = await sink.next_send()
    assert final.values == [b"v"]
    assert not e.done.done()  # type: ignore[union-attr]
    final.ack()
    await e.done  # type: ignore[misc]
    assert_empty(q)


async def test_cancelled_future_is_retried(sink: FakeSink, queues: Queues) -> None:
    q = queues.queue("s", "t")
    e = entry(b"v")
    q.offer(e)
    (await sink.next_send()).future.cancel()
    retry = await sink.next_send()
    assert retry.values == [b"v"]
    retry.ack()
    await e.done  # type: ignore[misc]


async def test_send_raising_sink_unavailable_is_retried(sink: FakeSink, queues: Queues) -> None:
    sink.raise_next.append(SinkUnavailable("not connected"))
    q = queues.queue("s", "t")
    e = entry(b"v")
    q.offer(e)
    send = await sink.next_send()  # after the flusher's own back-off (50 ms)
    assert send.values == [b"v"]
    send.ack()
    await e.done  # type: ignore[misc]
    assert_empty(q)


async def test_send_raising_an_unexpected_error_loses_nothing(sink: FakeSink) -> None:
    """An accepted row is never dropped: a sink bug must not kill the flusher with rows taken."""
    qs = make_queues(sink)
    sink.raise_next.append(RuntimeError("unexpected sink bug"))
    q = qs.queue("s", "t")
    e = entry(b"v")
    q.offer(e)
    try:
        async with asyncio.timeout(30):  # a failure guard only (the back-off starts at 50 ms)
            send = await sink.calls.get()
        assert send.values == [b"v"]
        send.ack()
        await e.done  # type: ignore[misc]
        assert_empty(q)
    finally:
        with contextlib.suppress(Exception):  # stop() re-raises the dead flusher's error
            await qs.stop()


async def test_drain_true_once_delivered(sink: FakeSink, queues: Queues) -> None:
    q = queues.queue("s", "t")
    assert await q.drain(0.01)  # nothing queued
    q.offer(entry(b"x"))
    drained = asyncio.create_task(q.drain(GUARD))
    send = await sink.next_send()
    await let_run()
    assert not drained.done()
    send.ack()
    assert await drained is True
    assert await queues.drain(0.01) is True


async def test_drain_false_when_the_sink_never_acknowledges(sink: FakeSink, queues: Queues) -> None:
    q = queues.queue("s", "t")
    q.offer(entry(b"x"))
    send = await sink.next_send()
    assert await q.drain(0.05) is False
    assert await queues.drain(0.05) is False
    assert q.rows == 1
    send.ack()
    assert await q.drain(GUARD) is True


# ---- combining ----------------------------------------------------------------------------------
async def test_entries_are_combined_up_to_the_byte_budget(sink: FakeSink) -> None:
    qs = make_queues(sink, batch_max_bytes=100, max_in_flight=4)  # flush budget: 4 batches of 100 bytes
    q = qs.queue("s", "t")
    entries = [entry(b"%d" % i + b"." * 149) for i in range(5)]  # 150 bytes each
    for e in entries:  # all queued before the flusher runs
        q.offer(e)
    sends = [await sink.next_send() for _ in range(3)]
    assert [len(s.values) for s in sends] == [2, 2, 1]
    assert [v[:1] for s in sends for v in s.values] == [b"0", b"1", b"2", b"3", b"4"]
    assert all(sum(map(len, s.values)) <= 400 for s in sends)
    for s in reversed(sends):
        s.ack()
    await asyncio.gather(*(e.done for e in entries))  # type: ignore[misc]
    assert_empty(q)
    await qs.stop()


async def test_an_entry_bigger_than_the_budget_is_sent_alone(sink: FakeSink) -> None:
    qs = make_queues(sink, batch_max_bytes=10, max_bytes=1000, max_in_flight=4)
    q = qs.queue("s", "t")
    q.offer(entry(b"x" * 100))
    q.offer(entry(b"y"))
    first, second = await sink.next_send(), await sink.next_send()
    assert (first.values, second.values) == ([b"x" * 100], [b"y"])
    await qs.stop()


async def test_keyed_entries_keep_keys_aligned_when_combined(sink: FakeSink, queues: Queues) -> None:
    q = queues.queue("kv", "t")
    entries = [
        entry(b'{"v":1}', b'{"v":2}', keys=[b"k1", b"k2"]),
        entry(b'{"v":3}', keys=[b"k3"]),
        entry(b'{"v":4}', b'{"v":5}', b'{"v":6}', keys=[b"k4", b"k5", b"k6"]),
    ]
    for e in entries:
        q.offer(e)
    send = await sink.next_send()
    assert send.keys is not None
    assert len(send.keys) == len(send.values) == 6
    assert [(k[1:], v[5:6]) for k, v in zip(send.keys, send.values, strict=True)] == [
        (str(i).encode(), str(i).encode()) for i in range(1, 7)
    ]
    send.ack()
    await asyncio.gather(*(e.done for e in entries))  # type: ignore[misc]


async def test_keyed_retry_keeps_keys_aligned(sink: FakeSink, queues: Queues) -> None:
    q = queues.queue("kv", "t")
    q.offer(entry(b"v1", keys=[b"k1"]))
    first = await sink.next_send()
    q.offer(entry(b"v2", keys=[b"k2"]))
    first.fail()
    retry = await sink.next_send()
    assert retry.keys is not None
    pairs = list(zip(retry.keys, retry.values, strict=True))
    assert pairs == [(b"k1", b"v1"), (b"k2", b"v2")][: len(pairs)]


# ---- Queues -------------------------------------------------------------------------------------
async def test_queues_registry(sink: FakeSink, queues: Queues) -> None:
    a = queues.queue("a", "t.a")
    assert queues.queue("a", "t.a") is a
    assert queues.get("a", "t.a") is a
    assert queues.get("b", "t.b") is None
    b = queues.queue("b", "t.b")
    a.offer(entry(b"1", b"2"))
    b.offer(entry(b"3"))
    assert queues.total_rows() == 3
    assert queues.budget.used == 3
    renamed = queues.queue("a", "t.a2")  # a stream whose topic changed gets a fresh queue
    assert renamed is not a and renamed.topic == "t.a2"
    assert queues.get("a", "t.a") is a  # ... and the old one keeps its rows until flushed
    await queues.remove("b")
    assert queues.get("b", "t.b") is None
    await queues.remove("b")
    await a.stop()


async def test_check_room_refuses_before_decoding_when_a_request_like_the_last_would_not_fit(
    sink: FakeSink,
) -> None:
    qs = Queues(_check_protocol(sink), limits(max_rows=10, max_bytes=10_000))
    try:
        q = qs.queue("s", "t")
        q.check_room()  # empty queue, nothing admitted yet: room
        q.offer(entry(*[b"x"] * 4))  # 4 rows queued (not acknowledged: the fake sink holds them)
        q.check_room()  # 4 + 4 <= 10
        q.offer(entry(*[b"x"] * 4))
        with pytest.raises(QueueFull) as full:
            q.check_room()  # 8 + 4 > 10: a request like the last one would be refused anyway
        assert full.value.cause == "stream_rows"
        q.offer(entry(b"x", b"y"))  # a smaller request still fits: check_room is only a guess
        assert q.rows == 10
    finally:
        await qs.stop()


class StuckSink(FakeSink):
    """A sink whose `send` does not return until the test lets it (a hand-over that hangs)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.entered = asyncio.Event()

    async def send(
        self,
        topic: str,
        values: list[bytes],
        keys: list[bytes] | None,
        headers: list[Headers] | None = None,
        on_batch: OnBatch | None = None,
    ) -> asyncio.Future[None]:
        self.entered.set()
        await self.release.wait()
        return await super().send(topic, values, keys)


async def test_delete_answers_every_waiter_at_once(sink: FakeSink) -> None:
    """Waiters of pending and in-flight entries of a deleted stream learn it before the grace
    runs out (a 404 for the client, not a 504 after its wait timeout)."""
    qs = Queues(_check_protocol(sink), limits(max_in_flight=1))
    q = qs.queue("s", "t")
    flying, waiting = entry(b"1"), entry(b"2")
    q.offer(flying)
    await sink.next_send()  # held by the fake sink: in flight, never acknowledged
    q.offer(waiting)
    removal = asyncio.create_task(qs.remove("s", grace=GUARD * 10))
    for e in (flying, waiting):
        assert e.done is not None
        with pytest.raises(Discarded):
            async with asyncio.timeout(GUARD):
                await e.done
    removal.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await removal
    await qs.stop()


async def test_delete_answers_the_waiter_of_a_hand_over_in_progress() -> None:
    sink = StuckSink()
    qs = Queues(_check_protocol(sink), limits())
    q = qs.queue("s", "t")
    stuck = entry(b"1")
    q.offer(stuck)
    async with asyncio.timeout(GUARD):
        await sink.entered.wait()
    removal = asyncio.create_task(qs.remove("s", grace=GUARD * 10))
    assert stuck.done is not None
    with pytest.raises(Discarded):
        async with asyncio.timeout(GUARD):
            await stuck.done
    sink.release.set()
    (await sink.next_send()).future.set_result(None)  # the hand-over lands after all
    async with asyncio.timeout(GUARD):
        await removal
    assert_empty(q)
    await qs.stop()


async def test_entry_headers_reach_every_record_of_a_flush(sink: FakeSink) -> None:
    qs = make_queues(sink, linger_s=GUARD)  # lingers: both entries go in one flush
    q = qs.queue("s", "t")
    v2 = [("schema-version", b"2")]
    first = Entry([b"a", b"b"], None, 2, headers=[("schema-version", b"1")])
    qs.offer_all([(q, first), (q, Entry([b"c"], None, 1, headers=v2))])
    q.flush_now()
    send = await sink.next_send()
    assert send.values == [b"a", b"b", b"c"]
    assert send.headers == [[("schema-version", b"1")]] * 2 + [v2]
    send.ack()
    await qs.stop()


async def test_entries_as_runs_of_lines_go_to_the_sink_as_runs(sink: FakeSink, form: str) -> None:
    """The common path: a flush of entries that are all runs of lines reaches the sink as those
    runs, each with its entry's headers; any entry with a value per record makes it values."""
    qs = make_queues(sink, linger_s=GUARD)  # lingers: the entries go in one flush
    q = qs.queue("s", "t")
    v1, v2 = [("schema-version", b"1")], [("schema-version", b"2")]
    third = Entry(b"c\n", None, 2, headers=v2) if form == "lines" else Entry([b"c"], None, 1)
    qs.offer_all([(q, Entry(b"a\nb\n", None, 4, headers=v1)), (q, Entry(b"", None, 0)), (q, third)])
    assert q.rows == 3
    q.flush_now()
    send = await sink.next_send()
    assert send.values == [b"a", b"b", b"c"]
    assert send.headers == [v1, v1, v2 if form == "lines" else []]
    assert sink.lines_sent == (1 if form == "lines" else 0)
    send.ack()
    await qs.drain(GUARD)
    assert_empty(q)
    await qs.stop()


def test_an_entry_counts_the_records_of_its_run() -> None:
    e = Entry(b'{"a":1}\n{"a":2}\n', None, 16)
    assert (e.rows, e.value_list()) == (2, [b'{"a":1}', b'{"a":2}'])
    assert Entry(b"", None, 0).rows == 0
    assert Entry(b"x\n", None, 2, rows=1).rows == 1


def _sample(name: str, stream: str) -> float:
    value = REGISTRY.get_sample_value(name, {"stream": stream})
    return 0.0 if value is None else value


async def test_queue_gauges_read_the_queue_and_accepted_counters_follow_each_flush(
    sink: FakeSink, queues: Queues
) -> None:
    """One process: the queue gauges read the queue when scraped (nothing set per request); the
    accepted counters take what `tally` counted once per flush, or when asked (before a scrape)."""
    q = queues.queue("gauged", "t")
    accepted = _sample("gateway_rows_accepted_total", "gauged")
    accepted_bytes = _sample("gateway_bytes_accepted_total", "gauged")
    e1 = entry(b"abc", b"de", wait=False)
    q.offer(e1)
    q.tally(e1.rows, e1.nbytes)
    assert _sample("gateway_queue_rows", "gauged") == 2
    assert _sample("gateway_queue_bytes", "gauged") == 5
    send = await sink.next_send()  # the flush counted the tally
    assert _sample("gateway_rows_accepted_total", "gauged") == accepted + 2
    assert _sample("gateway_bytes_accepted_total", "gauged") == accepted_bytes + 5
    e2 = entry(b"f", wait=False)
    q.offer(e2)  # max_in_flight=1: not flushed yet
    q.tally(e2.rows, e2.nbytes)
    assert _sample("gateway_queue_rows", "gauged") == 3
    assert _sample("gateway_rows_accepted_total", "gauged") == accepted + 2
    queues.count_accepted()
    assert _sample("gateway_rows_accepted_total", "gauged") == accepted + 3
    send.ack()
    (await sink.next_send()).ack()
    assert await q.drain(GUARD)
    assert _sample("gateway_queue_rows", "gauged") == 0
    assert _sample("gateway_rows_accepted_total", "gauged") == accepted + 3
