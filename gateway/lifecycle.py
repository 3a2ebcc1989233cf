"""The gateway's lifecycle, owned in one place: starting → ready → draining → stopped.

The application's start-up and shutdown hooks move it forward (`connected`, `drain`, `stop`); the
middleware, the ingest service and `/readyz` only read it. It never moves backwards."""

from __future__ import annotations

import asyncio
import enum


class Phase(enum.IntEnum):
    """Where the process is in its life; the order matters (a phase never goes back)."""

    STARTING = 0  # the sink has not connected yet
    READY = 1  # the sink connected once (it may be unreachable now: see Sink.available)
    DRAINING = 2  # refusing new requests, flushing what is queued
    STOPPED = 3  # queues stopped, sink closed


class Lifecycle:
    """The one owner of the phase; everything else reads `phase` or the two properties."""

    __slots__ = ("_catalog", "phase")

    def __init__(self) -> None:
        self.phase = Phase.STARTING
        self._catalog = asyncio.Event()

    def catalog_loaded(self) -> None:
        """The catalog has been read (it stays loaded)."""
        self._catalog.set()

    async def wait_catalog(self) -> None:
        """Return once the catalog has been read (for tools and tests: no polling)."""
        await self._catalog.wait()

    def _advance(self, phase: Phase) -> None:
        self.phase = max(self.phase, phase)

    def connected(self) -> None:
        """The sink connected for the first time."""
        self._advance(Phase.READY)

    def drain(self) -> None:
        """Shutdown began: refuse new requests from now on."""
        self._advance(Phase.DRAINING)

    def stop(self) -> None:
        """Everything is closed."""
        self._advance(Phase.STOPPED)

    @property
    def draining(self) -> bool:
        """True from the start of shutdown on (draining or stopped)."""
        return self.phase >= Phase.DRAINING

    @property
    def sink_started(self) -> bool:
        """True once the sink has connected (it stays true while draining)."""
        return self.phase >= Phase.READY
