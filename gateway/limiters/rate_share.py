"""A key's request rate across replicas and `--workers` processes (Kafka mode).

Every process announces, every `interval_s` (`--rate-share-interval-ms`, 250 ms), how many
requests each of its buckets let in since its last announcement (only the buckets used
meanwhile: at most MAX_ENTRIES per message, as many messages as needed), on a short-retention
topic all replicas read (`--rate-share-topic`, gateway.limiters.usage_kafka). Each process takes
what the others announce off its own bucket for that key (token_bucket.KeyRateLimiter.absorb),
so every bucket tracks the key's use everywhere; a bucket may go into debt (up to
token_bucket.MAX_DEBT_S seconds of the rate), which makes up for what was let in before an
announcement arrived. The request path does one dict update per admitted request; no I/O.

Tolerance, for a key of rate R on N processes: over any T seconds the processes together let
in at most R·T + N·B + (N-1)·R·D requests, where B is a bucket (one second's worth, R) and D the
delay of an announcement (the interval plus Kafka's delivery, typically under 0.5 s): each process
can let in what it has heard nothing of yet. With Kafka unreachable, each process limits alone
(at most N·R) until announcements flow again.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Iterator
from typing import Protocol

import msgspec

from gateway import metrics
from gateway.limiters.token_bucket import KeyRateLimiter

log = logging.getLogger(__name__)
MAX_ENTRIES = 2000  # buckets per message (about 40 bytes each)


class Usage(msgspec.Struct, array_like=True, frozen=True):
    """One bucket's use in one announcement window."""

    bucket: str
    rate: float
    used: int


class Announcement(msgspec.Struct, frozen=True):
    """What one process let in since its previous announcement."""

    origin: str  # a random id per process: its own announcements are skipped
    usage: list[Usage]


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Announcement)


def encode(origin: str, usage: dict[str, tuple[float, int]]) -> Iterator[bytes]:
    """`usage` as announcements of at most MAX_ENTRIES buckets each."""
    items = [Usage(bucket, rate, used) for bucket, (rate, used) in usage.items()]
    for start in range(0, len(items), MAX_ENTRIES):
        yield _encoder.encode(Announcement(origin, items[start : start + MAX_ENTRIES]))


class UsageBus(Protocol):
    """How the processes reach each other: every message published reaches every process."""

    async def start(self, on_message: Callable[[bytes], None]) -> None:
        """Connect; from now on call `on_message` with each message any process publishes."""
        ...

    async def publish(self, message: bytes) -> None:
        """Hand one message over for delivery (not waiting for it to arrive)."""
        ...

    async def close(self) -> None:
        """Stop reading and disconnect."""
        ...


class RateShare:
    """Announces this process's use of its keys' buckets and absorbs the others'."""

    def __init__(self, limiter: KeyRateLimiter, bus: UsageBus, interval_s: float) -> None:
        self.limiter = limiter
        self.bus = bus
        self.interval_s = interval_s
        self.origin = secrets.token_hex(8)
        self._connected = False

    def received(self, message: bytes) -> None:
        """Take another process's announced use off this process's buckets."""
        try:
            announced = _decoder.decode(message)
        except (msgspec.DecodeError, msgspec.ValidationError):
            metrics.RATE_SHARE.labels(direction="failed").inc()
            return
        if announced.origin == self.origin:
            return
        metrics.RATE_SHARE.labels(direction="received").inc()
        absorb = self.limiter.absorb
        for u in announced.usage:
            absorb(u.bucket, u.rate, u.used)

    async def connect(self) -> None:
        """Connect the bus (raises while Kafka is unreachable: the caller retries)."""
        await self.bus.start(self.received)
        self._connected = True
        self.limiter.take_usage()  # what was let in before the bus was up is nobody's news now

    async def announce(self) -> None:
        """Announce what was let in, every interval, until cancelled."""
        sent = metrics.RATE_SHARE.labels(direction="sent")
        while True:
            await asyncio.sleep(self.interval_s)
            usage = self.limiter.take_usage()
            for message in encode(self.origin, usage) if usage else ():
                try:
                    await self.bus.publish(message)
                    sent.inc()
                except Exception as exc:  # an announcement lost only loosens the bound
                    metrics.RATE_SHARE.labels(direction="failed").inc()
                    log.warning("rate share: announcing failed: %r", exc)

    async def close(self) -> None:
        """Disconnect (after the caller cancelled `announce`)."""
        if self._connected:
            await self.bus.close()
