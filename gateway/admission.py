"""Admission: every rule that refuses a request with 429 or 503 before its rows are queued.

One question, asked at fixed points of the ingest path (gateway.ingest.service): may this in?
- `gate`: 503 while starting, draining, after a spool failure, or while Kafka is unreachable
  (unless wait=false rows may be queued during outages).
- `key_rate`: 429 when the API key is over its request rate: on every route that takes a key,
  one bucket for the ingest routes and one for the management API.
- `early`: 429 before decoding, when the stream's queue could not take a request like its last,
  or (with `--max-loop-lag-ms`) while the event loop is that far behind: the CPU is saturated.
  503 when a partition the stream's rows need is stalled and holds `--partition-max-bytes`.
- `charge`: 429 when the stream is over its byte rate (`--stream-max-bytes-per-s`).
- `hold_body`: 429 when as many requests as `--max-decoding-requests` are being decoded, or when
  the key holds its share of them (gateway.limiters.key_share: no key more than `--key-share`,
  keys other than admin not the `--admin-reserve`); while a body is decoded its bytes are held
  against the memory cap, and against the key's share of it: 413 when the body alone outgrows
  the cap or a key's share, 429 when the cap or the key's share is in use.
- `offer`: 429 when the rows do not fit the queue bounds or the memory cap (413 when they
  could not fit even into an empty queue: retrying cannot help).

The wait a refusal advises (`retry_after`, rendered as `Retry-After` by
gateway.limiters.retry_after for every dialect) is the time the stream's queue needs, at its
measured drain rate, to free room for a request like this one; bounded to 1..60 s.
"""

from __future__ import annotations

import functools
from typing import Any

from gateway import metrics
from gateway.auth import Principal
from gateway.catalog.model import Stream
from gateway.errors import (
    Overloaded,
    PayloadTooLarge,
    RateLimited,
    TooManyRequests,
    Unavailable,
)
from gateway.lifecycle import Lifecycle
from gateway.limiters.drain_rate import WINDOW_S
from gateway.limiters.key_share import KeyShares
from gateway.limiters.loop_lag import LoopLag
from gateway.limiters.retry_after import MAX_S, MIN_S
from gateway.limiters.stream_bytes import StreamByteRate
from gateway.limiters.token_bucket import KeyRateLimiter
from gateway.queues import Entry, MemoryBudget, QueueFull, Queues, StreamQueue
from gateway.scopes import ADMIN
from gateway.sinks.base import Sink
from gateway.spool import Spool

UNAVAILABLE_RETRY_S = 1.0  # 503: the gateway cannot know when Kafka or another replica is back
# The setting behind each queue bound, named in a 413 so the operator or client knows what to change.
_BOUND_FLAG = {
    "stream_rows": "--queue-max-rows",
    "stream_bytes": "--queue-max-bytes",
    "memory": "--memory-cap-bytes",
}


# The two route classes a key's rate applies to, each with its own bucket: rows sent do not use up
# the calls that manage streams and keys, nor the other way round.
INGEST = "ingest"
MANAGE = "manage"
_CLASS_WORDS = {INGEST: "", MANAGE: " on the management API"}
_CLASS_DONE = {INGEST: "inserted", MANAGE: "done"}

_LAG_MESSAGE = (
    "the gateway is behind with the requests it has (--max-loop-lag-ms); nothing was written, retry later"
)


@functools.lru_cache(maxsize=64)
def throttled(status: str, cause: str) -> Any:
    """The refusals counter of (status, cause), looked up once: refusals come in floods, and
    `labels()` sorts, formats and locks on every call."""
    return metrics.THROTTLED.labels(status=status, cause=cause)


def drain_seconds(queue: StreamQueue, rows: int, nbytes: int) -> float:
    """Seconds until `queue` has drained enough for `rows` rows of `nbytes` bytes to fit, at its
    measured drain rate; bounded to 1..60 s. A queue that drained nothing in the last window
    (Kafka stalled) advises the window's length; a request no draining would let in, 1 s."""
    limits = queue.limits
    if rows > limits.max_rows or nbytes > limits.max_bytes:
        return MIN_S
    need_rows = queue.rows + rows - limits.max_rows
    need_bytes = max(queue.nbytes + nbytes - limits.max_bytes, queue.budget.used + nbytes - queue.budget.cap)
    if need_rows <= 0 and need_bytes <= 0:
        return MIN_S
    rates = queue.drain_rate.rates()
    if rates is None:
        return WINDOW_S
    rows_per_s, bytes_per_s = rates
    wait = max(
        need_rows / rows_per_s if need_rows > 0 else 0.0, need_bytes / bytes_per_s if need_bytes > 0 else 0.0
    )
    return float(min(MAX_S, max(MIN_S, wait)))


