"""The one ingest entry point every dialect calls: `IngestService.ingest(IngestRequest)`.

It runs, in this order for every dialect: readiness/draining gate → the key's request rate →
scope check (by name, before the lookup: a stream outside the key's scope gets the dialect's one
answer whether it exists or not) → stream lookup → the dialect's own stream check → archived
check → early refusal →
streamed decode and validation (optionally splitting invalid rows off to quarantine) → enqueue →
optional wait for Kafka's acknowledgement. No body byte is read before the scope check, except
where the body itself names the stream (the data-source API): there a key that may append to no
stream is refused first, and the body is read under a decoding slot and the memory cap from its
first byte, only as far as the name before the lookup and scope check. It returns an `Outcome`
or raises a typed `GatewayError`, which the dialect renders in its own reply format. No HTTP
here: a dialect turns its request into an `IngestRequest` (stream name, a `Payload`, flags) and
the outcome into a reply.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from gateway import metrics
from gateway.admission import Admission, BodyHold
from gateway.auth import Principal
from gateway.catalog.model import Stream
from gateway.catalog.store import Catalog
from gateway.errors import BadRequest, Conflict, Forbidden, GatewayError, InvalidRow, NotFound
from gateway.ingest.formats import Format, decode
from gateway.ingest.quarantine import KeptChunks, Split, quarantine_values, split_rows
from gateway.ingest.schema import CompiledSchema, SchemaCache
from gateway.pipeline import Outcome, Pipeline


class Payload(Protocol):
    """A request body the entry point decodes once the stream is known and admitted."""

    nbytes: int  # body bytes read so far: counted as rejected when the request fails
    # True for a payload that can write a pass-through stream's values as sent (REST proxy)
    as_sent: bool

    async def rows(self, schema: CompiledSchema, hold: Callable[[int], None]) -> Split:
        """The body's rows validated against `schema` (invalid ones in `bad` when quarantining;
        otherwise the first invalid row raises InvalidRow). `hold(n)` before buffering n more
        bytes of the body (it raises when the memory cap cannot take them)."""
        ...


class StreamedBody:
    """A body decoded as its chunks arrive, in one of the ingest formats (or the one a function
    picks from the stream's schema); with `quarantine`
    (NDJSON only), rows that are JSON but do not fit the schema are split off instead of failing
    the request: the fast streamed decode runs first, and only when it meets an invalid row is
    the kept body split object by object."""

    def __init__(
        self,
        fmt: Format | Callable[[CompiledSchema], Format],
        chunks: AsyncIterable[bytes],
        *,
        quarantine: bool = False,
    ) -> None:
        self.fmt = fmt
        self.quarantine = quarantine
        self._chunks = chunks
        self.nbytes = 0

    as_sent = False  # rows only: a pass-through stream is refused (see IngestService._admitted)

    async def _counted(
        self, chunks: AsyncIterable[bytes], hold: Callable[[int], None]
    ) -> AsyncIterator[bytes]:
        async for chunk in chunks:
            self.nbytes += len(chunk)
            hold(len(chunk))
            yield chunk

    async def rows(self, schema: CompiledSchema, hold: Callable[[int], None]) -> Split:
        fmt = self.fmt if isinstance(self.fmt, Format) else self.fmt(schema)
        if not self.quarantine or fmt is not Format.STREAMING:
            return Split(await decode(fmt, self._counted(self._chunks, hold), schema), [])
        kept = KeptChunks(self._chunks)
        try:
            return Split(await decode(fmt, self._counted(kept, hold), schema), [])
        except InvalidRow:
            pass
        async for _ in self._counted(kept, hold):  # the rest, held like what came before it
            pass
        body = await kept.whole()
        self.nbytes = len(body)
        return split_rows(schema, body)


def _forbidden(name: str) -> GatewayError:
    return Forbidden(f"this key may not append to stream {name!r}")


@dataclass(frozen=True, slots=True)
class Wording:
    """How a dialect words the refusals every dialect has (its vendor's messages). `hidden` is
    the error for a stream outside the key's scope, the same whether the stream exists or not
    (403 by default; 404 where the vendor's contract has no 403, as data sources)."""

    not_found: Callable[[str], str] = lambda name: f"stream {name!r} does not exist"
    archived: Callable[[str], str] = lambda name: f"stream {name!r} is archived"
    hidden: Callable[[str], GatewayError] = _forbidden


DEFAULT_WORDING = Wording()


@dataclass(slots=True)
class IngestRequest:
    """What a dialect parsed from its request."""

    # The stream's name, or (when the name is in the body) a coroutine function that reads the
    # body as far as the name, calling `hold(n)` before buffering n more bytes; it is awaited
    # after the gate (a 503 never depends on the body), holding a decoding slot.
    stream: str | Callable[[Callable[[int], None]], Awaitable[str]]
    payload: Payload
    who: Principal
    wait: bool = False
    request_id: str = ""
    wording: Wording = DEFAULT_WORDING  # frozen: one shared, not one made per request
    check: Callable[[Stream], None] | None = None  # the dialect's own test of the stream (raises)
    allow_empty: bool = False  # a body with no rows is accepted (else 400)


QuarantineTopics = Callable[[Stream], Awaitable[None]]


class IngestService:
    """The ingest path shared by every dialect (see the module docstring for its order)."""

    def __init__(
        self,
        catalog: Catalog,
        schemas: SchemaCache,
        admission: Admission,
        pipeline: Pipeline,
        ensure_quarantine: QuarantineTopics,
    ) -> None:
        self.catalog = catalog
        self.schemas = schemas
        self.admission = admission
        self.pipeline = pipeline
        self.ensure_quarantine = ensure_quarantine

    async def ingest(self, req: IngestRequest) -> Outcome:
        """Run one request through the ingest path; an Outcome, or a typed GatewayError."""
        self.admission.gate()
        # before the stream lookup (a key probing names pays for it too) and before any body byte
        headers = self.admission.key_rate(req.who)
        if isinstance(req.stream, str):
            stream = self._admitted(req, req.stream)
            self.admission.early(stream)
            held = self.admission.hold_body(stream, req.who)
        else:  # the body names the stream: held from its first byte
            req.who.require_append_some()
            held = self.admission.hold_body(None, req.who)
            try:
                stream = self._admitted(req, await req.stream(held.hold))
                self.admission.early(stream)
            except BaseException:
                held.release()
                raise
        split = await self._decode(stream, req.payload, held)
        if not split.rows and not split.bad:
            if req.allow_empty:
                return Outcome(0, acknowledged=req.wait, headers=headers)
            raise BadRequest("the body holds no rows")
        quarantine = None
        if split.bad:
            await self.ensure_quarantine(stream)
            quarantine = quarantine_values(
                split.bad, stream=stream.name, request_id=req.request_id, schema_version=stream.schema_version
            )
        # handed over, not kept here: the pipeline frees the decoded rows before it waits
        outcome = await self.pipeline.admit(
            stream, split.take_rows(), wait=req.wait, quarantine=quarantine, meta=split.meta
        )
        outcome.headers = headers
        return outcome

    def _admitted(self, req: IngestRequest, name: str) -> Stream:
        """The stream `name`, if the key may append to it (checked before the lookup: a stream
        outside the scope gets the dialect's one answer whether it exists or not; 403 for one it
        may only read), it exists, passes the dialect's check, is not archived, and is not a
        pass-through stream unless the payload writes values as sent."""
        if not req.who.may_append(name):
            # A key that may read the stream sees it anyway: it is told it may not write there.
            raise _forbidden(name) if req.who.may_read(name) else req.wording.hidden(name)
        stream = self.catalog.stream(name)
        if stream is None:
            raise NotFound(req.wording.not_found(name))
        if req.check is not None:
            req.check(stream)
        if stream.archived:
            raise Conflict(req.wording.archived(name))
        if stream.passthrough and not req.payload.as_sent:
            raise Conflict(
                f"stream {name!r} is a pass-through stream: its values are written as sent "
                "through the Kafka REST proxy API (POST /topics/{topic}), not as rows"
            )
        return stream

    async def _decode(self, stream: Stream, payload: Payload, held: BodyHold) -> Split:
        """Decode and validate the body, its bytes held against the memory cap meanwhile (and
        the decoding slot given back after); they count as rejected when it fails."""
        try:
            return await payload.rows(self.schemas.get(stream), held.hold)
        except GatewayError as err:
            metrics.BYTES_REJECTED.labels(stream=stream.name, cause=err.code).inc(payload.nbytes)
            raise
        finally:
            held.release()
