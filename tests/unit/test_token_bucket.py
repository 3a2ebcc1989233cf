"""The per-key token-bucket limiter, on a clock the test moves by hand."""

from __future__ import annotations

from gateway.limiters.token_bucket import KeyRateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_burst_of_rate_then_refused_with_headers() -> None:
    clock = Clock()
    limiter = KeyRateLimiter(1000, clock=clock)
    allowed = [limiter.check("k", 5) for _ in range(5)]
    assert all(d is not None and d.allowed for d in allowed)
    assert [d.remaining for d in allowed if d] == [4, 3, 2, 1, 0]
    refused = limiter.check("k", 5)
    assert refused is not None and not refused.allowed
    assert refused.headers() == {
        "X-RateLimit-Limit": "5",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": "1",
        "Retry-After": "1",
    }
    assert abs(refused.retry_after_s - 0.2) < 1e-9


def test_refills_continuously() -> None:
    clock = Clock()
    limiter = KeyRateLimiter(1000, clock=clock)
    for _ in range(5):
        limiter.check("k", 5)
    clock.now += 0.1
    d = limiter.check("k", 5)
    assert d is not None and not d.allowed  # half a token
    clock.now += 0.1
    d = limiter.check("k", 5)
    assert d is not None and d.allowed and d.remaining == 0
    clock.now += 10
    d = limiter.check("k", 5)
    assert d is not None and d.allowed and d.remaining == 4  # never more than one second's worth


def test_keys_are_independent_and_default_applies() -> None:
    clock = Clock()
    limiter = KeyRateLimiter(2, clock=clock)
    assert [d.allowed for d in (limiter.check("a"), limiter.check("a"), limiter.check("a")) if d] == [
        True,
        True,
        False,
    ]
    b = limiter.check("b")
    assert b is not None and b.allowed and b.headers()["X-RateLimit-Limit"] == "2"
    assert "Retry-After" not in b.headers()


def test_zero_means_unlimited() -> None:
    limiter = KeyRateLimiter(0, clock=Clock())
    assert all(limiter.check("k") is None for _ in range(10_000))
    limited = limiter.check("k", 3)  # a key's own rate still applies
    assert limited is not None and limited.headers()["X-RateLimit-Limit"] == "3"


def test_slow_rate_retry_after_rounds_up() -> None:
    clock = Clock()
    limiter = KeyRateLimiter(0.5, clock=clock)
    first = limiter.check("k")
    assert first is not None and first.allowed
    second = limiter.check("k")
    assert second is not None and not second.allowed
    assert second.headers()["Retry-After"] == "2" and second.headers()["X-RateLimit-Limit"] == "0.5"
