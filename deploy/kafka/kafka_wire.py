"""kafka_wire -- kafka-dev's questions to a running broker, in raw Kafka protocol (python3 stdlib
only, no client library): is a node up, which node leads a partition, which is the active KRaft
controller.

    kafka_wire.py probe HOST:PORT [TIMEOUT]
        exit 0 when the broker answers a Metadata request and lists itself as a live broker;
        prints "cluster_id=... controller=... brokers=[...]"
    kafka_wire.py leader TOPIC PARTITION TIMEOUT HOST:PORT [HOST:PORT ...]
        the partition's leader as the first node that answers sees it: prints the node id, -1
        when the partition has none; exit 1 when no node answered or the topic is unknown
    kafka_wire.py controller TIMEOUT HOST:CONTROLLER_PORT [HOST:CONTROLLER_PORT ...]
        the active controller: the one controller that answers DescribeQuorum (followers refuse
        it with NOT_LEADER_OR_FOLLOWER); prints its node id; exit 1 when none answered
"""

from __future__ import annotations

import socket
import struct
import sys

CLIENT_ID = b"kafka-dev-probe"
METADATA, DESCRIBE_QUORUM = 3, 55


class Reader:
    """Walks a response body."""

    def __init__(self, body: bytes) -> None:
        self.body, self.pos = body, 0

    def take(self, fmt: str) -> tuple[int, ...]:
        vals = struct.unpack_from(fmt, self.body, self.pos)
        self.pos += struct.calcsize(fmt)
        return vals

    def num(self, fmt: str) -> int:
        return self.take(fmt)[0]

    def string(self) -> str | None:
        n = self.num(">h")
        if n < 0:
            return None
        s = self.body[self.pos : self.pos + n].decode()
        self.pos += n
        return s

    def uvarint(self) -> int:
        shift = value = 0
        while True:
            b = self.body[self.pos]
            self.pos += 1
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
            shift += 7

    def compact_string(self) -> str | None:
        n = self.uvarint() - 1
        if n < 0:
            return None
        s = self.body[self.pos : self.pos + n].decode()
        self.pos += n
        return s

    def skip_tags(self) -> None:
        for _ in range(self.uvarint()):
            self.uvarint()  # tag
            self.pos += self.uvarint()  # size, then the data


def uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def request(
    address: str, api_key: int, version: int, body: bytes, timeout: float, *, flexible: bool = False
) -> Reader:
    """Send one request, return a reader positioned at the response body."""
    host, _, port = address.rpartition(":")
    header = struct.pack(">hhih", api_key, version, 42, len(CLIENT_ID)) + CLIENT_ID
    if flexible:
        header += uvarint(0)  # request header v2: no tagged fields
    req = header + body
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.settimeout(timeout)
        s.sendall(struct.pack(">i", len(req)) + req)

        def read(n: int) -> bytes:
            buf = b""
            while len(buf) < n:
                chunk = s.recv(n - len(buf))
                if not chunk:
                    raise EOFError("connection closed")
                buf += chunk
            return buf

        (size,) = struct.unpack(">i", read(4))
        r = Reader(read(size))
    if r.num(">i") != 42:
        raise ValueError("unexpected correlation id")
    if flexible:
        r.skip_tags()  # response header v1
    return r


def metadata(
    address: str, timeout: float, topics: list[str]
) -> tuple[list[tuple[int, str | None, int]], str | None, int, dict[str, dict[int, int]]]:
    """Metadata v4: (brokers, cluster id, controller, {topic: {partition: leader}})."""
    body = struct.pack(">i", len(topics))
    for t in topics:
        body += struct.pack(">h", len(t.encode())) + t.encode()
    body += struct.pack(">?", False)  # allow_auto_topic_creation
    r = request(address, METADATA, 4, body, timeout)
    r.num(">i")  # throttle
    brokers = []
    for _ in range(r.num(">i")):
        node = r.num(">i")
        host = r.string()
        port = r.num(">i")
        r.string()  # rack
        brokers.append((node, host, port))
    cluster_id = r.string()
    controller = r.num(">i")
    leaders: dict[str, dict[int, int]] = {}
    for _ in range(r.num(">i")):
        error = r.num(">h")
        name = r.string() or ""
        r.num(">?")  # is_internal
        parts: dict[int, int] = {}
        for _ in range(r.num(">i")):
            r.num(">h")  # partition error
            index, leader = r.take(">ii")
            for _ in range(2):  # replicas, isr
                r.take(f">{r.num('>i')}i")
            parts[index] = leader
        if error == 0:
            leaders[name] = parts
    return brokers, cluster_id, controller, leaders


def probe(address: str, timeout: float) -> int:
    try:
        brokers, cluster_id, controller, _ = metadata(address, timeout, [])
    except Exception as exc:
        print(f"probe: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    port = int(address.rpartition(":")[2])
    if not any(p == port for _n, _h, p in brokers):
        print(f"probe: broker not registered yet: {brokers}", file=sys.stderr)
        return 1
    print(f"cluster_id={cluster_id} controller={controller} brokers={brokers}")
    return 0


def leader(topic: str, partition: int, timeout: float, addresses: list[str]) -> int:
    for address in addresses:
        try:
            _, _, _, leaders = metadata(address, timeout, [topic])
        except Exception:
            continue  # down or paused: ask the next node
        if topic in leaders and partition in leaders[topic]:
            print(leaders[topic][partition])
            return 0
    print(f"leader: no node knows {topic}-{partition}", file=sys.stderr)
    return 1


def controller(timeout: float, addresses: list[str]) -> int:
    topic = b"__cluster_metadata"
    # DescribeQuorum v0 (flexible): topics [name, partitions [index]]
    body = (
        uvarint(2)
        + uvarint(len(topic) + 1)
        + topic
        + uvarint(2)
        + struct.pack(">i", 0)
        + uvarint(0)
        + uvarint(0)
        + uvarint(0)
    )
    for address in addresses:
        try:
            r = request(address, DESCRIBE_QUORUM, 0, body, timeout, flexible=True)
            if r.num(">h"):
                continue
            r.uvarint()  # topics
            r.compact_string()
            r.uvarint()  # partitions
            r.num(">i")
            if r.num(">h"):  # NOT_LEADER_OR_FOLLOWER: a follower
                continue
            print(r.num(">i"))
            return 0
        except Exception:
            continue
    print("controller: no controller answered as the active one", file=sys.stderr)
    return 1


def main(argv: list[str]) -> int:
    cmd, args = argv[0], argv[1:]
    if cmd == "probe":
        return probe(args[0], float(args[1]) if len(args) > 1 else 3.0)
    if cmd == "leader":
        return leader(args[0], int(args[1]), float(args[2]), args[3:])
    if cmd == "controller":
        return controller(float(args[0]), args[1:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