@functools.lru_cache(maxsize=1024)
def _stalled_message(name: str, partition: int) -> str:
    return (
        f"partition {partition} of stream {name!r} is stalled (its Kafka leader does not "
        "answer) and holds as many rows as it may (--partition-max-bytes); nothing was "
        "written, retry later"
    )


@functools.lru_cache(maxsize=1024)
def _full_message(name: str, cause: str) -> str:
    return f"the queue of stream {name!r} is full ({cause}); nothing was written, retry later"


def _full(stream: Stream, queue: StreamQueue, cause: str, rows: int, nbytes: int) -> TooManyRequests:
    throttled("429", cause).inc()
    return TooManyRequests(_full_message(stream.name, cause), retry_after=drain_seconds(queue, rows, nbytes))


class BodyHold:
    """A body being decoded is buffered too: its bytes are held against the memory budget
    (--memory-cap-bytes) until `release()`. 413 when the body alone outgrows the cap, 429 when
    the cap is in use (the wait: the stream's queue draining that many bytes)."""

    __slots__ = ("_budget", "_held", "_key", "_queue", "_slots")

    def __init__(
        self,
        budget: MemoryBudget,
        queue: StreamQueue | None,
        slots: DecodeSlots | None = None,
        key: str | None = None,
    ) -> None:
        self._budget = budget
        self._queue = queue
        self._held = 0
        self._slots = slots
        self._key = key  # whose share of the cap the bytes count against (with `slots`)

    def hold(self, n: int) -> None:
        """Hold `n` more bytes of the body."""
        budget = self._budget
        if self._held + n > budget.cap:
            raise PayloadTooLarge(
                f"the body is larger than the memory cap of {budget.cap} bytes "
                "(--memory-cap-bytes) once decompressed; split it into smaller "
                "requests; nothing was written"
            )
        if budget.used + n > budget.cap:
            throttled("429", "memory").inc()
            raise TooManyRequests(
                "the gateway's memory cap is in use by other requests and "
                "queued rows; nothing was written, retry later",
                retry_after=(MIN_S if self._queue is None else drain_seconds(self._queue, 0, n)),
            )
        key = self._key
        if key is not None and self._slots is not None:  # the key's share (key_share.py)
            shares = self._slots.shares
            key_held = shares.bytes.get(key, 0) + n
            if key_held > shares.bytes_per_key or shares.others_bytes + n > shares.others_bytes_max:
                shares.refuse_bytes(self._held + n, key_held)
            shares.bytes[key] = key_held
            shares.others_bytes += n
        budget.used += n
        self._held += n

    def release(self) -> None:
        """Give the held bytes (and the decoding slot) back, once the body is decoded or refused."""
        held = self._held
        self._budget.used -= held
        slots = self._slots
        if slots is not None:
            key = self._key
            if key is not None:  # the key's slot and bytes (taken in DecodeSlots.take, hold)
                shares = slots.shares
                left = shares.slots[key] - 1
                if left:
                    shares.slots[key] = left
                else:
                    del shares.slots[key]
                if held:
                    left = shares.bytes[key] - held
                    if left:
                        shares.bytes[key] = left
                    else:
                        del shares.bytes[key]
                shares.others_slots -= 1
                shares.others_bytes -= held
            slots.release()
            self._slots = None
        self._held = 0


