"""The catalog: streams and API keys held in memory, changed only by replaying a backend's log.

Every write becomes a `Change` appended to the backend (a compacted Kafka topic shared by all
replicas, or a local file); the catalog applies changes as the backend hands them back, in log
order, with the rule of `gateway.catalog.changes`. A write returns once its own change has come
back, so a replica's view is always a prefix of the log and every replica reaches the same state.

Repairs: in a compacted log only the last record of a key survives. When that record is one the
rule ignored (the loser of a race), a replica reading the log later would see it alone and apply
it. So after a change is ignored, its writer re-appends the entity's current value with
`wid == prev == current version` (a *repair*: it matches the version, so every replica applies it,
and it changes nothing). Other replicas do the same after a few seconds if the writer did not
(it may have died). A repair can itself be ignored when a real change overtook it; then it is
repaired in turn. A replica writes at most MAX_REPAIRS repairs of a key between two real changes,
so replicas that disagree (which cannot happen unless records were lost) never loop forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import Callable
from typing import Protocol, TypeVar

from gateway.catalog.changes import (
    ABSENT,
    Change,
    admits,
    api_key_key,
    decode,
    encode,
    entity,
    put,
    stream_key,
)
from gateway.catalog.model import ApiKey, CatalogState, Stream
from gateway.errors import Conflict, GatewayError, NotConfirmed, Unavailable

log = logging.getLogger(__name__)
READBACK_TIMEOUT_S = 10.0  # how long a write waits to read its own change back
REPAIR_DELAY_S = 3.0  # other replicas repair after this (plus up to as much again, at random)
WRITE_ATTEMPTS = 5
MAX_REPAIRS = 3  # deletes retry on the newer version when they lose a race
_T = TypeVar("_T")

StreamWatcher = Callable[[str, Stream | None, Stream | None], None]  # name, before, after


class Backend(Protocol):
    """Where the catalog's changes are kept: a local file, or a compacted Kafka topic."""

    async def start(self, catalog: Catalog) -> None:
        """Hand every stored change to `catalog.apply`, return once caught up, then keep following
        (raise `Unavailable` when the store cannot be reached; the caller retries)."""

    async def append(self, change: Change) -> None:
        """Store a change. It reaches `catalog.apply` in log order, possibly before this returns."""

    async def close(self) -> None:
        """Stop following and disconnect."""


