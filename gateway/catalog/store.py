"""The catalog: streams and API keys cached in memory, every change persisted through a backend."""

from __future__ import annotations

import asyncio
from typing import Protocol

from gateway.catalog.model import ApiKey, CatalogState, Stream


class Backend(Protocol):
    """Where the catalog persists (a local file now; a compacted Kafka topic later)."""

    async def load(self) -> CatalogState: ...

    async def save(self, state: CatalogState) -> None: ...


class Catalog:
    """Reads never wait on I/O; writes are serialised and persisted before they are visible."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._state = CatalogState()
        self._lock = asyncio.Lock()
        self.loaded = False

    async def load(self) -> None:
        """Load the persisted state into memory."""
        self._state = await self._backend.load()
        self.loaded = True

    async def reload(self) -> None:
        """Read the persisted state again (another process that shares the backend changed it)."""
        async with self._lock:
            self._state = await self._backend.load()

    # ---- reads (no I/O) ---------------------------------------------------------------------
    def stream(self, name: str) -> Stream | None:
        """The stream called `name`, if any."""
        return self._state.streams.get(name)

    def streams(self) -> list[Stream]:
        """All streams, by name."""
        return [self._state.streams[n] for n in sorted(self._state.streams)]

    def api_key(self, key_id: str) -> ApiKey | None:
        """The API key with this id, if any."""
        return self._state.keys.get(key_id)

    def api_keys(self) -> list[ApiKey]:
        """All API keys, oldest first."""
        return sorted(self._state.keys.values(), key=lambda k: (k.created_at, k.id))

    # ---- writes -----------------------------------------------------------------------------
    async def _commit(self, state: CatalogState) -> None:
        await self._backend.save(state)
        self._state = state

    async def put_stream(self, stream: Stream, *, create: bool) -> bool:
        """Store a stream; with `create`, only if the name is free. False when it was taken."""
        async with self._lock:
            if create and stream.name in self._state.streams:
                return False
            streams = dict(self._state.streams)
            streams[stream.name] = stream
            await self._commit(CatalogState(streams=streams, keys=self._state.keys))
            return True

    async def delete_stream(self, name: str) -> Stream | None:
        """Remove a stream; returns it, or None when there was none."""
        async with self._lock:
            streams = dict(self._state.streams)
            gone = streams.pop(name, None)
            if gone is not None:
                await self._commit(CatalogState(streams=streams, keys=self._state.keys))
            return gone

    async def put_key(self, key: ApiKey) -> None:
        """Store an API key record."""
        async with self._lock:
            keys = dict(self._state.keys)
            keys[key.id] = key
            await self._commit(CatalogState(streams=self._state.streams, keys=keys))

    async def delete_key(self, key_id: str) -> ApiKey | None:
        """Remove an API key; returns it, or None when there was none."""
        async with self._lock:
            keys = dict(self._state.keys)
            gone = keys.pop(key_id, None)
            if gone is not None:
                await self._commit(CatalogState(streams=self._state.streams, keys=keys))
            return gone
