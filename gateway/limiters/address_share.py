"""A fair share of the open connections between client addresses: no address (an IPv6 address:
its /64, what one host is usually given) holds more than `share` of `--max-connections`, idle
keep-alive connections included, so one host cannot take every connection. Addresses of a
reverse proxy in front can be exempted (it must then limit its own clients)."""

from __future__ import annotations

import ipaddress
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str) -> tuple[Network, ...]:
    """Comma-separated addresses or CIDR networks; ValueError naming the bad one."""
    networks = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ValueError(f"not an address or network: {part[:80]!r}") from None
    return tuple(networks)


def address_of(peername: Any) -> str | None:
    """The address a connection is counted under: the peer's IPv4 address, or its IPv6 /64;
    None when the transport has no IP peer (a Unix socket, a test transport)."""
    if not isinstance(peername, tuple) or not peername or not isinstance(peername[0], str):
        return None
    host = peername[0]
    if ":" not in host:
        return host
    try:
        ip = ipaddress.IPv6Address(host.partition("%")[0])
    except ValueError:
        return None
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))


class AddressShares:
    """Open connections per client address, and how many one address may hold."""

    __slots__ = ("_exempt", "limit", "open")

    def __init__(self, max_connections: int, share: float, exempt: tuple[Network, ...] = ()) -> None:
        self.limit = max(1, int(share * max_connections))
        self._exempt = exempt
        self.open: dict[str, int] = {}

    def opened(self, peername: Any) -> str | None:
        """Count a new connection from `peername`; the address it counts under (give it to
        `closed`), or None when it is not counted (exempt, or no IP peer)."""
        address = address_of(peername)
        if address is None:
            return None
        if self._exempt:
            ip = ipaddress.ip_address(peername[0].partition("%")[0])
            if any(ip in net for net in self._exempt):
                return None
        self.open[address] = self.open.get(address, 0) + 1
        return address

    def over(self, address: str) -> bool:
        """True when `address` holds more connections than its share."""
        return self.open.get(address, 0) > self.limit

    def closed(self, address: str) -> None:
        """A connection counted under `address` has closed."""
        left = self.open[address] - 1
        if left:
            self.open[address] = left
        else:
            del self.open[address]
