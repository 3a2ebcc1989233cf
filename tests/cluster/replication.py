"""Kafka's replication_test matrix against real gateways on a 3-node cluster: the faults, a load
of wait=true and wait=false clients on two gateways (one with --spool-dir), a /readyz watcher, and
the figures each case reports. Used by tests/cluster/test_replication.py (the CI tier) and
benchmarks/cluster_faults.py (every case, several times)."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient

from tests.brokers import Broker, Cluster, kafka_dev
from tests.integration.harness import ADMIN_KEY, Gateway, http, unique_name, wait_until
from tests.reliability.accounting import (
    ACKED,
    COLUMNS,
    Ledger,
    LoadDriver,
    Outcome,
    TimeplusNdjson,
    account,
)
from tests.reliability.conftest import offsets_total, read_back

GUARD_S = 180  # failure guards only: a busy 2-core machine restarts a JVM slowly
WAIT_TIMEOUT_S = 10
GATEWAY_ARGS = ["--replication-factor", "3", "--default-shards", "3", "--wait-timeout-s", str(WAIT_TIMEOUT_S)]
UNREACHABLE = re.compile(r"\S+ \S+ WARNING \S+ Kafka at \S+ is UNREACHABLE.*")


@dataclass
class ReadyWatch:
    """Polls a gateway's /readyz until stopped; the time it spent answering anything but 200."""

    gw: Gateway
    samples: list[tuple[float, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> ReadyWatch:
        def poll() -> None:
            while not self._stop.wait(0.05):
                try:
                    status = http("GET", self.gw.url + "/readyz", timeout=30).status
                except OSError:  # no answer at all says nothing about readiness
                    continue
                self.samples.append((time.monotonic(), status))

        self._thread = threading.Thread(target=poll, daemon=True, name="readyz-watch")
        self._thread.start()
        return self

    def stop(self) -> float:
        """Seconds not 200 (sum of the intervals that began with a non-200 answer)."""
        self._stop.set()
        assert self._thread is not None
        self._thread.join(30)
        s = self.samples
        return round(sum(b[0] - a[0] for a, b in itertools.pairwise(s) if a[1] != 200), 2)


def longest_without_2xx(outcomes: list[Outcome], since: float, until: float) -> float:
    """The longest time between two 2xx replies (or the window's ends) in [since, until]."""
    done = sorted(o.sent + o.took for o in outcomes if o.reply in ACKED)
    marks = [since, *(t for t in done if since < t < until), until]
    return round(max(b - a for a, b in itertools.pairwise(marks)), 2)


@dataclass
class Load:
    """Two clients per gateway: client 0 sends wait=true, client 1 wait=false."""

    gw: Gateway
    stream: str
    topic: str
    driver: LoadDriver

    @classmethod
    def start(cls, gw: Gateway, prefix: str) -> Load:
        stream = unique_name(prefix)
        topic = gw.create_stream(stream, COLUMNS)["topic"]
        driver = LoadDriver(
            gw.url,
            ADMIN_KEY,
            stream,
            TimeplusNdjson(),
            prefix=prefix,
            clients=2,
            rows_per_request=20,
            request_timeout=WAIT_TIMEOUT_S + 30,
            wait_for=lambda c, n: c == 0,
            pause_s=0.01,
        ).start()
        return cls(gw, stream, topic, driver)


def topic_isr(bootstrap: str, topic: str) -> list[tuple[int, int]]:
    """(leader, in-sync replica count) of each partition, from the cluster's metadata."""

    async def describe() -> list[tuple[int, int]]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        await admin.start()
        try:
            (desc,) = await admin.describe_topics([topic])
            return [(p["leader"], len(p["isr"])) for p in desc["partitions"]]
        finally:
            await admin.close()

    try:
        return asyncio.run(asyncio.wait_for(describe(), 20))
    except Exception:  # a node going away mid-request: ask again
        return []


def fully_replicated(cluster: Cluster, topics: list[str]) -> bool:
    """Every partition of `topics` has a leader and 3 in-sync replicas."""
    return all(
        (parts := topic_isr(cluster.bootstrap, t)) and all(leader >= 0 and isr == 3 for leader, isr in parts)
        for t in topics
    )


def leader_id(cluster: Cluster, topic: str, partition: int) -> int | None:
    try:
        return cluster.leader_of(topic, partition).node_id
    except LookupError:
        return None


def controller_id(cluster: Cluster) -> int | None:
    try:
        return cluster.controller().node_id
    except LookupError:
        return None


def start_all(cluster: Cluster) -> None:
    """Start every stopped node at once (kafka-dev start without --node launches them together)."""
    done = kafka_dev("start", env=cluster.nodes[0]._env())
    assert done.returncode == 0, done.stderr


# ---- the faults: each breaks something, waits for Kafka to react, and repairs it -------------
Fault = Callable[[Cluster, str, list[Gateway]], dict[str, Any]]


def _bounce(node: Broker, cluster: Cluster, hard: bool, moved: Callable[[], bool]) -> None:
    if hard:
        node.kill9()
        wait_until(moved, GUARD_S, "Kafka to fail over")
    else:
        node.stop()  # a controlled shutdown moves leadership away first
    node.start()


def leader_bounce(hard: bool) -> Fault:
    def fault(cluster: Cluster, topic: str, _gws: list[Gateway]) -> dict[str, Any]:
        victim = cluster.leader_of(topic, 0)
        _bounce(victim, cluster, hard, lambda: leader_id(cluster, topic, 0) not in (None, victim.node_id))
        return {"node": victim.node_id}

    return fault


def controller_bounce(hard: bool) -> Fault:
    def fault(cluster: Cluster, topic: str, _gws: list[Gateway]) -> dict[str, Any]:
        victim = cluster.controller()
        _bounce(victim, cluster, hard, lambda: controller_id(cluster) not in (None, victim.node_id))
        return {"node": victim.node_id}

    return fault


def paused_leader(cluster: Cluster, topic: str, _gws: list[Gateway]) -> dict[str, Any]:
    victim = cluster.leader_of(topic, 0)
    victim.pause()
    try:  # Kafka fences it after broker.session.timeout.ms and elects another leader
        wait_until(
            lambda: leader_id(cluster, topic, 0) not in (None, victim.node_id),
            GUARD_S,
            "a new leader for the paused leader's partition",
        )
    finally:
        victim.resume()
    return {"node": victim.node_id}


def two_of_three_down(cluster: Cluster, topic: str, gateways: list[Gateway]) -> dict[str, Any]:
    """The controller quorum is lost with them: nothing changes in the metadata any more (no
    fencing, no ISR shrink); the survivor leads some partitions but cannot get acks=all."""
    keep = cluster.leader_of(topic, 0)
    down = [n for n in cluster.nodes if n is not keep]
    for node in down:
        node.kill9()
    killed = time.monotonic()
    for gw in gateways:  # the gateways notice that no topic can be written
        wait_until(
            lambda g=gw: http("GET", g.url + "/readyz", timeout=10).status == 503,  # type: ignore[misc]
            GUARD_S,
            "/readyz 503 with two of three nodes down",
        )
    restart = time.monotonic()
    start_all(cluster)
    return {"nodes": [n.node_id for n in down], "window": (killed, restart)}


def rolling_restart(cluster: Cluster, topic: str, _gws: list[Gateway]) -> dict[str, Any]:
    """As an operator does it: one node after another, each once the cluster is whole again."""
    for node in cluster.nodes:
        node.stop()
        node.start()
        wait_until(
            lambda: fully_replicated(cluster, [topic]), GUARD_S, "every partition back to 3 in-sync replicas"
        )
    return {}


CASES: dict[str, Fault] = {
    "leader-kill9": leader_bounce(True),
    "leader-sigterm": leader_bounce(False),
    "controller-kill9": controller_bounce(True),
    "controller-sigterm": controller_bounce(False),
    "leader-paused": paused_leader,
    "two-of-three-down": two_of_three_down,
    "rolling-restart": rolling_restart,
}


# The cases CI runs (the tier's time budget); benchmarks/cluster_faults.py runs all of them.
# Left to the benchmark: SIGTERM bounces (gentler than kill -9) and the controller's kill -9
# (its partitions fail over as a leader's do; KRaft elects a new controller meanwhile).
CI_CASES = ["leader-kill9", "leader-paused", "two-of-three-down", "rolling-restart"]


def selected_cases() -> list[str]:
    """CLUSTER_CASES: "ci" (default), "all", or comma-separated case names."""
    chosen = os.environ.get("CLUSTER_CASES", "ci")
    if chosen == "ci":
        return CI_CASES
    return list(CASES) if chosen == "all" else chosen.split(",")


RESULTS: list[CaseResult] = []  # every case run in this session, printed at its end


def keep(result: CaseResult) -> None:
    """Remember a case's figures (and append them to CLUSTER_FIGURES, for the benchmark)."""
    RESULTS.append(result)
    if path := os.environ.get("CLUSTER_FIGURES"):
        with open(path, "a") as f:
            f.write(json.dumps(dataclasses.asdict(result)) + "\n")


@dataclass
class CaseResult:
    """What one case reports (per gateway: `plain` without, `spool` with --spool-dir)."""

    case: str
    seconds: float
    rows: dict[str, dict[str, Any]]
    readyz_not_200_s: dict[str, float]
    unreachable_logged: dict[str, int]
    wait_true_200_while_under_min_isr: int = 0
    unreachable_lines: dict[str, list[str]] = field(default_factory=dict)

    def line(self) -> str:
        parts = [f"{self.case} ({self.seconds:.0f} s):"]
        for gw, r in self.rows.items():
            parts.append(
                f"{gw}: acked {r['acknowledged']} (wait=true {r['acked_wait_true']}), "
                f"missing {r['missing']}, dup {r['duplicates']} (wait=true "
                f"{r['duplicates_wait_true']}), longest without 2xx wait=true "
                f"{r['longest_no_2xx_wait_true_s']} s / wait=false "
                f"{r['longest_no_2xx_wait_false_s']} s, /readyz not 200 "
                f"{self.readyz_not_200_s[gw]} s;"
            )
        for gw, lines in self.unreachable_lines.items():
            parts.extend(f"[{gw}] {line}" for line in lines[:3])
        return " ".join(parts)


def run_case(case: str, cluster: Cluster, gateways: dict[str, Gateway]) -> CaseResult:
    """Load both gateways, apply the fault, recover, read every topic back and account."""
    began = time.monotonic()
    logged = {name: len(gw.log()) for name, gw in gateways.items()}
    loads = {name: Load.start(gw, case.replace("-", "_")) for name, gw in gateways.items()}
    watches = {name: ReadyWatch(gw).start() for name, gw in gateways.items()}
    try:
        for load in loads.values():
            wait_until(
                lambda ld=load: (
                    ld.driver.ledger.count(200) >= 5  # type: ignore[misc]
                    and ld.driver.ledger.count(202) >= 5
                ),
                GUARD_S,
                "load to build up",
            )
        t0 = time.monotonic()
        detail = CASES[case](cluster, next(iter(loads.values())).topic, list(gateways.values()))
        t1 = time.monotonic()
        for load in loads.values():  # every kind of client acknowledged again
            wait_until(
                lambda ld=load: (
                    ld.driver.ledger.count(200, since=t1) >= 3  # type: ignore[misc]
                    and ld.driver.ledger.count(202, since=t1) >= 3
                ),
                GUARD_S,
                "2xx again",
            )
    finally:
        ledgers = {name: load.driver.stop() for name, load in loads.items()}
        not_ready = {name: w.stop() for name, w in watches.items()}
    rows = {}
    under_min_isr = 0
    for name, load in loads.items():
        ledger = ledgers[name]
        wait_until(
            lambda ld=ledger, t=load.topic: (
                offsets_total(cluster.bootstrap, t)  # type: ignore[misc]
                >= ld.acked_rows()
            ),
            GUARD_S,
            "acknowledged rows in Kafka",
        )
        rows[name] = figures(case, name, ledger, read_back(cluster.bootstrap, load.topic), t0, t1)
        if "window" in detail:
            killed, restart = detail["window"]
            under_min_isr += sum(
                1
                for o in ledger.snapshot()
                if o.wait and o.reply == 200 and o.sent > killed and o.sent + o.took < restart
            )
    unreachable = {name: UNREACHABLE.findall(gw.log()[logged[name] :]) for name, gw in gateways.items()}
    return CaseResult(
        case,
        time.monotonic() - began,
        rows,
        not_ready,
        {name: len(lines) for name, lines in unreachable.items()},
        under_min_isr,
        unreachable,
    )


def figures(case: str, gw: str, ledger: Ledger, records: list[Any], t0: float, t1: float) -> dict[str, Any]:
    dialect = TimeplusNdjson()
    outcomes = ledger.snapshot()
    f = account(f"cluster-{case}-{gw}", [ledger], records, dialect)
    waited = {i for o in outcomes if o.wait and o.reply in ACKED for i in o.ids}
    seen: dict[str, int] = {}
    for r in records:
        seen[dialect.row_id(r)] = seen.get(dialect.row_id(r), 0) + 1
    return {
        "acknowledged": f.rows_acknowledged,
        "acked_wait_true": len(waited),
        "missing": f.acknowledged_missing,
        "violations": f.delivered_unacknowledged_violations,
        "unknown": f.unknown_records,
        "duplicates": f.duplicates,
        "duplicates_wait_true": sum(seen.get(i, 0) - 1 for i in waited if seen.get(i, 0) > 1),
        "replies": f.replies,
        "longest_no_2xx_wait_true_s": longest_without_2xx([o for o in outcomes if o.wait], t0, t1),
        "longest_no_2xx_wait_false_s": longest_without_2xx([o for o in outcomes if not o.wait], t0, t1),
    }


def gateways(cluster: Cluster, tmp: Path) -> Iterator[dict[str, Gateway]]:
    """`plain` and `spool` (--spool-dir) gateways against the cluster, stopped afterwards."""
    plain = Gateway(tmp / "plain", cluster.bootstrap, extra=GATEWAY_ARGS)
    spool = Gateway(
        tmp / "spool", cluster.bootstrap, extra=[*GATEWAY_ARGS, "--spool-dir", str(tmp / "spool" / "wal")]
    )
    plain.start(wait_ready=False)
    spool.start(wait_ready=False)
    try:
        plain.wait_ready(60)
        spool.wait_ready(60)
        yield {"plain": plain, "spool": spool}
    finally:
        codes = plain.stop(), spool.stop()
        assert codes == (0, 0), plain.log()[-3000:] + spool.log()[-3000:]
