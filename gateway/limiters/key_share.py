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
    """Decoding slots and body bytes held per key, with the refusals of a key over its share.
    Keys are given as their id and whether they have the admin scope (looked up once per
    request by the caller)."""

    __slots__ = ("_cap", "_others_slots_max", "_slots_per_key", "bytes", "bytes_per_key",
                 "others_bytes", "others_bytes_max", "others_slots", "reserve", "share", "slots")

    def __init__(self, share: float, reserve: float, bytes_cap: int) -> None:
        self.share = share  # of the slots and of `bytes_cap` (the memory cap), per key
        self.reserve = reserve  # of the slots and of `bytes_cap`, for admin keys only
        self.bytes_per_key = int(share * bytes_cap)
        self.others_bytes_max = bytes_cap - int(reserve * bytes_cap)
        self.slots: dict[str, int] = {}
        self.bytes: dict[str, int] = {}
        self.others_slots = 0  # held by keys without the admin scope
        self.others_bytes = 0
        self._cap = -1  # the slot cap the two limits below were worked out for
        self._slots_per_key = self._others_slots_max = 0

    def take_slot(self, key: str, admin: bool, cap: int) -> None:
        """Count a decoding slot of the `cap` for `key`; 429 when the key holds its share, or
        when keys other than admin hold all but the admin reserve."""
        if cap != self._cap:
            self._cap, self._slots_per_key = cap, per_key(self.share, cap)
            self._others_slots_max = cap - reserved(self.reserve, cap)
        held = self.slots.get(key, 0)
        if held >= self._slots_per_key:
            _throttled("key_share").inc()
            raise Overloaded(f"this key already has {held} requests being decoded, its share of "
                             f"the gateway's {cap} (--key-share {self.share:g}); nothing was "
                             "written, retry later", retry_after=MIN_S)
        if not admin and self.others_slots >= self._others_slots_max:
            _throttled("decoding").inc()
            raise Overloaded(f"the gateway is decoding {self.others_slots} requests at once, as "
                             "many as keys other than admin may (--max-decoding-requests less "
                             "--admin-reserve); nothing was written, retry later",
                             retry_after=MIN_S)
        self.slots[key] = held + 1
        if not admin:
            self.others_slots += 1

    def hold_bytes(self, key: str, admin: bool, body_held: int, n: int) -> None:
        """Count `n` more body bytes for `key` (whose body holds `body_held` already); 413 when
        the body alone outgrows a key's share, 429 when the key's bodies together would, or when
        keys other than admin would take the admin reserve."""
        limit = self.bytes_per_key
        if body_held + n > limit:
            raise PayloadTooLarge(f"the body is larger than one key's share of the memory cap, "
                                  f"{limit} bytes (--key-share * --memory-cap-bytes) once "
                                  "decompressed; split it into smaller requests; nothing was "
                                  "written")
        held = self.bytes.get(key, 0)
        if held + n > limit:
            _throttled("key_share").inc()
            raise TooManyRequests(f"this key's requests being decoded already hold its share of "
                                  f"the memory cap, {limit} bytes (--key-share * "
                                  "--memory-cap-bytes); nothing was written, retry later",
                                  retry_after=MIN_S)
        if not admin and self.others_bytes + n > self.others_bytes_max:
            _throttled("memory").inc()
            raise TooManyRequests("the memory cap left to keys other than admin (--admin-reserve) "
                                  "is in use by other requests; nothing was written, retry later",
                                  retry_after=MIN_S)
        self.bytes[key] = held + n
        if not admin:
            self.others_bytes += n

    def release(self, key: str, admin: bool, nbytes: int) -> None:
        """Give `key`'s decoding slot back, and the `nbytes` body bytes it held."""
        held = self.slots[key] - 1
        if held:
            self.slots[key] = held
        else:
            del self.slots[key]
        if nbytes:
            left = self.bytes[key] - nbytes
            if left:
                self.bytes[key] = left
            else:
                del self.bytes[key]
        if not admin:
            self.others_slots -= 1
            self.others_bytes -= nbytes
