"""The partition a record's key chooses, by the stream's `partitioner`: Java's default (murmur2,
as Confluent REST Proxy and every Java client) or librdkafka's default (`consistent_random`, CRC-32,
as Karapace and every librdkafka-based client: confluent-kafka-python/-go/.NET, kcat, …)."""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable

from aiokafka.partitioner import murmur2

from gateway.catalog.model import DEFAULT_PARTITIONER

log = logging.getLogger(__name__)
# (key, partition count) → the key's partition, or -1 when the key chooses none (the sink then
# takes its sticky partition, as for records without a key)
KeyPartitioner = Callable[[bytes, int], int]


def partition_for_key(key: bytes, partitions: int) -> int:
    """Java's DefaultPartitioner (librdkafka's `murmur2_random`): murmur2 of the key, made
    positive, mod n. An empty key is hashed like any other."""
    return int((murmur2(key) & 0x7FFFFFFF) % partitions)


def consistent_random(key: bytes, partitions: int) -> int:
    """librdkafka's default partitioner: CRC-32 of the key mod n; an empty key, like a null one,
    goes to a random partition (here: the sink's sticky one)."""
    return zlib.crc32(key) % partitions if key else -1


PARTITIONERS: dict[str, KeyPartitioner] = {
    DEFAULT_PARTITIONER: partition_for_key,
    "consistent_random": consistent_random,
}


def or_sticky(choose: KeyPartitioner, sticky: int) -> KeyPartitioner:
    """`choose`, with `sticky` for the keys that choose no partition."""

    def place(key: bytes, partitions: int) -> int:
        partition = choose(key, partitions)
        return partition if partition >= 0 else sticky

    return place


def partitioner_named(name: str, stream: str) -> KeyPartitioner:
    """The partitioner called `name`; Java's for a name this version does not know (a catalog
    record written by a newer replica), said in the log."""
    found = PARTITIONERS.get(name)
    if found is None:
        log.error(
            "stream %r asks for partitioner %r, which this version does not know; its keys "
            "go by %s until every replica runs a version that knows it",
            stream,
            name,
            DEFAULT_PARTITIONER,
        )
        return partition_for_key
    return found
