"""Reading a stream's quarantine topic: pages of records from a position (partition → offset).

A position is written as a cursor `partition:offset,…` (the first offset not read yet per
partition; a partition left out starts at its beginning). Kafka: one short-lived consumer per
read, one read at a time per process (a management call, not a hot path). The development sink:
the quarantine file's lines, partition 0, offset = line number.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from gateway.catalog.model import Stream
from gateway.errors import BadRequest, Unavailable

Position = dict[int, int]
PartitionsOf = Callable[[str], Awaitable[set[int] | None]]
MAX_CURSOR = 4096
READ_TIMEOUT_S = 10.0


@dataclass(slots=True)
class QuarantineRecord:
    """One quarantined row as stored: where it is, its JSON value and its headers."""

    partition: int
    offset: int
    value: bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Page:
    """Records read, the position after them, and whether that position is the topic's end."""

    records: list[QuarantineRecord]
    next: Position
    at_end: bool


def parse_cursor(text: str) -> Position:
    """`0:12,1:7` → {0: 12, 1: 7}; 400 when malformed."""
    if len(text) > MAX_CURSOR:
        raise BadRequest("the cursor is too long")
    position: Position = {}
    for part in filter(None, text.split(",")):
        p, sep, o = part.partition(":")
        if not sep or not p.isdigit() or not o.isdigit():
            raise BadRequest("a cursor is `partition:offset`, comma-separated (e.g. 0:12,1:7)")
        position[int(p)] = int(o)
    return position


def cursor(position: Position) -> str:
    """The cursor of a position."""
    return ",".join(f"{p}:{o}" for p, o in sorted(position.items()))


class QuarantineLog(Protocol):
    """Where quarantined rows are read from."""

    async def read(self, stream: Stream, start: Position, limit: int) -> Page:
        """Up to `limit` records at or after `start`, partition by partition."""
        ...


class KafkaQuarantineLog:
    """Reads the quarantine topic with a consumer made for the read (no consumer group)."""

    def __init__(self, bootstrap: str, partitions_for: PartitionsOf) -> None:
        self.bootstrap = bootstrap
        self.partitions_for = partitions_for  # the sink producer's (public, cached) metadata
        self._lock = asyncio.Lock()

    async def read(self, stream: Stream, start: Position, limit: int) -> Page:
        async with self._lock:
            consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None,
                                        enable_auto_commit=False,
                                        client_id="ingest-gateway-quarantine")
            try:
                async with asyncio.timeout(READ_TIMEOUT_S):
                    await consumer.start()
                    return await self._read(consumer, stream.quarantine_topic, start, limit)
            except (KafkaError, OSError, TimeoutError) as exc:
                raise Unavailable(f"could not read the quarantine topic: {exc!r}",
                                  retry_after=1.0) from None
            finally:
                with contextlib.suppress(Exception):
                    await consumer.stop()

    async def _read(self, consumer: Any, topic: str, start: Position, limit: int) -> Page:
        parts = sorted(await self.partitions_for(topic) or ())
        tps = [TopicPartition(topic, p) for p in parts]
        if not tps:
            return Page([], dict(start), True)
        consumer.assign(tps)
        first = await consumer.beginning_offsets(tps)
        end = await consumer.end_offsets(tps)
        records: list[QuarantineRecord] = []
        position: Position = {}
        for tp in tps:
            pos = max(start.get(tp.partition, 0), first[tp])
            if pos < end[tp] and len(records) < limit:
                consumer.seek(tp, pos)
                while pos < end[tp] and len(records) < limit:
                    batch = await consumer.getmany(tp, timeout_ms=1000,
                                                   max_records=limit - len(records))
                    for msg in batch.get(tp, ()):
                        if msg.offset >= end[tp] or len(records) >= limit:
                            break
                        records.append(QuarantineRecord(
                            tp.partition, msg.offset, msg.value or b"",
                            {k: v.decode(errors="replace") for k, v in msg.headers or ()}))
                        pos = msg.offset + 1
            position[tp.partition] = pos
        at_end = all(position[tp.partition] >= end[tp] for tp in tps)
        return Page(records, position, at_end)


class FileQuarantineLog:
    """Reads the development sink's quarantine file (`<dir>/<topic>.ndjson`)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def read(self, stream: Stream, start: Position, limit: int) -> Page:
        path = self.directory / f"{stream.quarantine_topic}.ndjson"
        first = start.get(0, 0)

        def lines() -> tuple[list[bytes], bool]:
            if not path.exists():
                return [], True
            got: list[bytes] = []
            with open(path, "rb") as f:
                for i, line in enumerate(f):
                    if i < first:
                        continue
                    if len(got) == limit or not line.endswith(b"\n"):
                        return got, False  # (a line without its newline is being written)
                    got.append(line[:-1])
            return got, True
        got, at_end = await asyncio.get_running_loop().run_in_executor(None, lines)
        records = [QuarantineRecord(0, first + i, v) for i, v in enumerate(got)]
        return Page(records, {0: first + len(got)}, at_end)
