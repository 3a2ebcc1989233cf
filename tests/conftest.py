"""Session-wide fixtures: Hypothesis settings, and the session's own Kafka broker."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.brokers import own_broker

# The suite's own temp folder: whatever the tests and the processes they start (brokers, gateways,
# Chromium, nginx) put in "the temp folder" lands here. The session fails if anything but
# pytest's own tmp_path tree is left in it at the end, and the folder is removed afterwards, so a
# run leaves nothing in the system's temp folder and another session's files cannot confuse the
# check. (Port claims stay in the system's temp folder: tests.brokers.CLAIMS.)
SUITE_TMP = Path(tempfile.mkdtemp(prefix="igw-tests-"))
os.environ["TMPDIR"] = str(SUITE_TMP)
tempfile.tempdir = str(SUITE_TMP)

# Hypothesis: the same examples on every run (a failure is reproducible from the test alone, and a
# CI run cannot fail by the luck of the draw), no example database written into the worktree, no
# deadline (a busy 2-core machine is slow), and a failing example printed as a reproducible blob.
# HYPOTHESIS_PROFILE=explore draws fresh random examples for hunting bugs locally.
settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("explore", settings.get_profile("ci"), derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def kafka() -> Iterator[str]:
    """Bootstrap address of a real single-node KRaft broker (deploy/kafka/kafka-dev) of the test
    session's own: a free port, data in a temporary directory removed afterwards."""
    with own_broker() as broker:
        yield broker.bootstrap


def leftovers(folder: Path) -> list[str]:
    """What is in `folder` besides pytest's own tmp_path tree (pytest-of-<user>)."""
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("pytest-of-"))


@pytest.fixture(scope="session", autouse=True)
def temp_folder_left_clean() -> Iterator[None]:
    """Set up before (so torn down after) every other session fixture, brokers included."""
    yield
    left = leftovers(SUITE_TMP)
    assert not left, f"the tests left these in the temp folder {SUITE_TMP}: {left}"


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(SUITE_TMP, ignore_errors=True)
