"""The Kafka REST Proxy dialect (Confluent REST Proxy / Karapace produce API).

v2: `POST /topics/{topic}[/partitions/{p}]` with `{"records": [...]}` (json or base64 values),
replying with the partition and offset Kafka gave each record; `GET /topics` (the other reads:
restproxy_reads) from the catalog. v3: `POST /v3/clusters/{id}/topics/{topic}/records`
(a stream of record objects, one result object per record) and `GET /v3/clusters[/{id}]`.
`{topic}` is a stream's Kafka topic or its name. Every request waits for Kafka's acknowledgement.
Errors: `{"error_code": 40401, "message": "Topic not found."}` with the proxies' codes.
"""

from __future__ import annotations

import base64
import functools
import re
from collections.abc import Callable

import msgspec
from aiohttp import web

from gateway.auth import Principal, key_from_headers
from gateway.catalog.model import Stream
from gateway.context import gateway_of, request_id_of
from gateway.dialects.common import authenticate, body_chunks, flag, json_reply
from gateway.dialects.contract import Route
from gateway.dialects.restproxy_records import (
    SCHEMA_FORMATS,
    Embedded,
    Parse,
    ProxyError,
    ProxyPayload,
    ProxyRecord,
    V2Records,
    partition_not_found,
    schema_format_refusal,
    v2_records,
)
from gateway.errors import (
    Forbidden,
    GatewayError,
    InvalidRow,
    NotConfirmed,
    NotFound,
    RateLimited,
    TooManyRequests,
    Unauthenticated,
    Unavailable,
)
from gateway.ingest.service import IngestRequest, Wording
from gateway.openapi import API_KEY, Doc, Param, Reply, operation
from gateway.pipeline import Outcome
from gateway.replies import fast_json

CLUSTER_ID = "ingest-gateway"  # the one cluster the gateway fronts, as v3 names it
V2_JSON = "application/vnd.kafka.v2+json"
SECURITY = ("basic", *API_KEY)
# A topic the key may not see is not found, as a missing one (the reads answer the same).
WORDING = Wording(
    not_found=lambda name: "Topic not found.",
    archived=lambda name: f"Topic {name!r} belongs to an archived stream.",
    hidden=lambda name: NotFound("Topic not found."),
)
# application/vnd.kafka[.EMBEDDED][.vN]+json or application/json (Karapace's rule: no embedded
# format means binary)
_MEDIA = re.compile(r"application/(?:vnd\.kafka(?:\.(?P<fmt>[a-z]+))?(?:\.v[12])?\+)?json")


# ---- errors -------------------------------------------------------------------------------
class ProxyErrorOut(Doc):
    """The REST proxies' error body."""

    error_code: int
    message: str


def _codes(err: GatewayError) -> tuple[int, int]:
    """(HTTP status, proxy error_code) for a gateway error."""
    if isinstance(err, ProxyError):
        return err.status, err.error_code
    if isinstance(err, InvalidRow):  # data that does not fit the schema: Karapace's INVALID_DATA
        return 422, 42205
    if isinstance(err, NotFound):
        return 404, 40401
    if isinstance(err, Unauthenticated):
        return 401, 40101
    if isinstance(err, Forbidden):
        return 403, 40301
    if isinstance(err, RateLimited):  # Confluent's per-tenant produce request limit
        return 429, 429002
    if isinstance(err, TooManyRequests):  # Confluent's produce bytes limit: the queue is full
        return 429, 429003
    if isinstance(err, Unavailable):
        return 503, 50003  # Confluent's "retriable Kafka error": nothing was written
    if isinstance(err, NotConfirmed):
        return 504, 50002  # a Kafka error whose outcome is unknown (the rows stay queued)
    return err.status, err.status


def render_error(err: GatewayError, request_id: str) -> web.Response:
    """`{"error_code": …, "message": …}` with the proxies' status and code."""
    status, code = _codes(err)
    headers = {"WWW-Authenticate": 'Basic realm="kafka-rest"'} if status == 401 else None
    return json_reply(ProxyErrorOut(code, err.message), status=status, headers=headers)


# ---- auth and lookup ----------------------------------------------------------------------
def principal(request: web.Request, *, ingest: bool = False) -> Principal:
    """HTTP Basic with the key as password (or as user name with no password), as the proxies'
    clients send it; or the gateway's own headers (X-Api-Key, Bearer). `ingest`: see
    gateway.dialects.common.authenticate."""
    header = request.headers.get("Authorization", "")
    basic = header[:6].lower() == "basic "
    key = basic_key(header) if basic else key_from_headers(request.headers)
    return authenticate(request, key, ingest=ingest)