class DecodeSlots:
    """The cap on requests being decoded at once (--max-decoding-requests; 0 = none): above it a
    request is refused with 429 at once, before its body is read. Decoding more requests at once
    than the CPU can finish only stretches every one of them and holds their bodies in memory;
    under overload a quick 429 leaves the CPU to the requests already admitted (and the flusher).
    The slots, and the body bytes they hold, are shared between keys (`shares`)."""

    __slots__ = ("_gauge", "busy", "cap", "shares")

    def __init__(self, cap: int, shares: KeyShares | None = None) -> None:
        self.cap = cap
        self.busy = 0
        self.shares = shares or KeyShares(1.0, 0.0, 1 << 62)  # no shares: nothing refused
        # One process: the gauge reads `busy` when scraped (a gauge update per request cost 2% of
        # a one-row request). Under --workers the value must go to the shared files: updated.
        self._gauge = metrics.DECODING if metrics.MULTIPROCESS else None
        if self._gauge is None:
            metrics.DECODING.set_function(lambda: self.busy)

    def take(self, key: str | None = None) -> None:
        """Take a slot (for `key`, a key without the admin scope, counted in its share:
        BodyHold.release gives both back); 429 when all are taken, or the key holds its share."""
        if self.cap and self.busy >= self.cap:
            throttled("429", "decoding").inc()
            raise Overloaded(
                f"the gateway is decoding {self.cap} requests at once, as many "
                "as it may (--max-decoding-requests); nothing was written, "
                "retry later",
                retry_after=MIN_S,
            )
        if key is not None:  # the key's share (key_share.py)
            shares = self.shares
            if self.cap != shares.cap:
                shares.for_cap(self.cap)
            held = shares.slots.get(key, 0)
            if held >= shares.slots_per_key or shares.others_slots >= shares.others_slots_max:
                shares.refuse_slot(held)
            shares.slots[key] = held + 1
            shares.others_slots += 1
        self.busy += 1
        if self._gauge is not None:
            self._gauge.inc()

    def release(self) -> None:
        """Give a slot back."""
        self.busy -= 1
        if self._gauge is not None:
            self._gauge.dec()


