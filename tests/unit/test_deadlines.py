"""The wait=true deadlines: one timer for all waiters, in admission order, bounded when the oldest
waiter is stuck."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.deadlines import COMPACT_AT, Deadlines


async def test_a_future_not_done_in_time_fails_with_timeout() -> None:
    deadlines = Deadlines(0.01)
    loop = asyncio.get_running_loop()
    late, settled, cancelled = loop.create_future(), loop.create_future(), loop.create_future()
    for fut in (late, settled, cancelled):
        deadlines.watch(fut)
    settled.set_result("landed")
    cancelled.cancel()
    with pytest.raises(TimeoutError):
        await late
    assert settled.result() == "landed" and cancelled.cancelled()
    assert len(deadlines) == 0  # the timer went through all three and stopped


async def test_each_future_gets_its_own_deadline() -> None:
    """A future watched after the first one's timer was armed still times out (re-armed)."""
    deadlines = Deadlines(0.01)
    loop = asyncio.get_running_loop()
    first = loop.create_future()
    deadlines.watch(first)
    with pytest.raises(TimeoutError):
        await first
    second = loop.create_future()
    deadlines.watch(second)
    with pytest.raises(TimeoutError):
        await second


async def test_settled_waiters_behind_a_stuck_one_are_dropped() -> None:
    deadlines = Deadlines(3600)
    loop = asyncio.get_running_loop()
    stuck: asyncio.Future[Any] = loop.create_future()
    deadlines.watch(stuck)
    for _ in range(10 * COMPACT_AT):
        fut: asyncio.Future[Any] = loop.create_future()
        deadlines.watch(fut)
        fut.set_result(None)
    assert len(deadlines) <= COMPACT_AT + 1
    assert not stuck.done()
    stuck.cancel()
