"""One log line per refused request (a 4xx or 5xx reply): the stream, the cause and the request id,
so that a refused client can be traced. 429 and 503, the replies that come in floods (overload,
rate limits, an outage), cannot fill the disk: per (cause, stream) at most LINES_PER_S of their
lines are written in each second and at most TOTAL_PER_S over all of them; the others are
counted, and one line per second reports how many were left out, by cause. Other refusals are
each logged, as before. Request text reaches the line only through the log
handler's sanitiser (gateway.log_sanitize), like every record."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

log = logging.getLogger("gateway.refused")
LINES_PER_S = 5  # lines per (cause, stream) in one second
TOTAL_PER_S = 50  # lines over every (cause, stream) in one second
SAMPLED = (429, 503)  # the statuses whose lines are capped
MAX_KEYS = 1024  # (cause, stream) pairs tracked in one second; the stream comes from the request


class RefusalLog:
    """Writes or counts the line of each refused request; a window is one second."""

    __slots__ = ("_clock", "_counts", "_second", "_suppressed", "_timer", "_total")

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._second = 0
        self._counts: dict[tuple[str, str], int] = {}
        self._total = 0
        self._suppressed: dict[str, int] = {}  # cause -> lines left out in this second
        self._timer: asyncio.TimerHandle | None = None

    def refused(
        self, method: str, path: str, status: int, cause: str, stream: str, message: str, request_id: str
    ) -> None:
        """Log (or count) one refused request."""
        if status not in SAMPLED:
            self._write(method, path, status, cause, stream, message, request_id)
            return
        second = int(self._clock())
        if second != self._second:
            self._new_second(second)
        key = (cause, stream)
        seen = self._counts.get(key, 0)
        if seen >= LINES_PER_S or self._total >= TOTAL_PER_S or (not seen and len(self._counts) >= MAX_KEYS):
            self._suppress(cause)
            return
        self._counts[key] = seen + 1
        self._total += 1
        self._write(method, path, status, cause, stream, message, request_id)

    @staticmethod
    def _write(
        method: str, path: str, status: int, cause: str, stream: str, message: str, request_id: str
    ) -> None:
        log.log(
            logging.WARNING if status >= 500 else logging.INFO,
            "refused %s %s -> %d %s, stream %s: %s (request %s)",
            method,
            path,
            status,
            cause,
            stream or "-",
            message,
            request_id,
            extra={"stream": stream, "cause": cause, "status": status},
        )

    def _suppress(self, cause: str) -> None:
        self._suppressed[cause] = self._suppressed.get(cause, 0) + 1
        if self._timer is None:  # report even if no refusal follows to start the next second
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            self._timer = loop.call_later(1.0, self._report)

    def _new_second(self, second: int) -> None:
        self._report()
        self._second = second
        self._counts.clear()
        self._total = 0

    def _report(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._suppressed:
            return
        by_cause = ", ".join(f"{c} {n}" for c, n in sorted(self._suppressed.items()))
        log.warning(
            "suppressed %d similar refused-request lines (by cause: %s)",
            sum(self._suppressed.values()),
            by_cause,
            extra={"suppressed": dict(self._suppressed)},
        )
        self._suppressed.clear()