class Admission:
    """Decides whether a request may in; raises the typed 429/503 error when it may not."""

    def __init__(
        self,
        sink: Sink,
        queues: Queues,
        lifecycle: Lifecycle,
        *,
        accept_during_outage: bool = False,
        spool: Spool | None = None,
        byte_rate: StreamByteRate | None = None,
        key_limiter: KeyRateLimiter | None = None,
        max_decoding: int = 0,
        max_loop_lag_s: float = 0.0,
        key_shares: KeyShares | None = None,
    ) -> None:
        self.sink = sink
        self.queues = queues
        self.lifecycle = lifecycle
        self.accept_during_outage = accept_during_outage
        self.spool = spool
        self.byte_rate = byte_rate
        self.key_limiter = key_limiter or KeyRateLimiter(0)
        self.decoding = DecodeSlots(max_decoding, key_shares or KeyShares(1.0, 0.0, queues.budget.cap))
        self.max_loop_lag_s = max_loop_lag_s
        self.loop_lag = LoopLag()

    def gate(self, *, wait: bool = False) -> None:
        """503 (nothing written, safe to retry) while draining, after a spool failure, before the
        sink first connected, and while it is unreachable unless wait=false rows may be queued
        during outages; with `wait`, 503 whenever it is unreachable (it would only time out)."""
        if self.lifecycle.draining:
            throttled("503", "draining").inc()
            raise Unavailable(
                "the gateway is shutting down; retry on another replica", retry_after=UNAVAILABLE_RETRY_S
            )
        if self.spool is not None and self.spool.failed is not None:
            throttled("503", "spool_failed").inc()
            raise Unavailable(
                "the durable spool failed (see the gateway's log); nothing was written",
                retry_after=UNAVAILABLE_RETRY_S,
            )
        if self.sink.available():
            return
        if wait or not (self.accept_during_outage and self.lifecycle.sink_started):
            throttled("503", "sink_unavailable").inc()
            raise Unavailable(
                "Kafka is unreachable; nothing was written, retry later", retry_after=UNAVAILABLE_RETRY_S
            )

    def key_rate(self, who: Principal, route_class: str = INGEST) -> dict[str, str]:
        """Count the request against its key's rate on `route_class` (INGEST or MANAGE: one
        bucket each): 429 when over it; else the X-RateLimit-* headers for the reply (none when
        keys are not limited)."""
        bucket = who.key_id if route_class == INGEST else f"{route_class}:{who.key_id}"
        decision = self.key_limiter.check(bucket, who.rate_limit)
        if decision is None:
            return {}
        if not decision.allowed:
            throttled("429", "key_rate").inc()
            raise RateLimited(
                f"this key's limit of {decision.limit:g} requests per second"
                f"{_CLASS_WORDS[route_class]} is reached; nothing was "
                f"{_CLASS_DONE[route_class]}, retry later",
                retry_after=decision.retry_after_s,
                headers=decision.headers(),
            )
        return decision.headers()

    def early(self, stream: Stream) -> None:
        """429 before any decoding when the stream's queue could not take a request like its last.

        A 429 promises nothing was written, so refusing early is always safe; it keeps the CPU for
        the flusher when clients offer more than Kafka takes. With `max_loop_lag_s`, also while
        the event loop is that far behind: a refusal costs a fraction of an admitted request, so
        admitting less lets the gateway answer everyone instead of queueing them for seconds."""
        queue = self.queues.get(stream.name, stream.topic)
        if queue is None or not self.sink.available():
            # During an outage `offer` decides (wait=false: 202 while the queues hold).
            return
        if self.max_loop_lag_s and self.loop_lag.lag() > self.max_loop_lag_s:
            throttled("429", "loop_lag").inc()
            raise Overloaded(_LAG_MESSAGE, retry_after=MIN_S)
        partition = self.sink.held_back(stream.topic, stream.keyed)
        if partition is not None:
            throttled("503", "partition_stalled").inc()
            raise Unavailable(_stalled_message(stream.name, partition), retry_after=UNAVAILABLE_RETRY_S)
        try:
            queue.check_room()
        except QueueFull as full:
            raise _full(stream, queue, full.cause, *queue.last_request) from None

    def hold_body(self, stream: Stream | None, who: Principal | None = None) -> BodyHold:
        """A decoding slot (429 when none is free, or `who` holds its share) and a hold on the
        memory budget (and `who`'s share of it) for the body of a request to `stream` (None: not
        known until the body names it)."""
        # Admin keys (the operator's) are held to the cap only; they have the reserve to
        # themselves. Principal.admin without a property call (hot path).
        key = None if who is None or ADMIN in who.scopes else who.key_id
        self.decoding.take(key)
        return BodyHold(
            self.queues.budget,
            None if stream is None else self.queues.get(stream.name, stream.topic),
            self.decoding,
            key,
        )

    def charge(self, stream: Stream, rows: int, nbytes: int) -> None:
        """429 when the stream is over its byte rate (the bytes are charged otherwise)."""
        if self.byte_rate is None:
            return
        wait_s = self.byte_rate.take(stream.name, nbytes)
        if wait_s is not None:
            throttled("429", "stream_byte_rate").inc()
            metrics.ROWS_REJECTED.labels(stream=stream.name, cause="stream_byte_rate").inc(rows)
            raise TooManyRequests(
                f"stream {stream.name!r} is over its byte-rate limit of "
                f"{self.byte_rate.rate:g} bytes/s; nothing was written",
                retry_after=wait_s,
            )

    def offer(self, stream: Stream, entry: Entry, offers: list[tuple[StreamQueue, Entry]]) -> None:
        """Queue `offers` (the stream's `entry`, and its quarantine records if any) all or none;
        429, with the byte-rate charge refunded, when they do not fit."""
        try:
            self.queues.offer_all(offers)
        except QueueFull as full:
            if self.byte_rate is not None:
                self.byte_rate.refund(stream.name, entry.nbytes)
            if full.never:
                metrics.ROWS_REJECTED.labels(stream=stream.name, cause="too_large").inc(entry.rows)
                raise PayloadTooLarge(
                    f"this request holds {full.size} {full.unit}; the queue of stream "
                    f"{stream.name!r} can never hold more than {full.limit} {full.unit} "
                    f"({_BOUND_FLAG[full.cause]}): split it into requests of at most "
                    f"{full.limit} {full.unit}; nothing was written"
                ) from None
            metrics.ROWS_REJECTED.labels(stream=stream.name, cause=full.cause).inc(entry.rows)
            queue = next((q for q, e in offers if e is entry), offers[0][0])
            raise _full(stream, queue, full.cause, entry.rows, entry.nbytes) from None
