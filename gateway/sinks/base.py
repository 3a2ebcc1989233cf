"""The sink interfaces: `Sink` only sends; topic administration and statistics are apart."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from gateway.catalog.model import Stream

Header = tuple[str, bytes]
Headers = list[Header]  # a Kafka record's headers
# told of each batch of a flush as it lands: its partition, base offset and record numbers (as in
# `Landed.batches`) and its records' timestamp (as in `Landed.times`), before the flush's future
# settles
OnBatch = Callable[[int, int, Sequence[int], int], None]


class SinkUnavailable(Exception):
    """The sink cannot take records right now (Kafka unreachable, topic missing, …)."""


class TopicRefused(Exception):
    """Kafka refused a topic change for good (invalid partitions, replication factor, config,
    policy): retrying it unchanged cannot help. The message names Kafka's error, nothing else."""


@dataclass(slots=True)
class TopicStats:
    """What the sink can tell about a stream's topic; None where it does not know."""

    rows: int  # records held now (end minus beginning offsets)
    nbytes: int | None = None  # bytes on disk
    earliest_ms: int | None = None  # timestamp of the oldest record held
    latest_ms: int | None = None  # timestamp of the newest record
    daily_rows: list[int] | None = None  # records per UTC day, oldest first, today last


@dataclass(slots=True)
class RecordMeta:
    """Per-record Kafka details a dialect sets itself (the REST proxy dialect): a key or None,
    a partition or -1 (the sink chooses), and headers. One entry per record, in order."""

    keys: list[bytes | None]
    partitions: list[int]
    headers: list[Headers]

    def extra_bytes(self, i: int) -> int:
        """What record `i`'s key and headers add to its size in a batch."""
        key = self.keys[i]
        return (0 if key is None else len(key)) + sum(len(n) * 4 + len(v) for n, v in self.headers[i])

    @staticmethod
    def plain(count: int, keys: list[bytes] | None) -> RecordMeta:
        """The details of `count` records that set none of their own (to merge with others)."""
        return RecordMeta(
            list(keys) if keys is not None else [None] * count, [-1] * count, [[] for _ in range(count)]
        )


@dataclass(slots=True)
class Lines:
    """Unkeyed records as runs of JSON lines, each run one request's records as msgspec's
    `encode_lines` wrote them (every record ends with a newline; JSON never holds a raw one), so
    that no bytes object is made per record. The records of run k carry headers[k]."""

    runs: list[bytes]
    headers: list[Headers | None] | None  # None: no record has headers
    rows: int


def lines_of(run: bytes) -> list[bytes]:
    """A run's records, one bytes object each (for the paths that need them one by one)."""
    values = run.split(b"\n")
    values.pop()  # after the last newline
    return values


@dataclass(slots=True)
class Landed:
    """Where a flush's records landed: per batch, its partition, base offset and the indices
    (into the flush's records) it holds, and (`times`, one per batch, empty when the sink cannot
    tell) the timestamp in ms Kafka stores for its records. Per-record positions are only
    computed when asked."""

    batches: list[tuple[int, int, Sequence[int]]]
    times: list[int] = field(default_factory=list)
    _positions: list[tuple[int, int]] | None = field(default=None, repr=False)

    def positions(self) -> list[tuple[int, int]]:
        """(partition, offset) of every record of the flush, in the order they were handed over
        ((-1, -1) for records of batches not landed yet)."""
        if self._positions is None:
            size = (
                max(
                    (ix[-1] if isinstance(ix, range) else max(ix) for _, _, ix in self.batches if ix),
                    default=-1,
                )
                + 1
            )
            out: list[tuple[int, int]] = [(-1, -1)] * size
            for partition, base, indices in self.batches:
                for j, i in enumerate(indices):
                    out[i] = (partition, base + j)
            self._positions = out
        return self._positions

    def timestamps(self) -> list[int] | None:
        """The stored timestamp of every record of the flush, in the order they were handed over
        (-1 for records of batches not landed yet); None when the sink does not tell."""
        if not self.times:
            return None
        out = [-1] * len(self.positions())
        for (_, _, indices), ts in zip(self.batches, self.times, strict=True):
            for i in indices:
                out[i] = ts
        return out


@dataclass(slots=True)
class RowPositions:
    """The slice of a flush's records that one request queued: its (partition, offset) pairs."""

    landed: Landed
    start: int
    stop: int

    def positions(self) -> list[tuple[int, int]]:
        """(partition, offset) of each of the request's records, in order."""
        return self.landed.positions()[self.start : self.stop]

    def timestamps(self) -> list[int] | None:
        """The stored timestamp (ms) of each of the request's records, or None (not told)."""
        times = self.landed.timestamps()
        return None if times is None else times[self.start : self.stop]


class Sink(Protocol):
    """Where the queues send records; it only sends. Implementations: `KafkaSink`, `LocalSink`."""

    name: str

    async def start(self) -> None:
        """Connect; may raise SinkUnavailable when the destination is unreachable (retried)."""

    async def close(self) -> None:
        """Flush what was handed over and disconnect."""

    def available(self) -> bool:
        """False while the destination is known to be unreachable (requests then get 503)."""

    def held_back(self, topic: str, keyed: bool) -> int | None:
        """A partition of `topic` whose leader does not answer and that holds more than the gateway
        lets a stalled partition hold, and that the stream's rows need (`keyed`: any partition;
        unkeyed rows go around stalled ones): the stream is refused until it recovers. None
        when there is none."""

    async def send(
        self,
        topic: str,
        values: list[bytes],
        keys: list[bytes] | None,
        meta: RecordMeta | None = None,
        headers: list[Headers] | None = None,
        on_batch: OnBatch | None = None,
    ) -> asyncio.Future[Landed | None]:
        """Hand over records; the returned future resolves once all are durable (to where they
        landed, when the sink knows), or fails. `headers`: one list per record (the fast paths);
        `meta` (rarely set) holds every record's key, partition and headers and overrides both
        `keys` and `headers`. `on_batch`, when the sink can tell, is told of each batch as it
        lands (a sink that cannot ignores it: the future still settles)."""

    async def send_lines(
        self, topic: str, lines: Lines, on_batch: OnBatch | None = None
    ) -> asyncio.Future[Landed | None]:
        """Hand over unkeyed records given as runs of lines (the common path), as `send` does;
        the flush's records are numbered across the runs, in order."""

    def forget_topics(self, topics: list[str]) -> None:
        """Drop whatever the sink keeps per topic, for topics of a deleted stream."""


class TopicAdmin(Protocol):
    """Creates, alters and deletes a stream's topics. Implementations: `KafkaTopics`, `LocalSink`."""

    async def ensure_topic(self, stream: Stream) -> None:
        """Create the stream's topic and its quarantine topic if they do not exist yet."""

    async def delete_topic(self, stream: Stream) -> None:
        """Delete the stream's topic (and its quarantine topic)."""

    async def update_topic(self, stream: Stream) -> None:
        """Apply the stream's retention settings to its existing topics."""


class TopicStatsReader(Protocol):
    """What a stream's topic holds. Implementations: `KafkaStats`, `LocalSink`."""

    async def topic_stats(self, stream: Stream, days: int) -> TopicStats:
        """Row count, size, first/last record times and (for `days` > 0) rows per day."""

    async def close(self) -> None:
        """Release the clients it holds (at shutdown)."""


@dataclass(slots=True)
class SinkParts:
    """A destination's three faces; for a simple destination one object may be all three."""

    sink: Sink
    topics: TopicAdmin
    stats: TopicStatsReader
