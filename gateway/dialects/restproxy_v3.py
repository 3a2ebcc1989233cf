"""Kafka REST Proxy v3: produce, full duplex (`POST /v3/clusters/{id}/topics/{topic}/records`),
and the topic reads (`GET …/topics[/{topic}[/partitions[/{p}]]]`, as the v2 reads: a key sees the
topics of the streams it may append to; any other is not found).

The body is a stream of JSON record objects. It is read as it arrives; each run of whole records
already received goes through the ingest path on its own (gate, the key's rate, scope, decoding
slot, memory cap, Kafka's acknowledgement), and one receipt per record is written — each its own
chunk, in order — only once Kafka acknowledged that record, while the client is still sending.
Errors before the first receipt (auth, scope, topic, an empty body, a malformed start) are the
dialect's normal JSON error; after it, a run that fails gets one error object per record and a
failure that ends the request (a malformed or cut body, Kafka unavailable) ends the stream after
its error object.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
from aiohttp import web

from gateway.auth import Principal
from gateway.catalog.model import Stream
from gateway.context import gateway_of, request_id_of
from gateway.dialects.common import body_chunks, json_reply
from gateway.dialects.contract import Route
from gateway.dialects.restproxy import (
    CLUSTER_ID,
    SECURITY,
    WORDING,
    ClusterListMeta,
    Meta,
    ProxyErrorOut,
    RecordOut,
    SizeOut,
    _base,
    _check_cluster,
    _codes,
    _positions,
    _stream_of,
    _visible,
    principal,
    render_error,
)
from gateway.dialects.restproxy_records import (
    ProxyError,
    ProxyRecord,
    RawRecord,
    as_sent_split,
    each_alone,
    partition_not_found,
    placed_split,
    v3_record,
)
from gateway.errors import GatewayError, MalformedBody, NotConfirmed, Unavailable, detach
from gateway.ingest.quarantine import Split
from gateway.ingest.schema import CompiledSchema
from gateway.ingest.service import IngestRequest
from gateway.openapi import Doc, Reply, operation
from gateway.pipeline import Outcome

_SPACE = re.compile(rb"[ \t\r\n]*")
_STRUCTURE = re.compile(rb'[{}\[\]"]')
_IN_STRING = re.compile(rb'["\\]')


class ObjectFramer:
    """Splits a byte stream of JSON objects (separated by whitespace or not at all) into each
    object's bytes as soon as its closing brace arrives. It tracks only nesting and strings; an
    object that is not valid JSON inside is left to the record decoder (a per-record error).
    Holds at most the one object still incomplete."""

    __slots__ = ("_buf", "_depth", "_pos", "_start", "_string", "count", "error")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._start = 0
        self._depth = 0
        self._string = False
        self.count = 0  # objects framed so far
        self.error: MalformedBody | None = None  # set at the first byte that starts no object

    def feed(self, chunk: bytes) -> list[bytes]:
        """The objects `chunk` completes, in order (none more once `error` is set)."""
        if self.error is not None:
            return []
        buf = self._buf
        buf += chunk
        out: list[bytes] = []
        i, end = self._pos, len(buf)
        while i < end:
            if self._depth == 0:
                i = _SPACE.match(buf, i).end()  # type: ignore[union-attr]  # matches ""
                if i == end:
                    break
                if buf[i] != 0x7B:  # "{"
                    self.error = MalformedBody(
                        f"request body is not a stream of JSON objects: byte {buf[i]:#04x} "
                        f"after record {self.count + len(out)}"
                    )
                    break
                self._start, self._depth, i = i, 1, i + 1
            elif self._string:
                m = _IN_STRING.search(buf, i)
                if m is None:
                    i = end
                elif buf[m.start()] == 0x5C:  # a backslash escapes the next byte
                    if m.start() + 1 == end:
                        i = m.start()
                        break
                    i = m.start() + 2
                else:
                    self._string, i = False, m.end()
            else:
                m = _STRUCTURE.search(buf, i)
                if m is None:
                    i = end
                    break
                c, i = buf[m.start()], m.end()
                if c == 0x22:  # '"'
                    self._string = True
                elif c in (0x7B, 0x5B):  # "{", "["
                    self._depth += 1
                else:
                    self._depth -= 1
                    if self._depth == 0:
                        out.append(bytes(buf[self._start : i]))
        cut = i if self._depth == 0 else self._start
        del buf[:cut]
        self._pos, self._start = i - cut, 0
        self.count += len(out)
        return out

    def finish(self) -> None:
        """At the end of the body: an object left open is a malformed body."""
        if self.error is None and self._depth:
            self.error = MalformedBody("request body is not a stream of JSON objects: it ends inside one")


class RecordSource:
    """The request's records as they arrive: the whole objects received so far, and the body's
    end or the error that ended it."""

    def __init__(self, request: web.Request) -> None:
        self._chunks: AsyncIterator[bytes] | None = None
        self._request = request
        self.framer = ObjectFramer()
        self.pending: list[bytes] = []
        self.done = False  # the body ended (or failed: then `error`)
        self.error: GatewayError | None = None

    async def fill(self) -> None:
        """Read until a whole object is pending or the body ends; a failure to read becomes
        `error` once the objects before it are taken."""
        if self._chunks is None:
            self._chunks = body_chunks(self._request).__aiter__()
        while not self.pending and not self.done:
            try:
                chunk = await anext(self._chunks)
            except StopAsyncIteration:
                self.framer.finish()
                self.done = True
            except GatewayError as err:
                self.error, self.done = detach(err), True
            else:
                self.pending += self.framer.feed(chunk)
            if self.framer.error is not None:
                self.error, self.done = self.framer.error, True

    def take(self) -> list[bytes]:
        """The pending objects, handed over."""
        out, self.pending = self.pending, []
        return out


class RunPayload:
    """One run of v3 records through the ingest path: read from the body if none are pending
    (under the decoding slot the path holds), each record validated alone (a refused one keeps
    its error), rows numbered from the record's place in the whole stream."""

    as_sent = True  # writes a pass-through stream's values as sent

    def __init__(self, source: RecordSource, first: int, objects: list[bytes] | None = None) -> None:
        self._source = source
        self.first = first
        self.objects = objects  # the run's records when already read (after the first run)
        self.nbytes = 0
        self.records: list[ProxyRecord] = []
        self.written: list[int] = []

    async def rows(self, schema: CompiledSchema, hold: Callable[[int], None]) -> Split:
        objects = self.objects
        if objects is None:
            await self._source.fill()
            objects = self.objects = self._source.take()
        if not objects and self._source.error is not None:
            raise self._source.error
        if not objects and self.first == 0:
            raise ProxyError(422, 422, "Invalid request format: the body holds no records")
        self.nbytes = sum(len(o) for o in objects)
        hold(self.nbytes)
        if schema.stream.passthrough:
            self.records = [v3_record(o, True) for o in objects]
            return as_sent_split(schema.stream, self.records, self.written, each=True, first=self.first)
        self.records = [v3_record(o) for o in objects]
        rows = each_alone(schema, self.records, self.written, self.first)
        return placed_split(rows, [], self.records, self.written)


