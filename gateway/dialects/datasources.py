"""The time-series data-source dialect: `POST /v1/data_sources/ingest`.

`{"data_source": NAME, "records": [{"timestamp": unix seconds, "name": series, "value": number}]}`
with `Authorization: Bearer TOKEN`; 204 with an empty body once Kafka has acknowledged every record.
Errors are `{"detail": "..."}` with the vendor's messages (401 `Missing access token.` /
`Invalid access token.`, 404 `Data source not found.`, 409 `Data source is archived.`); a body that
is not JSON is 400, a record that does not fit is 422 naming it (`records[3].value: …`).

A data source is a stream with exactly the columns `timestamp` int64, `name` string, `value` float64,
in `versioned_kv` mode with primary key `timestamp, name`: each record's Kafka key is
`[timestamp,"name"]`, so a re-sent record lands on the same partition under the same key and the
compacted topic keeps the last value. A stream of another shape is not a data source: 404 with
`Data source not found.` followed by what the stream lacks.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, Callable

import msgspec
from aiohttp import web

from gateway.anonymous import may_be_anonymous
from gateway.auth import Principal, key_from_headers
from gateway.catalog.model import Stream
from gateway.context import gateway_of, request_id_of
from gateway.cors import origin_of
from gateway.dialects.common import body_chunks, json_reply
from gateway.dialects.contract import Route
from gateway.errors import (
    BadRequest,
    GatewayError,
    InvalidRow,
    MalformedBody,
    NotFound,
    Unauthenticated,
)
from gateway.ingest.quarantine import Split
from gateway.ingest.schema import CompiledSchema
from gateway.ingest.service import IngestRequest, Wording
from gateway.openapi import RATE_LIMIT_HEADERS, RETRY_AFTER, Doc, Reply, operation
from gateway.replies import FastReply

SHAPE = {"timestamp": "int64", "name": "string", "value": "float64"}
KEY = ["timestamp", "name"]
NOT_FOUND = "Data source not found."
_AT = re.compile(r"^(.*?) - at `\$(.*)`$", re.S)
_MISSING = re.compile(r"missing required field `(.+)`")


class DataPoint(msgspec.Struct):
    """One record: (timestamp, name) is its key; a re-sent record replaces the value."""

    timestamp: int
    name: str
    value: int | float


class DataSourceIn(msgspec.Struct):
    """The `/v1/data_sources/ingest` body as documented (decoded as an `Envelope`)."""

    data_source: str
    records: list[DataPoint]


class DetailError(Doc):
    """The data-source API's error body."""

    detail: str


class Envelope(msgspec.Struct):
    """The request body; `records` stays raw until the data source's schema decodes it."""

    data_source: str
    records: msgspec.Raw


_envelope = msgspec.json.Decoder(Envelope)
# `{"data_source": "NAME",` at the start of a body: the name, read before the rest of the body.
_HEAD = re.compile(rb'\s*\{\s*"data_source"\s*:\s*("(?:[^"\\]|\\.)*")\s*[,}]')
HEAD_MAX = 4096  # how far into the body the name is looked for before reading it whole
# The contract has no 403: a data source the token may not write is not found, as a missing one.
WORDING = Wording(
    not_found=lambda name: NOT_FOUND,
    archived=lambda name: "Data source is archived.",
    hidden=lambda name: NotFound(NOT_FOUND),
)


def render_error(err: GatewayError, request_id: str) -> web.Response:
    """`{"detail": message}`; a record that does not fit the schema is 422."""
    status = 422 if isinstance(err, InvalidRow) else err.status
    return json_reply(DetailError(err.message), status=status)


def shape_problem(stream: Stream) -> str | None:
    """Why a stream is not a data source, or None when it is one."""
    types = {c.name: c.type.strip().lower() for c in stream.columns}
    if types != SHAPE:
        return "its columns must be exactly timestamp int64, name string, value float64"
    if stream.mode != "versioned_kv" or stream.key_columns() != KEY:
        return "it must be in versioned_kv mode with primary key (timestamp, name)"
    return None


def detail(message: str, root: str) -> str:
    """msgspec's `… - at `$[3].value`` worded as `records[3].value: …`."""
    m = _AT.match(message)
    what, path = (m.group(1), m.group(2)) if m else (message, "")
    missing = _MISSING.search(what)
    if missing:
        path += "." + missing.group(1)
    where = (root + path).lstrip(".") or "body"
    return f"{where}: {what}"


def _is_data_source(stream: Stream) -> None:
    problem = shape_problem(stream)
    if problem is not None:
        raise NotFound(f"{NOT_FOUND} Stream {stream.name!r} is not a data source: {problem}.")


