"""The sink interface: hand over a flush's records, get a future that resolves once they are durable."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

from gateway.catalog.model import Stream


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
    """What the queues need from a destination. Implementations: `KafkaSink`, `LocalSink`."""

    name: str

    async def start(self) -> None:
        """Connect; may raise when the destination is unreachable (the gateway then retries)."""

    async def close(self) -> None:
        """Flush what was handed over and disconnect."""

    def available(self) -> bool:
        """False while the destination is known to be unreachable (requests then get 503)."""

    async def ensure_topic(self, stream: Stream) -> None:
        """Create the stream's topic and its quarantine topic if they do not exist yet."""

    async def delete_topic(self, stream: Stream) -> None:
        """Delete the stream's topic (and its quarantine topic)."""

    async def update_topic(self, stream: Stream) -> None:
        """Apply the stream's retention settings to its existing topics."""

    async def topic_stats(self, stream: Stream, days: int) -> TopicStats:
        """Row count, size, first/last record times and (for `days` > 0) rows per day."""

    async def send(self, topic: str, values: list[bytes], keys: list[bytes] | None
                   ) -> asyncio.Future[None]:
        """Hand over records; the returned future resolves once all are durable, or fails."""
