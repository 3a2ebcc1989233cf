"""The sink interfaces: `Sink` only sends; topic administration and statistics are apart."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

from gateway.catalog.model import Stream

Headers = list[tuple[str, bytes]]  # a Kafka record's headers


class SinkUnavailable(Exception):
    """The sink cannot take records right now (Kafka unreachable, topic missing, …)."""


@dataclass(slots=True)
class TopicStats:
    """What the sink can tell about a stream's topic; None where it does not know."""

    rows: int  # records held now (end minus beginning offsets)
    nbytes: int | None = None  # bytes on disk
    earliest_ms: int | None = None  # timestamp of the oldest record held
    latest_ms: int | None = None  # timestamp of the newest record
    daily_rows: list[int] | None = None  # records per UTC day, oldest first, today last


class Sink(Protocol):
    """Where the queues send records; it only sends. Implementations: `KafkaSink`, `LocalSink`."""

    name: str

    async def start(self) -> None:
        """Connect; may raise SinkUnavailable when the destination is unreachable (retried)."""

    async def close(self) -> None:
        """Flush what was handed over and disconnect."""

    def available(self) -> bool:
        """False while the destination is known to be unreachable (requests then get 503)."""

    async def send(self, topic: str, values: list[bytes], keys: list[bytes] | None,
                   headers: list[Headers] | None = None) -> asyncio.Future[None]:
        """Hand over records (with `headers`, one list per record); the returned future resolves
        once all are durable, or fails."""


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


@dataclass(slots=True)
class SinkParts:
    """A destination's three faces; for a simple destination one object may be all three."""

    sink: Sink
    topics: TopicAdmin
    stats: TopicStatsReader
