"""A `KafkaSink` started against the test broker, and new topics for it: shared by the tests that
drive the sink directly (producer renewal, record batches)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiokafka.admin import NewTopic

from gateway.sinks.kafka import KafkaSink
from gateway.sinks.recordbatch import Encoder
from tests.integration.harness import unique_name


@contextlib.asynccontextmanager
async def running_sink(
    kafka: str, *, batch_max_bytes: int, encoder: Encoder | None = None
) -> AsyncIterator[KafkaSink]:
    """A started sink (with `encoder` instead of the default one, when given), closed after."""
    sink = KafkaSink(kafka, batch_max_bytes=batch_max_bytes, request_timeout_ms=10_000)
    if encoder is not None:
        sink.encoder = encoder
    await sink.start()
    try:
        yield sink
    finally:
        await sink.close()


async def new_topic(sink: KafkaSink, prefix: str, partitions: int) -> str:
    """A new `ingest.`-prefixed topic with `partitions` partitions."""
    topic = "ingest." + unique_name(prefix)
    await sink.admin.create_topics([NewTopic(topic, partitions, 1)])
    return topic
