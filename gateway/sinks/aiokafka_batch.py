"""The only use of aiokafka's private members: filling a record batch without its per-record wrapper,
and abandoning a broken producer's batches.

`BatchBuilder.append` (public) serializes, checks and counts each record in Python; calling the C
builder it wraps (`batch._builder.append`) and setting the count once (`_relative_offset`) is what
keeps the Kafka sink off the top of the profile. aiokafka has no public API for either, so both
live here, and tests/unit/test_aiokafka_batch.py fails loudly if aiokafka changes them.

`abandon` fails every batch a producer still holds (queued or in flight): aiokafka's own way to do
so (`MessageAccumulator.fail_all`) has no public wrapper either.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Append = Callable[[int, int, bytes | None, bytes, list[Any]], Any]


def appender(batch: Any) -> Append:
    """The batch's C-level append: (offset, timestamp_ms, key, value, headers) → metadata, or
    None when the batch is full."""
    append: Append = batch._builder.append
    return append


def seal(batch: Any, count: int) -> None:
    """Record how many records were appended (what `BatchBuilder.append` would have counted),
    then close the batch for sending."""
    batch._relative_offset = count
    batch.close()


def abandon(producer: Any, exc: BaseException) -> None:
    """Fail every batch `producer` holds, queued or in flight, with `exc`; later `send_batch`
    calls on it raise a copy of `exc`."""
    accumulator = producer._message_accumulator
    accumulator.fail_all(exc)
    for queued in accumulator._batches.values():
        for batch in queued:  # fail_all also fails their drain waiters, which nobody awaits:
            batch._drain_waiter.exception()  # retrieved, or asyncio logs each one at GC
