"""A gateway process connected to the real broker, shared by the tests of a module."""

from __future__ import annotations

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
