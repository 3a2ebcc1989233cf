"""The test brokers' port claims (tests/brokers.py): exclusive between runs, and no file left."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from tests import brokers


@pytest.fixture
def claims(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(brokers, "CLAIMS", tmp_path)
    return tmp_path


def test_a_released_claim_leaves_no_file(claims: Path) -> None:
    fd = brokers.claim_port(19500)
    assert fd is not None
    assert [p.name for p in claims.iterdir()] == ["ingest-gateway-kafka-19500.lock"]
    brokers.release_port(19500, fd)
    assert list(claims.iterdir()) == []


def test_a_held_claim_excludes_another(claims: Path) -> None:
    fd = brokers.claim_port(19502)
    assert fd is not None
    try:
        assert brokers.claim_port(19502) is None  # flock: separate opens exclude each other
        other = brokers.claim_port(19504)
        assert other is not None
        brokers.release_port(19504, other)
    finally:
        brokers.release_port(19502, fd)


def test_a_lock_on_a_removed_claim_file_claims_nothing(claims: Path) -> None:
    """A run that opened the claim file just before the holder removed it locks a file no longer
    at the path: the next claim must still exclude everyone else."""
    path = claims / "ingest-gateway-kafka-19506.lock"
    holder = brokers.claim_port(19506)
    assert holder is not None
    late = os.open(path, os.O_RDWR)  # opened before the removal
    brokers.release_port(19506, holder)
    fcntl.flock(late, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the stale lock succeeds...
    try:
        fresh = brokers.claim_port(19506)  # ...and does not block a claim on the path's file
        assert fresh is not None
        assert brokers.claim_port(19506) is None
        brokers.release_port(19506, fresh)
    finally:
        os.close(late)
    assert list(claims.iterdir()) == []
