"""Reading a stream's quarantine topic: pages of records from a position (partition → offset).

A position is written as a cursor `partition:offset,…` (the first offset not read yet per
partition; a partition left out starts at its beginning). Kafka: one short-lived consumer per
read, one read at a time per process (a management call, not a hot path). The development sink:
the quarantine file's lines, partition 0, offset = line number.

The replay's recovery (gateway.evolution.replay) also asks where the stream's two topics end
(`ends`) and which quarantine positions were already written to them since (`written`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from gateway.catalog.model import ReplayMark, Stream
from gateway.errors import BadRequest, failed
from gateway.evolution.replay_scan import MAX_SCAN, Scan, scan_written
from gateway.sinks.kafka_stop import stop_quietly

Position = dict[int, int]
PartitionsOf = Callable[[str], Awaitable[set[int] | None]]
MAX_CURSOR = 4096
READ_TIMEOUT_S = 10.0
SCAN_TIMEOUT_S = 60.0


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

    async def read(self, stream: Stream, start: Position, limit: int, stop: Position | None = None) -> Page:
        """Up to `limit` records at or after `start` (and before `stop`, when given: a partition
        it leaves out is not read), partition by partition."""
        ...

    async def ends(self, stream: Stream) -> tuple[Position, Position]:
        """The end offsets of the stream's topic and of its quarantine topic."""
        ...

    async def written(self, stream: Stream, mark: ReplayMark, wanted: set[tuple[int, int]]) -> Scan:
        """Which of the `wanted` quarantine positions records written to the stream's two topics
        after `mark` carry (see gateway.evolution.replay_scan)."""
        ...


class KafkaQuarantineLog:
    """Reads the quarantine topic with a consumer made for the read (no consumer group)."""

    def __init__(self, bootstrap: str, partitions_for: PartitionsOf) -> None:
        self.bootstrap = bootstrap
        self.partitions_for = partitions_for  # the sink producer's (public, cached) metadata
        self._lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def _consumer(self, timeout_s: float) -> AsyncIterator[Any]:
        """A started consumer, one at a time; Kafka's errors and the timeout become 503."""
        async with self._lock:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap,
                group_id=None,
                enable_auto_commit=False,
                client_id="ingest-gateway-quarantine",
            )
            try:
                async with asyncio.timeout(timeout_s):
                    await consumer.start()
                    yield consumer
            except (KafkaError, OSError, TimeoutError) as exc:
                raise failed("could not read the quarantine topic", exc) from None
            finally:
                await stop_quietly(consumer)

    async def _partitions(self, topic: str) -> list[TopicPartition]:
        return [TopicPartition(topic, p) for p in sorted(await self.partitions_for(topic) or ())]

    async def read(self, stream: Stream, start: Position, limit: int, stop: Position | None = None) -> Page:
        async with self._consumer(READ_TIMEOUT_S) as consumer:
            return await self._read(consumer, stream.quarantine_topic, start, limit, stop)

    async def ends(self, stream: Stream) -> tuple[Position, Position]:
        async with self._consumer(READ_TIMEOUT_S) as consumer:
            out: list[Position] = []
            for topic in (stream.topic, stream.quarantine_topic):
                tps = await self._partitions(topic)
                end = await consumer.end_offsets(tps) if tps else {}
                out.append({tp.partition: o for tp, o in end.items()})
            return out[0], out[1]

    async def written(self, stream: Stream, mark: ReplayMark, wanted: set[tuple[int, int]]) -> Scan:
        if not wanted:
            return Scan(set(), True)
        async with self._consumer(SCAN_TIMEOUT_S) as consumer:
            starts = {tp: mark.stream.get(tp.partition, 0) for tp in await self._partitions(stream.topic)}
            starts |= {
                tp: mark.quarantine.get(tp.partition, 0)
                for tp in await self._partitions(stream.quarantine_topic)
            }
            return await scan_written(consumer, starts, mark.token, wanted, MAX_SCAN)

    async def _read(
        self, consumer: Any, topic: str, start: Position, limit: int, stop: Position | None
    ) -> Page:
        tps = await self._partitions(topic)
        if not tps:
            return Page([], dict(start), True)
        consumer.assign(tps)
        first = await consumer.beginning_offsets(tps)
        end = await consumer.end_offsets(tps)
        records: list[QuarantineRecord] = []
        position: Position = {}
        for tp in tps:
            pos = max(start.get(tp.partition, 0), first[tp])
            last = end[tp] if stop is None else min(end[tp], stop.get(tp.partition, 0))
            if pos < last and len(records) < limit:
                consumer.seek(tp, pos)
                while pos < last and len(records) < limit:
                    batch = await consumer.getmany(tp, timeout_ms=1000, max_records=limit - len(records))
                    for msg in batch.get(tp, ()):
                        if msg.offset >= last or len(records) >= limit:
                            break
                        records.append(
                            QuarantineRecord(
                                tp.partition,
                                msg.offset,
                                msg.value or b"",
                                {k: v.decode(errors="replace") for k, v in msg.headers or ()},
                            )
                        )
                        pos = msg.offset + 1
            position[tp.partition] = pos
        at_end = all(position[tp.partition] >= end[tp] for tp in tps)
        return Page(records, position, at_end)


class FileQuarantineLog:
    """Reads the development sink's quarantine file (`<dir>/<topic>.ndjson`)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def read(self, stream: Stream, start: Position, limit: int, stop: Position | None = None) -> Page:
        path = self.directory / f"{stream.quarantine_topic}.ndjson"
        first = start.get(0, 0)
        if stop is not None:
            limit = max(0, min(limit, stop.get(0, 0) - first))

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

    async def ends(self, stream: Stream) -> tuple[Position, Position]:
        """The file sink keeps no stream positions; the quarantine file ends after its last
        complete line."""
        path = self.directory / f"{stream.quarantine_topic}.ndjson"

        def complete_lines() -> int:
            if not path.exists():
                return 0
            with open(path, "rb") as f:
                return sum(1 for line in f if line.endswith(b"\n"))

        return {}, {0: await asyncio.get_running_loop().run_in_executor(None, complete_lines)}

    async def written(self, stream: Stream, mark: ReplayMark, wanted: set[tuple[int, int]]) -> Scan:
        """A file has no headers: nothing is found, and the check says it is incomplete."""
        return Scan(set(), not wanted)
