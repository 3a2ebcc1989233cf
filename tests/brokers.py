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
    """A broker of our own, on its own port and data directory."""

    port: int
    data: Path
    props: str = ""  # extra broker properties (KAFKA_DEV_PROPS), "k=v k=v"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _env(self) -> dict[str, str]:
        return {"KAFKA_DEV_PORT": str(self.port), "KAFKA_DEV_DATA": str(self.data),
                "KAFKA_DEV_PROPS": self.props}

    def _run(self, *args: str) -> str:
        done = kafka_dev(*args, env=self._env())
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
        return kafka_dev("status", env=self._env()).returncode == 0


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
    for port in PRIVATE_PORTS:
        if _listening(port) or _listening(port + 1):
            continue
        claim = claim_port(port)  # against parallel test runs
        if claim is None:
            continue
        broker = Broker(port, Path(tempfile.mkdtemp(prefix=f"ingest-gateway-kafka-{port}-")), props)
        try:
            # The claim binds only runs that take it (older checkouts claim elsewhere; other
            # programs not at all): if one took the port meanwhile, try the next port.
            if not broker.start_fresh_unless_port_taken():
                continue
            yield broker
        finally:
            kafka_dev("resume", env=broker._env())  # a paused JVM ignores TERM
            kafka_dev("stop", env=broker._env())
            shutil.rmtree(broker.data, ignore_errors=True)
            Path(f"{broker.data}.lock").unlink(missing_ok=True)  # kafka-dev's lock, beside the data
            release_port(port, claim)
        return
    pytest.fail("no free port pair for a private broker in 19500-19599")