def basic_key(header: str) -> str:
    """The key in `Authorization: Basic …`: the password, or the user name when there is no
    password — with or without the colon (`key:` or just `key`)."""
    try:
        text = base64.b64decode(header[6:].strip(), validate=True).decode("latin-1")
    except ValueError:  # binascii.Error included
        raise Unauthenticated("malformed Basic credentials") from None
    login, _, password = text.partition(":")
    return password or login


def _may_see(who: Principal, stream: Stream) -> bool:
    return who.may_append(stream.name)


def _stream_of(request: web.Request, topic: str) -> Stream | None:
    """The stream whose topic, or whose name, is `topic`."""
    catalog = gateway_of(request).catalog
    return next((s for s in catalog.streams() if s.topic == topic), None) or catalog.stream(topic)


def _visible(request: web.Request, who: Principal, topic: str) -> Stream:
    stream = _stream_of(request, topic)
    if stream is None or not _may_see(who, stream):
        raise NotFound("Topic not found.")
    return stream


# Karapace's rule for the `Accept` of its v2 routes: any vnd.kafka type, json or a wildcard
_ACCEPT = re.compile(
    r"(application|\*)/((vnd\.kafka(\.(avro|json|protobuf|binary|jsonschema))?(\.v[12])?\+json)|json|\*)"
)


def check_accept(request: web.Request) -> None:
    """406 (error_code 406) when `Accept` names nothing a v2 reply is (e.g. `text/html` alone)."""
    accept = request.headers.get("Accept")
    if accept is not None and _ACCEPT.search(accept) is None:
        raise ProxyError(406, 406, "HTTP 406 Not Acceptable")


def _embedded(request: web.Request) -> Embedded | str:
    """The embedded format of a v2 produce body: json or binary; a schema format's name (avro,
    jsonschema, protobuf: refused once the body is read). No Content-Type: application/json,
    which means binary (Karapace's defaults)."""
    media = request.headers.get("Content-Type", "application/json").partition(";")[0].strip().lower()
    m = _MEDIA.fullmatch(media)
    if m is None:
        raise ProxyError(
            415,
            415,
            f"Content-Type {media[:100]!r} is not a produce format; "
            "send application/vnd.kafka.json.v2+json or "
            "application/vnd.kafka.binary.v2+json",
        )
    fmt = m.group("fmt") or "binary"
    if fmt not in ("json", "binary", *SCHEMA_FORMATS):
        raise ProxyError(415, 415, f"unknown embedded format {fmt!r}: send json or binary")
    return "json" if fmt == "json" else "binary" if fmt == "binary" else fmt


def _parser(embedded: Embedded | str) -> Parse:
    fmt: Embedded = "json" if embedded == "json" else "binary"

    def parse(body: bytes, raw: bool = False) -> list[ProxyRecord]:
        if embedded in SCHEMA_FORMATS:
            return schema_format_refusal(body, embedded)
        return v2_records(body, fmt, raw)

    return parse


async def _produce(
    request: web.Request,
    topic: str,
    payload: ProxyPayload,
    who: Principal,
    check: Callable[[Stream], None] | None = None,
) -> Outcome:
    stream = _stream_of(request, topic)
    return await gateway_of(request).ingest.ingest(
        IngestRequest(
            stream.name if stream is not None else topic,
            payload,
            who,
            wait=True,
            request_id=request_id_of(request),
            wording=WORDING,
            allow_empty=True,  # v2 refuses empty `records` itself; a v2 request whose records
            # all named missing partitions is answered record by record (422)
            check=check,
        )
    )


def _positions(done: Outcome, records: list[ProxyRecord]) -> list[tuple[int, int]]:
    """(partition, offset) per written record; offset -1 (as Karapace) when the sink cannot tell."""
    if done.positions is not None:
        return done.positions.positions()
    return [(max(r.partition, 0), -1) for r in records]


# ---- v2 -----------------------------------------------------------------------------------
class OffsetOut(Doc):
    """Where one record went (or why it did not)."""

    partition: int | None
    offset: int | None
    error_code: int | None = None
    error: str | None = None


class ProduceOut(Doc):
    """The v2 produce reply: one offset entry per record, in order."""

    offsets: list[OffsetOut]
    key_schema_id: int | None = None
    value_schema_id: int | None = None


