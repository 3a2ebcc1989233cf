"""Fair shares of the decoding slots and of the body bytes in flight between API keys.

No key without the admin scope holds more than `share` of either (a public browser key with slow
bodies cannot take them all), and such keys together leave `reserve` of both to admin keys (the
operator's, held to the caps only: it can still write while every other key holds its share). Only requests in
flight are counted: a key's entry is dropped when it holds nothing, so the maps stay as small as
the number of keys with a request being decoded.
"""

from __future__ import annotations

import functools
import math
from typing import Any

from gateway import metrics
from gateway.errors import Overloaded, PayloadTooLarge
from gateway.limiters.retry_after import MIN_S


@functools.lru_cache(maxsize=8)
def _throttled(cause: str) -> Any:
    return metrics.THROTTLED.labels(status="429", cause=cause)


def per_key(share: float, total: int) -> int:
    """What one key may hold of `total`: `share` of it, at least 1."""
    return max(1, int(share * total))


def reserved(reserve: float, total: int) -> int:
    """What only admin keys may use of `total`: `reserve` of it rounded up, leaving at least 1."""
    return min(max(total - 1, 0), math.ceil(reserve * total))


class KeyShares:
    """Decoding slots and body bytes held per key without the admin scope (by key id), and the
    refusals of a key over its share. gateway.admission's DecodeSlots and BodyHold count in here
    on their own (one call less per request on the hot path); this class works out the limits
    and words the refusals."""

    __slots__ = (
        "bytes",
        "bytes_per_key",
        "cap",
        "others_bytes",
        "others_bytes_max",
        "others_slots",
        "others_slots_max",
        "reserve",
        "share",
        "slots",
        "slots_per_key",
    )

    def __init__(self, share: float, reserve: float, bytes_cap: int) -> None:
        self.share = share  # of the slots and of `bytes_cap` (the memory cap), per key
        self.reserve = reserve  # of the slots and of `bytes_cap`, for admin keys only
        self.bytes_per_key = int(share * bytes_cap)
        self.others_bytes_max = bytes_cap - int(reserve * bytes_cap)
        self.slots: dict[str, int] = {}
        self.bytes: dict[str, int] = {}
        self.others_slots = 0  # held by all of them together
        self.others_bytes = 0
        self.cap = -1  # the slot cap the two limits below were worked out for
        self.slots_per_key = self.others_slots_max = 0

    def for_cap(self, cap: int) -> None:
        """Work the slot limits out for a cap of `cap` decoding slots (0: no cap)."""
        total = cap or 1 << 30
        self.cap, self.slots_per_key = cap, per_key(self.share, total)
        self.others_slots_max = total - reserved(self.reserve, total)

    def refuse_slot(self, held: int) -> None:
        """429: the key holds `held` slots, its share, or keys other than admin hold all theirs."""
        if held >= self.slots_per_key:
            _throttled("key_share").inc()
            raise Overloaded(
                f"this key already has {held} requests being decoded, its share of "
                f"the gateway's {self.cap} (--key-share {self.share:g}); nothing "
                "was written, retry later",
                retry_after=MIN_S,
            )
        _throttled("decoding").inc()
        raise Overloaded(
            f"the gateway is decoding {self.others_slots} requests at once, as many "
            "as keys other than admin may (--max-decoding-requests less "
            "--admin-reserve); nothing was written, retry later",
            retry_after=MIN_S,
        )

    def refuse_bytes(self, body_held: int, key_held: int) -> None:
        """413 when the body (holding `body_held` bytes with the next ones) alone outgrows a
        key's share; 429 when the key's bodies together (`key_held`) would, or keys other than
        admin would take the admin reserve."""
        limit = self.bytes_per_key
        if body_held > limit:
            raise PayloadTooLarge(
                f"the body is larger than one key's share of the memory cap, "
                f"{limit} bytes (--key-share * --memory-cap-bytes) once "
                "decompressed; split it into smaller requests; nothing was "
                "written"
            )
        if key_held > limit:
            _throttled("key_share").inc()
            raise Overloaded(
                f"this key's requests being decoded already hold its share of "
                f"the memory cap, {limit} bytes (--key-share * "
                "--memory-cap-bytes); nothing was written, retry later",
                retry_after=MIN_S,
            )
        _throttled("memory").inc()
        raise Overloaded(
            "the memory cap left to keys other than admin (--admin-reserve) "
            "is in use by other requests; nothing was written, retry later",
            retry_after=MIN_S,
        )
