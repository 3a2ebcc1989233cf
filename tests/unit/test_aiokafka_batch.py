"""aiokafka's private members that gateway/sinks/aiokafka_batch.py relies on: this fails loudly when
an aiokafka upgrade changes what its accumulator and sender call on a batch builder."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError, KafkaTimeoutError
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.producer.sender import SendProduceReqHandler
from aiokafka.protocol.produce import ProduceRequest_v7
from aiokafka.record.default_records import DefaultRecordBatch

from gateway.sinks.aiokafka_batch import RecordBatch, abandon, holds_queued, wait_taken
from gateway.sinks.recordbatch import PURE

TS = 1_700_000_000_000
VALUES = [b'{"n":%d}' % i for i in range(300)]
KEYS: list[bytes | None] = [None if i % 3 else b"k%d" % i for i in range(300)]
HEADERS = [[("schema-version", b"1")]] * 300


@pytest.fixture
async def producer() -> AsyncIterator[AIOKafkaProducer]:
    """An idempotent producer, never started: its accumulator numbers batches as a started one's."""
    producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:9", enable_idempotence=True, max_batch_size=4096)
    producer._txn_manager.set_pid_and_epoch(4321, 7)
    yield producer
    await producer.stop()


def aiokafka_builder(producer: AIOKafkaProducer, start: int) -> BatchBuilder:
    batch = producer.create_batch()
    for i in range(start, len(VALUES)):
        if batch.append(timestamp=TS, key=KEYS[i], value=VALUES[i], headers=HEADERS[i]) is None:
            break
    return batch


async def drained(producer: AIOKafkaProducer, builder: object, tp: TopicPartition) -> bytes:
    """What aiokafka sends for `builder`: queued, numbered and drained as the sender does it."""
    accumulator = producer._message_accumulator
    await accumulator.add_batch(builder, tp, 1.0)
    batch = accumulator._pop_batch(tp)  # what drain_by_nodes does: producer state, drain_ready
    assert not batch.is_empty()
    assert batch.remaining_linger() is None  # closed: never lingers
    request = SendProduceReqHandler(producer._sender, {tp: batch}).create_request()
    request.build(ProduceRequest_v7).encode()  # the Produce request around it encodes
    data: bytes = bytes(batch.get_data_buffer())
    assert bytes(batch.get_data_buffer()) == data  # a retry sends the same bytes
    return data


async def test_aiokafka_sends_a_record_batch_as_its_own_builders_batch(producer: AIOKafkaProducer) -> None:
    txn = producer._txn_manager
    start = 0
    for partition in range(3):  # consecutive batches: base sequences 0, n, n + m
        theirs_tp, ours_tp = TopicPartition("theirs", partition), TopicPartition("ours", partition)
        txn.increment_sequence_number(theirs_tp, 1000 * partition)
        txn.increment_sequence_number(ours_tp, 1000 * partition)
        builder = aiokafka_builder(producer, start)
        ours = RecordBatch.fill(VALUES, KEYS, HEADERS, None, start, TS, 4096)
        assert ours.record_count() == builder.record_count() > 10
        assert ours.size() == builder.size()
        assert await drained(producer, ours, ours_tp) == await drained(producer, builder, theirs_tp)
        assert txn.sequence_number(ours_tp) == 1000 * partition + ours.record_count()
        start += ours.record_count()


async def test_the_pure_python_encoder_goes_the_same_way(producer: AIOKafkaProducer) -> None:
    tp = TopicPartition("t", 0)
    ours = RecordBatch.fill(VALUES, KEYS, HEADERS, list(range(299, -1, -1)), 5, TS, 4096, encoder=PURE)
    data = await drained(producer, ours, tp)
    batch = DefaultRecordBatch(data)
    assert batch.validate_crc()
    assert (batch.producer_id, batch.producer_epoch, batch.base_sequence) == (4321, 7, 0)
    assert [r.value for r in batch] == VALUES[294::-1][: ours.record_count()]


def test_a_renumbered_batch_gets_a_new_header_and_crc() -> None:
    batch = RecordBatch.fill(VALUES, None, None, None, 0, TS, 1 << 20)
    batch._set_producer_state(1, 0, 0)
    first = bytes(batch._build())
    batch._set_producer_state(2, 0, 40)
    second = DefaultRecordBatch(bytes(batch._build()))
    assert second.validate_crc()
    assert (second.producer_id, second.base_sequence) == (2, 40)
    assert bytes(batch._build())[61:] == first[61:]  # the records themselves stay


def test_a_compressed_batch_reads_back() -> None:
    batch = RecordBatch.fill(VALUES, KEYS, HEADERS, None, 0, TS, 1 << 20, compression="gzip")
    data = bytes(batch._build())
    read = DefaultRecordBatch(data)
    assert read.validate_crc()
    assert read.compression_type == 1
    assert gzip.decompress(data[61:])  # the records, gzip-compressed
    assert [(r.key, r.value, r.headers) for r in read] == list(zip(KEYS, VALUES, HEADERS, strict=True))


def test_the_full_batch_refuses_what_producer_send_would_add() -> None:
    batch = RecordBatch.fill(VALUES, None, None, None, 0, TS, 1 << 20)
    assert batch.closed()
    assert batch.append(timestamp=None, key=None, value=b"late") is None


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


async def test_holds_queued_while_the_sender_has_not_taken_the_partitions_batch(
    producer: AIOKafkaProducer,
) -> None:
    """`send_batch` waits exactly while `holds_queued` says so: the sink's lanes rely on it."""
    tp = TopicPartition("t", 1)
    accumulator = producer._message_accumulator
    assert not holds_queued(producer, "t", 1)
    await accumulator.add_batch(aiokafka_builder(producer, 0), tp, 1.0)
    assert holds_queued(producer, "t", 1) and not holds_queued(producer, "t", 0)
    with pytest.raises(KafkaTimeoutError):  # what the lane spares the flush
        await accumulator.add_batch(aiokafka_builder(producer, 0), tp, 0.01)
    accumulator._pop_batch(tp)  # the sender took it (in flight now)
    assert not holds_queued(producer, "t", 1)
    assert tp not in accumulator._batches  # asking did not add an empty queue


async def test_wait_taken_returns_once_the_sender_took_the_partitions_batches(
    producer: AIOKafkaProducer,
) -> None:
    """The lanes wait with it before `send_batch`, to decide at the last moment whether a batch
    is still to be sent."""
    tp = TopicPartition("t", 1)
    accumulator = producer._message_accumulator
    await wait_taken(producer, "t", 1)  # nothing queued: at once
    await accumulator.add_batch(aiokafka_builder(producer, 0), tp, 1.0)
    waiting = asyncio.ensure_future(wait_taken(producer, "t", 1))
    await asyncio.sleep(0)
    assert not waiting.done()
    accumulator._pop_batch(tp)  # the sender took it (drained)
    await asyncio.wait_for(waiting, 5)  # a failure guard
    assert tp not in accumulator._batches
    await accumulator.add_batch(aiokafka_builder(producer, 0), tp, 1.0)
    producer._request_timeout_ms = 10
    with pytest.raises(KafkaTimeoutError):
        await wait_taken(producer, "t", 1)
