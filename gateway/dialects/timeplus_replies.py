"""The Timeplus dialect's reply bodies: each Struct is both what a handler encodes and what the
OpenAPI document describes (field order is the wire order)."""

from __future__ import annotations

from typing import Any

import msgspec

from gateway.catalog.model import ApiKey, Stream
from gateway.dialects.common import RowPosition
from gateway.errors import GatewayError
from gateway.evolution.versions import Incompatible
from gateway.openapi import Doc


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
    schema_version: int
    compatibility: str
    on_error: str
    partitioner: str
    passthrough: bool
    compacted: bool


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
    results: list[RowPosition] | msgspec.UnsetType = msgspec.UNSET  # with ?results=rows


class CompactIn(msgspec.Struct):
    """The compact ingest body: column names once, then one array of values per row."""

    columns: list[str]
    data: list[list[Any]]


NdjsonRow = dict[str, Any]  # one object of an NDJSON body


class ReasonOut(Doc):
    """Why a schema change was refused: the column, its old and new type, the rule it breaks."""

    column: str
    old_type: str
    new_type: str
    rule: str


class TimeplusError(Doc, kw_only=True):
    """The Timeplus error body (`row`/`column` when one row or column is to blame; `reasons` when
    a schema change is refused)."""

    code: int
    message: str
    error: str
    row: int | msgspec.UnsetType = msgspec.UNSET
    column: str | msgspec.UnsetType = msgspec.UNSET
    reasons: list[ReasonOut] | msgspec.UnsetType = msgspec.UNSET
    request_id: str


def error_body(err: GatewayError, request_id: str) -> TimeplusError:
    """`{"code": status, "message": …, "error": code, "row"/"column", "request_id"}`."""
    return TimeplusError(
        code=err.status,
        message=err.message,
        error=err.code,
        row=msgspec.UNSET if err.row is None else err.row,
        column=msgspec.UNSET if err.column is None else err.column,
        reasons=(
            msgspec.UNSET
            if not isinstance(err, Incompatible)
            else [ReasonOut(r.column, r.old_type, r.new_type, r.rule) for r in err.reasons]
        ),
        request_id=request_id,
    )


def stream_body(s: Stream) -> StreamOut:
    """A stream as the reference's response sample shows it, plus `topic` and gateway fields."""
    return StreamOut(
        name=s.name,
        columns=[ColumnOut(c.name, c.type, c.default or "", c.nullable, c.description) for c in s.columns],
        column_families=[],
        description=s.description,
        engine="Stream",
        is_external=False,
        mode=s.mode,
        primary_key=s.primary_key,
        secondary_indexes=[],
        logstore_retention_bytes=s.logstore_retention_bytes,
        logstore_retention_ms=s.logstore_retention_ms,
        ttl=s.ttl_expression,
        ttl_expression=s.ttl_expression,
        event_time_column=s.event_time_column,
        event_time_timezone=s.event_time_timezone,
        shards=s.shards,
        replication_factor=s.replication_factor,
        archived=s.archived,
        topic=s.topic,
        quarantine_topic=s.quarantine_topic,
        created_at=s.created_at,
        created_by=UserRef(s.created_by),
        last_updated_at=s.last_updated_at,
        last_updated_by=UserRef(s.last_updated_by),
        schema_version=s.schema_version,
        compatibility=s.compatibility,
        on_error=s.on_error,
        partitioner=s.partitioner,
        passthrough=s.passthrough,
        compacted=s.compacted,
    )


def key_body(k: ApiKey, key: str | None = None) -> ApiKeyOut:
    """An API key record as the reference shows it; the key itself only at creation."""
    fields = (
        k.id,
        k.name,
        k.created_at,
        UserRef(k.created_by),
        k.expire_at,
        k.permissions,
        k.rate_limit,
        k.allowed_origins,
    )
    return ApiKeyOut(*fields) if key is None else ApiKeyCreated(*fields, api_key=key)
