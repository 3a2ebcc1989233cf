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


@contextlib.contextmanager
def own_broker(props: str = "") -> Iterator[Broker]:
    """A fresh broker on a free port of 19500-19599, stopped and its data removed on exit."""
    for port in PRIVATE_PORTS:
        if _listening(port) or _listening(port + 1):
            continue
        # Claim the port against parallel test runs; the lock goes away with this process.
        claim = os.open(os.path.join(tempfile.gettempdir(), f"ingest-gateway-kafka-{port}.lock"),
                        os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(claim, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(claim)
            continue
        broker = Broker(port, Path(tempfile.mkdtemp(prefix=f"ingest-gateway-kafka-{port}-")), props)
        try:
            broker.start(fresh=True)
            yield broker
        finally:
            kafka_dev("resume", env=broker._env())  # a paused JVM ignores TERM
            kafka_dev("stop", env=broker._env())
            shutil.rmtree(broker.data, ignore_errors=True)
            Path(f"{broker.data}.lock").unlink(missing_ok=True)  # kafka-dev's lock, beside the data
            os.close(claim)
        return
    pytest.fail("no free port pair for a private broker in 19500-19599")