def v2_reply(body: object, status: int = 200) -> web.Response:
    reply = json_reply(body, status=status)
    reply.content_type = V2_JSON
    return reply


_PRODUCED = {
    200: Reply("Acknowledged by Kafka: each record's partition and offset.", ProduceOut, media_type=V2_JSON)
}


@operation(
    "Produce records (Kafka REST Proxy v2)",
    tags=("restproxy",),
    error_body=ProxyErrorOut,
    request={"application/vnd.kafka.json.v2+json": dict, "application/vnd.kafka.binary.v2+json": dict},
    security=SECURITY,
    params=[
        Param(
            "quarantine",
            "true: records whose JSON value does not fit the stream's "
            "schema go to its quarantine topic, each answered with error_code 42205; the "
            "others are written.",
            bool,
        )
    ],
    replies=_PRODUCED,
    errors={
        400: "The body is not JSON.",
        401: "No or unknown key.",
        403: "Not allowed.",
        404: "Topic (40401) or partition (40402) not found.",
        413: "Body or record too large.",
        406: "`Accept` names no JSON type (406).",
        415: "Unsupported Content-Type (avro, protobuf, jsonschema with their schemas).",
        422: "Not a produce request (422), a value that does not fit the stream's schema "
        "(42205, record named), a value or key the stream cannot take (42206), a schema "
        "format without its schema (42201 key, 42202 value): nothing was written. Or a "
        "record naming a partition the topic does not have: its `offsets` entry has "
        "error_code 2, the others were written.",
        429: "Rate limit or queue full; nothing was written.",
        503: "Kafka unreachable or draining (50003); nothing was written.",
        504: "Kafka did not acknowledge in time (50002); the records stay queued.",
    },
)
async def produce_v2(request: web.Request) -> web.Response:
    """POST /topics/{topic}: the records' partitions and offsets once Kafka acknowledged them."""
    return await produce_v2_to(request, None)


async def produce_v2_to(request: web.Request, partition: str | None) -> web.Response:
    """A v2 produce, to the topic (`partition` None) or to one partition of it: records without
    a partition of their own go there (404/40402 when the topic has no such partition)."""
    who = principal(request, ingest=True)
    embedded = _embedded(request)
    check_accept(request)
    parse = _parser(embedded)
    check = None
    if partition is not None:
        default = partition_number(partition)
        parse = _defaulting(parse, default)
        check = functools.partial(check_partition, default)
    payload = ProxyPayload(body_chunks(request), parse, quarantine=flag(request, "quarantine"))
    done = await _produce(request, request.match_info["topic"], payload, who, check)
    written = iter(_positions(done, [payload.records[i] for i in payload.written]))
    offsets = [
        OffsetOut(None, None, rec.error.error_code, rec.error.message)
        if rec.error is not None
        else OffsetOut(*next(written))
        for rec in payload.records
    ]
    ids = payload.records if isinstance(payload.records, V2Records) else V2Records()
    reply = ProduceOut(offsets, ids.key_schema_id, ids.value_schema_id)
    # as Karapace: 422 when a record was not written (its own entry says why); the others were
    missed = len(payload.written) < len(payload.records) and any(
        rec.error is not None and rec.error.error_code == 2 for rec in payload.records
    )
    return fast_json(reply, status=422 if missed else 200, headers=done.headers, content_type=V2_JSON)


def _defaulting(parse: Parse, partition: int) -> Parse:
    def parse_to(body: bytes, raw: bool = False) -> list[ProxyRecord]:
        records = parse(body, raw)
        for rec in records:
            if rec.partition == -1:
                rec.partition = partition
        return records

    return parse_to


def partition_number(text: str) -> int:
    """A partition id from a path; 404 (error_code 404) when it is not a number, as Karapace."""
    try:
        return int(text)
    except ValueError:
        raise ProxyError(404, 404, "Partition not found.") from None


def check_partition(partition: int, stream: Stream) -> None:
    """404/40402 when the stream's topic has no partition `partition`."""
    if not 0 <= partition < stream.shards:
        raise partition_not_found()


@operation(
    "Produce records to one partition (Kafka REST Proxy v2)",
    tags=("restproxy",),
    error_body=ProxyErrorOut,
    request={"application/vnd.kafka.json.v2+json": dict, "application/vnd.kafka.binary.v2+json": dict},
    security=SECURITY,
    replies=_PRODUCED,
    errors={
        404: "Topic (40401) or partition (40402; 404 when not a number) not found.",
        422: "As POST /topics/{topic}.",
    },
)
async def produce_partition_v2(request: web.Request) -> web.Response:
    """POST /topics/{topic}/partitions/{partition}: as POST /topics/{topic}, to one partition."""
    return await produce_v2_to(request, request.match_info["partition"])


