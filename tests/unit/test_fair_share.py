"""The fair-share bookkeeping (per key, per address) and the minimum body rate, in isolation."""

from __future__ import annotations

import asyncio

import pytest

from gateway.admission import BodyHold, DecodeSlots
from gateway.errors import Overloaded, PayloadTooLarge, RequestTimeout, TooManyRequests
from gateway.ingest.body import read_chunks
from gateway.limiters.address_share import AddressShares, address_of, parse_networks
from gateway.limiters.key_share import KeyShares, per_key, reserved
from gateway.queues import MemoryBudget

ADMIN = None  # admin keys are held to the caps only


def key(n: int) -> str:
    return f"k{n}"


def test_shares_of_a_total() -> None:
    assert per_key(0.25, 64) == 16 and per_key(0.25, 2) == 1 and per_key(1.0, 2) == 2
    assert reserved(0.1, 64) == 7 and reserved(0.1, 1) == 0 and reserved(0.0, 64) == 0


def hold(slots: DecodeSlots, who: str | None, budget: MemoryBudget) -> BodyHold:
    slots.take(who)
    return BodyHold(budget, None, slots, who)


def test_a_key_holds_at_most_its_share_of_the_slots_and_others_leave_the_reserve() -> None:
    shares = KeyShares(0.25, 0.1, 1000)
    slots, budget = DecodeSlots(64, shares), MemoryBudget(1000)
    held = [hold(slots, key(1), budget) for _ in range(16)]
    with pytest.raises(Overloaded, match="--key-share"):
        slots.take(key(1))
    held += [hold(slots, key(n), budget) for n in (2, 3) for _ in range(16)]
    held += [hold(slots, key(4), budget) for _ in range(9)]
    with pytest.raises(Overloaded, match="--admin-reserve"):
        slots.take(key(5))
    held.append(hold(slots, ADMIN, budget))  # the reserve is the admin's
    held.pop(0).release()
    held.append(hold(slots, key(5), budget))  # a slot given back is anyone's again
    assert slots.busy == 58
    for h in held:
        h.release()
    assert shares.slots == {} and shares.others_slots == 0 and slots.busy == 0


def test_a_key_holds_at_most_its_share_of_the_body_bytes() -> None:
    shares = KeyShares(0.25, 0.1, 1000)
    slots, budget = DecodeSlots(64, shares), MemoryBudget(1000)
    one = hold(slots, key(1), budget)
    with pytest.raises(PayloadTooLarge):  # one body larger than a key's share: never fits
        one.hold(251)
    one.hold(200)
    two = hold(slots, key(1), budget)
    with pytest.raises(TooManyRequests, match="--key-share"):
        two.hold(51)
    others = [hold(slots, key(n), budget) for n in (2, 3, 4)]
    others[0].hold(250)
    others[1].hold(250)
    with pytest.raises(TooManyRequests, match="--admin-reserve"):  # 900 of 1000 for others
        others[2].hold(201)
    admin = hold(slots, ADMIN, budget)
    admin.hold(250)
    assert budget.used == 950
    for h in (one, two, *others, admin):
        h.release()
    assert shares.bytes == {} and shares.slots == {} and budget.used == 0
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
        async for chunk in read_chunks(
            OneThenSilence(b"abc"),
            content_encoding="",
            max_bytes=100,
            max_decompressed=100,
            read_timeout=60,
            min_rate=1000,
            rate_window=0.05,
        ):
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
    async for chunk in read_chunks(
        Ready(),
        content_encoding="",
        max_bytes=100,
        max_decompressed=100,
        read_timeout=60,
        min_rate=1000,
        rate_window=0.5,
    ):
        got += chunk
        await asyncio.sleep(0.06)  # the gateway busy elsewhere: 12 bytes take > 0.7 s of wall time
    assert got == b"x" * 12
