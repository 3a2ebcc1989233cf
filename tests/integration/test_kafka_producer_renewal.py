"""The Kafka sink recovers from a broker that rejects its producer's sequence numbers, over a real
broker: aiokafka alone keeps failing every later batch of the partition (aio-libs/aiokafka#1017)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from aiokafka import TopicPartition
from prometheus_client import REGISTRY

from gateway.sinks.base import SinkUnavailable
from gateway.sinks.kafka import KafkaSink
from tests.integration.harness import read_topic
from tests.integration.sink_helpers import new_topic, running_sink

RESETS = "gateway_sink_producer_resets_total"


def resets() -> float:
    return REGISTRY.get_sample_value(RESETS) or 0.0


@pytest.fixture
async def sink(kafka: str) -> AsyncIterator[KafkaSink]:
    async with running_sink(kafka, batch_max_bytes=64 * 1024) as sink:
        yield sink


async def make_topic(sink: KafkaSink, partitions: int) -> str:
    return await new_topic(sink, "renewal", partitions)


def open_sequence_gap(sink: KafkaSink, tp: TopicPartition) -> None:
    """What aiokafka does when it expires a batch it had already numbered (a partition with no
    leader for longer than request_timeout_ms): the broker never sees those sequence numbers."""
    sink.producer._txn_manager.increment_sequence_number(tp, 3)


async def settled(fut: asyncio.Future[None]) -> BaseException | None:
    with contextlib.suppress(SinkUnavailable):
        await fut
        return None
    return fut.exception()


async def test_a_sequence_gap_replaces_the_producer_and_the_rows_go_again(
    sink: KafkaSink, kafka: str
) -> None:
    topic = await make_topic(sink, 1)
    await (await sink.send(topic, [b"first"], None))
    broken = sink.producer
    open_sequence_gap(sink, TopicPartition(topic, 0))
    before = resets()

    failure = await settled(await sink.send(topic, [b"second"], None))
    assert isinstance(failure, SinkUnavailable), failure
    assert "OutOfOrderSequenceNumber" in repr(failure.__cause__), repr(failure.__cause__)
    assert sink.available(), "Kafka answered: the sink must not report it unreachable"
    renewal = sink._renewal
    assert renewal is not None, "no new producer was started"
    await renewal

    assert sink.producer is not broken
    assert resets() == before + 1
    # what the queues do with a failed flush: send the same rows again
    await (await sink.send(topic, [b"second"], None))
    await (await sink.send(topic, [b"third"], None))
    assert [r.value for r in await read_topic(kafka, topic)] == [b"first", b"second", b"third"]
