"""Fixtures of the reliability tests: a private broker that fault tests may kill, stop and pause
(never the shared development broker), and helpers to run gateways against it."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.harness import Gateway, Record, end_offsets, kafka_dev, read_topic
from tests.reliability.accounting import RUNNING

PRIVATE_PORTS = range(19500, 19600, 2)  # broker port, controller port = port + 1


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Broker:
    """A broker of our own, on its own port and data directory."""

    port: int
    props: str = ""  # extra broker properties (KAFKA_DEV_PROPS), "k=v k=v"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _env(self) -> dict[str, str]:
        return {"KAFKA_DEV_PORT": str(self.port), "KAFKA_DEV_PROPS": self.props}

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
    """A fresh broker on a free port of 19500-19599, stopped on exit."""
    lock_dir = os.path.expanduser("~/.cache/ingest-gateway/kafka-data")
    os.makedirs(lock_dir, exist_ok=True)
    for port in PRIVATE_PORTS:
        if _listening(port) or _listening(port + 1):
            continue
        # Claim the port against parallel test runs; the lock goes away with this process.
        claim = os.open(os.path.join(lock_dir, f"claim-{port}.lock"), os.O_CREAT | os.O_RDWR)
        try:
            fcntl.flock(claim, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(claim)
            continue
        broker = Broker(port, props)
        try:
            broker.start(fresh=True)
            yield broker
        finally:
            kafka_dev("resume", env={"KAFKA_DEV_PORT": str(port)})  # a paused JVM ignores TERM
            kafka_dev("stop", env={"KAFKA_DEV_PORT": str(port)})
            os.close(claim)
        return
    pytest.fail("no free port pair for a private broker in 19500-19599")


@pytest.fixture(scope="module")
def private_broker() -> Iterator[Broker]:
    """A broker of the test module's own (default settings)."""
    with own_broker() as broker:
        yield broker


def read_back(bootstrap: str, topic: str) -> list[Record]:
    """Every record of a topic."""
    return asyncio.run(read_topic(bootstrap, topic))


def offsets_total(bootstrap: str, topic: str) -> int:
    """Records in a topic (sum of end offsets)."""
    return sum(asyncio.run(end_offsets(bootstrap, topic)).values())


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Gateway]]:
    """Start gateways on `tmp_path` (same data dir and catalog topic for all: a restart finds its
    catalog and spool); any still running at the end of the test is killed."""
    started: list[Gateway] = []
    catalog_topic = "_test_catalog_" + uuid.uuid4().hex[:12]

    def make(bootstrap: str, extra: list[str], *, wait_ready: bool = True) -> Gateway:
        gw = Gateway(tmp_path, bootstrap, extra=extra, catalog_topic=catalog_topic)
        started.append(gw)
        return gw.start(wait_ready=wait_ready)
    yield make
    for gw in started:
        if gw.proc is not None and gw.proc.poll() is None:
            gw.proc.kill()
            gw.proc.wait(10)


@pytest.fixture(autouse=True)
def _stop_load_drivers() -> Iterator[None]:
    """A test that fails half-way must not leave its load running into the next test."""
    yield
    for driver in list(RUNNING):
        driver.stop()
