"""One timer for every wait=true request's deadline, instead of a timer per request.

`asyncio.timeout` around `asyncio.shield(done)` arms and cancels a loop timer and adds a future
and two callbacks per waiting request: ~18 µs of CPU each (uvloop, measured), and one more event
loop hop before the request wakes. Every wait uses the same timeout, so deadlines come in the
order the requests were admitted: a FIFO of (deadline, future) and one timer armed for its
oldest entry do the same job.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

COMPACT_AT = 1024  # settled entries tolerated behind a pending oldest one before a sweep


class Deadlines:
    """Fails each watched future with TimeoutError once `timeout_s` has passed, unless it is done
    (or cancelled) by then. The futures are the waiters' own: their producer must check `done()`
    before setting a result, as it must for a cancelled waiter anyway."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._watched: deque[tuple[float, asyncio.Future[Any]]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._compact_at = COMPACT_AT

    def __len__(self) -> int:
        return len(self._watched)

    def watch(self, fut: asyncio.Future[Any]) -> None:
        """Fail `fut` with TimeoutError in `timeout_s` seconds unless it is done by then."""
        watched = self._watched
        while watched and watched[0][1].done():
            watched.popleft()
        if len(watched) >= self._compact_at:
            # The oldest waiter is stuck (e.g. its stream's partition has no leader) while newer
            # ones settled: drop the settled ones, so that the FIFO stays bounded by the waiters.
            self._watched = watched = deque(w for w in watched if not w[1].done())
            self._compact_at = max(COMPACT_AT, 2 * len(watched))
        loop = fut.get_loop()
        watched.append((loop.time() + self.timeout_s, fut))
        if self._timer is None:
            self._timer = loop.call_at(watched[0][0], self._expire, loop)

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        watched = self._watched
        now = loop.time() + 0.001  # uvloop's clock and timers move in whole milliseconds
        while watched and (watched[0][1].done() or watched[0][0] <= now):
            _, fut = watched.popleft()
            if not fut.done():
                fut.set_exception(TimeoutError())
        if watched:
            self._timer = loop.call_at(watched[0][0], self._expire, loop)
