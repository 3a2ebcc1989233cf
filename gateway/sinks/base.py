"""The sink interface: hand over a flush's records, get a future that resolves once they are durable."""

from __future__ import annotations

import asyncio
from typing import Protocol

from gateway.catalog.model import Stream


class SinkUnavailable(Exception):
    """The sink cannot take records right now (Kafka unreachable, topic missing, …)."""


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
        """Create the stream's topic if it does not exist yet (partitions, retention, compaction)."""

    async def delete_topic(self, stream: Stream) -> None:
        """Delete the stream's topic."""

    async def send(self, topic: str, values: list[bytes], keys: list[bytes] | None
                   ) -> asyncio.Future[None]:
        """Hand over records; the returned future resolves once all are durable, or fails."""
