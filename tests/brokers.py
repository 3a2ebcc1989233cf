"""Brokers of the test run's own: each on a free port pair and a data directory in a temporary
directory that is removed when it stops, so a test run never touches the user's development broker
(deploy/kafka/kafka-dev's default 19092 and ~/.cache/ingest-gateway/kafka-data) and leaves nothing
behind. Two test runs on one machine claim different ports."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.harness import kafka_dev

PRIVATE_PORTS = range(19500, 19600, 2)  # broker port, controller port = port + 1
# Port claims live in the system's temp folder, shared by every test run on the machine (taken at
# import, before tests/conftest.py gives the suite a temp folder of its own).
CLAIMS = Path(tempfile.gettempdir())
PORT_TAKEN = 3  # kafka-dev start's exit status when another process holds the port


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Broker:
    """A broker of our own, on its own port and data directory; or one node of a cluster of our
    own (`own_cluster`), then `data` is the cluster's directory and `node_id` picks the node."""

    port: int
    data: Path
    props: str = ""  # extra broker properties (KAFKA_DEV_PROPS), "k=v k=v"
    node_id: int = 1
    nodes: int = 1  # nodes of its cluster (1: a single broker)
    base_port: int = 0  # node 1's port, when in a cluster

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _env(self) -> dict[str, str]:
        return {
            "KAFKA_DEV_PORT": str(self.base_port or self.port),
            "KAFKA_DEV_DATA": str(self.data),
            "KAFKA_DEV_PROPS": self.props,
            "KAFKA_DEV_NODES": str(self.nodes),
        }

    def _args(self, *args: str) -> list[str]:
        return [*(["--node", str(self.node_id)] if self.nodes > 1 else []), *args]

    def _run(self, *args: str) -> str:
        done = kafka_dev(*self._args(*args), env=self._env())
        assert done.returncode == 0, f"kafka-dev {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def start(self, *, fresh: bool = False) -> None:
        self._run("start", *(["--fresh"] if fresh else []))

    def start_fresh_unless_port_taken(self) -> bool:
        """Start fresh; False when another process took the port first (kafka-dev's exit 3)."""
        done = kafka_dev("start", "--fresh", env=self._env())
        if done.returncode == PORT_TAKEN:
            return False
        assert done.returncode == 0, f"kafka-dev start --fresh:\n{done.stdout}\n{done.stderr}"
        return True

    def stop(self) -> None:
        self._run("stop")

    def kill9(self) -> None:
        self._run("kill9")

    def pause(self) -> None:
        self._run("pause")

    def resume(self) -> None:
        self._run("resume")

    def running(self) -> bool:
        return kafka_dev(*self._args("status"), env=self._env()).returncode == 0


@dataclass
class Cluster:
    """A KRaft cluster of our own: every node a combined broker and controller, topics replicated
    3 times (at most the node count) with min.insync.replicas 2, unclean election off."""

    nodes: list[Broker]
    data: Path

    @property
    def bootstrap(self) -> str:
        """Every node's address, comma separated."""
        return ",".join(b.bootstrap for b in self.nodes)

    def node(self, node_id: int) -> Broker:
        """The node with this id (1..N)."""
        return self.nodes[node_id - 1]

    def restore(self) -> None:
        """Resume paused nodes and start stopped ones; returns once every node answers."""
        for node in self.nodes:
            if not node.running():
                kafka_dev(*node._args("resume"), env=node._env())  # fails when not paused: fine
                node.start()

    def _ask(self, *args: str) -> int:
        done = kafka_dev(*args, env=self.nodes[0]._env())
        if done.returncode != 0:
            raise LookupError(f"kafka-dev {' '.join(args)}: {done.stderr.strip()}")
        return int(done.stdout.split()[-1])

    def leader_of(self, topic: str, partition: int) -> Broker:
        """The partition's leader, from the metadata of the first node that answers now;
        LookupError when no node answers or the partition has no leader."""
        node_id = self._ask("leader", topic, str(partition))
        if node_id < 0:
            raise LookupError(f"{topic}-{partition} has no leader")
        return self.node(node_id)

    def controller(self) -> Broker:
        """The active KRaft controller (the node that answers DescribeQuorum as the leader);
        LookupError when none does."""
        return self.node(self._ask("controller"))


def _claim(port: int) -> int | None:
    """Claim a port pair against parallel test runs (`claim_port`); the claim's fd, or None when
    the pair is in use or claimed."""
    if _listening(port) or _listening(port + 1):
        return None
    return claim_port(port)


def claim_port(port: int) -> int | None:
    """Lock `port` against parallel test runs: the open, locked claim file's descriptor, or None
    when another run holds it. Give it back with `release_port`, which removes the file."""
    path = CLAIMS / f"ingest-gateway-kafka-{port}.lock"
    while True:
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        # The holder removes the file before it unlocks: a lock on a file no longer at the path
        # (opened before the removal) claims nothing, so take a fresh one.
        try:
            here = os.stat(path)
        except FileNotFoundError:
            here = None
        held = os.fstat(fd)
        if here is not None and (here.st_dev, here.st_ino) == (held.st_dev, held.st_ino):
            return fd
        os.close(fd)


def release_port(port: int, fd: int) -> None:
    """Give a claim back: remove its file while still holding the lock, then unlock."""
    (CLAIMS / f"ingest-gateway-kafka-{port}.lock").unlink(missing_ok=True)
    os.close(fd)


@contextlib.contextmanager
def own_broker(props: str = "") -> Iterator[Broker]:
    """A fresh broker on a free port of 19500-19599, stopped and its data removed on exit."""
    with own_cluster(1, props) as cluster:
        yield cluster.nodes[0]


@contextlib.contextmanager
def own_cluster(nodes: int = 3, props: str = "") -> Iterator[Cluster]:
    """A fresh KRaft cluster of `nodes` nodes (node i on port pair base+2(i-1), all in
    19500-19599), every node stopped and the data removed on exit. `props`: extra broker
    properties for every node, "k=v k=v"."""
    for base in PRIVATE_PORTS:
        if base + 2 * nodes - 1 >= PRIVATE_PORTS.stop:
            break
        claims: list[tuple[int, int]] = []
        for port in range(base, base + 2 * nodes, 2):
            claim = _claim(port)
            if claim is None:
                break
            claims.append((port, claim))
        if len(claims) < nodes:
            for port, claim in claims:
                release_port(port, claim)
            continue
        data = Path(tempfile.mkdtemp(prefix=f"ingest-gateway-kafka-{base}-"))
        members = [Broker(base + 2 * i, data, props, i + 1, nodes, base) for i in range(nodes)]
        cluster = Cluster(members, data)
        whole = Broker(base, data, props, 1, nodes, base)  # kafka-dev without --node: every node
        try:
            # The claim binds only runs that take it (older checkouts claim elsewhere; other
            # programs not at all): if one took a port meanwhile, try the next ports.
            if not whole.start_fresh_unless_port_taken():
                continue
            yield cluster
        finally:
            env = {**whole._env(), "KAFKA_DEV_STOP_TIMEOUT": "20"}
            kafka_dev("resume", env=env)  # a paused JVM ignores TERM
            kafka_dev("stop", env=env)
            shutil.rmtree(data, ignore_errors=True)
            Path(f"{data}.lock").unlink(missing_ok=True)  # kafka-dev's lock, beside the data
            for port, claim in claims:
                release_port(port, claim)
        return
    pytest.fail(f"no {nodes} free port pairs for private brokers in 19500-19599")
