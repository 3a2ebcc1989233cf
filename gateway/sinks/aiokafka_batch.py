"""The only use of aiokafka's private members: a record batch encoded in one call that aiokafka sends
as if its own `BatchBuilder` had built it, abandoning a broken producer's batches, and whether
`send_batch` would wait.

`producer.send_batch(batch, …)` wraps `batch` in a `MessageBatch`, which calls a handful of the
builder's methods, two of them private (`_set_producer_state` when the sender numbers the batch for
the idempotent producer, `_build` for the bytes it sends). `RecordBatch` offers exactly those, over
a buffer the record-batch encoder (gateway/sinks/recordbatch.py) filled in one call, instead of one
Python call per record. tests/unit/test_aiokafka_batch.py drives it through aiokafka's own
accumulator next to aiokafka's builder and fails loudly if aiokafka changes what it calls.

`abandon` fails every batch a producer still holds (queued or in flight): aiokafka's own way to do
so (`MessageAccumulator.fail_all`) has no public wrapper either. `holds_queued` tells whether
`send_batch` for a partition would wait (a batch of it is still queued): nothing public does.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from aiokafka.codec import gzip_encode, lz4_encode, snappy_encode, zstd_encode
from aiokafka.errors import KafkaTimeoutError
from aiokafka.structs import TopicPartition

from gateway.sinks.base import Headers
from gateway.sinks.recordbatch import ENCODER, HEADER_SIZE, Encoder, Keys

# compression name → (the batch attributes' codec bits, the codec aiokafka's builder uses)
CODECS: dict[str, tuple[int, Callable[[bytes], bytes]]] = {
    "gzip": (1, gzip_encode),
    "snappy": (2, snappy_encode),
    "lz4": (3, lz4_encode),
    "zstd": (4, zstd_encode),
}
NO_PRODUCER = (-1, -1, 0)  # aiokafka's BatchBuilder state until an idempotent producer numbers it


class RecordBatch:
    """A closed record batch with the interface aiokafka's `MessageBatch` uses of a `BatchBuilder`.
    Its header (producer id, epoch, base sequence, CRC) is written when aiokafka first asks for
    the bytes, after the sender numbered it; again if the numbering ever changes."""

    __slots__ = ("_buffer", "_codec", "_count", "_encoder", "_state", "_timestamp", "_written")

    def __init__(
        self,
        buffer: bytearray,
        count: int,
        timestamp: int,
        *,
        encoder: Encoder = ENCODER,
        compression: str | None = None,
    ) -> None:
        self._buffer = buffer
        self._count = count
        self._timestamp = timestamp
        self._encoder = encoder
        self._codec = CODECS[compression] if compression else None
        self._state = NO_PRODUCER
        self._written: tuple[int, int, int] | None = None

    @classmethod
    def fill(
        cls,
        values: list[bytes],
        keys: Keys | None,
        headers: list[Headers] | None,
        order: list[int] | None,
        start: int,
        timestamp: int,
        batch_size: int,
        *,
        encoder: Encoder = ENCODER,
        compression: str | None = None,
    ) -> RecordBatch:
        """As many records as fit in `batch_size` bytes (at least one), from position `start` of
        `order` (indices into values, keys, headers) or of `values` when `order` is None."""
        buffer, count = encoder.encode(values, keys, headers, order, start, batch_size)
        return cls(buffer, count, timestamp, encoder=encoder, compression=compression)

    @classmethod
    def fill_lines(
        cls,
        runs: list[bytes],
        headers: list[Headers | None] | None,
        run: int,
        offset: int,
        timestamp: int,
        batch_size: int,
        *,
        encoder: Encoder = ENCODER,
        compression: str | None = None,
    ) -> tuple[RecordBatch, int, int]:
        """As many unkeyed records as fit, from byte `offset` of runs[run] on (runs of
        newline-terminated records, see `Lines`): the batch, and the run and offset where the next
        one starts."""
        buffer, count, run, offset = encoder.encode_lines(runs, headers, run, offset, batch_size)
        return cls(buffer, count, timestamp, encoder=encoder, compression=compression), run, offset

    # ---- what aiokafka's MessageBatch and MessageAccumulator call ----------------------------
    def record_count(self) -> int:
        return self._count

    def size(self) -> int:
        return len(self._buffer)

    def closed(self) -> bool:
        return True  # filled at once: aiokafka's producer.send() never appends to it

    def close(self) -> None:
        """Already closed."""

    def append(
        self, *, timestamp: int | None, key: bytes | None, value: bytes | None, headers: Any = ()
    ) -> None:
        """Full: `MessageBatch.append` (producer.send) then queues its record in a new batch."""
        return None

    def _set_producer_state(self, producer_id: int, producer_epoch: int, base_sequence: int) -> None:
        self._state = (producer_id, producer_epoch, base_sequence)

    def _build(self) -> bytearray:
        if self._written != self._state:
            attributes = 0
            if self._codec is not None:
                attributes, compress = self._codec
                if self._written is None:  # as aiokafka's builder: compressed even if not smaller
                    self._buffer[HEADER_SIZE:] = compress(bytes(self._buffer[HEADER_SIZE:]))
            self._encoder.finish(self._buffer, self._count, self._timestamp, *self._state, attributes)
            self._written = self._state
        return self._buffer


def abandon(producer: Any, exc: BaseException) -> None:
    """Fail every batch `producer` holds, queued or in flight, with `exc`; later `send_batch`
    calls on it raise a copy of `exc`."""
    accumulator = producer._message_accumulator
    accumulator.fail_all(exc)
    for queued in accumulator._batches.values():
        for batch in queued:  # fail_all also fails their drain waiters, which nobody awaits:
            batch._drain_waiter.exception()  # retrieved, or asyncio logs each one at GC


def forget_producer_topics(producer: Any, topics: list[str]) -> None:
    """Stop `producer` tracking `topics` (deleted): drop them from the set of topics its client
    asks metadata for, so no later refresh logs `Topic … not found` for each of them. aiokafka
    has `set_topics` but no way to read the set or remove one topic; its accumulator drops a
    partition's entry once its last batch is drained, so nothing else remains per topic."""
    client = producer.client
    tracked: set[str] = client._topics
    if tracked & set(topics):  # (an empty set is aiokafka's initial state: no topic asked for)
        client._topics = tracked - set(topics)


def holds_queued(producer: Any, topic: str, partition: int) -> bool:
    """True while `producer` holds a batch for the partition that its sender has not taken yet:
    `send_batch` would then wait until the sender takes it, i.e. until the batch in flight before
    it is acknowledged."""
    return bool(producer._message_accumulator._batches.get(TopicPartition(topic, partition)))


async def wait_taken(producer: Any, topic: str, partition: int) -> None:
    """Return once the sender has taken every batch `producer` holds queued for the partition, so
    that `send_batch` takes the next one at once: the caller decides just before whether it is
    still to be sent. KafkaTimeoutError after the producer's request timeout, as `send_batch`'s
    own wait gives; a failed batch's error, as that wait does."""
    tp = TopicPartition(topic, partition)
    deadline = time.monotonic() + producer._request_timeout_ms / 1000
    while pending := producer._message_accumulator._batches.get(tp):
        left = deadline - time.monotonic()
        if left <= 0:
            raise KafkaTimeoutError()
        await pending[-1].wait_drain(timeout=left)
