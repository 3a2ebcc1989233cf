"""Per-stream byte-rate limit: a token bucket per stream, refilled at the configured bytes/s."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float


class StreamByteRate:
    """Allows each stream `rate` bytes/s with a burst of one second's worth.

    A request larger than what is left may still pass while the bucket is not empty; it then owes
    the difference (the bucket goes negative), so big requests are slowed, never refused forever.
    """

    def __init__(self, rate: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = float(rate)
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def take(self, stream: str, nbytes: int) -> float | None:
        """Charge `nbytes` to `stream`; None when allowed, else the seconds until it would be."""
        now = self._clock()
        b = self._buckets.get(stream)
        if b is None:
            b = self._buckets[stream] = _Bucket(self.rate, now)
        b.tokens = min(self.rate, b.tokens + (now - b.stamp) * self.rate)
        b.stamp = now
        if b.tokens <= 0:
            return -b.tokens / self.rate + 1 / self.rate
        b.tokens -= nbytes
        return None

    def refund(self, stream: str, nbytes: int) -> None:
        """Give back bytes charged for a request that was refused later (e.g. queue full)."""
        b = self._buckets.get(stream)
        if b is not None:
            b.tokens = min(self.rate, b.tokens + nbytes)

    def forget(self, stream: str) -> None:
        """Drop a deleted stream's bucket."""
        self._buckets.pop(stream, None)
