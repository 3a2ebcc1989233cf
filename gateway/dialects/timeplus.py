"""The Timeplus dialect: `/[{workspace}/]api/v1beta{1,2}/streams…` ingest and management, API keys."""

from __future__ import annotations

import datetime
import functools
import re
import time
from typing import Literal

import msgspec
from aiohttp import web

from gateway.auth import new_key
from gateway.catalog.model import (
    DEFAULT_PARTITIONER,
    DEFAULT_RETENTION_BYTES,
    DEFAULT_RETENTION_MS,
    ON_ERROR,
    Column,
    Stream,
)
from gateway.context import gateway_of, request_id_of
from gateway.cors import validate_key_origins
from gateway.dialects import timeplus_replies as doc
from gateway.dialects import timeplus_schemas
from gateway.dialects.common import (
    RESULTS_PARAM,
    body_chunks,
    flag,
    json_body,
    json_reply,
    principal,
    row_results,
    wants_rows,
)
from gateway.dialects.contract import Route
from gateway.dialects.timeplus_replies import error_body, key_body, stream_body
from gateway.errors import BadRequest, GatewayError, NotFound, UnsupportedMediaType
from gateway.ingest.formats import Format
from gateway.ingest.schema import CompiledSchema
from gateway.ingest.service import IngestRequest, StreamedBody
from gateway.openapi import (
    CATALOG_UNCONFIRMED,
    RATE_LIMIT_HEADERS,
    RETRY_AFTER,
    Param,
    Reply,
    operation,
)
from gateway.replies import fast_json
from gateway.scopes import parse_scopes
from gateway.stats import StatsOut, history_days, stream_stats

PREFIXES = ("/api/{version:v1beta[12]}", "/{workspace:[A-Za-z0-9_-]{1,128}}/api/{version:v1beta[12]}")
DefaultValue = str | int | float | bool | None


# ---- request bodies -------------------------------------------------------------------------
class ColumnIn(msgspec.Struct):
    """A column in a create-stream request (`default` may be a SQL literal or a JSON scalar)."""

    name: str
    type: str
    default: DefaultValue = None
    nullable: bool | None = None
    description: str | None = None


class CreateStreamIn(msgspec.Struct):
    """The create-stream request; explicit nulls mean "use the default"."""

    name: str
    columns: list[ColumnIn] | None = None
    description: str | None = None
    mode: str | None = None
    primary_key: str | None = None
    shards: int | None = None
    replication_factor: int | None = None
    logstore_retention_ms: int | None = None
    logstore_retention_bytes: int | None = None
    event_time_column: str | None = None
    event_time_timezone: str | None = None
    ttl_expression: str | None = None
    partitioner: str | None = None  # murmur2 (default) or consistent_random: where keys go
    passthrough: bool | None = None  # values stored as sent, never validated (REST proxy only)
    compacted: bool | None = None  # topic with cleanup.policy=compact (pass-through streams)


class UpdateStreamIn(msgspec.Struct):
    """The update-stream request: what may change; absent or null fields stay as they are. Other
    fields are ignored (as the reference's server does), so a whole stream body can be sent back."""

    description: str | None = None
    logstore_retention_ms: int | None = None
    logstore_retention_bytes: int | None = None
    ttl_expression: str | None = None
    archived: bool | None = None
    columns: list[ColumnIn] | None = None  # a new schema version (checked for compatibility)
    primary_key: str | None = None
    compatibility: str | None = None  # backward (default), forward, full, none
    on_error: str | None = None  # reject (default) or quarantine: what ingest does with bad rows
    partitioner: str | None = None  # murmur2 or consistent_random: where keys go from now on


class CreateKeyIn(msgspec.Struct):
    """The create-API-key request (`rate_limit`: requests per second, 0 = the gateway's default)."""

    name: str | None = None
    expire_at: str | None = None
    expire_in: str | None = None
    permissions: list[str] | None = None
    rate_limit: int | None = None
    allowed_origins: list[str] | None = None  # pages (scheme://host[:port]) that may use the key


def _default_text(value: DefaultValue) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return msgspec.json.encode(value).decode()


def columns_from_request(columns: list[ColumnIn]) -> list[Column]:
    """The catalog's columns from a request's."""
    return [
        Column(c.name, c.type, _default_text(c.default), bool(c.nullable), c.description or "")
        for c in columns
    ]


