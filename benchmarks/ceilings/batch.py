"""The one place the ceilings build a Kafka record batch and hand it to aiokafka (ceilings 4 and 5):
swap this function to measure another batch builder under the same load."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer

BATCH_MAX_BYTES = 1024 * 1024  # the gateway's default --batch-max-bytes


def producer(bootstrap: str) -> AIOKafkaProducer:
    """A producer configured as the gateway's: idempotent, acks=all, 1 MiB batches, no linger of
    its own (the caller decides when a batch is sent)."""
    return AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                            max_batch_size=BATCH_MAX_BYTES,
                            max_request_size=BATCH_MAX_BYTES + 64 * 1024, linger_ms=0)


async def send_values(kafka: AIOKafkaProducer, topic: str, partition: int,
                      values: Sequence[bytes], start: int = 0, *, cycle: bool = False
                      ) -> tuple[asyncio.Future[Any], int]:
    """Pack `values[start:]` into one record batch (as many as fit, no key, no headers; with
    `cycle`, going on from the first value until the batch is full), hand it to aiokafka for
    `partition`; return its delivery future and the index after the last value packed."""
    batch = kafka.create_batch()
    i, n = start, len(values)
    while ((cycle or i < n)
           and batch.append(key=None, value=values[i % n], timestamp=None) is not None):
        i += 1
    if i == start and n > start:
        raise ValueError(f"a value of {len(values[start])} bytes does not fit an empty batch")
    future: asyncio.Future[Any] = await kafka.send_batch(batch, topic, partition=partition)
    return future, i
