"""Per-key request rate limit: one token bucket per API key, refilled continuously.

A key may make `rate` requests per second on average and up to `rate` in a burst (a bucket holds one
second's worth). The decision carries the `X-RateLimit-*` header values and the wait when refused.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.limiters.retry_after import retry_after_header

MAX_BUCKETS = 100_000  # keys seen; the map is cleared beyond this (buckets then start full again)


class TokenBucket:
    """`capacity` tokens, refilled at `rate` per second; one request takes one token."""

    __slots__ = ("capacity", "rate", "stamp", "tokens")

    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.stamp = now

    def take(self, now: float) -> bool:
        """Refill for the time elapsed, then take a token if there is one."""
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one request against its key's bucket."""

    allowed: bool
    limit: float
    remaining: int
    reset_s: float  # until the bucket is full again
    retry_after_s: float  # until the next request is allowed (0 when this one was)

    def headers(self) -> dict[str, str]:
        """`X-RateLimit-Limit/Remaining/Reset` (whole seconds), plus the retry wait when refused."""
        out = {"X-RateLimit-Limit": f"{self.limit:g}", "X-RateLimit-Remaining": str(self.remaining),
               "X-RateLimit-Reset": str(math.ceil(self.reset_s))}
        if not self.allowed:
            out.update(retry_after_header(self.retry_after_s))
        return out


class KeyRateLimiter:
    """Token buckets by key id; a key's own rate wins over the default; rate 0 means unlimited."""

    def __init__(self, default_rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.default_rate = default_rate
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    def check(self, key_id: str, rate: float = 0) -> Decision | None:
        """Count one request of `key_id`; None when the key is not limited."""
        rate = rate or self.default_rate
        if rate <= 0:
            return None
        now = self._clock()
        bucket = self._buckets.get(key_id)
        if bucket is None or bucket.rate != rate:
            if len(self._buckets) >= MAX_BUCKETS:
                self._buckets.clear()
            bucket = self._buckets[key_id] = TokenBucket(rate, now)
        allowed = bucket.take(now)
        missing = bucket.capacity - bucket.tokens
        return Decision(allowed, rate, int(bucket.tokens), missing / rate,
                        0.0 if allowed else (1.0 - bucket.tokens) / rate)
