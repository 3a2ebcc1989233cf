"""Fair shares of the decoding slots and of the body bytes in flight between API keys.

No key holds more than `share` of either (a public browser key with slow bodies cannot take them
all), and keys without the admin scope together leave `reserve` of both to admin keys (the
operator can still write and manage while every other key holds its share). Only requests in
flight are counted: a key's entry is dropped when it holds nothing, so the maps stay as small as
the number of keys with a request being decoded.
"""

from __future__ import annotations

import functools
import math
from typing import Any

from gateway import metrics
from gateway.auth import Principal
from gateway.errors import Overloaded, PayloadTooLarge, TooManyRequests
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
    """Decoding slots and body bytes held per key, with the refusals of a key over its share."""

    __slots__ = ("bytes", "bytes_cap", "others_bytes", "others_slots", "reserve", "share", "slots")

    def __init__(self, share: float, reserve: float, bytes_cap: int) -> None:
        self.share = share  # of the slots and of `bytes_cap`, per key
        self.reserve = reserve  # of the slots and of `bytes_cap`, for admin keys only
        self.bytes_cap = bytes_cap  # the memory cap (--memory-cap-bytes)
        self.slots: dict[str, int] = {}
        self.bytes: dict[str, int] = {}
        self.others_slots = 0  # held by keys without the admin scope
        self.others_bytes = 0

    def take_slot(self, who: Principal, cap: int) -> None:
        """Count a decoding slot of the `cap` for `who`; 429 when the key holds its share, or when
        keys other than admin hold all but the admin reserve."""
        key = who.key_id
        held = self.slots.get(key, 0)
        if held >= per_key(self.share, cap):
            _throttled("key_share").inc()
            raise Overloaded(f"this key already has {held} requests being decoded, its share of "
                             f"the gateway's {cap} (--key-share {self.share:g}); nothing was "
                             "written, retry later", retry_after=MIN_S)
        admin = who.admin
        if not admin and self.others_slots >= cap - reserved(self.reserve, cap):
            _throttled("decoding").inc()
            raise Overloaded(f"the gateway is decoding {self.others_slots} requests at once, as "
                             "many as keys other than admin may (--max-decoding-requests less "
                             "--admin-reserve); nothing was written, retry later",
                             retry_after=MIN_S)
        self.slots[key] = held + 1
        if not admin:
            self.others_slots += 1

    def release_slot(self, who: Principal) -> None:
        """Give `who`'s decoding slot back."""
        key = who.key_id
        held = self.slots[key] - 1
        if held:
            self.slots[key] = held
        else:
            del self.slots[key]
        if not who.admin:
            self.others_slots -= 1

    def hold_bytes(self, who: Principal, body_held: int, n: int) -> None:
        """Count `n` more body bytes for `who` (whose body holds `body_held` already); 413 when the
        body alone outgrows a key's share, 429 when the key's bodies together would, or when keys
        other than admin would take the admin reserve."""
        limit = int(self.share * self.bytes_cap)
        if body_held + n > limit:
            raise PayloadTooLarge(f"the body is larger than one key's share of the memory cap, "
                                  f"{limit} bytes (--key-share * --memory-cap-bytes) once "
                                  "decompressed; split it into smaller requests; nothing was "
                                  "written")
        key = who.key_id
        held = self.bytes.get(key, 0)
        if held + n > limit:
            _throttled("key_share").inc()
            raise TooManyRequests(f"this key's requests being decoded already hold its share of "
                                  f"the memory cap, {limit} bytes (--key-share * "
                                  "--memory-cap-bytes); nothing was written, retry later",
                                  retry_after=MIN_S)
        admin = who.admin
        if not admin and (self.others_bytes + n
                          > self.bytes_cap - int(self.reserve * self.bytes_cap)):
            _throttled("memory").inc()
            raise TooManyRequests("the memory cap left to keys other than admin (--admin-reserve) "
                                  "is in use by other requests; nothing was written, retry later",
                                  retry_after=MIN_S)
        self.bytes[key] = held + n
        if not admin:
            self.others_bytes += n

    def release_bytes(self, who: Principal, n: int) -> None:
        """Give `n` body bytes of `who` back."""
        if not n:
            return
        key = who.key_id
        held = self.bytes[key] - n
        if held:
            self.bytes[key] = held
        else:
            del self.bytes[key]
        if not who.admin:
            self.others_bytes -= n
