"""Fixtures of the reliability tests: a private broker that fault tests may kill, stop and pause
(never the session's or the user's broker), and helpers to run gateways against it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.brokers import Broker, own_broker
from tests.integration.harness import Gateway, Record, end_offsets, read_topic
from tests.reliability.accounting import RUNNING


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
