"""Stream management shared by the dialects: create, update and delete streams with their topics."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import msgspec

from gateway.catalog.model import (
    COMPATIBILITY_MODES,
    MODES,
    ON_ERROR,
    PARTITIONERS,
    Stream,
    valid_stream_name,
)
from gateway.catalog.store import Catalog
from gateway.errors import BadRequest, Conflict, NotFound, Unprocessable, failed
from gateway.evolution.versions import evolve
from gateway.ingest.schema import SchemaCache, SchemaError, check_columns
from gateway.queues import Queues
from gateway.sinks.base import SinkUnavailable, TopicAdmin, TopicRefused

# How long a deleted stream's flush in progress may go on (so no batch is left half sent).
DELETE_GRACE_S = 5.0


def now_text() -> str:
    """The catalog's timestamp format (`2023-02-01 23:22:59`, UTC)."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")


@dataclass(slots=True)
class StreamDefaults:
    """Settings applied where a create request leaves a field out (or sends null / 0)."""

    topic_prefix: str
    shards: int
    replication_factor: int
    # bounds on what a creator can make (each a 400 naming its setting)
    max_shards: int = 256
    max_columns: int = 1000
    max_schema_versions: int = 100
    max_record_bytes: int = 256 * 1024


def check_bounds(stream: Stream, d: StreamDefaults, *, record: bool = True) -> None:
    """400 naming the limit when the stream has more shards, columns or schema versions than the
    settings allow, or (with `record`) its catalog record is too large."""
    if stream.shards > d.max_shards:
        raise BadRequest(f"shards: at most {d.max_shards} (--max-shards), got {stream.shards}")
    if len(stream.columns) > d.max_columns:
        raise BadRequest(
            f"columns: at most {d.max_columns} per stream (--max-columns), got {len(stream.columns)}"
        )
    if stream.schema_version > d.max_schema_versions:
        raise BadRequest(
            f"stream {stream.name!r} has {d.max_schema_versions} schema versions, "
            "the most a stream may have (--max-schema-versions): create a new "
            "stream for further changes"
        )
    size = len(msgspec.json.encode(stream)) if record else 0
    if size > d.max_record_bytes:
        raise BadRequest(
            f"the stream's definition (every schema version included) would be "
            f"{size} bytes, over {d.max_record_bytes} (--max-stream-record-bytes)"
        )


def check_partitioner(name: object) -> None:
    """400 naming the partitioners when `name` is not one of them."""
    if name not in PARTITIONERS:
        raise BadRequest(
            f"invalid partitioner {name!r}; one of {', '.join(PARTITIONERS)} (murmur2: Java "
            "clients and Confluent REST Proxy; consistent_random: librdkafka clients and Karapace)"
        )


def check_passthrough(stream: Stream) -> None:
    """400 for a pass-through or compacted stream of a shape that cannot be one: a pass-through
    stream's Kafka keys are its clients', so it has no `*_kv` mode; only a pass-through stream is
    `compacted` (other streams' records are unkeyed, or compacted by their `*_kv` mode)."""
    if stream.passthrough and stream.keyed:
        raise BadRequest(
            f"a pass-through stream takes its Kafka keys from its clients: mode {stream.mode!r} "
            "(which keys records by the primary key) cannot be one"
        )
    if stream.compacted and not stream.passthrough:
        raise BadRequest("compacted: only a pass-through stream (passthrough: true) can be compacted")


