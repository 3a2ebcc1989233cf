"""Timeplus-dialect routes for schema versions and the quarantine: `…/streams/{name}/schemas`,
`…/schemas/{schema_version}`, `…/quarantine` and `…/quarantine/replay`."""

from __future__ import annotations

from aiohttp import web

from gateway.catalog.model import SchemaVersion
from gateway.context import gateway_of
from gateway.dialects import timeplus_replies as doc
from gateway.dialects.common import json_reply, principal
from gateway.errors import BadRequest, Unavailable
from gateway.evolution.quarantine_log import QuarantineRecord, cursor, parse_cursor
from gateway.evolution.replay import Replayer, StoredRow, stored_row
from gateway.evolution.versions import version, versions
from gateway.openapi import Doc, Param, Reply, operation

READ_LIMIT = 100
REPLAY_LIMIT = 1000
MAX_LIMIT = 10_000


class SchemaOut(Doc):
    """One version of a stream's schema."""

    version: int
    columns: list[doc.ColumnOut]
    primary_key: str
    created_at: str
    created_by: doc.UserRef
    current: bool


class RowErrorOut(Doc):
    """Why a row does not fit the schema."""

    message: str
    row: int | None
    column: str | None


class QuarantinedOut(Doc):
    """One quarantined row: where it is, when and why it was quarantined, and its text."""

    position: str
    time: str
    request_id: str
    schema_version: int | None  # None: not known (a record from before versions were kept)
    error: RowErrorOut
    row_text: str


class QuarantineOut(Doc):
    """A page of quarantined rows; `next` is the cursor to pass as `after` for the next page."""

    rows: list[QuarantinedOut]
    next: str
    at_end: bool
    replayed: str


class ReplayOut(Doc):
    """What a replay page did: rows read, written to the stream, still failing (quarantined
    again), the first errors, the replay position now, whether the quarantine is done, and the
    rows an interrupted run of the same page had already written (not written again)."""

    read: int
    written: int
    still_failing: int
    errors: list[RowErrorOut]
    next: str
    done: bool
    recovered: int


def _schema_body(v: SchemaVersion, current: int) -> SchemaOut:
    return SchemaOut(
        v.version,
        [doc.ColumnOut(c.name, c.type, c.default or "", c.nullable, c.description) for c in v.columns],
        v.primary_key,
        v.created_at,
        doc.UserRef(v.created_by),
        v.version == current,
    )


def _limit(request: web.Request, default: int) -> int:
    raw = request.query.get("limit", "")
    if not raw:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise BadRequest(f"limit must be an integer from 1 to {MAX_LIMIT}")
    return int(raw)


def _replayer(request: web.Request) -> Replayer:
    replayer = gateway_of(request).replayer
    if replayer is None:
        raise Unavailable("the quarantine cannot be read by this gateway")
    return replayer


@operation(
    "A stream's schema versions",
    tags=("streams",),
    error_body=doc.TimeplusError,
    replies={200: Reply("Every version, oldest first.", list[SchemaOut])},
    errors={
        403: "The key's scopes do not name this stream (and it has no read-all scope).",
        404: "No such stream.",
    },
)
async def list_schemas(request: web.Request) -> web.Response:
    """GET …/streams/{name}/schemas."""
    principal(request).require_read(request.match_info["name"])  # before the lookup
    stream = gateway_of(request).streams.get(request.match_info["name"])
    return json_reply([_schema_body(v, stream.schema_version) for v in versions(stream)])


@operation(
    "One schema version of a stream",
    tags=("streams",),
    error_body=doc.TimeplusError,
    replies={200: Reply("The version.", SchemaOut)},
    errors={
        403: "The key's scopes do not name this stream (and it has no read-all scope).",
        404: "No such stream or version.",
    },
)
async def get_schema(request: web.Request) -> web.Response:
    """GET …/streams/{name}/schemas/{schema_version}."""
    principal(request).require_read(request.match_info["name"])  # before the lookup
    stream = gateway_of(request).streams.get(request.match_info["name"])
    text = request.match_info["schema_version"]
    number = int(text) if text.isdigit() and len(text) < 10 else 0  # 0: no such version
    return json_reply(_schema_body(version(stream, number), stream.schema_version))