@operation(
    "List topics (Kafka REST Proxy v2)",
    tags=("restproxy",),
    error_body=ProxyErrorOut,
    security=SECURITY,
    replies={200: Reply("The topics of the streams the key may see.", list[str], media_type=V2_JSON)},
)
async def list_topics(request: web.Request) -> web.Response:
    """GET /topics: the topics of the streams this key may write to."""
    who = principal(request)
    check_accept(request)
    streams = gateway_of(request).catalog.streams()
    return v2_reply(sorted(s.topic for s in streams if not s.archived and _may_see(who, s)))


# ---- v3 -----------------------------------------------------------------------------------
class Meta(Doc):
    """A v3 resource's metadata."""

    self: str
    resource_name: str | None = None


class ClusterOut(Doc):
    """The gateway's one cluster, as v3 describes a cluster."""

    kind: str
    metadata: Meta
    cluster_id: str


class ClusterListMeta(Doc):
    """A v3 list's metadata."""

    self: str
    next: str | None = None


class ClusterListOut(Doc):
    """`GET /v3/clusters`."""

    kind: str
    metadata: ClusterListMeta
    data: list[ClusterOut]


class SizeOut(Doc):
    """A v3 record key's or value's type and size."""

    type: str
    size: int


class RecordOut(Doc, kw_only=True):
    """One v3 produce result: error_code 200 and where the record went, or the error."""

    error_code: int
    message: str | msgspec.UnsetType = msgspec.UNSET
    cluster_id: str | msgspec.UnsetType = msgspec.UNSET
    topic_name: str | msgspec.UnsetType = msgspec.UNSET
    partition_id: int | msgspec.UnsetType = msgspec.UNSET
    offset: int | msgspec.UnsetType = msgspec.UNSET
    timestamp: str | msgspec.UnsetType = msgspec.UNSET  # ISO 8601, UTC, milliseconds
    key: SizeOut | msgspec.UnsetType | None = msgspec.UNSET
    value: SizeOut | msgspec.UnsetType | None = msgspec.UNSET


def _base(request: web.Request) -> str:
    """Where v3 URLs start: `--public-url`, else nothing (relative URLs). Never the request's
    `Host`, which the client chooses (a reflected Host poisons caches and links)."""
    return gateway_of(request).settings.public_url.rstrip("/")


def _cluster(request: web.Request) -> ClusterOut:
    base = f"{_base(request)}/v3/clusters/{CLUSTER_ID}"
    return ClusterOut("KafkaCluster", Meta(base, f"crn:///kafka={CLUSTER_ID}"), CLUSTER_ID)


def _check_cluster(request: web.Request) -> None:
    if request.match_info["cluster_id"] != CLUSTER_ID:
        raise ProxyError(404, 404, "Cluster not found.")


@operation(
    "List clusters (Kafka REST Proxy v3)",
    tags=("restproxy",),
    error_body=ProxyErrorOut,
    security=SECURITY,
    replies={200: Reply("The gateway's one cluster.", ClusterListOut)},
)
async def list_clusters(request: web.Request) -> web.Response:
    """GET /v3/clusters: the gateway's one cluster."""
    principal(request)
    return json_reply(
        ClusterListOut(
            "KafkaClusterList", ClusterListMeta(f"{_base(request)}/v3/clusters"), [_cluster(request)]
        )
    )


@operation(
    "Describe the cluster (Kafka REST Proxy v3)",
    tags=("restproxy",),
    error_body=ProxyErrorOut,
    security=SECURITY,
    replies={200: Reply("The gateway's one cluster.", ClusterOut)},
    errors={404: "No cluster with this id."},
)
async def get_cluster(request: web.Request) -> web.Response:
    """GET /v3/clusters/{cluster_id}."""
    principal(request)
    _check_cluster(request)
    return json_reply(_cluster(request))


def routes() -> list[Route]:
    """(method, path, handler) of the REST proxy produce API and the reads clients make first."""
    return [
        ("POST", "/topics/{topic}", produce_v2),
        ("POST", "/topics/{topic}/partitions/{partition}", produce_partition_v2),
        ("GET", "/topics", list_topics),
        ("GET", "/v3/clusters", list_clusters),
        ("GET", "/v3/clusters/{cluster_id}", get_cluster),
    ]
