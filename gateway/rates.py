"""The gateway's own record of what it wrote per stream: a recent rate, first/last times, daily rows.

Kept in memory by each replica (one call per accepted request, never per row); stream stats use it
for `written_eps`/`written_bps` and where the sink cannot tell first/last event times or daily rows.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

WINDOW_S = 10
DAY_S = 86_400
KEEP_DAYS = 8


@dataclass(slots=True)
class _Written:
    seconds: deque[list[int]] = field(default_factory=deque)  # [second, rows, bytes], oldest first
    days: dict[int, int] = field(default_factory=dict)  # UTC day number → rows
    first: float | None = None
    last: float | None = None


class WriteRates:
    """Rows and bytes accepted per stream over the last `window_s` seconds, and per UTC day."""

    def __init__(self, window_s: int = WINDOW_S, clock: Callable[[], float] = time.time) -> None:
        self.window_s = window_s
        self._clock = clock
        self._streams: dict[str, _Written] = {}

    def record(self, stream: str, rows: int, nbytes: int) -> None:
        """Count one request's accepted rows."""
        now = self._clock()
        w = self._streams.get(stream)
        if w is None:
            w = self._streams[stream] = _Written(first=now)
        w.last = now
        second = int(now)
        if w.seconds and w.seconds[-1][0] == second:
            w.seconds[-1][1] += rows
            w.seconds[-1][2] += nbytes
        else:
            w.seconds.append([second, rows, nbytes])
            while w.seconds[0][0] <= second - self.window_s:
                w.seconds.popleft()
        day = second // DAY_S
        w.days[day] = w.days.get(day, 0) + rows
        if len(w.days) > KEEP_DAYS:
            del w.days[min(w.days)]

    def rates(self, stream: str) -> tuple[float, float]:
        """(rows per second, bytes per second) over the window."""
        w = self._streams.get(stream)
        if w is None:
            return 0.0, 0.0
        since = int(self._clock()) - self.window_s
        recent = [s for s in w.seconds if s[0] > since]
        return (sum(s[1] for s in recent) / self.window_s, sum(s[2] for s in recent) / self.window_s)

    def seen(self, stream: str) -> tuple[float | None, float | None]:
        """When this process first and last accepted rows for the stream (epoch seconds)."""
        w = self._streams.get(stream)
        return (w.first, w.last) if w is not None else (None, None)

    def daily(self, stream: str, days: int) -> list[int]:
        """Rows per UTC day for the last `days` days, oldest first, today last."""
        w = self._streams.get(stream)
        today = int(self._clock()) // DAY_S
        return [w.days.get(d, 0) if w else 0 for d in range(today - days + 1, today + 1)]

    def forget(self, stream: str) -> None:
        """Drop a deleted stream's counters."""
        self._streams.pop(stream, None)
