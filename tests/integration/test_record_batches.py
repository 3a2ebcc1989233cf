"""Record batches from both encoders (native and pure Python) over a real broker: it checks their
CRC and the idempotent producer's sequence numbers, and a consumer reads every record back where the
sink said it landed."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.sinks import recordbatch
from gateway.sinks.base import Headers, Landed, Lines, RecordMeta
from gateway.sinks.kafka import KafkaSink, partition_for_key
from gateway.sinks.recordbatch import Encoder
from tests.integration.harness import read_topic
from tests.integration.sink_helpers import new_topic, running_sink
from tests.unit.test_recordbatch import ENCODERS

ROWS = 500
VALUES = [b'{"n":%d,"pad":"%s"}' % (i, b"x" * (i % 90)) for i in range(ROWS)]
VERSION: Headers = [("schema-version", b"3")]


@pytest.fixture(params=ENCODERS)
async def sink(request: pytest.FixtureRequest, kafka: str) -> AsyncIterator[KafkaSink]:
    encoder: Encoder | None = request.param
    assert encoder is not None, "a C compiler is here, but the native module was not built"
    async with running_sink(kafka, batch_max_bytes=8 * 1024, encoder=encoder) as sink:  # many batches
        yield sink


async def topic_of(sink: KafkaSink, partitions: int) -> str:
    return await new_topic(sink, "batches", partitions)


async def landed(
    sink: KafkaSink,
    topic: str,
    values: list[bytes],
    keys: list[bytes] | None = None,
    meta: RecordMeta | None = None,
    headers: list[Headers] | None = None,
) -> list[tuple[int, int]]:
    result = await (await sink.send(topic, values, keys, meta, headers))
    assert isinstance(result, Landed)
    return result.positions()


async def test_spread_records_with_headers_read_back_where_they_landed(sink: KafkaSink, kafka: str) -> None:
    topic = await topic_of(sink, 3)
    positions = []
    for flush in range(3):  # consecutive flushes: the broker checks each batch's base sequence
        part = VALUES[flush * 100 : (flush + 1) * 100] * 2
        positions += await landed(sink, topic, part, headers=[VERSION] * len(part))
    records = {(r.partition, r.offset): r for r in await read_topic(kafka, topic)}
    expected = [v for flush in range(3) for v in VALUES[flush * 100 : (flush + 1) * 100] * 2]
    assert len(records) == len(expected) == len(positions)
    assert [records[p].value for p in positions] == expected
    assert all(r.key is None and r.headers == VERSION for r in records.values())


async def test_runs_of_lines_read_back_where_they_landed(sink: KafkaSink, kafka: str) -> None:
    """The common path: flushes given as runs of lines (one per request, each with its own
    headers; an empty one too), split into many batches, some runs across two batches."""
    topic = await topic_of(sink, 3)
    positions = []
    expected: list[tuple[bytes, Headers]] = []
    other: Headers = [("schema-version", b"4")]
    for flush in range(3):
        requests = [VALUES[i : i + 70] for i in range(flush * 150, (flush + 1) * 150, 70)]
        runs = [b"".join(v + b"\n" for v in r) for r in requests] + [b""]
        headers: list[Headers | None] = [VERSION if i % 2 else other for i in range(len(runs))]
        lines = Lines(runs, headers, sum(map(len, requests)))
        result = await (await sink.send_lines(topic, lines))
        assert isinstance(result, Landed) and len(result.batches) > 1
        positions += result.positions()
        expected += [(v, headers[i]) for i, r in enumerate(requests) for v in r]  # type: ignore[misc]
    records = {(r.partition, r.offset): r for r in await read_topic(kafka, topic)}
    assert len(records) == len(expected) == len(positions)
    assert [(records[p].key, records[p].value, records[p].headers) for p in positions] == [
        (None, v, h) for v, h in expected
    ]


async def test_keyed_and_placed_records_read_back_where_they_landed(sink: KafkaSink, kafka: str) -> None:
    topic = await topic_of(sink, 4)
    keys = [b"user-%d" % (i % 37) for i in range(ROWS)]
    keyed = await landed(sink, topic, VALUES, keys=keys, headers=[VERSION] * ROWS)
    assert [p for p, _ in keyed] == [partition_for_key(k, 4) for k in keys]
    own: list[Headers] = [[("trace", b"%d" % i), ("empty", b""), ("ünïcode", b"\xff")] for i in range(50)]
    meta = RecordMeta(
        [None if i % 2 else b"k%d" % i for i in range(50)], [i % 5 - 1 for i in range(50)], own
    )  # -1: the sink chooses
    placed = await landed(sink, topic, VALUES[:50], meta=meta)
    records = {(r.partition, r.offset): r for r in await read_topic(kafka, topic)}
    assert [(records[p].key, records[p].value, records[p].headers) for p in keyed] == [
        (k, v, VERSION) for k, v in zip(keys, VALUES, strict=True)
    ]
    assert [(records[p].key, records[p].value, records[p].headers) for p in placed] == [
        (k, v, h) for k, v, h in zip(meta.keys, VALUES[:50], own, strict=True)
    ]
    assert all(p == want for (p, _), want in zip(placed, meta.partitions, strict=True) if want >= 0)


def test_the_sink_uses_the_encoder_chosen_at_import() -> None:
    sink = KafkaSink("127.0.0.1:9", batch_max_bytes=1024)
    assert sink.encoder is recordbatch.ENCODER
