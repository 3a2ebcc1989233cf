"""The per-stream partitioner's plumbing (its output is checked against Java and librdkafka in
tests/integration/test_partitioners.py): names, old catalog records, unknown names, and the Kafka
sink's table that follows the catalog."""

from __future__ import annotations

import logging
import uuid

import msgspec
import pytest

from gateway.catalog.changes import ABSENT, Change, decode, stream_key
from gateway.catalog.model import PARTITIONERS, Column, Stream
from gateway.sinks import key_partitions
from gateway.sinks.kafka import KafkaSink
from gateway.sinks.key_partitions import consistent_random, or_sticky, partition_for_key, partitioner_named


def stream(name: str = "s", **fields: object) -> Stream:
    return Stream(name=name, columns=[Column("id", "string")], topic=f"ingest.{name}", **fields)  # type: ignore[arg-type]


def test_every_catalog_name_has_a_partitioner() -> None:
    assert tuple(key_partitions.PARTITIONERS) == PARTITIONERS


def test_a_catalog_record_without_the_field_is_murmur2() -> None:
    old = msgspec.json.encode(stream())
    record = msgspec.json.decode(old)
    del record["partitioner"]
    got = decode(Change(stream_key("s"), msgspec.json.encode(record), uuid.uuid4().hex, ABSENT))
    assert isinstance(got, Stream) and got.partitioner == "murmur2"


def test_an_unknown_name_goes_by_murmur2_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        assert partitioner_named("fnv1a", "s") is partition_for_key
    assert "fnv1a" in caplog.text and "murmur2" in caplog.text


def test_keys_that_choose_no_partition_go_to_the_sticky_one() -> None:
    sticky = (consistent_random(b"k1", 7) + 1) % 7  # not k1's partition
    place = or_sticky(consistent_random, sticky)
    assert consistent_random(b"", 7) == -1 and place(b"", 7) == sticky
    assert place(b"k1", 7) == consistent_random(b"k1", 7) != sticky


def test_the_sink_follows_each_streams_partitioner() -> None:
    sink = KafkaSink("127.0.0.1:9", batch_max_bytes=1 << 20)
    s = stream()
    sink.stream_changed("s", None, s)
    assert sink._key_placer(s.topic, 7) is partition_for_key
    crc = msgspec.structs.replace(s, partitioner="consistent_random")
    sink.stream_changed("s", s, crc)
    placer = sink._key_placer(s.topic, 7, sticky=2)
    assert [placer(k, 7) for k in (b"k1", b"user-42", b"")] == [
        consistent_random(b"k1", 7),
        consistent_random(b"user-42", 7),
        2,
    ]
    sink.stream_changed("s", crc, None)  # deleted: kept until its queues are gone
    assert sink._key_placer(s.topic, 7, sticky=2) is not partition_for_key
    sink.forget_topics([s.topic, s.quarantine_topic])
    assert sink._key_placer(s.topic, 7) is partition_for_key
    sink.stream_changed("s", None, crc)
    sink.stream_changed("s", crc, s)  # back to the default
    assert sink._key_placer(s.topic, 7) is partition_for_key