def stream_from_request(req: CreateStreamIn) -> Stream:
    """The catalog record a create request describes (topic and defaults filled in later)."""
    columns = columns_from_request(req.columns or [])
    return Stream(
        name=req.name,
        columns=columns,
        topic="",
        description=req.description or "",
        mode=req.mode or "append",
        primary_key=req.primary_key or "",
        shards=req.shards or 0,
        replication_factor=req.replication_factor or 0,
        logstore_retention_ms=(
            DEFAULT_RETENTION_MS if req.logstore_retention_ms is None else req.logstore_retention_ms
        ),
        logstore_retention_bytes=(
            DEFAULT_RETENTION_BYTES if req.logstore_retention_bytes is None else req.logstore_retention_bytes
        ),
        event_time_column=req.event_time_column or "",
        event_time_timezone=req.event_time_timezone or "",
        ttl_expression=req.ttl_expression or "",
        partitioner=req.partitioner or DEFAULT_PARTITIONER,
        passthrough=bool(req.passthrough),
        compacted=bool(req.compacted),
    )


# ---- replies (shapes in timeplus_replies) ---------------------------------------------------
def render_error(err: GatewayError, request_id: str) -> web.Response:
    """Timeplus error shape: `{"code": status, "message": …}` plus row/column and the request id."""
    return json_reply(error_body(err, request_id), status=err.status)


# ---- formats --------------------------------------------------------------------------------
_BY_QUERY = {f.value: f for f in Format}
_BY_TYPE = {
    "application/json": Format.COMPACT,
    "application/vnd.timeplus+json": Format.COMPACT,
    "application/x-ndjson": Format.STREAMING,
    "application/ndjson": Format.STREAMING,
    "application/jsonlines": Format.STREAMING,
    "application/x-jsonlines": Format.STREAMING,
    "text/plain": Format.RAW,
}
# Clients that cannot set a content type (curl -d, HTML forms) get the API's default format.
_UNSPECIFIED = ("", "application/octet-stream", "application/x-www-form-urlencoded")
_FORMAT_PARAM = re.compile(r"format\s*=\s*\"?([a-z]+)", re.I)


def choose_format(request: web.Request, plain: Format = Format.RAW) -> Format:
    """The body format: the `format` query parameter wins, then the Content-Type (415 if unknown).
    `plain` is what a bare `text/plain` means: raw for a one-string-column stream, else streaming
    (NDJSON), so a browser's `sendBeacon` (always `text/plain;charset=UTF-8`) can send JSON rows."""
    q = request.query.get("format")
    if q:
        fmt = _BY_QUERY.get(q.strip().lower())
        if fmt is None:
            raise BadRequest(f"unknown format {q!r}; one of compact, streaming, raw, lines")
        return fmt
    return _format_of_type(request.headers.get("Content-Type", ""), plain)


@functools.lru_cache(maxsize=256)  # clients send few distinct Content-Types; refusals not cached
def _format_of_type(raw_type: str, plain: Format) -> Format:
    media = raw_type.split(";", 1)[0].strip().lower()
    if media in _UNSPECIFIED:
        return Format.COMPACT
    base = _BY_TYPE.get(media)
    if base is None:
        raise UnsupportedMediaType(
            f"unsupported Content-Type {raw_type!r}; use application/json,"
            " application/x-ndjson or text/plain (see the format parameter)"
        )
    m = _FORMAT_PARAM.search(raw_type)
    if m is None:
        return plain if base is Format.RAW else base
    sub = m.group(1).lower()
    if base is Format.RAW:
        if sub in ("raw", "lines"):
            return Format(sub)
    elif sub in ("compact", "compat", "streaming"):
        return Format.STREAMING if sub == "streaming" else Format.COMPACT
    raise UnsupportedMediaType(f"unsupported format {sub!r} for {media}")


def on_error(request: web.Request, stream: Stream | None) -> tuple[bool, bool]:
    """Whether rows that do not fit the schema go to quarantine (`?on_error=quarantine`, else the
    stream's `on_error`) instead of failing the request, and whether the request asked for it.
    Only the streaming (NDJSON) format can set rows aside: other formats reject."""
    raw = request.query.get("on_error", "")
    if raw and raw not in ON_ERROR:
        raise BadRequest(f"invalid on_error {raw!r}; one of {', '.join(ON_ERROR)}")
    wanted = (raw or (stream.on_error if stream is not None else "")) == "quarantine"
    return wanted, wanted and bool(raw)


