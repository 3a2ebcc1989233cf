"""Catalog persistence in one local JSON file, replaced atomically on every change."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import msgspec

from gateway.catalog.model import CatalogState


class FileBackend:
    """Keeps the catalog in `<data-dir>/catalog.json`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def load(self) -> CatalogState:
        """Read the file; an absent file is an empty catalog."""
        def read() -> CatalogState:
            if not self.path.exists():
                return CatalogState()
            return msgspec.json.decode(self.path.read_bytes(), type=CatalogState)
        return await asyncio.get_running_loop().run_in_executor(None, read)

    async def save(self, state: CatalogState) -> None:
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
