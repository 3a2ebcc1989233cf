"""Per-key request rate limit: one token bucket per API key, refilled continuously.

A key may make `rate` requests per second on average and up to `rate` in a burst (a bucket holds one
second's worth). The decision carries the `X-RateLimit-*` header values and the wait when refused.

Across replicas (gateway.limiters.rate_share): the limiter counts what each bucket let in since
the last announcement (`take_usage`), and takes what the other replicas announce off its own
buckets (`absorb`), down to a debt of at most MAX_DEBT_S seconds of the rate: every replica's
bucket then tracks the key's use everywhere, not only its own.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from typing import NamedTuple

from gateway.limiters.retry_after import retry_after_header

MAX_BUCKETS = 100_000  # keys seen; the map is cleared beyond this (buckets then start full again)
MAX_DEBT_S = 10.0  # others' use taken off a bucket stops at this many seconds of its rate


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

    def owe(self, n: float, now: float) -> None:
        """Refill for the time elapsed, then take `n` tokens used elsewhere (a debt, bounded)."""
        tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.tokens = max(-self.rate * MAX_DEBT_S, tokens - n)
        self.stamp = now


class Decision(NamedTuple):
    """The outcome of one request against its key's bucket (a tuple: one per limited request)."""

    allowed: bool
    limit: float
    remaining: int
    reset_s: float  # until the bucket is full again
    retry_after_s: float  # until the next request is allowed (0 when this one was)

    def headers(self) -> dict[str, str]:
        """`X-RateLimit-Limit/Remaining/Reset` (whole seconds), plus the retry wait when refused.
        Not to be changed: an admitted request's dict is shared with others of the same values."""
        if self.allowed:
            return _admitted_headers(self.limit, self.remaining, math.ceil(self.reset_s))
        out = _rate_headers(self.limit, self.remaining, math.ceil(self.reset_s))
        out.update(retry_after_header(self.retry_after_s))
        return out


def _rate_headers(limit: float, remaining: int, reset_s: int) -> dict[str, str]:
    return {
        "X-RateLimit-Limit": f"{limit:g}",
        "X-RateLimit-Remaining": str(remaining),
        "X-RateLimit-Reset": str(reset_s),
    }


# Admitted requests' headers take few values (remaining 0..rate, reset 0..1 s): made once each.
_admitted_headers = functools.lru_cache(maxsize=4096)(_rate_headers)


class KeyRateLimiter:
    """Token buckets by bucket id (a key id, or a key id and a route class); a key's own rate wins
    over the default; rate 0 means unlimited. With `shared`, what each bucket lets in is counted
    for `take_usage` (one dict update per admitted request)."""

    def __init__(
        self, default_rate: float, clock: Callable[[], float] = time.monotonic, *, shared: bool = False
    ) -> None:
        self.default_rate = default_rate
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self._used: dict[str, int] | None = {} if shared else None

    def check(self, key_id: str, rate: float = 0) -> Decision | None:
        """Count one request of `key_id`; None when the key is not limited."""
        rate = rate or self.default_rate
        if rate <= 0:
            return None
        now = self._clock()
        bucket = self._buckets.get(key_id)
        if bucket is None or bucket.rate != rate:
            bucket = self._bucket(key_id, rate, now)
        allowed = bucket.take(now)
        if allowed and self._used is not None:
            self._used[key_id] = self._used.get(key_id, 0) + 1
        tokens = bucket.tokens
        return Decision(
            allowed,
            rate,
            int(tokens) if tokens > 0 else 0,
            (bucket.capacity - tokens) / rate,
            0.0 if allowed else (1.0 - tokens) / rate,
        )

    def _bucket(self, key_id: str, rate: float, now: float) -> TokenBucket:
        bucket = self._buckets.get(key_id)
        if bucket is None or bucket.rate != rate:
            if len(self._buckets) >= MAX_BUCKETS:
                self._buckets.clear()
            bucket = self._buckets[key_id] = TokenBucket(rate, now)
        return bucket

    def take_usage(self) -> dict[str, tuple[float, int]]:
        """Bucket id → (rate, requests let in) since the last call; empty unless `shared`."""
        used = self._used
        if not used:
            return {}
        self._used = {}
        buckets = self._buckets
        return {bid: (buckets[bid].rate, n) for bid, n in used.items() if bid in buckets}

    def absorb(self, key_id: str, rate: float, n: int) -> None:
        """Take `n` requests that another replica let in for `key_id` (at `rate`) off this
        replica's bucket; a bucket it has not made yet is made (full) first."""
        if rate <= 0 or n <= 0:
            return
        now = self._clock()
        # this replica's own rate for the key wins (it is the one its requests are checked at)
        bucket = self._buckets.get(key_id) or self._bucket(key_id, rate, now)
        bucket.owe(n, now)
