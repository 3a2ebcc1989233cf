"""The one place the ceilings build a Kafka record batch and hand it to aiokafka (ceilings 4 and 5),
with either builder: aiokafka's own (`create_batch()`/`append`, one Python call per record) or the
gateway's one-call encoder (gateway/sinks/aiokafka_batch.py `RecordBatch.fill`)."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer

from gateway.sinks.aiokafka_batch import RecordBatch

BATCH_MAX_BYTES = 1024 * 1024  # the gateway's default --batch-max-bytes
BUILDERS = ("aiokafka", "native")  # aiokafka's BatchBuilder; the gateway's RecordBatch.fill


def producer(bootstrap: str) -> AIOKafkaProducer:
    """A producer configured as the gateway's: idempotent, acks=all, 1 MiB batches, no linger of
    its own (the caller decides when a batch is sent)."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        max_batch_size=BATCH_MAX_BYTES,
        max_request_size=BATCH_MAX_BYTES + 64 * 1024,
        linger_ms=0,
    )


@functools.lru_cache(maxsize=4)
def _twice(n: int) -> list[int]:
    """Indices 0..n-1 twice over: from any start below n, a batch can go on past the end."""
    return [*range(n), *range(n)]


def _native(values: Sequence[bytes], start: int, cycle: bool) -> tuple[RecordBatch, int]:
    values = values if isinstance(values, list) else list(values)
    order = _twice(len(values)) if cycle else None
    batch = RecordBatch.fill(values, None, None, order, start, int(time.time() * 1000), BATCH_MAX_BYTES)
    return batch, start + batch.record_count()


def _aiokafka(kafka: AIOKafkaProducer, values: Sequence[bytes], start: int, cycle: bool) -> tuple[Any, int]:
    batch = kafka.create_batch()
    i, n = start, len(values)
    while (cycle or i < n) and batch.append(key=None, value=values[i % n], timestamp=None) is not None:
        i += 1
    if i == start and n > start:
        raise ValueError(f"a value of {len(values[start])} bytes does not fit an empty batch")
    return batch, i


async def send_values(
    kafka: AIOKafkaProducer,
    topic: str,
    partition: int,
    values: Sequence[bytes],
    start: int = 0,
    *,
    cycle: bool = False,
    builder: str = "aiokafka",
) -> tuple[asyncio.Future[Any], int]:
    """Pack `values[start:]` into one record batch with `builder` (as many as fit, no key, no
    headers; with `cycle`, going on from the first value until the batch is full), hand it to
    aiokafka for `partition`; return its delivery future and the index after the last value
    packed (with `cycle`, possibly beyond len(values): the caller takes it modulo)."""
    if builder == "native":
        batch, after = _native(values, start, cycle)
    elif builder == "aiokafka":
        batch, after = _aiokafka(kafka, values, start, cycle)
    else:
        raise ValueError(f"unknown batch builder {builder!r} (one of {', '.join(BUILDERS)})")
    future: asyncio.Future[Any] = await kafka.send_batch(batch, topic, partition=partition)
    return future, after