class Catalog:
    """Reads never wait on I/O; writes go through the backend and are visible once read back."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._state = CatalogState()
        self._versions: dict[str, str] = {}  # log key -> version; present = key seen
        self._ignored_last: set[str] = set()  # keys whose latest record was ignored
        self._repairs: dict[str, int] = {}  # key -> repairs written since its last real change
        self._pending: dict[str, asyncio.Future[bool]] = {}  # wid -> applied?
        self._watchers: list[StreamWatcher] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self.loaded = False

    async def start(self) -> None:
        """Replay the backend's log; `loaded` once caught up. Raises `Unavailable` (retry)."""
        # A failed attempt may have applied part of the log: every attempt replays it all.
        self._state = CatalogState()
        self._versions.clear()
        self._ignored_last.clear()
        await self._backend.start(self)
        self.loaded = True
        for key in list(self._ignored_last):
            self._schedule_repair(key, own=False)

    async def close(self) -> None:
        """Stop repairs and the backend."""
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._backend.close()

    def watch_streams(self, watcher: StreamWatcher) -> None:
        """Call `watcher(name, before, after)` after each applied change of a stream (None:
        absent)."""
        self._watchers.append(watcher)

    # ---- reads (no I/O) ---------------------------------------------------------------------
    def _require_loaded(self) -> None:
        if not self.loaded:
            raise Unavailable("the catalog is still loading; retry shortly", retry_after=1.0)

    def stream(self, name: str) -> Stream | None:
        """The stream called `name`, if any."""
        self._require_loaded()
        return self._state.streams.get(name)

    def streams(self) -> list[Stream]:
        """All streams, by name."""
        self._require_loaded()
        return [self._state.streams[n] for n in sorted(self._state.streams)]

    def api_key(self, key_id: str) -> ApiKey | None:
        """The API key with this id, if any."""
        self._require_loaded()
        return self._state.keys.get(key_id)

    def api_keys(self) -> list[ApiKey]:
        """All API keys, oldest first."""
        self._require_loaded()
        return sorted(self._state.keys.values(), key=lambda k: (k.created_at, k.id))

    def snapshot(self) -> CatalogState:
        """A copy of the whole state (the file backend persists it)."""
        return CatalogState(streams=dict(self._state.streams), keys=dict(self._state.keys))

    def version(self, key: str) -> str | None:
        """The current version of a log key (None: never seen)."""
        return self._versions.get(key)

    # ---- the log ------------------------------------------------------------------------------
    def admits(self, change: Change) -> bool:
        """Whether `apply` would apply this change now."""
        return admits(self._versions, change)

    def apply(self, change: Change) -> bool:
        """Apply the next change of the log if the rule admits it; True when it was applied."""
        applied = False
        if self.admits(change):
            try:
                record = decode(change)
            except ValueError as exc:
                log.warning("catalog: skipping a record: %s", exc)
            else:
                applied = True
                self._versions[change.key] = change.wid if record is not None else ABSENT
                self._ignored_last.discard(change.key)
                if not change.repair:
                    self._repairs.pop(change.key, None)
                kind = entity(change.key)
                before = self._state.streams.get(kind[1]) if kind and kind[0] == "stream" else None
                put(self._state, change.key, record)
                if kind and kind[0] == "stream" and not isinstance(record, ApiKey):
                    self._notify(kind[1], before, record)
        elif entity(change.key) is not None:
            log.info("catalog: ignored a change of %s based on an outdated version (lost a race)", change.key)
            self._ignored_last.add(change.key)
            if self.loaded:  # while loading, start() schedules them
                self._schedule_repair(change.key, own=change.wid in self._pending)
        waiter = self._pending.pop(change.wid, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(applied)
        return applied

    def _notify(self, name: str, before: Stream | None, after: Stream | None) -> None:
        for watcher in self._watchers:
            try:
                watcher(name, before, after)
            except Exception:
                log.exception("catalog: a stream watcher failed")

    # ---- repairs ------------------------------------------------------------------------------
    def _schedule_repair(self, key: str, *, own: bool) -> None:
        if self._closed:
            return
        delay = 0.0 if own else REPAIR_DELAY_S * (1 + random.random())
        task = asyncio.get_running_loop().create_task(self._repair_later(key, delay))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _repair_later(self, key: str, delay: float) -> None:
        await asyncio.sleep(delay)
        if not self._closed and key in self._ignored_last:  # else a later change superseded it
            await self._repair(key)

    async def _repair(self, key: str) -> None:
        count = self._repairs.get(key, 0)
        if count >= MAX_REPAIRS:
            if count == MAX_REPAIRS:
                log.error(
                    "catalog: replicas disagree about %s (repairs keep being ignored); "
                    "records of the catalog topic may have been lost",
                    key,
                )
                self._repairs[key] = count + 1
            return
        self._repairs[key] = count + 1
        version = self._versions.get(key, ABSENT)
        kind = entity(key)
        record: Stream | ApiKey | None = None
        if kind is not None and version != ABSENT:
            record = (self._state.streams if kind[0] == "stream" else self._state.keys).get(kind[1])
        try:
            await self._backend.append(Change(key, encode(record) if record else None, version, version))
        except GatewayError as exc:  # unavailable, or not acknowledged in time
            log.warning("catalog: could not repair %s: %s", key, exc.message)

    # ---- writes -------------------------------------------------------------------------------
    async def _write(self, key: str, value: bytes | None) -> bool:
        """Append a change based on the current version; True when the log applied it."""
        self._require_loaded()
        change = Change(key, value, uuid.uuid4().hex, self._versions.get(key, ABSENT))
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending[change.wid] = waiter
        try:
            await self._backend.append(change)
            try:
                async with asyncio.timeout(READBACK_TIMEOUT_S):
                    return await waiter
            except TimeoutError:
                raise NotConfirmed(
                    "the catalog change was written but not read back within "
                    f"{READBACK_TIMEOUT_S:g} s; it may still take effect"
                ) from None
        finally:
            self._pending.pop(change.wid, None)

    async def put_stream(self, stream: Stream, *, create: bool) -> bool:
        """Create a stream (`create`: the name must be free) or replace one (it must exist).

        False when the name is taken (create) or the stream is gone (replace), or when another
        change of the same stream came first in the log: the caller answers 409.
        """
        self._require_loaded()
        if (stream.name in self._state.streams) == create:
            return False
        return await self._write(stream_key(stream.name), encode(stream))

    async def _delete(self, key: str, current: Callable[[], _T | None], what: str) -> _T | None:
        """Write a tombstone for `key` unless `current()` finds nothing; retried when another
        change of the same record came first in the log."""
        for _ in range(WRITE_ATTEMPTS):
            self._require_loaded()
            gone = current()
            if gone is None:
                return None
            if await self._write(key, None):
                return gone
        raise Unavailable(f"{what} keeps changing; retry", retry_after=1.0)

    async def delete_stream(self, name: str) -> Stream | None:
        """Remove a stream; returns it, or None when there was none."""
        return await self._delete(stream_key(name), lambda: self._state.streams.get(name), f"stream {name!r}")

    async def put_key(self, key: ApiKey) -> None:
        """Store a new API key record (409 in the astronomically unlikely case of an id clash)."""
        self._require_loaded()
        if key.id in self._state.keys or not await self._write(api_key_key(key.id), encode(key)):
            raise Conflict("an API key with this id exists; retry")

    async def delete_key(self, key_id: str) -> ApiKey | None:
        """Remove an API key; returns it, or None when there was none."""
        return await self._delete(api_key_key(key_id), lambda: self._state.keys.get(key_id), "the API key")
