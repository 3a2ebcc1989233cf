"""The Tinybird Events API dialect: `POST /v0/events?name=NAME&wait=true|false` with NDJSON bodies.

Every reply is JSON, 2xx included: `{"successful_rows": n, "quarantined_rows": q}` on success,
`{"error": message, …}` otherwise. Statuses as the Events API documents them: 200 acknowledged
(wait=true), 202 accepted, 400 invalid request (nothing inserted), 403 invalid token (401 and 403 are
both 403 here), 404 unknown data source, 429 rate limit, 500, 503 nothing inserted and safe to retry.
Rows that are JSON but do not fit the schema go to the stream's quarantine topic instead of failing
the request. The body is always NDJSON, whatever its Content-Type.
"""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from gateway.context import gateway_of, request_id_of
from gateway.dialects.common import (
    RESULTS_PARAM,
    RowPosition,
    body_chunks,
    flag,
    json_reply,
    principal,
    row_results,
    wants_rows,
)
from gateway.dialects.contract import Route
from gateway.errors import BadRequest, Forbidden, GatewayError, Unauthenticated
from gateway.ingest.formats import Format
from gateway.ingest.service import IngestRequest, StreamedBody, Wording
from gateway.openapi import RATE_LIMIT_HEADERS, RETRY_AFTER, Doc, Param, Reply, operation
from gateway.replies import fast_json

WORDING = Wording(
    not_found=lambda name: f"Data Source {name!r} not found",
    archived=lambda name: f"Data Source {name!r} is archived and accepts no rows",
)


NdjsonRow = dict[str, Any]  # one object of an NDJSON body


class EventsOut(Doc):
    """The reply to an accepted `/v0/events` request."""

    successful_rows: int
    quarantined_rows: int
    results: list[RowPosition] | msgspec.UnsetType = msgspec.UNSET  # with ?results=rows


class TinybirdError(Doc, kw_only=True):
    """The Tinybird error body."""

    error: str
    code: str
    row: int | msgspec.UnsetType = msgspec.UNSET
    column: str | msgspec.UnsetType = msgspec.UNSET
    request_id: str


def render_error(err: GatewayError, request_id: str) -> web.Response:
    """`{"error": message, "code": …, "row"/"column" where known, "request_id": …}`."""
    status = 403 if isinstance(err, Unauthenticated | Forbidden) else err.status
    return json_reply(
        TinybirdError(
            error=err.message,
            code=err.code,
            row=msgspec.UNSET if err.row is None else err.row,
            column=msgspec.UNSET if err.column is None else err.column,
            request_id=request_id,
        ),
        status=status,
    )


@operation(
    "Append NDJSON events to a data source",
    tags=("tinybird",),
    error_body=TinybirdError,
    request={"application/x-ndjson": NdjsonRow, "text/plain": str},
    params=[
        Param("name", "The data source (stream) to append to.", str, required=True),
        Param("wait", "true: reply 200 once Kafka has acknowledged the rows.", bool),
        Param("token", "The API key (or send `Authorization: Bearer TOKEN`).", str),
        RESULTS_PARAM,
    ],
    security=("bearer", "tokenQuery"),
    auth_status=403,
    replies={
        200: Reply(
            "Acknowledged by Kafka (wait=true); invalid rows quarantined.",
            EventsOut,
            headers=RATE_LIMIT_HEADERS,
        ),
        202: Reply(
            "Accepted and queued (wait=false); invalid rows quarantined.",
            EventsOut,
            headers=RATE_LIMIT_HEADERS,
        ),
    },
    errors={
        400: "Invalid request (e.g. no `name`, a body that is not JSON); nothing inserted.",
        403: "Missing, invalid, expired or revoked token, or one without the scope.",
        404: "No such data source.",
        409: "The data source is archived.",
        413: "Body too large.",
        415: "Unsupported Content-Encoding.",
        429: Reply(
            "Rate limit (or queue) exceeded; nothing inserted.", headers={**RETRY_AFTER, **RATE_LIMIT_HEADERS}
        ),
        500: "Internal error.",
        504: "Kafka did not acknowledge in time (wait=true); the rows stay queued.",
    },
)
async def events(request: web.Request) -> web.Response:
    """POST /v0/events: 202 once queued, or 200 once Kafka acknowledged (wait=true)."""
    who = principal(request, allow_query_token=True, ingest=True)
    name = request.query.get("name", "").strip()
    if not name:
        raise BadRequest(
            "missing the `name` query parameter (the data source to append to); nothing was inserted"
        )
    wait = flag(request, "wait")
    rows = wants_rows(request, wait)
    payload = StreamedBody(Format.STREAMING, body_chunks(request), quarantine=True)
    done = await gateway_of(request).ingest.ingest(
        IngestRequest(name, payload, who, wait=wait, request_id=request_id_of(request), wording=WORDING)
    )
    return fast_json(
        EventsOut(done.rows, done.quarantined, row_results(done) if rows else msgspec.UNSET),
        status=200 if done.acknowledged else 202,
        headers=done.headers,
    )


def routes() -> list[Route]:
    """(method, path, handler) of the Events API."""
    return [("POST", "/v0/events", events)]
