"""Catalog persistence in one local JSON file (embedded mode), replaced atomically on every change."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

import msgspec

from gateway.catalog.changes import ABSENT, Change, api_key_key, decode, encode, put, stream_key
from gateway.catalog.model import CatalogState
from gateway.catalog.store import Catalog


class FileBackend:
    """Keeps the catalog in `<data-dir>/catalog.json`: a one-process log whose changes are applied
    (with the same rule as in Kafka mode) right after the file is written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._catalog: Catalog | None = None
        self._lock = asyncio.Lock()

    async def start(self, catalog: Catalog) -> None:
        """Read the file (absent = empty catalog) and replay it as one change per record."""

        def read() -> CatalogState:
            if not self.path.exists():
                return CatalogState()
            return msgspec.json.decode(self.path.read_bytes(), type=CatalogState)

        state = await asyncio.get_running_loop().run_in_executor(None, read)
        self._catalog = catalog
        for name, stream in state.streams.items():
            catalog.apply(Change(stream_key(name), encode(stream), uuid.uuid4().hex, ABSENT))
        for key_id, key in state.keys.items():
            catalog.apply(Change(api_key_key(key_id), encode(key), uuid.uuid4().hex, ABSENT))

    async def append(self, change: Change) -> None:
        """Persist the state the change leads to (if the rule admits it), then apply it."""
        assert self._catalog is not None, "append before start"
        async with self._lock:  # one change at a time: the catalog changes only through here
            if self._catalog.admits(change):
                state = self._catalog.snapshot()
                put(state, change.key, decode(change))
                await self._save(state)
            self._catalog.apply(change)

    async def close(self) -> None:
        """Nothing to release."""

    async def _save(self, state: CatalogState) -> None:
        """Write the whole state to a temporary file, fsync it and rename it over the old one."""
        data = msgspec.json.format(msgspec.json.encode(state), indent=2)

        def write() -> None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)

        await asyncio.get_running_loop().run_in_executor(None, write)
