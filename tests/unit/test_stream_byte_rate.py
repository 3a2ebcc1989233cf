"""The per-stream byte-rate limit on a controlled clock: the bound the reliability test reports
(tests/reliability/test_security.py) is asserted here, where no scheduling noise can break it."""

from __future__ import annotations

import pytest

from gateway.limiters.stream_bytes import StreamByteRate
from tests.unit.test_token_bucket import Clock

RATE = 200_000


def test_a_burst_of_one_seconds_worth_then_refused_until_paid_back() -> None:
    clock = Clock()
    limit = StreamByteRate(RATE, clock)
    assert limit.take("s", RATE // 2) is None
    assert limit.take("s", RATE) is None  # passes while the bucket is not empty; owes RATE / 2
    wait = limit.take("s", 1)
    assert wait == pytest.approx(0.5 + 1 / RATE)
    clock.now += 0.49
    assert limit.take("s", 1) is not None
    clock.now += 0.02
    assert limit.take("s", 1) is None


@pytest.mark.parametrize(
    ("request_bytes", "every_s"), [(1_000, 0.001), (50_000, 0.01), (400_000, 0.1), (7_777, 0.0)]
)
def test_accepted_bytes_never_exceed_the_rate_plus_one_burst(request_bytes: int, every_s: float) -> None:
    """A client sending faster than the rate for 30 s gets at most RATE · (1 s + 30 s) bytes
    accepted, plus the one request that may overdraw the bucket."""
    clock = Clock()
    limit = StreamByteRate(RATE, clock)
    accepted = refused = 0
    start = clock.now
    while clock.now - start < 30:
        if limit.take("s", request_bytes) is None:
            accepted += request_bytes
        else:
            refused += 1
        clock.now += every_s or 0.0001
    assert refused > 0
    assert accepted <= RATE * (1 + (clock.now - start)) + request_bytes
    assert accepted >= RATE * (clock.now - start) * 0.9  # limited, not shut


def test_refund_and_streams_apart() -> None:
    clock = Clock()
    limit = StreamByteRate(RATE, clock)
    assert limit.take("a", 2 * RATE) is None
    assert limit.take("a", 1) is not None
    assert limit.take("b", 1) is None  # another stream has its own bucket
    limit.refund("a", 2 * RATE)
    assert limit.take("a", 1) is None
    limit.forget("a")
    assert limit.take("a", RATE) is None  # a new bucket starts full
