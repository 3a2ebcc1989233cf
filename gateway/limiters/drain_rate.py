"""The measured drain rate of one queue: rows and bytes the sink acknowledged over the last seconds."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

WINDOW_S = 5.0


class DrainRate:
    """Acknowledged rows and bytes per second over a sliding window of `window_s` seconds."""

    __slots__ = ("_born", "_bytes", "_clock", "_events", "_rows", "window_s")

    def __init__(self, window_s: float = WINDOW_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self._clock = clock
        self._born = clock()
        self._events: deque[tuple[float, int, int]] = deque()
        self._rows = 0
        self._bytes = 0

    def record(self, rows: int, nbytes: int) -> None:
        """The sink acknowledged `rows` records of `nbytes` bytes just now."""
        now = self._clock()
        self._events.append((now, rows, nbytes))
        self._rows += rows
        self._bytes += nbytes
        self._trim(now)

    def _trim(self, now: float) -> None:
        events = self._events
        while events and events[0][0] < now - self.window_s:
            _, rows, nbytes = events.popleft()
            self._rows -= rows
            self._bytes -= nbytes

    def rates(self) -> tuple[float, float] | None:
        """(rows/s, bytes/s) over the window, or None when nothing was acknowledged in it."""
        now = self._clock()
        self._trim(now)
        if not self._rows:
            return None
        span = max(0.5, min(self.window_s, now - self._born))
        return self._rows / span, self._bytes / span
