"""Fixtures of the security tier: gateways in embedded mode (no broker needed: these bugs are in
parsing, auth and admission, in front of any sink), one per log format where the log is checked."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import Gateway, unique_name, wait_until

COLUMNS = [{"name": "id", "type": "string"}, {"name": "n", "type": "int32"}]


def start_embedded(tmp: Path, extra: list[str]) -> Gateway:
    """A gateway with the embedded sink, started as a user starts it."""
    return Gateway(tmp, None, extra=extra).start()


@pytest.fixture(scope="module", params=["text", "json"])
def gw(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """An embedded gateway logging at INFO in the text or the JSON format."""
    fmt = str(request.param)
    gateway = start_embedded(
        Path(tmp_path_factory.mktemp(f"sec-{fmt}")), ["--log-format", fmt, "--log-level", "INFO"]
    )
    yield gateway
    assert gateway.stop() == 0, gateway.log()[-3000:]


@pytest.fixture(scope="module")
def stream(gw: Gateway) -> str:
    """A stream of two columns (id string, n int32)."""
    name = unique_name("sec")
    gw.create_stream(name, COLUMNS)
    return name


def wait_logged(gw: Gateway, marker: str, count: int = 1) -> str:
    """The log once `marker` appears in it at least `count` times (the gateway logs after it
    replies, so a test that checks the log waits for the record to be written)."""
    text: str = wait_until(
        lambda: gw.log() if gw.log().count(marker) >= count else None, 30, f"{count} x {marker!r} in the log"
    )
    return text


def assert_log_well_formed(gw: Gateway) -> None:
    """No raw control byte in the log, and (JSON format) every line one JSON object."""
    raw = gw.log_path.read_bytes() if gw.log_path else b""
    bad = [b for b in set(raw) if (b < 0x20 and b != 0x0A) or b == 0x7F]
    assert not bad, f"raw control bytes {bad} in the log"
    for line in raw.decode("utf-8", "replace").splitlines():
        if line.startswith("{"):
            json.loads(line)
