"""Reply bodies (and ingest bodies) of the dialects as msgspec Structs, for the OpenAPI document.

Handlers build their replies as dicts; these Structs say what those dicts hold. They forbid
unknown fields, so the published schemas say `additionalProperties: false`, and the tests that
check real replies against the served document fail when a reply grows a field not listed here.
"""

from __future__ import annotations

from typing import Any

import msgspec


class Doc(msgspec.Struct, forbid_unknown_fields=True):
    """Base of the documented bodies."""


# ---- operational routes ---------------------------------------------------------------------
class Health(Doc):
    """`/healthz`."""

    status: str


class Readiness(Doc):
    """`/readyz`: ready once the catalog is loaded and the sink reachable, and not draining."""

    status: str
    catalog_loaded: bool
    sink: str
    sink_available: bool
    draining: bool


# ---- Timeplus -------------------------------------------------------------------------------
class UserRef(Doc):
    """Who created or changed something (an API key's display name)."""

    name: str


class ColumnOut(Doc):
    """A stream column as the API shows it."""

    name: str
    type: str
    default: str
    nullable: bool
    description: str


class StreamOut(Doc):
    """A stream as the reference's response sample shows it, plus `topic` and `archived`."""

    name: str
    columns: list[ColumnOut]
    column_families: list[str]
    description: str
    engine: str
    is_external: bool
    mode: str
    primary_key: str
    secondary_indexes: list[str]
    logstore_retention_bytes: int
    logstore_retention_ms: int
    ttl: str
    ttl_expression: str
    event_time_column: str
    event_time_timezone: str
    shards: int
    replication_factor: int
    archived: bool
    topic: str
    quarantine_topic: str
    created_at: str
    created_by: UserRef
    last_updated_at: str
    last_updated_by: UserRef


class ApiKeyOut(Doc):
    """An API key as listed: never the key itself."""

    id: str
    name: str
    created_at: int
    created_by: UserRef
    expire_at: int
    permissions: list[str]
    rate_limit: int
    allowed_origins: list[str]


class ApiKeyCreated(ApiKeyOut):
    """A new API key: the only reply that holds the key itself."""

    api_key: str


class IngestOut(Doc):
    """The reply to an accepted ingest request."""

    stream: str
    rows: int
    acknowledged: bool


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


class CompactIn(msgspec.Struct):
    """The compact ingest body: column names once, then one array of values per row."""

    columns: list[str]
    data: list[list[Any]]


NdjsonRow = dict[str, Any]  # one object of an NDJSON body


class TimeplusError(Doc):
    """The Timeplus error body (`row`/`column` when one row or column is to blame)."""

    code: int
    message: str
    error: str
    request_id: str
    row: int | msgspec.UnsetType = msgspec.UNSET
    column: str | msgspec.UnsetType = msgspec.UNSET


# ---- Tinybird Events API ----------------------------------------------------------------------
class EventsOut(Doc):
    """The reply to an accepted `/v0/events` request."""

    successful_rows: int
    quarantined_rows: int


class TinybirdError(Doc):
    """The Tinybird error body."""

    error: str
    code: str
    request_id: str
    row: int | msgspec.UnsetType = msgspec.UNSET
    column: str | msgspec.UnsetType = msgspec.UNSET


# ---- time-series data sources ---------------------------------------------------------------
class DataPoint(msgspec.Struct):
    """One record: (timestamp, name) is its key; a re-sent record replaces the value."""

    timestamp: int
    name: str
    value: int | float


class DataSourceIn(msgspec.Struct):
    """The `/v1/data_sources/ingest` body."""

    data_source: str
    records: list[DataPoint]


class DetailError(Doc):
    """The data-source API's error body."""

    detail: str
