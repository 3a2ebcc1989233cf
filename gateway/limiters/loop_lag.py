"""How far the event loop is behind: a timer due every TICK_S notes how late it ran. When the one
core is saturated, every request waits behind the callbacks queued before it; that wait is the lag."""

from __future__ import annotations

import asyncio

TICK_S = 0.02


class LoopLag:
    """The lateness of the last tick of a timer that runs every TICK_S on the running loop,
    started on the first `lag()` call (no loop is needed to build the gateway)."""

    __slots__ = ("_due", "_handle", "_lag", "_loop")

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0
        self._lag = 0.0

    def lag(self) -> float:
        """Seconds the loop was behind at the last tick (0 until the first tick)."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._schedule(self._loop.time())
        return self._lag

    def _schedule(self, now: float) -> None:
        assert self._loop is not None
        self._due = now + TICK_S
        self._handle = self._loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        self._lag = max(0.0, now - self._due)
        self._schedule(now)

    def stop(self) -> None:
        """Stop the timer (a later `lag()` starts it again)."""
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self._loop = None
        self._lag = 0.0
