"""Finding what an interrupted replay page already wrote.

Every record a replay page writes (a row to the stream's topic, or a row that still fails, again
to the quarantine topic) carries two headers: `quarantine-position` (`<partition>:<offset>` of the
quarantined record it came from) and `replay-page` (the page's token, kept in the catalog with the
page's mark, so that an appender cannot forge a position). Recovery reads both topics from the end
offsets saved when the page was claimed and collects the positions it finds; it stops once every
wanted position is found, at a partition's end, or after MAX_SCAN records of a partition.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiokafka import TopicPartition

from gateway.sinks.base import Headers

POSITION_HEADER = "quarantine-position"
PAGE_HEADER = "replay-page"
MAX_SCAN = 200_000  # records read per partition, at most, after the page's claim


def replay_headers(partition: int, offset: int, token: str) -> Headers:
    """The headers of a record a replay page writes for quarantine position partition:offset."""
    return [(POSITION_HEADER, f"{partition}:{offset}".encode()), (PAGE_HEADER, token.encode())]


def replayed_position(headers: Any, token: bytes) -> tuple[int, int] | None:
    """The quarantine position a record's headers name, when page `token` wrote it."""
    position = page = None
    for name, value in headers or ():
        if name == POSITION_HEADER:
            position = value
        elif name == PAGE_HEADER:
            page = value
    if position is None or page != token:
        return None
    p, _, o = position.partition(b":")
    return (int(p), int(o)) if p.isdigit() and o.isdigit() else None


@dataclass(slots=True)
class Scan:
    """The wanted positions found, and whether the scan can tell the others were not written
    (every one found, or every partition read to its end)."""

    found: set[tuple[int, int]]
    complete: bool


async def scan_written(
    consumer: Any,
    starts: dict[TopicPartition, int],
    token: str,
    wanted: set[tuple[int, int]],
    max_records: int,
) -> Scan:
    """Read every partition of `starts` from its offset (all at once: the page's rows may be in
    any of them), at most `max_records` each, collecting the `wanted` positions page `token`
    wrote."""
    found: set[tuple[int, int]] = set()
    tps = list(starts)
    if not tps or not wanted:
        return Scan(found, True)
    consumer.assign(tps)
    first = await consumer.beginning_offsets(tps)
    end = await consumer.end_offsets(tps)
    stop: dict[TopicPartition, int] = {}
    for tp in tps:
        start = max(starts[tp], first[tp])
        stop[tp] = min(end[tp], start + max_records)
        consumer.seek(tp, start)
    truncated = any(stop[tp] < end[tp] for tp in tps)
    active = [tp for tp in tps if await consumer.position(tp) < stop[tp]]
    consumer.pause(*(tp for tp in tps if tp not in active))
    key = token.encode()
    while active and not wanted <= found:
        # small slices: the scan shares the event loop with ingest (about 10 ms each)
        batch = await consumer.getmany(timeout_ms=1000, max_records=2_000)
        for tp, messages in batch.items():
            for msg in messages:
                if msg.offset >= stop[tp]:
                    break
                position = replayed_position(msg.headers, key)
                if position is not None and position in wanted:
                    found.add(position)
        finished = [tp for tp in active if await consumer.position(tp) >= stop[tp]]
        consumer.pause(*finished)
        active = [tp for tp in active if tp not in finished]
    return Scan(found, wanted <= found or not truncated)
