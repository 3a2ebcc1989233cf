"""A key's rate across processes (gateway.limiters.rate_share), on a clock the test moves by
hand: buckets absorb what the others announce, and the stated tolerance holds in a simulation of
N processes whose announcements arrive late."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from gateway.limiters.rate_share import MAX_ENTRIES, RateShare, encode
from gateway.limiters.token_bucket import MAX_DEBT_S, KeyRateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class NoBus:
    async def start(self, on_message: object) -> None:
        pass

    async def publish(self, message: bytes) -> None:
        pass

    async def close(self) -> None:
        pass


def test_usage_is_counted_per_window_and_only_when_shared() -> None:
    clock = Clock()
    alone = KeyRateLimiter(10, clock=clock)
    alone.check("k")
    assert alone.take_usage() == {}
    shared = KeyRateLimiter(10, clock=clock, shared=True)
    for _ in range(12):  # 10 let in, 2 refused: only what was let in is announced
        shared.check("k")
    shared.check("j", 3)
    assert shared.take_usage() == {"k": (10.0, 10), "j": (3.0, 1)}
    assert shared.take_usage() == {}


def test_absorbed_use_empties_the_bucket_and_becomes_a_bounded_debt() -> None:
    clock = Clock()
    limiter = KeyRateLimiter(10, clock=clock, shared=True)
    limiter.absorb("k", 10, 25)  # a bucket made full (10), then 25 taken: 15 owed
    refused = limiter.check("k")
    assert refused is not None and not refused.allowed and refused.remaining == 0
    assert refused.retry_after_s == pytest.approx(1.6)  # 16 tokens at 10/s
    clock.now += 1.6
    allowed = limiter.check("k")
    assert allowed is not None and allowed.allowed
    limiter.absorb("k", 10, 10**9)
    clock.now += MAX_DEBT_S + 0.1  # the debt stops at MAX_DEBT_S seconds of the rate
    recovered = limiter.check("k")
    assert recovered is not None and recovered.allowed


def test_a_replicas_own_rate_for_a_key_wins_over_the_announced_one() -> None:
    clock = Clock()
    limiter = KeyRateLimiter(0, clock=clock, shared=True)
    assert limiter.check("k", 4) is not None
    limiter.absorb("k", 99, 1)  # announced by a replica that knew another rate
    d = limiter.check("k", 4)
    assert d is not None and d.limit == 4 and d.remaining == 1


def test_own_and_malformed_announcements_are_ignored() -> None:
    clock = Clock()
    limiter = KeyRateLimiter(5, clock=clock, shared=True)
    share = RateShare(limiter, NoBus(), 0.25)
    for message in encode(share.origin, {"k": (5.0, 5)}):
        share.received(message)
    share.received(b"not json")
    share.received(b'{"origin": "x", "usage": [["k", "fast", 1]]}')
    d = limiter.check("k")
    assert d is not None and d.allowed and d.remaining == 4
    for message in encode("another", {"k": (5.0, 4)}):
        share.received(message)
    d = limiter.check("k")
    assert d is not None and not d.allowed


def test_announcements_are_split_into_bounded_messages() -> None:
    usage = {f"key{i:05d}": (1.0, 1) for i in range(MAX_ENTRIES * 2 + 1)}
    messages = list(encode("o", usage))
    assert len(messages) == 3
    decoded = [msgspec.json.decode(m) for m in messages]
    assert sum(len(d["usage"]) for d in decoded) == len(usage)


@pytest.mark.parametrize(("processes", "delay_ticks"), [(3, 1), (3, 8), (5, 3)])
def test_stated_tolerance_holds_with_late_announcements(processes: int, delay_ticks: int) -> None:
    """N processes, a client sending 20 requests per tick to each in turn; each process announces
    every tick (INTERVAL_S) and the others hear it `delay_ticks` ticks later. Over the run the
    processes let in at most R·T + N·R + (N-1)·R·D, D the announcement's whole delay."""
    rate, tick_s, ticks = 20.0, 0.25, 400
    clock = Clock()
    limiters = [KeyRateLimiter(rate, clock=clock, shared=True) for _ in range(processes)]
    shares = [RateShare(lim, NoBus(), tick_s) for lim in limiters]
    in_flight: list[tuple[int, int, bytes]] = []  # (arrival tick, sender, message)
    accepted = 0
    for t in range(ticks):
        for step in range(20):
            clock.now += tick_s / 20
            d = limiters[step % processes].check("k")
            accepted += bool(d is not None and d.allowed)
        for i, lim in enumerate(limiters):
            usage = lim.take_usage()
            in_flight += [(t + delay_ticks, i, m) for m in encode(shares[i].origin, usage)]
        for _arrival, sender, message in [f for f in in_flight if f[0] <= t]:
            for i, share in enumerate(shares):
                if i != sender:
                    share.received(message)
        in_flight = [f for f in in_flight if f[0] > t]
    run_s = ticks * tick_s
    delay_s = (delay_ticks + 1) * tick_s
    bound = rate * run_s + processes * rate + (processes - 1) * rate * delay_s
    assert accepted <= bound, (accepted, bound)
    assert accepted >= rate * run_s * 0.9, (accepted, rate * run_s)  # and not starved
    assert accepted < 1.2 * rate * run_s  # per process, it would be N times


def test_announces_what_was_let_in_each_interval() -> None:
    class Recorder(NoBus):
        def __init__(self) -> None:
            self.sent: list[bytes] = []

        async def publish(self, message: bytes) -> None:
            self.sent.append(message)

    async def run() -> list[bytes]:
        bus = Recorder()
        limiter = KeyRateLimiter(5, shared=True)
        share = RateShare(limiter, bus, 0.01)
        limiter.check("before")  # before the bus is up: not announced
        await share.connect()
        limiter.check("k")
        limiter.check("k")
        task = asyncio.create_task(share.announce())
        while not bus.sent:  # noqa: ASYNC110 (the announcer's interval; no event to await)
            await asyncio.sleep(0.01)
        task.cancel()
        await share.close()
        return bus.sent

    sent = asyncio.run(run())
    assert [msgspec.json.decode(m)["usage"] for m in sent] == [[["k", 5.0, 2]]]
