"""The fair-share bookkeeping (per key, per address) and the minimum body rate, in isolation."""

from __future__ import annotations

import asyncio

import pytest

from gateway.errors import Overloaded, PayloadTooLarge, RequestTimeout, TooManyRequests
from gateway.ingest.body import read_chunks
from gateway.limiters.address_share import AddressShares, address_of, parse_networks
from gateway.limiters.key_share import KeyShares, per_key, reserved

ADMIN = ("admin", True)


def key(n: int) -> tuple[str, bool]:
    return f"k{n}", False


def test_shares_of_a_total() -> None:
    assert per_key(0.25, 64) == 16 and per_key(0.25, 2) == 1 and per_key(1.0, 2) == 2
    assert reserved(0.1, 64) == 7 and reserved(0.1, 1) == 0 and reserved(0.0, 64) == 0


def test_a_key_holds_at_most_its_share_of_the_slots_and_others_leave_the_reserve() -> None:
    shares = KeyShares(0.25, 0.1, 1000)
    for _ in range(16):
        shares.take_slot(*key(1), 64)
    with pytest.raises(Overloaded, match="--key-share"):
        shares.take_slot(*key(1), 64)
    for n in (2, 3):
        for _ in range(16):
            shares.take_slot(*key(n), 64)
    for _ in range(9):
        shares.take_slot(*key(4), 64)
    with pytest.raises(Overloaded, match="--admin-reserve"):
        shares.take_slot(*key(5), 64)
    shares.take_slot(*ADMIN, 64)  # the reserve is the admin's
    shares.release(*key(1), 0)
    shares.take_slot(*key(5), 64)  # a slot given back is anyone's again
    for n in (1, 2, 3, 4, 5):
        while shares.slots.get(f"k{n}"):
            shares.release(*key(n), 0)
    shares.release(*ADMIN, 0)
    assert shares.slots == {} and shares.others_slots == 0


def test_a_key_holds_at_most_its_share_of_the_body_bytes() -> None:
    shares = KeyShares(0.25, 0.1, 1000)
    with pytest.raises(PayloadTooLarge):  # one body larger than a key's share: never fits
        shares.hold_bytes(*key(1), 200, 51)
    for who in (key(1), key(2), key(3), ADMIN):
        shares.take_slot(*who, 64)
    shares.hold_bytes(*key(1), 0, 200)
    with pytest.raises(TooManyRequests, match="--key-share"):
        shares.hold_bytes(*key(1), 0, 51)
    shares.hold_bytes(*key(2), 0, 250)
    shares.hold_bytes(*key(3), 0, 250)
    with pytest.raises(TooManyRequests, match="--admin-reserve"):  # 900 of 1000 for others
        shares.hold_bytes(*key(4), 0, 201)
    shares.hold_bytes(*ADMIN, 0, 250)
    for who, held in ((key(1), 200), (key(2), 250), (key(3), 250), (ADMIN, 250)):
        shares.release(*who, held)
    assert shares.bytes == {} and shares.slots == {}
    assert shares.others_bytes == 0 and shares.others_slots == 0


def test_connections_are_counted_per_address_and_ipv6_per_64() -> None:
    assert address_of(("10.0.0.1", 5000)) == "10.0.0.1"
    assert address_of(("2001:db8:1:2:aaaa::1", 5000, 0, 0)) == "2001:db8:1:2::/64"
    assert address_of(("::ffff:10.0.0.1", 5000, 0, 0)) == "10.0.0.1"
    assert address_of(None) is None and address_of("/run/sock") is None
    shares = AddressShares(20, 0.1)
    assert shares.limit == 2
    a = [shares.opened((f"2001:db8:1:2::{i}", 1, 0, 0)) for i in range(3)]
    assert a[0] is not None and a[0] == a[1] == a[2] and shares.over(a[0])
    b = shares.opened(("2001:db8:1:3::1", 1, 0, 0))
    assert b is not None and not shares.over(b)
    for address in (*a, b):
        assert address is not None
        shares.closed(address)
    assert shares.open == {}


def test_exempt_addresses_are_not_counted() -> None:
    shares = AddressShares(20, 0.1, parse_networks("127.0.0.1, 10.1.0.0/16"))
    assert shares.opened(("10.1.2.3", 1)) is None and shares.opened(("127.0.0.1", 1)) is None
    assert shares.opened(("10.2.0.1", 1)) == "10.2.0.1"
    with pytest.raises(ValueError, match="not an address"):
        parse_networks("10.0.0.0/8, proxy")


class OneThenSilence:
    """A client that sends one chunk and then nothing (its read timeout is far away)."""

    def __init__(self, first: bytes) -> None:
        self.first = first
        self.never: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def readany(self) -> bytes:
        if self.first:
            chunk, self.first = self.first, b""
            return chunk
        return await self.never


async def test_a_body_below_the_minimum_rate_is_408_before_its_read_timeout() -> None:
    got = []
    with pytest.raises(RequestTimeout, match="bytes/s"):
        async for chunk in read_chunks(OneThenSilence(b"abc"), content_encoding="",
                                       max_bytes=100, max_decompressed=100, read_timeout=60,
                                       min_rate=1000, rate_window=0.05):
            got.append(chunk)
    assert got == [b"abc"]


async def test_a_gateway_slow_to_read_does_not_blame_the_client() -> None:
    class Ready:
        """Every chunk is there at once: the client is never waited for."""

        def __init__(self) -> None:
            self.left = 12

        async def readany(self) -> bytes:
            self.left -= 1
            return b"x" if self.left >= 0 else b""

    got = b""
    async for chunk in read_chunks(Ready(), content_encoding="", max_bytes=100,
                                   max_decompressed=100, read_timeout=60,
                                   min_rate=1000, rate_window=0.5):
        got += chunk
        await asyncio.sleep(0.06)  # the gateway busy elsewhere: 12 bytes take > 0.7 s of wall time
    assert got == b"x" * 12
