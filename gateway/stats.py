"""A stream's stats as the Timeplus API reports them, from the sink where it can tell and from the
gateway's own counters otherwise.

- `row_count`: records in the topic now (Kafka end minus beginning offsets; lines for the local sink).
- `streaming_data_bytes`: the topic's size on the brokers' disks (Kafka is the gateway's only
  storage); `historical_data_bytes` is 0: the gateway keeps no historical (columnar) store.
- `earliest_event` / `latest_event`: timestamps of the oldest and newest records in the topic (for the
  local sink: when this process first and last accepted rows).
- `written_eps` / `written_bps`: rows and bytes this process accepted per second, last 10 seconds.
- `read_eps` / `read_bps`: 0, the gateway serves no reads.
- `history` (with `historyDays`): rows written per UTC day, oldest first, from the topic's timestamp
  index (for the local sink, from this process's counters).
"""

from __future__ import annotations

import datetime

import msgspec

from gateway.catalog.model import Stream
from gateway.errors import BadRequest, failed
from gateway.openapi import Doc
from gateway.rates import DAY_S, WriteRates
from gateway.sinks.base import SinkUnavailable, TopicStatsReader

MAX_HISTORY_DAYS = 7


class HistoryPoint(Doc):
    """Rows written on one UTC day."""

    time: str
    row_count: int


class StatsOut(Doc):
    """A stream's stats (`history` only with `historyDays`)."""

    earliest_event: str | None
    latest_event: str | None
    row_count: int
    historical_data_bytes: int
    streaming_data_bytes: int
    written_eps: float
    written_bps: float
    read_eps: float
    read_bps: float
    history: list[HistoryPoint] | msgspec.UnsetType = msgspec.UNSET


def history_days(raw: str | None) -> int:
    """The `historyDays` parameter: absent is 0; else an integer from 1 to 7 (400 otherwise)."""
    if raw is None or raw == "":
        return 0
    try:
        days = int(raw)
    except ValueError:
        days = -1
    if not 1 <= days <= MAX_HISTORY_DAYS:
        raise BadRequest(f"historyDays must be an integer from 1 to {MAX_HISTORY_DAYS}, got {raw!r}")
    return days


def iso(epoch_s: float | None) -> str | None:
    """`2023-02-01T01:02:03.456Z`, as the reference writes event times."""
    if epoch_s is None:
        return None
    moment = datetime.datetime.fromtimestamp(epoch_s, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def stream_stats(stream: Stream, reader: TopicStatsReader, rates: WriteRates, days: int) -> StatsOut:
    """The stats body; `days` > 0 adds `history`. 503 when the sink cannot be asked."""
    try:
        topic = await reader.topic_stats(stream, days)
    except SinkUnavailable as exc:
        raise failed("could not read the stream's stats", exc) from None
    eps, bps = rates.rates(stream.name)
    first, last = rates.seen(stream.name)
    body = StatsOut(
        earliest_event=iso(topic.earliest_ms / 1000 if topic.earliest_ms is not None else first),
        latest_event=iso(topic.latest_ms / 1000 if topic.latest_ms is not None else last),
        row_count=topic.rows,
        historical_data_bytes=0,
        streaming_data_bytes=topic.nbytes or 0,
        written_eps=round(eps, 3),
        written_bps=round(bps, 3),
        read_eps=0,
        read_bps=0,
    )
    if days:
        daily = topic.daily_rows if topic.daily_rows is not None else rates.daily(stream.name, days)
        today = int(datetime.datetime.now(datetime.UTC).timestamp()) // DAY_S * DAY_S
        body.history = [
            HistoryPoint(iso(today - (days - 1 - i) * DAY_S) or "", n) for i, n in enumerate(daily)
        ]
    return body