# ---- handlers -------------------------------------------------------------------------------
@operation(
    "Push rows into a stream",
    tags=("ingest",),
    error_body=doc.TimeplusError,
    request={
        "application/json": doc.CompactIn,
        "application/vnd.timeplus+json": doc.CompactIn,
        "application/x-ndjson": doc.NdjsonRow,
        "text/plain": str,
    },
    params=[
        Param(
            "format",
            "Body format; overrides the Content-Type.",
            Literal["compact", "streaming", "raw", "lines"],
        ),
        Param("wait", "true: reply 200 once Kafka has acknowledged the rows.", bool),
        Param(
            "on_error",
            "quarantine: rows that do not fit the schema go to the stream's "
            "quarantine topic instead of failing the request (streaming format"
            " only); default: the stream's on_error.",
            Literal["reject", "quarantine"],
        ),
        RESULTS_PARAM,
    ],
    replies={
        200: Reply("Rows acknowledged by Kafka (wait=true).", doc.IngestOut, headers=RATE_LIMIT_HEADERS),
        202: Reply("Rows accepted and queued (wait=false).", doc.IngestOut, headers=RATE_LIMIT_HEADERS),
    },
    errors={
        400: "Malformed body or a row that does not match the schema (row and column named);"
        " nothing was written.",
        403: "The key may not append to this stream.",
        404: "No such stream.",
        409: "The stream is archived.",
        413: "Body too large, or more rows or bytes than the queue can ever hold (split it).",
        415: "Unsupported Content-Type or Content-Encoding.",
        429: Reply(
            "The key's rate limit or the stream's queue is full; nothing was written, "
            "retry after Retry-After.",
            headers={**RETRY_AFTER, **RATE_LIMIT_HEADERS},
        ),
        504: "Kafka did not acknowledge in time (wait=true); the rows stay queued.",
    },
)
async def ingest(request: web.Request) -> web.Response:
    """POST …/streams/{name}/ingest: 202 once queued, or 200 once acknowledged with wait=true."""
    who = principal(request, ingest=True)
    name = request.match_info["name"]
    gw = gateway_of(request)
    quarantine, asked = on_error(request, gw.catalog.stream(name))
    wait = flag(request, "wait")
    rows = wants_rows(request, wait)

    def pick(schema: CompiledSchema) -> Format:
        fmt = choose_format(request, Format.RAW if schema.one_string_column else Format.STREAMING)
        if asked and fmt is not Format.STREAMING:
            raise BadRequest("on_error=quarantine needs the streaming (NDJSON) format")
        return fmt

    payload = StreamedBody(pick, body_chunks(request), quarantine=quarantine)
    done = await gw.ingest.ingest(
        IngestRequest(name, payload, who, wait=wait, request_id=request_id_of(request))
    )
    return fast_json(
        doc.IngestOut(name, done.rows, done.acknowledged, row_results(done) if rows else msgspec.UNSET),
        status=200 if done.acknowledged else 202,
        headers=done.headers,
    )


@operation(
    "List streams",
    tags=("streams",),
    error_body=doc.TimeplusError,
    replies={
        200: Reply(
            "The streams the key may see (all with admin, DATASOURCE:CREATE or DATASOURCE:READ).",
            list[doc.StreamOut],
        )
    },
)
async def list_streams(request: web.Request) -> web.Response:
    """GET …/streams: the streams the key may see (every stream for a read-all scope)."""
    who = principal(request)
    return json_reply([stream_body(s) for s in gateway_of(request).catalog.streams() if who.may_read(s.name)])


@operation(
    "Create a stream (and its Kafka topic)",
    tags=("streams",),
    error_body=doc.TimeplusError,
    request=CreateStreamIn,
    replies={201: Reply("The new stream.", doc.StreamOut)},
    errors={
        504: CATALOG_UNCONFIRMED,
        400: "Invalid name, mode, column type, default or primary key.",
        403: "The key may not manage streams.",
        409: "A stream of that name exists.",
    },
)
async def create_stream(request: web.Request) -> web.Response:
    """POST …/streams: 201 with the stream; creates its Kafka topic."""
    gw = gateway_of(request)
    who = principal(request)
    who.require_manage()
    req = await json_body(request, CreateStreamIn)
    stream = await gw.streams.create(stream_from_request(req), created_by=who.name)
    return json_reply(stream_body(stream), status=201)


