"""KafkaSink._delivered: a flush's future settles from its batches' futures (no task per flush):
where they landed once all are acknowledged, else the first failure, counted once."""

from __future__ import annotations

import asyncio
import gc
import types
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError, OutOfOrderSequenceNumber

from gateway.sinks.base import SinkUnavailable
from gateway.sinks.kafka import KafkaSink


def _sink() -> tuple[KafkaSink, list[BaseException]]:
    sink = KafkaSink("127.0.0.1:1", batch_max_bytes=1 << 20)
    failed: list[BaseException] = []
    sink._failed = lambda producer, exc: failed.append(exc)  # type: ignore[method-assign]
    return sink, failed


def _batches(n: int) -> list[tuple[asyncio.Future[Any], range]]:
    loop = asyncio.get_running_loop()
    return [(loop.create_future(), range(10 * i, 10 * i + 10)) for i in range(n)]


async def test_landed_once_every_batch_is_acknowledged() -> None:
    sink, failed = _sink()
    shipped = _batches(2)
    flush = sink._delivered(None, shipped, 0.0)
    shipped[1][0].set_result(types.SimpleNamespace(partition=2, offset=70, timestamp=-1))
    await asyncio.sleep(0)
    assert not flush.done()
    shipped[0][0].set_result(types.SimpleNamespace(partition=1, offset=40, timestamp=-1))
    landed = await flush
    assert landed is not None
    assert landed.batches == [(1, 40, range(0, 10)), (2, 70, range(10, 20))]
    assert not failed


async def test_an_empty_flush_lands_at_once() -> None:
    sink, _ = _sink()
    landed = await sink._delivered(None, [], 0.0)
    assert landed is not None and landed.batches == []


async def test_the_first_failure_wins_and_is_counted_once(caplog: pytest.LogCaptureFixture) -> None:
    sink, failed = _sink()
    shipped = _batches(3)
    flush = sink._delivered(None, shipped, 0.0)
    first = OutOfOrderSequenceNumber()
    shipped[1][0].set_exception(first)
    shipped[0][0].set_exception(KafkaConnectionError())
    shipped[2][0].set_result(types.SimpleNamespace(partition=0, offset=0, timestamp=-1))
    with pytest.raises(SinkUnavailable) as raised:
        await flush
    assert raised.value.__cause__ is first
    assert failed == [first]
    del shipped
    gc.collect()  # the later failure was retrieved: asyncio logs nothing about it
    assert "exception was never retrieved" not in caplog.text


async def test_a_cancelled_batch_cancels_the_flush() -> None:
    sink, _ = _sink()
    shipped = _batches(2)
    flush = sink._delivered(None, shipped, 0.0)
    shipped[0][0].cancel()
    with pytest.raises(asyncio.CancelledError):
        await flush