class EnvelopeBody:
    """The request body, which names the data source: read only as far as `"data_source": NAME`
    when it leads the object (as documented), so the lookup and scope check come before the rest
    is read; otherwise (it follows `records`) read whole first. Every byte is held against the
    memory cap; `records` is decoded with the data source's schema. A record that does not fit is
    422 naming it (`records[3].value`)."""

    def __init__(self, chunks: AsyncIterable[bytes]) -> None:
        self._chunks = aiter(chunks)
        self._parts: list[bytes] = []
        self._named: str | None = None  # the name its head gave
        self._records = msgspec.Raw()
        self.nbytes = 0

    as_sent = False  # rows only: the data-source upsert has no pass-through form

    async def _more(self, hold: Callable[[int], None]) -> bool:
        """Read and hold the next chunk; False at the end of the body."""
        chunk = await anext(self._chunks, b"")
        if not chunk:
            return False
        hold(len(chunk))
        self.nbytes += len(chunk)
        self._parts.append(chunk)
        return True

    async def read(self, hold: Callable[[int], None]) -> str:
        """Read the body as far as its data source's name; the name."""
        while await self._more(hold):
            head = b"".join(self._parts)[:HEAD_MAX]
            m = _HEAD.match(head)
            if m is not None:
                try:
                    self._named = msgspec.json.decode(m.group(1), type=str)
                except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
                    break  # left to the whole body's decode to word
                return self._named
            if len(head) == HEAD_MAX:
                break
        return await self._envelope(hold)

    async def _envelope(self, hold: Callable[[int], None]) -> str:
        """Read the rest of the body and decode it; the name it gives."""
        while await self._more(hold):
            pass
        body = b"".join(self._parts)
        self._parts = []
        try:
            envelope = _envelope.decode(body)
        except msgspec.ValidationError as exc:
            raise InvalidRow(detail(str(exc), "")) from None
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise MalformedBody(f"body: not valid JSON: {exc or 'nested too deeply'}") from None
        self._records = envelope.records
        return envelope.data_source

    async def rows(self, schema: CompiledSchema, hold: Callable[[int], None]) -> Split:
        if self._named is not None and await self._envelope(hold) != self._named:
            raise BadRequest("data_source: the body names its data source more than once")
        schema.check_utf8(memoryview(self._records))
        try:
            return Split(schema.array_decoder.decode(self._records), [])
        except msgspec.ValidationError as exc:
            raise InvalidRow(detail(str(exc), "records")) from None
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise MalformedBody(f"records: not valid JSON: {exc or 'nested too deeply'}") from None


def _principal(request: web.Request) -> Principal:
    """The caller (the anonymous principal for a request without credentials, when that is on)."""
    auth = gateway_of(request).auth
    key = key_from_headers(request.headers)
    if not key:
        if auth.anonymous is None or not may_be_anonymous(request.headers, request.query):
            raise Unauthenticated("Missing access token.")
        return auth.anonymous
    try:
        return auth.authenticate(key)
    except Unauthenticated:
        raise Unauthenticated("Invalid access token.") from None


@operation(
    "Upsert time-series records",
    tags=("data sources",),
    error_body=DetailError,
    request=DataSourceIn,
    replies={204: Reply("Every record acknowledged by Kafka.", headers=RATE_LIMIT_HEADERS)},
    errors={
        400: "The body is not JSON.",
        401: "Missing access token. / Invalid access token.",
        404: "Data source not found (also when the key may not append to it).",
        409: "Data source is archived.",
        413: "Body too large.",
        422: "A record does not fit (`records[3].value: …`).",
        429: Reply(
            "The key's rate limit or the queue is full; nothing was written.",
            headers={**RETRY_AFTER, **RATE_LIMIT_HEADERS},
        ),
        504: "Kafka did not acknowledge in time; the records stay queued.",
    },
)
async def ingest(request: web.Request) -> web.Response:
    """POST /v1/data_sources/ingest: 204 once every record is acknowledged by Kafka."""
    gw = gateway_of(request)
    who = _principal(request)
    who.require_origin(origin_of(request))
    body = EnvelopeBody(body_chunks(request))
    done = await gw.ingest.ingest(
        IngestRequest(
            body.read,
            body,
            who,
            wait=True,
            request_id=request_id_of(request),
            wording=WORDING,
            check=_is_data_source,
            allow_empty=True,
        )
    )
    return FastReply(b"", 204, headers=done.headers)


def routes() -> list[Route]:
    """(method, path, handler) of the data-source API."""
    return [("POST", "/v1/data_sources/ingest", ingest)]