class StreamService:
    """Validates stream definitions, manages their topics, and keeps the catalog in step."""

    def __init__(
        self,
        catalog: Catalog,
        topics: TopicAdmin,
        queues: Queues,
        schemas: SchemaCache,
        defaults: StreamDefaults,
        on_gone: Callable[[Stream], None] | None = None,
    ) -> None:
        self.on_gone = on_gone  # drops a deleted stream's metrics, limiters, producer state
        self.catalog = catalog
        self.topics = topics
        self.queues = queues
        self.schemas = schemas
        self.defaults = defaults
        self._quarantine_ready: set[str] = set()  # topics known to have their quarantine topic
        self._update_lock = asyncio.Lock()
        self._dropping: set[asyncio.Task[None]] = set()
        catalog.watch_streams(self._changed)

    def _changed(self, name: str, before: Stream | None, after: Stream | None) -> None:
        """A stream changed in the catalog (here or on another replica): drop what is stale."""
        self.schemas.forget(name)  # recompiled from the new definition on next use
        if before is None or after is not None:
            return
        # Deleted (its topics too): its queues go now, so rows for a stream re-created meanwhile
        # get new ones, and its quarantine topic must be made again.
        self._quarantine_ready.discard(before.topic)
        deleting = [
            queue.delete(DELETE_GRACE_S)  # its waiting requests get 404, its rows go
            for queue in (
                self.queues.detach(name, before.topic),
                self.queues.detach(before.quarantine_topic, before.quarantine_topic),
            )
            if queue is not None
        ]
        task = asyncio.get_running_loop().create_task(self._gone(before, deleting))
        self._dropping.add(task)
        task.add_done_callback(self._dropping.discard)

    async def _gone(self, stream: Stream, deleting: list[Coroutine[Any, Any, None]]) -> None:
        """Once a deleted stream's queues are dropped, forget everything kept under its name
        (unless a stream of that name was created again meanwhile)."""
        await asyncio.gather(*deleting, return_exceptions=True)
        if self.on_gone is not None and self.catalog.stream(stream.name) is None:
            self.on_gone(stream)

    def get(self, name: str) -> Stream:
        """The stream, or 404."""
        stream = self.catalog.stream(name)
        if stream is None:
            raise NotFound(f"stream {name!r} does not exist")
        return stream

    def prepare(self, stream: Stream) -> Stream:
        """Fill defaults and validate a stream definition; 400 with the reason when invalid."""
        if not valid_stream_name(stream.name):
            raise BadRequest(
                f"invalid stream name {stream.name!r}: use at most 64 letters, digits"
                " or _, starting with a letter"
            )
        if stream.mode not in MODES:
            raise BadRequest(f"invalid mode {stream.mode!r}; one of {', '.join(MODES)}")
        check_partitioner(stream.partitioner)
        check_passthrough(stream)
        stream = msgspec.structs.replace(
            stream,
            topic=self.defaults.topic_prefix + stream.name,
            shards=stream.shards if stream.shards > 0 else self.defaults.shards,
            replication_factor=(
                stream.replication_factor
                if stream.replication_factor > 0
                else self.defaults.replication_factor
            ),
        )
        check_bounds(stream, self.defaults, record=False)  # before compiling the columns
        try:
            check_columns(stream)
        except SchemaError as exc:
            raise BadRequest(str(exc)) from None
        return stream

    async def create(self, stream: Stream, created_by: str) -> Stream:
        """Validate, create the topic, then record the stream; 409 when the name is taken."""
        stream = self.prepare(stream)
        if self.catalog.stream(stream.name) is not None:
            raise Conflict(f"stream {stream.name!r} exists")
        now = now_text()
        stream = msgspec.structs.replace(
            stream, created_at=now, last_updated_at=now, created_by=created_by, last_updated_by=created_by
        )
        check_bounds(stream, self.defaults)
        try:
            await self.topics.ensure_topic(stream)
        except TopicRefused as exc:
            raise Unprocessable(str(exc)) from None
        except SinkUnavailable as exc:
            raise failed("could not create the stream's topic", exc) from None
        if not await self.catalog.put_stream(stream, create=True):
            raise Conflict(f"stream {stream.name!r} exists")
        self._quarantine_ready.add(stream.topic)
        return stream

    async def ensure_quarantine(self, stream: Stream) -> None:
        """Make sure the quarantine topic exists (streams made before it existed lack one)."""
        if stream.topic in self._quarantine_ready:
            return
        try:
            await self.topics.ensure_topic(stream)
        except (SinkUnavailable, TopicRefused) as exc:
            raise failed("could not create the quarantine topic; nothing was inserted", exc) from None
        self._quarantine_ready.add(stream.topic)

    async def update(self, name: str, changes: dict[str, object], updated_by: str) -> Stream:
        """Change description, retention, TTL, `archived`, compatibility, on_error, partitioner or
        the schema; retention changes reach the topics before the catalog. Other fields cannot be
        changed (400)."""
        allowed = {
            "description",
            "logstore_retention_ms",
            "logstore_retention_bytes",
            "ttl_expression",
            "archived",
            "compatibility",
            "on_error",
            "partitioner",
            "columns",
            "primary_key",
        }
        if set(changes) - allowed:
            raise BadRequest(
                f"cannot change {', '.join(sorted(set(changes) - allowed))}; only "
                f"{', '.join(sorted(allowed))} can be updated"
            )
        if changes.get("on_error", ON_ERROR[0]) not in ON_ERROR:
            raise BadRequest(f"invalid on_error {changes['on_error']!r}; one of {', '.join(ON_ERROR)}")
        if changes.get("compatibility", COMPATIBILITY_MODES[0]) not in COMPATIBILITY_MODES:
            raise BadRequest(
                f"invalid compatibility {changes['compatibility']!r}; one of {', '.join(COMPATIBILITY_MODES)}"
            )
        if "partitioner" in changes:
            check_partitioner(changes["partitioner"])
        schema: dict[str, object] = {k: changes.pop(k) for k in ("columns", "primary_key") if k in changes}
        async with self._update_lock:
            stream = self.get(name)
            updated = msgspec.structs.replace(
                stream, **changes, last_updated_at=now_text(), last_updated_by=updated_by
            )
            if schema:
                updated = self._new_version(updated, schema, updated_by)
            check_bounds(updated, self.defaults)
            if (updated.logstore_retention_ms, updated.logstore_retention_bytes) != (
                stream.logstore_retention_ms,
                stream.logstore_retention_bytes,
            ):
                try:
                    await self.topics.update_topic(updated)
                except TopicRefused as exc:
                    raise Unprocessable(str(exc)) from None
                except SinkUnavailable as exc:
                    raise failed("could not change the topic's retention", exc) from None
            if self.catalog.stream(name) is not stream or not await self.catalog.put_stream(
                updated, create=False
            ):
                raise Conflict(f"stream {name!r} changed or was deleted meanwhile; retry")
            return updated

    def _new_version(self, stream: Stream, schema: dict[str, object], by: str) -> Stream:
        """The stream with its new schema version (400 when the columns are invalid, 409 when
        its compatibility mode refuses them)."""
        columns = schema.get("columns", stream.columns)
        key = schema.get("primary_key")
        assert isinstance(columns, list) and (key is None or isinstance(key, str))
        check_bounds(msgspec.structs.replace(stream, columns=columns), self.defaults, record=False)
        try:  # an invalid column list is a 400 before any compatibility question
            check_columns(
                msgspec.structs.replace(
                    stream, columns=columns, primary_key=stream.primary_key if key is None else key
                )
            )
        except SchemaError as exc:
            raise BadRequest(str(exc)) from None
        return evolve(stream, columns, key, mode=stream.compatibility, by=by, now=stream.last_updated_at)

    async def delete(self, name: str) -> Stream:
        """Refuse new rows (catalog first), discard the queue, then delete the topic."""
        stream = await self.catalog.delete_stream(name)
        if stream is None:
            raise NotFound(f"stream {name!r} does not exist")
        # Applying the catalog change already ran _changed (queues detached, schema and
        # quarantine state dropped); the queues' flushes in flight must land before the topic goes.
        await asyncio.gather(*self._dropping, return_exceptions=True)
        try:
            await self.topics.delete_topic(stream)
        except SinkUnavailable as exc:
            raise failed("stream removed, but its topic could not be deleted", exc) from None
        return stream
