"""A gateway process connected to the real broker, shared by the tests of a module; and a pair of
replicas sharing one catalog topic."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import Gateway


@pytest.fixture(scope="module")
def gateway(kafka: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """`python -m gateway serve --kafka-bootstrap …` on a free port."""
    gw = Gateway(Path(tmp_path_factory.mktemp("gw")), kafka, extra=["--default-shards", "3"])
    gw.start()
    yield gw
    code = gw.stop()
    assert code == 0, gw.log()


@pytest.fixture(scope="module")
def pair(kafka: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, Gateway]]:
    """Replicas a and b: two processes, one broker, one catalog topic."""
    topic = "_test_catalog_" + uuid.uuid4().hex[:12]
    a = Gateway(Path(tmp_path_factory.mktemp("a")), kafka, catalog_topic=topic)
    b = Gateway(Path(tmp_path_factory.mktemp("b")), kafka, catalog_topic=topic)
    a.start(wait_ready=False)
    b.start(wait_ready=False)
    a.wait_ready()
    b.wait_ready()
    yield a, b
    codes = (a.stop(), b.stop())
    assert codes == (0, 0), a.log() + b.log()