@operation(
    "Get a stream",
    tags=("streams",),
    error_body=doc.TimeplusError,
    replies={200: Reply("The stream.", doc.StreamOut)},
    errors={
        403: "The key's scopes do not name this stream (and it has no read-all scope).",
        404: "No such stream.",
    },
)
async def get_stream(request: web.Request) -> web.Response:
    """GET …/streams/{name}."""
    principal(request).require_read(request.match_info["name"])
    return json_reply(stream_body(gateway_of(request).streams.get(request.match_info["name"])))


@operation(
    "Update a stream (description, retention, TTL, archived, columns: a new schema version)",
    tags=("streams",),
    error_body=doc.TimeplusError,
    request=UpdateStreamIn,
    replies={200: Reply("The updated stream.", doc.StreamOut)},
    errors={
        504: CATALOG_UNCONFIRMED,
        400: "A field that cannot be changed, or an invalid value.",
        403: "The key may not manage streams.",
        404: "No such stream.",
        409: "The new columns are not compatible (every reason listed in `reasons`),"
        " or the stream changed or was deleted meanwhile; retry.",
    },
)
async def update_stream(request: web.Request) -> web.Response:
    """PATCH (or PUT) …/streams/{name}: description, retention (also on the topic), TTL, archived,
    compatibility, on_error, partitioner, and columns (a new schema version when compatible)."""
    gw = gateway_of(request)
    who = principal(request)
    who.require_manage()
    gw.streams.get(request.match_info["name"])  # 404 before the body is read
    req = await json_body(request, UpdateStreamIn)
    changes: dict[str, object] = {f: v for f in req.__struct_fields__ if (v := getattr(req, f)) is not None}
    if req.columns is not None:
        changes["columns"] = columns_from_request(req.columns)
    stream = await gw.streams.update(request.match_info["name"], changes, updated_by=who.name)
    return json_reply(stream_body(stream))


@operation(
    "A stream's stats",
    tags=("streams",),
    error_body=doc.TimeplusError,
    params=[Param("historyDays", "Add rows written per day, for 1 to 7 days.", int)],
    replies={200: Reply("Row count, sizes, event times, write rates.", StatsOut)},
    errors={
        400: "historyDays is not an integer from 1 to 7.",
        403: "The key's scopes do not name this stream (and it has no read-all scope).",
        404: "No such stream.",
    },
)
async def get_stats(request: web.Request) -> web.Response:
    """GET …/streams/{name}/stats[?historyDays=1..7]."""
    gw = gateway_of(request)
    principal(request).require_read(request.match_info["name"])
    days = history_days(request.query.get("historyDays"))
    stream = gw.streams.get(request.match_info["name"])
    return json_reply(await stream_stats(stream, gw.stats, gw.pipeline.rates, days))