def _error_out(err: GatewayError) -> RecordOut:
    return RecordOut(error_code=_codes(err)[1], message=err.message)


def iso_ms(ms: int) -> str:
    """A Kafka timestamp (ms since the epoch) as v3 writes it: `2026-12-08T03:00:00.123Z`."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def _times(done: Outcome, count: int) -> list[int]:
    """The timestamp Kafka stored for each written record; where the sink does not tell (the
    embedded development sink, which stores none), the time the run was acknowledged."""
    times = None if done.positions is None else done.positions.timestamps()
    return times if times is not None else [int(time.time() * 1000)] * count


def _receipts(payload: RunPayload, done: Outcome, topic: str) -> list[RecordOut]:
    """One receipt per record of the run, in order (a tombstone's value is null, as Confluent)."""
    kept = [payload.records[j] for j in payload.written]
    places = iter(zip(_positions(done, kept), _times(done, len(kept)), strict=True))
    stamps: dict[int, str] = {}  # a run's records mostly share one timestamp
    out: list[RecordOut] = []
    for rec in payload.records:
        if rec.error is not None:
            out.append(_error_out(rec.error))
            continue
        (partition, offset), ms = next(places)
        stamp = stamps.get(ms)
        if stamp is None:
            stamp = stamps[ms] = iso_ms(ms)
        tombstone = isinstance(rec, RawRecord) and rec.raw is None
        out.append(
            RecordOut(
                error_code=200,
                cluster_id=CLUSTER_ID,
                topic_name=topic,
                partition_id=partition,
                offset=offset,
                timestamp=stamp,
                key=None if rec.key is None else SizeOut(rec.key_type, rec.key_size),
                value=None if tombstone else SizeOut(rec.value_type, rec.value_size),
            )
        )
    return out


async def _run(request: web.Request, name: str, who: Principal, payload: RunPayload) -> tuple[Any, bool]:
    """The run through the ingest path: (outcome, True) or (the error, False)."""
    try:
        done = await gateway_of(request).ingest.ingest(
            IngestRequest(
                name,
                payload,
                who,
                wait=True,
                request_id=request_id_of(request),
                wording=WORDING,
                allow_empty=True,
            )
        )
    except GatewayError as err:
        return detach(err), False
    return done, True


@operation(
    "Produce records (Kafka REST Proxy v3, full duplex)",
    tags=("restproxy",),
    error_body=ProxyErrorOut,
    request={"application/json": dict},
    security=SECURITY,
    replies={
        200: Reply(
            "A stream of receipts, one JSON object per record in order, each written once Kafka "
            "acknowledged that record (error_code 200) or with the record's error.",
            RecordOut,
        )
    },
    errors={
        400: "The body does not start as a stream of JSON objects.",
        401: "No or unknown key.",
        403: "Not allowed.",
        404: "Cluster or topic not found.",
        413: "Body too large.",
        422: "The body holds no records.",
        429: "Rate limit or queue full; nothing was written.",
        503: "Kafka unreachable or draining; nothing was written.",
        504: "Kafka did not acknowledge in time; the records stay queued.",
    },
)
async def produce_v3_stream(request: web.Request) -> web.StreamResponse:
    """POST /v3/clusters/{cluster_id}/topics/{topic}/records: a receipt per record, written as
    Kafka acknowledges it while the body still arrives."""
    who = principal(request, ingest=True)
    if request.match_info["cluster_id"] != CLUSTER_ID:
        raise ProxyError(404, 404, "Cluster not found.")
    asked = request.match_info["topic"]
    stream = _stream_of(request, asked)
    name = stream.name if stream is not None else asked
    topic = (stream or Stream("", [], "")).topic
    source = RecordSource(request)
    first = RunPayload(source, 0)
    result, ok = await _run(request, name, who, first)
    if not ok:
        raise result  # before any receipt: the dialect's normal error reply
    reply = web.StreamResponse(headers=result.headers)
    reply.content_type = "application/json"
    reply.enable_chunked_encoding()
    await reply.prepare(request)
    try:
        await _stream(request, reply, (name, topic, who), source, first, (result, ok))
        await reply.write_eof()
    except ConnectionResetError:  # the client left: what Kafka acknowledged stays written
        pass
    return reply


async def _stream(
    request: web.Request,
    reply: web.StreamResponse,
    target: tuple[str, str, Principal],
    source: RecordSource,
    payload: RunPayload,
    run: tuple[Any, bool],
) -> None:
    """Write the run's receipts, then produce and answer each next run until the body ends."""
    name, topic, who = target
    result, ok = run
    count = 0
    while True:
        if ok:
            receipts = _receipts(payload, result, topic)
        else:
            receipts = [_error_out(result)] * len(payload.objects or ())
        for receipt in receipts:
            await reply.write(msgspec.json.encode(receipt) + b"\n")  # one chunk per receipt
        count += len(payload.objects or ())
        if not ok and isinstance(result, Unavailable | NotConfirmed | MalformedBody):
            return
        await source.fill()
        if not source.pending:
            if source.error is not None:
                await reply.write(msgspec.json.encode(_error_out(source.error)) + b"\n")
            return
        payload = RunPayload(source, count, source.take())
        result, ok = await _run(request, name, who, payload)


# ---- v3 topic reads -------------------------------------------------------------------------
class Related(Doc):
    """A v3 link to a related resource."""

    related: str


class TopicV3(Doc):
    """A topic as v3 describes it (`authorized_operations` empty: the gateway does not say)."""

    kind: str
    metadata: Meta
    cluster_id: str
    topic_name: str
    is_internal: bool
    replication_factor: int
    partitions_count: int
    partitions: Related
    configs: Related
    partition_reassignments: Related
    authorized_operations: list[str]


class PartitionV3(Doc):
    """A partition as v3 describes it (no leader: the catalog does not know brokers)."""

    kind: str
    metadata: Meta
    cluster_id: str
    topic_name: str
    partition_id: int
    leader: Related | None
    replicas: Related
    reassignment: Related


class TopicListV3(Doc):
    """`GET /v3/clusters/{id}/topics`."""

    kind: str
    metadata: ClusterListMeta
    data: list[TopicV3]


class PartitionListV3(Doc):
    """`GET /v3/clusters/{id}/topics/{topic}/partitions`."""

    kind: str
    metadata: ClusterListMeta
    data: list[PartitionV3]


def _topics_url(request: web.Request) -> str:
    return f"{_base(request)}/v3/clusters/{CLUSTER_ID}/topics"


def _topic_v3(request: web.Request, stream: Stream) -> TopicV3:
    url = f"{_topics_url(request)}/{stream.topic}"
    return TopicV3(
        "KafkaTopic",
        Meta(url, f"crn:///kafka={CLUSTER_ID}/topic={stream.topic}"),
        CLUSTER_ID,
        stream.topic,
        False,
        stream.replication_factor,
        stream.shards,
        Related(f"{url}/partitions"),
        Related(f"{url}/configs"),
        Related(f"{url}/partitions/-/reassignment"),
        [],
    )


def _partition_v3(request: web.Request, stream: Stream, partition: int) -> PartitionV3:
    url = f"{_topics_url(request)}/{stream.topic}/partitions/{partition}"
    return PartitionV3(
        "KafkaPartition",
        Meta(url, f"crn:///kafka={CLUSTER_ID}/topic={stream.topic}/partition={partition}"),
        CLUSTER_ID,
        stream.topic,
        partition,
        None,
        Related(f"{url}/replicas"),
        Related(f"{url}/reassignment"),
    )


def _v3_topic(request: web.Request) -> Stream:
    who = principal(request)
    _check_cluster(request)
    return _visible(request, who, request.match_info["topic"])


@operation(
    "List topics (Kafka REST Proxy v3)",
    replies={200: Reply("The topics of the streams the key may see.", TopicListV3)},
    errors={404: "No cluster with this id."},
    tags=("restproxy",),
    error_body=ProxyErrorOut,
    security=SECURITY,
)
async def list_topics_v3(request: web.Request) -> web.Response:
    """GET /v3/clusters/{cluster_id}/topics: the topics of the streams this key may write to."""
    who = principal(request)
    _check_cluster(request)
    streams = sorted(
        (s for s in gateway_of(request).catalog.streams() if not s.archived and who.may_append(s.name)),
        key=lambda s: s.topic,
    )
    data = [_topic_v3(request, s) for s in streams]
    return json_reply(TopicListV3("KafkaTopicList", ClusterListMeta(_topics_url(request)), data))


@operation(
    "Describe a topic (Kafka REST Proxy v3)",
    replies={200: Reply("The topic.", TopicV3)},
    errors={404: "Cluster (404) or topic (40401) not found."},
    tags=("restproxy",),
    error_body=ProxyErrorOut,
    security=SECURITY,
)
async def get_topic_v3(request: web.Request) -> web.Response:
    """GET /v3/clusters/{cluster_id}/topics/{topic}."""
    return json_reply(_topic_v3(request, _v3_topic(request)))


@operation(
    "List a topic's partitions (Kafka REST Proxy v3)",
    replies={200: Reply("The topic's partitions.", PartitionListV3)},
    errors={404: "Cluster or topic not found."},
    tags=("restproxy",),
    error_body=ProxyErrorOut,
    security=SECURITY,
)
async def list_partitions_v3(request: web.Request) -> web.Response:
    """GET /v3/clusters/{cluster_id}/topics/{topic}/partitions."""
    stream = _v3_topic(request)
    data = [_partition_v3(request, stream, p) for p in range(stream.shards)]
    url = f"{_topics_url(request)}/{stream.topic}/partitions"
    return json_reply(PartitionListV3("KafkaPartitionList", ClusterListMeta(url), data))


@operation(
    "Describe a partition (Kafka REST Proxy v3)",
    replies={200: Reply("The partition.", PartitionV3)},
    errors={404: "Cluster, topic or partition not found."},
    tags=("restproxy",),
    error_body=ProxyErrorOut,
    security=SECURITY,
)
async def get_partition_v3(request: web.Request) -> web.Response:
    """GET /v3/clusters/{cluster_id}/topics/{topic}/partitions/{partition_id}."""
    stream = _v3_topic(request)
    text = request.match_info["partition_id"]
    partition = int(text) if text.isdigit() and len(text) < 10 else -1
    if not 0 <= partition < stream.shards:
        raise partition_not_found()
    return json_reply(_partition_v3(request, stream, partition))


__all__ = ["render_error", "routes"]


def routes() -> list[Route]:
    """The v3 produce route (its errors render as the REST proxy dialect's)."""
    topics = "/v3/clusters/{cluster_id}/topics"
    return [
        ("POST", topics + "/{topic}/records", produce_v3_stream),
        ("GET", topics, list_topics_v3),
        ("GET", topics + "/{topic}", get_topic_v3),
        ("GET", topics + "/{topic}/partitions", list_partitions_v3),
        ("GET", topics + "/{topic}/partitions/{partition_id}", get_partition_v3),
    ]
