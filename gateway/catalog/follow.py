"""Keeps a worker's cached catalog in step with the file that sibling workers write.

Worker processes (`serve --workers N`) share `<data-dir>/catalog.json`; a stream or key created
through one worker must be honoured by the others. Each worker polls the file's identity (inode,
size, modification time) and reloads the catalog when it changed. Two workers changing the catalog
at the same instant can still lose one change (last writer wins); the Kafka-backed catalog
resolves concurrent writes.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from gateway.catalog.store import Catalog

log = logging.getLogger(__name__)


def _identity(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


async def follow_file(catalog: Catalog, path: Path, interval_s: float = 0.25) -> None:
    """Reload `catalog` whenever `path` is replaced or changed; runs until cancelled."""
    seen = _identity(path)
    while True:
        await asyncio.sleep(interval_s)
        now = _identity(path)
        if now == seen:
            continue
        try:
            await catalog.reload()
        except (OSError, ValueError) as exc:  # a file being replaced right now: try again next tick
            log.warning("could not reload the catalog from %s: %s", path, exc)
            continue
        seen = now