@operation(
    "Delete a stream (and its Kafka topic)",
    tags=("streams",),
    error_body=doc.TimeplusError,
    replies={204: Reply("Deleted.")},
    errors={504: CATALOG_UNCONFIRMED, 403: "The key may not manage streams.", 404: "No such stream."},
)
async def delete_stream(request: web.Request) -> web.Response:
    """DELETE …/streams/{name}: 204; refuses new rows, then deletes the topic."""
    gw = gateway_of(request)
    principal(request).require_manage()
    await gw.streams.delete(request.match_info["name"])
    return web.Response(status=204)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration such as `24h`, `1h30m`, `90s`; ValueError otherwise."""
    parts = _DURATION.findall(text.strip())
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        raise ValueError(text)
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


MAX_RATE_LIMIT = 10_000_000
MAX_EXPIRE_IN_S = 100 * 365 * 86400


def expiry(req: CreateKeyIn) -> int:
    """The expiry (epoch seconds, 0 = never) from `expire_at` (RFC 3339) or `expire_in`."""
    if req.expire_at and req.expire_in:
        raise BadRequest("use expire_at or expire_in, not both")
    if req.expire_in:
        try:
            seconds = parse_duration(req.expire_in)
        except ValueError:
            raise BadRequest(f"invalid expire_in {req.expire_in[:80]!r}; e.g. 24h or 30m") from None
        if not 0 < seconds <= MAX_EXPIRE_IN_S:  # also inf and nan from a 400-digit number
            raise BadRequest(f"expire_in must be more than 0 and at most {MAX_EXPIRE_IN_S} s (100 years)")
        return int(time.time() + seconds)
    if req.expire_at:
        try:
            when = datetime.datetime.fromisoformat(req.expire_at.replace("Z", "+00:00"))
        except ValueError:
            raise BadRequest(f"invalid expire_at {req.expire_at!r}; use RFC 3339") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.UTC)
        return int(when.timestamp())
    return 0


@operation(
    "List API keys",
    tags=("apikeys",),
    error_body=doc.TimeplusError,
    replies={200: Reply("Every API key (never the key itself).", list[doc.ApiKeyOut])},
    errors={403: "Needs an admin key."},
)
async def list_keys(request: web.Request) -> web.Response:
    """GET …/apikeys (admin)."""
    principal(request).require_admin()
    return json_reply([key_body(k) for k in gateway_of(request).catalog.api_keys()])


@operation(
    "Create an API key",
    tags=("apikeys",),
    error_body=doc.TimeplusError,
    request=CreateKeyIn,
    replies={201: Reply("The new key; `api_key` is shown this once.", doc.ApiKeyCreated)},
    errors={
        504: CATALOG_UNCONFIRMED,
        400: "Invalid expire_at / expire_in, rate_limit out of range, or a permission "
        "outside the scope grammar (or an empty list).",
        403: "Needs an admin key.",
    },
)
async def create_key(request: web.Request) -> web.Response:
    """POST …/apikeys (admin): 201 with the key, shown this once."""
    gw = gateway_of(request)
    who = principal(request)
    who.require_admin()
    req = await json_body(request, CreateKeyIn) if request.can_read_body else CreateKeyIn()
    if req.rate_limit is not None and not 0 <= req.rate_limit <= MAX_RATE_LIMIT:
        raise BadRequest(
            f"rate_limit must be from 0 to {MAX_RATE_LIMIT} (requests per second; 0 = the default)"
        )
    key, record = new_key(
        req.name or "",
        scopes=parse_scopes(req.permissions),
        expire_at=expiry(req),
        created_by=who.name,
        rate_limit=req.rate_limit or 0,
        allowed_origins=validate_key_origins(req.allowed_origins or []),
    )
    await gw.catalog.put_key(record)
    return json_reply(key_body(record, key), status=201)


@operation(
    "Delete (revoke) an API key",
    tags=("apikeys",),
    error_body=doc.TimeplusError,
    replies={204: Reply("Revoked on every replica.")},
    errors={504: CATALOG_UNCONFIRMED, 403: "Needs an admin key.", 404: "No such API key."},
)
async def delete_key(request: web.Request) -> web.Response:
    """DELETE …/apikeys/{id} (admin): 204."""
    gw = gateway_of(request)
    principal(request).require_admin()
    if await gw.catalog.delete_key(request.match_info["id"]) is None:
        raise NotFound(f"API key {request.match_info['id']!r} does not exist")
    return web.Response(status=204)


def routes() -> list[Route]:
    """(method, path, handler) of every Timeplus route, with and without the workspace prefix."""
    table = [
        ("GET", "/streams", list_streams),
        ("POST", "/streams", create_stream),
        ("GET", "/streams/{name}", get_stream),
        ("DELETE", "/streams/{name}", delete_stream),
        ("PATCH", "/streams/{name}", update_stream),
        ("PUT", "/streams/{name}", update_stream),
        ("GET", "/streams/{name}/stats", get_stats),
        ("POST", "/streams/{name}/ingest", ingest),
        ("GET", "/apikeys", list_keys),
        ("POST", "/apikeys", create_key),
        ("DELETE", "/apikeys/{id}", delete_key),
        *timeplus_schemas.ROUTES,
    ]
    return [(m, prefix + p, h) for prefix in PREFIXES for m, p, h in table]