def _version_of(record: QuarantineRecord, stored: StoredRow | None) -> int | None:
    """The schema version a quarantined row was checked against: its `schema-version` header
    (Kafka), else the record's own field (the local sink keeps no headers)."""
    header = record.headers.get("schema-version", "")
    if header.isdigit():
        return int(header)
    return stored.schema_version if stored and stored.schema_version else None


@operation(
    "Read a stream's quarantined rows",
    tags=("streams",),
    error_body=doc.TimeplusError,
    params=[
        Param("limit", f"Rows per page, 1 to {MAX_LIMIT} (default {READ_LIMIT}).", int),
        Param(
            "after",
            "The `next` cursor of the previous page (`partition:offset,"
            "…`); absent: from the oldest row kept.",
        ),
    ],
    replies={200: Reply("A page of rows with their errors.", QuarantineOut)},
    errors={400: "Bad limit or cursor.", 403: "The key may not manage streams.", 404: "No such stream."},
)
async def read_quarantine(request: web.Request) -> web.Response:
    """GET …/streams/{name}/quarantine?limit=&after=."""
    principal(request).require_manage()  # the rows' data: not for keys that may only append
    limit = _limit(request, READ_LIMIT)
    start = parse_cursor(request.query.get("after", ""))
    stream, page = await _replayer(request).read(request.match_info["name"], start, limit)
    rows = []
    for r in page.records:
        stored = stored_row(r)
        err = stored.error if stored else None
        rows.append(
            QuarantinedOut(
                f"{r.partition}:{r.offset}",
                stored.time if stored else "",
                stored.request_id if stored else "",
                _version_of(r, stored),
                RowErrorOut(
                    err.message if err else "not a quarantined row",
                    err.row if err else None,
                    err.column if err else None,
                ),
                stored.row_text if stored else r.value.decode(errors="replace"),
            )
        )
    return json_reply(QuarantineOut(rows, cursor(page.next), page.at_end, cursor(stream.quarantine_replayed)))


@operation(
    "Replay quarantined rows against the current schema",
    tags=("streams",),
    error_body=doc.TimeplusError,
    params=[
        Param(
            "limit",
            f"Rows to replay in this call, 1 to {MAX_LIMIT} (default "
            f"{REPLAY_LIMIT}); call again until `done`.",
            int,
        )
    ],
    replies={
        200: Reply(
            "Rows written once Kafka acknowledged them; rows still failing are quarantined again.", ReplayOut
        )
    },
    errors={
        400: "Bad limit.",
        403: "The key may not manage streams.",
        404: "No such stream.",
        409: "Another replica (or an earlier call) is replaying this stream's quarantine.",
        504: "Kafka did not acknowledge the page (or confirm a catalog change) in "
        "time; the page goes on and saves the replay position itself: call "
        "again.",
    },
)
async def replay_quarantine(request: web.Request) -> web.Response:
    """POST …/streams/{name}/quarantine/replay?limit=."""
    principal(request).require_manage()
    out = await _replayer(request).replay(request.match_info["name"], _limit(request, REPLAY_LIMIT))
    return json_reply(
        ReplayOut(
            out.read,
            out.written,
            out.still_failing,
            [RowErrorOut(e.message, e.row, e.column) for e in out.errors],
            cursor(out.next),
            out.done,
            out.recovered,
        )
    )


ROUTES = [
    ("GET", "/streams/{name}/schemas", list_schemas),
    ("GET", "/streams/{name}/schemas/{schema_version}", get_schema),
    ("GET", "/streams/{name}/quarantine", read_quarantine),
    ("POST", "/streams/{name}/quarantine/replay", replay_quarantine),
]
