"""aiokafka's private batch members that gateway/sinks/aiokafka_batch.py relies on: this fails
loudly when an aiokafka upgrade renames or changes them."""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.producer.message_accumulator import BatchBuilder

from gateway.sinks.aiokafka_batch import abandon, appender, seal


def test_the_c_builder_appends_counts_and_refuses_when_full() -> None:
    batch = BatchBuilder(1024, 0)
    append = appender(batch)
    count = 0
    while append(count, 1_700_000_000_000, b"k" if count % 2 else None, b"v" * 100, []) is not None:
        count += 1
    assert 3 < count < 10  # ~100-byte records in a 1 KiB batch: refused once full, not before
    seal(batch, count)
    assert batch.record_count() == count
    assert batch.size() > count * 100
    assert batch.append(timestamp=None, key=None, value=b"late") is None  # sealed: closed


def test_an_empty_batch_seals_with_no_records() -> None:
    batch = BatchBuilder(1024, 0)
    seal(batch, 0)
    assert batch.record_count() == 0


async def test_abandon_fails_held_batches_and_refuses_later_ones() -> None:
    producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:9", enable_idempotence=True)
    accumulator = producer._message_accumulator  # what `abandon` reaches into
    tp = TopicPartition("t", 0)
    held = await accumulator.add_batch(producer.create_batch(), tp, 1.0)
    abandon(producer, KafkaError("replaced"))
    with pytest.raises(KafkaError, match="replaced"):
        await held
    with pytest.raises(KafkaError, match="replaced"):
        await accumulator.add_batch(producer.create_batch(), tp, 1.0)
    await producer.stop()
