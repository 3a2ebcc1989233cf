"""Helpers every dialect uses: JSON replies, request bodies into typed structs, flags, auth."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from gateway.admission import MANAGE, BodyHold
from gateway.anonymous import may_be_anonymous
from gateway.auth import Principal, key_from_headers
from gateway.context import gateway_of
from gateway.cors import origin_of
from gateway.errors import BadRequest, MalformedBody, PayloadTooLarge, Unauthenticated
from gateway.expect import body_source
from gateway.ingest.body import check_transfer_encoding, read_chunks
from gateway.openapi import Doc, Param
from gateway.pipeline import Outcome

T = TypeVar("T")
MAX_JSON_BODY = 1024 * 1024
_encoder = msgspec.json.Encoder()


def json_reply(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON response encoded with msgspec."""
    return web.Response(
        body=_encoder.encode(body), status=status, headers=headers, content_type="application/json"
    )


async def json_body(request: web.Request, kind: type[T]) -> T:
    """A small JSON request body (management APIs) decoded into `kind`; 400 when it does not fit.
    Called once the key and its scope are checked; its bytes are held against the memory cap
    (no decoding slot: management keeps working while ingest has them all)."""
    if request.content_length is not None and request.content_length > MAX_JSON_BODY:
        raise PayloadTooLarge(f"body exceeds {MAX_JSON_BODY} bytes")
    check_transfer_encoding(request.headers.get("Transfer-Encoding", ""))
    gw = gateway_of(request)
    held = BodyHold(gw.queues.budget, None)
    try:
        body = bytearray()
        async for chunk in read_chunks(
            body_source(request),
            content_encoding=request.headers.get("Content-Encoding", ""),
            max_bytes=MAX_JSON_BODY,
            max_decompressed=MAX_JSON_BODY,
            read_timeout=gw.settings.body_read_timeout_s,
            total_timeout=gw.settings.body_total_timeout_s,
            min_rate=gw.settings.body_min_bytes_per_s,
            rate_window=gw.settings.body_rate_window_s,
        ):
            held.hold(len(chunk))
            body += chunk
        try:
            return msgspec.json.decode(body, type=kind)
        except msgspec.ValidationError as exc:
            raise BadRequest(f"invalid request body: {exc}") from None
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise MalformedBody(f"request body is not valid JSON: {exc}") from None
        except RecursionError:
            raise MalformedBody("request body is nested too deeply") from None
    finally:
        held.release()


def flag(request: web.Request, name: str, default: bool = False) -> bool:
    """A boolean query parameter (`true`/`false`/`1`/`0`); 400 for anything else."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise BadRequest(f"query parameter {name!r} must be true or false, got {raw!r}")


class RowPosition(Doc):
    """Where Kafka put one row: its partition and offset."""

    partition: int
    offset: int


RESULTS_PARAM = Param(
    "results",
    "`rows` (with wait=true): the reply lists each written row's Kafka partition and offset, in order.",
    str,
)


def wants_rows(request: web.Request, wait: bool) -> bool:
    """True for `?results=rows` (only with wait=true: positions exist once Kafka acknowledged)."""
    raw = request.query.get("results")
    if raw is None or raw == "":
        return False
    if raw != "rows":
        raise BadRequest(f"query parameter 'results' must be 'rows', got {raw[:100]!r}")
    if not wait:
        raise BadRequest(
            "results=rows needs wait=true: a row's position is known once Kafka has acknowledged it"
        )
    return True


def row_results(done: Outcome) -> list[RowPosition]:
    """Each written row's position, in order (empty when the sink cannot tell: the dev sink)."""
    if done.positions is None:
        return []
    return [RowPosition(p, o) for p, o in done.positions.positions()]


def principal(request: web.Request, *, allow_query_token: bool = False, ingest: bool = False) -> Principal:
    """The authenticated caller; 401 when the key is missing or invalid (see `authenticate`). A
    route that takes `?token=` (Tinybird's) names its own ways of sending one when it is missing."""
    key = key_from_headers(request.headers, request.query if allow_query_token else None)
    if not key and allow_query_token and not _anonymous_ok(request):
        raise Unauthenticated("missing token: send `Authorization: Bearer TOKEN` or `?token=TOKEN`")
    return authenticate(request, key, ingest=ingest)


def authenticate(request: web.Request, key: str | None, *, ingest: bool = False) -> Principal:
    """The caller owning `key` (401 when missing or invalid), if the key may be used from the
    request's origin (403). A management call (not `ingest`) is counted against the key's
    management rate here (429); an ingest request against its ingest rate by the ingest path.
    A request with no credentials at all is the anonymous principal when that is on."""
    gw = gateway_of(request)
    who = gw.auth.authenticate(key, may_be_anonymous=not key and _anonymous_ok(request))
    who.require_origin(origin_of(request))
    if not ingest:
        gw.ingest.admission.key_rate(who, MANAGE)
    return who


def _anonymous_ok(request: web.Request) -> bool:
    """True when anonymous requests are on and this one may be served as anonymous (no
    credentials at all, not from a web page: gateway.anonymous.may_be_anonymous)."""
    return gateway_of(request).auth.anonymous is not None and may_be_anonymous(request.headers, request.query)


class BodyChunks:
    """The request body as decompressed chunks, with the configured limits. Nothing is checked or
    set up until the body is first read: a request refused before that (429 under overload) costs
    none of it; a declared size over the limit (413) or an unsupported Transfer-Encoding (415) is
    refused then, before any body byte is read or a "100 Continue" sent."""

    __slots__ = ("_request",)

    def __init__(self, request: web.Request) -> None:
        self._request = request

    def __aiter__(self) -> AsyncIterator[bytes]:
        request = self._request
        settings = gateway_of(request).settings
        length = request.content_length
        if length is not None and length > settings.max_body_bytes:
            raise PayloadTooLarge(f"body of {length} bytes exceeds {settings.max_body_bytes} bytes")
        check_transfer_encoding(request.headers.get("Transfer-Encoding", ""))
        return read_chunks(
            body_source(request),
            content_encoding=request.headers.get("Content-Encoding", ""),
            max_bytes=settings.max_body_bytes,
            max_decompressed=settings.max_decompressed_bytes,
            max_members=settings.max_gzip_members,
            read_timeout=settings.body_read_timeout_s,
            total_timeout=settings.body_total_timeout_s,
            min_rate=settings.body_min_bytes_per_s,
            rate_window=settings.body_rate_window_s,
        ).__aiter__()


def body_chunks(request: web.Request) -> BodyChunks:
    """The request body as decompressed chunks, with the configured limits (checked when the
    body is first read)."""
    return BodyChunks(request)
