"""Faults under sustained load, with a real (private) broker: every scenario ends with the topic
read back and compared with the ledger of replies (tests/reliability/accounting.py), and writes its
figures into tests/reliability/REPORT.md."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.harness import ADMIN_KEY, Gateway, http, read_topic, unique_name, wait_until
from tests.reliability.accounting import (
    COLUMNS,
    Dialect,
    Figures,
    LoadDriver,
    TimeplusNdjson,
    account,
    record,
)
from tests.reliability.conftest import Broker, offsets_total

pytestmark = pytest.mark.slow
WAIT_TIMEOUT_S = 3.0
MARGIN_S = 3.0  # scheduling slack on a shared 2-core machine
# Small queues so that a few seconds of outage fill them (and 429s appear).
QUEUE_ARGS = ["--queue-max-rows", "20000", "--queue-max-bytes", str(8 << 20),
              "--memory-cap-bytes", str(16 << 20), "--wait-timeout-s", str(WAIT_TIMEOUT_S),
              "--kafka-probe-interval-s", "0.5", "--default-shards", "3"]


def metric(gw: Gateway, name: str, labels: str = "") -> float:
    """A value from the gateway's /metrics (sum over series matching the label text)."""
    text = http("GET", gw.url + "/metrics", timeout=10).body.decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and (not labels or labels in line):
            head, _, value = line.rpartition(" ")
            if head.split("{")[0] == name:
                total += float(value)
    return total


def rss_bytes(gw: Gateway) -> int:
    """The gateway process's resident set size."""
    assert gw.proc is not None
    status = Path(f"/proc/{gw.proc.pid}/status").read_text()
    found = re.search(r"VmRSS:\s+(\d+) kB", status)
    assert found is not None
    return int(found.group(1)) * 1024


def read_back(bootstrap: str, topic: str) -> list:  # type: ignore[type-arg]
    return asyncio.run(read_topic(bootstrap, topic))


def wait_delivered(bootstrap: str, topic: str, rows: int, timeout: float = 120) -> None:
    """Until the topic holds at least `rows` records."""
    wait_until(lambda: offsets_total(bootstrap, topic) >= rows, timeout,
               f"{rows} rows in {topic}", interval=0.5)


def check(figures: Figures) -> None:
    record(figures)
    assert not figures.problems(), (figures.problems(), figures)


def start_load(gw: Gateway, stream: str, prefix: str, dialect: Dialect, *,
               wait_every: int = 3, clients: int = 6, rows: int = 50) -> LoadDriver:
    """Clients 0, wait_every, 2·wait_every… send wait=true, the others wait=false."""
    return LoadDriver(gw.url, ADMIN_KEY, stream, dialect, prefix=prefix, clients=clients,
                      rows_per_request=rows, request_timeout=WAIT_TIMEOUT_S + 20,
                      wait_for=lambda c, n: c % wait_every == 0).start()


def broker_outage(scenario: str, broker: Broker, tmp_path: Path, fault: Callable[[], None],
                  outage_s: float) -> None:
    """Load → fault → keep loading through the outage → restart the broker → account."""
    dialect = TimeplusNdjson()
    gw = Gateway(tmp_path, broker.bootstrap, extra=QUEUE_ARGS).start()
    try:
        name = unique_name(scenario.replace("-", "_"))
        topic = gw.create_stream(name, COLUMNS)["topic"]
        load = start_load(gw, name, scenario, dialect)
        began = time.monotonic()
        wait_until(lambda: load.ledger.acked_rows() >= 5000 and time.monotonic() - began > 2, 60,
                   "load to build up")
        down = time.monotonic()
        fault()
        # The outage lasts `outage_s`, or until the queues are full and refusing (429), if later.
        wait_until(lambda: load.ledger.count(429, since=down) > 0, 60, "429 once queues are full")
        wait_until(lambda: time.monotonic() - down >= outage_s, outage_s + 1, "the outage")
        up_started = time.monotonic()
        broker.start()
        up = time.monotonic()
        wait_until(lambda: load.ledger.count(200, since=up) > 0, 90, "wait=true 200s again")
        wait_until(lambda: load.ledger.count(202, since=up) > 10, 60, "wait=false 202s again")
        ledger = load.stop()
        acked = ledger.acked_rows()
        wait_until(lambda: metric(gw, "gateway_queue_rows") == 0, 120, "the queues to drain")
        wait_delivered(broker.bootstrap, topic, acked)
        outcomes = ledger.snapshot()
        during = [o for o in outcomes if down <= o.sent < up_started]
        waited = [o for o in during if o.wait]
        accepted_during = sum(len(o.ids) for o in during if o.reply == 202)
        too_many = [o for o in outcomes if o.reply == 429]
        figures = account(
            scenario, [ledger], read_back(broker.bootstrap, topic), dialect,
            outage_s=round(up - down, 1),
            wait_true_replies_during_outage=dict(sorted(
                {str(r): sum(1 for o in waited if o.reply == r)
                 for r in {o.reply for o in waited}}.items())),
            slowest_wait_true_reply_s=round(max((o.took for o in waited), default=0.0), 2),
            rows_accepted_202_during_outage=accepted_during,
            requests_429=len(too_many),
            gateway_restarts=0)
        check(figures)
        # wait=true during the outage: 503 (known down) or 504 (timed out), never a hang.
        assert waited, "no wait=true request during the outage"
        assert {o.reply for o in waited} <= {200, 503, 504}, figures.notes
        assert max(o.took for o in waited) <= WAIT_TIMEOUT_S + MARGIN_S, figures.notes
        assert accepted_during > 0, "no wait=false row was accepted during the outage"
        assert all(o.retry_after for o in too_many), "429 without Retry-After"
        assert gw.proc is not None and gw.proc.poll() is None, "the gateway died"
    finally:
        code = gw.stop()
    assert code == 0, gw.log()[-3000:]


def test_broker_kill9_under_load(private_broker: Broker, tmp_path: Path) -> None:
    broker_outage("broker-kill9", private_broker, tmp_path, private_broker.kill9, outage_s=4)


def test_broker_clean_stop_under_load(private_broker: Broker, tmp_path: Path) -> None:
    broker_outage("broker-stop", private_broker, tmp_path, private_broker.stop, outage_s=4)



