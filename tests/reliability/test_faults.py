"""Faults under sustained load, with a real (private) broker: every scenario ends with the topic
read back and compared with the ledger of replies (tests/reliability/accounting.py), and writes its
figures into tests/reliability/reports/REPORT.md (see accounting.REPORT)."""

from __future__ import annotations

import asyncio
import re
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.brokers import Broker
from tests.integration.harness import ADMIN_KEY, Gateway, http, unique_name, wait_until
from tests.reliability.accounting import (
    COLUMNS,
    DIALECTS,
    DataSourceIngest,
    Dialect,
    Figures,
    Ledger,
    LoadDriver,
    Outcome,
    TimeplusNdjson,
    account,
    record,
)
from tests.reliability.conftest import offsets_total, read_back

Spawn = Callable[..., Gateway]

pytestmark = pytest.mark.slow
WAIT_TIMEOUT_S = 3.0
GUARD_S = 300  # failure guards for load to build up or queues to fill (slow under a CPU hog)
# Replies that prove a request was answered, not left hanging until the client gave up
# ("timeout": no reply within the client's generous WAIT_TIMEOUT_S + 20 s; "connection").
ANSWERED = {200, 202, 429, 503, 504}
# Small queues so that a few seconds of outage fill them (and 429s appear).
QUEUE_ARGS = [
    "--queue-max-rows",
    "20000",
    "--queue-max-bytes",
    str(8 << 20),
    "--memory-cap-bytes",
    str(16 << 20),
    "--wait-timeout-s",
    str(WAIT_TIMEOUT_S),
    "--kafka-probe-interval-s",
    "0.5",
    "--default-shards",
    "3",
]


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


def wait_delivered(bootstrap: str, topic: str, rows: int, timeout: float = 120) -> None:
    """Until the topic holds at least `rows` records."""
    wait_until(
        lambda: offsets_total(bootstrap, topic) >= rows, timeout, f"{rows} rows in {topic}", interval=0.5
    )


def check(figures: Figures) -> None:
    record(figures)
    assert not figures.problems(), (figures.problems(), figures)


def start_load(
    gw: Gateway,
    stream: str,
    prefix: str,
    dialect: Dialect,
    *,
    wait_every: int = 3,
    clients: int = 6,
    rows: int = 50,
) -> LoadDriver:
    """Clients 0, wait_every, 2·wait_every… send wait=true, the others wait=false."""
    return LoadDriver(
        gw.url,
        ADMIN_KEY,
        stream,
        dialect,
        prefix=prefix,
        clients=clients,
        rows_per_request=rows,
        request_timeout=WAIT_TIMEOUT_S + 20,
        wait_for=lambda c, n: c % wait_every == 0,
    ).start()


def replies(outcomes: list[Outcome]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[str(o.reply)] = counts.get(str(o.reply), 0) + 1
    return dict(sorted(counts.items()))


def broker_outage(
    scenario: str, broker: Broker, spawn: Spawn, fault: Callable[[], None], outage_s: float
) -> None:
    """Load → fault → keep loading through the outage → restart the broker → account."""
    dialect = TimeplusNdjson()
    gw = spawn(broker.bootstrap, QUEUE_ARGS)
    name = unique_name(scenario.replace("-", "_"))
    topic = gw.create_stream(name, COLUMNS)["topic"]
    load = start_load(gw, name, scenario, dialect)
    began = time.monotonic()
    wait_until(
        lambda: load.ledger.acked_rows() >= 5000 and time.monotonic() - began > 2, GUARD_S, "load to build up"
    )
    down = time.monotonic()
    fault()
    # The outage lasts `outage_s`, or until the queues are full and refusing (429), if later.
    # a failure guard only: under a CPU hog the load driver fills the queues slowly
    wait_until(lambda: load.ledger.count(429, since=down) > 0, GUARD_S, "429 once queues are full")
    wait_until(lambda: time.monotonic() - down >= outage_s, outage_s + 1, "the outage")
    restart = time.monotonic()
    broker.start()
    up = time.monotonic()
    wait_until(lambda: load.ledger.count(200, since=up) > 0, 90, "wait=true 200s again")
    wait_until(lambda: load.ledger.count(202, since=up) > 10, 60, "wait=false 202s again")
    ledger = load.stop()
    wait_until(lambda: metric(gw, "gateway_queue_rows") == 0, 120, "the queues to drain")
    wait_delivered(broker.bootstrap, topic, ledger.acked_rows())
    outcomes = ledger.snapshot()
    during = [o for o in outcomes if down <= o.sent < restart]
    waited = [o for o in during if o.wait]
    accepted_during = sum(len(o.ids) for o in during if o.reply == 202)
    too_many = [o for o in outcomes if o.reply == 429]
    figures = account(
        scenario,
        [ledger],
        read_back(broker.bootstrap, topic),
        dialect,
        broker_down_s=round(up - down, 1),
        wait_true_replies_while_down=replies(waited),
        slowest_wait_true_reply_while_down_s=round(max((o.took for o in waited), default=0), 2),
        wait_false_replies_while_down=replies([o for o in during if not o.wait]),
        rows_accepted_202_while_down=accepted_during,
        requests_429_all_with_retry_after=all(o.retry_after for o in too_many),
    )
    check(figures)
    # wait=true during the outage: 503 (known down) or 504 (timed out), never a hang: a hang
    # would be the client's "timeout". How long they took is a reported figure, not asserted.
    assert waited, "no wait=true request during the outage"
    assert {o.reply for o in waited} <= {200, 503, 504}, figures.notes
    assert accepted_during > 0, "no wait=false row was accepted during the outage"
    assert too_many and figures.notes["requests_429_all_with_retry_after"], figures.notes
    assert gw.stop() == 0, gw.log()[-3000:]


def test_broker_kill9_under_load(private_broker: Broker, spawn: Spawn) -> None:
    broker_outage("broker-kill9", private_broker, spawn, private_broker.kill9, outage_s=4)


def test_broker_clean_stop_under_load(private_broker: Broker, spawn: Spawn) -> None:
    broker_outage("broker-stop", private_broker, spawn, private_broker.stop, outage_s=4)


def queued_at_drain(gw: Gateway) -> int:
    found = re.search(r"draining (\d+) queued rows", gw.log())
    assert found is not None, gw.log()[-3000:]
    return int(found.group(1))


def test_gateway_sigterm_under_load(private_broker: Broker, spawn: Spawn) -> None:
    """SIGTERM: stop taking requests (503), drain the queues into Kafka, exit 0."""
    dialect = TimeplusNdjson()
    bootstrap = private_broker.bootstrap
    # A long linger keeps rows queued when SIGTERM lands, so the drain has work to do.
    gw = spawn(bootstrap, [*QUEUE_ARGS, "--linger-ms", "1000"])
    name = unique_name("sigterm")
    topic = gw.create_stream(name, COLUMNS)["topic"]
    load = start_load(gw, name, "sigterm", dialect)
    wait_until(lambda: load.ledger.acked_rows() >= 5000, GUARD_S, "load to build up")
    term = time.monotonic()
    gw.signal(signal.SIGTERM)
    assert gw.proc is not None
    code = gw.proc.wait(60)
    took = time.monotonic() - term
    ledger = load.stop()
    wait_delivered(bootstrap, topic, ledger.acked_rows())
    after = {str(o.reply) for o in ledger.snapshot() if o.sent > term + 0.5}
    figures = account(
        "gateway-sigterm",
        [ledger],
        read_back(bootstrap, topic),
        dialect,
        rows_queued_at_sigterm=queued_at_drain(gw),
        exit_code=code,
        seconds_to_exit=round(took, 2),
        replies_after_sigterm=sorted(after),
    )
    check(figures)
    assert code == 0, gw.log()[-3000:]
    assert figures.notes["rows_queued_at_sigterm"] > 0, "the drain had nothing to do"
    assert after <= {"503", "connection"}, after


def gateway_kill9(
    scenario: str,
    broker: Broker,
    spawn: Spawn,
    extra: list[str],
    dialect: Dialect | None = None,
    *,
    hold_unacknowledged: bool = False,
) -> tuple[Ledger, Gateway, str, dict[str, object]]:
    """Load → kill -9 the gateway → start it again on the same data dir (catalog, spool).
    A 50 ms linger (a common batching setting) keeps some rows unflushed at any moment.
    `hold_unacknowledged`: pause the broker before the kill and kill only once rows were
    answered 202 while it was paused, so that the kill surely leaves rows Kafka never
    acknowledged (how many are unflushed at a chance moment depends on the machine's load)."""
    extra = [*QUEUE_ARGS, "--linger-ms", "50", *extra]
    gw = spawn(broker.bootstrap, extra)
    dialect = dialect or TimeplusNdjson()
    name = unique_name("kill9")
    definition = dialect.stream_definition()
    topic = gw.create_stream(name, definition.pop("columns"), **definition)["topic"]
    load = start_load(gw, name, scenario, dialect, wait_every=4)
    wait_until(lambda: load.ledger.acked_rows() >= 20000, GUARD_S, "load to build up")
    assert gw.proc is not None
    notes: dict[str, object] = {}
    if hold_unacknowledged:
        broker.pause()
        paused = time.monotonic()
        try:
            wait_until(
                lambda: load.ledger.count(202, since=paused) > 0,
                60,
                "rows accepted (202) while Kafka cannot acknowledge them",
            )
            notes["rows_accepted_202_while_broker_paused"] = sum(
                len(o.ids) for o in load.ledger.snapshot() if o.reply == 202 and o.sent >= paused
            )
            notes["queue_rows_sampled_just_before_kill"] = int(metric(gw, "gateway_queue_rows"))
            gw.signal(signal.SIGKILL)
            gw.proc.wait(10)
        finally:
            broker.resume()
    else:
        notes["queue_rows_sampled_just_before_kill"] = int(metric(gw, "gateway_queue_rows"))
        gw.signal(signal.SIGKILL)
        gw.proc.wait(10)
    ledger = load.stop()
    again = spawn(broker.bootstrap, extra)
    wait_until(lambda: metric(again, "gateway_queue_rows") == 0, 120, "the queues to drain")
    return ledger, again, topic, notes


def test_gateway_kill9_without_durability_loses_only_unflushed_202s(
    private_broker: Broker, spawn: Spawn
) -> None:
    """Without --spool-dir, kill -9 loses rows answered 202 that Kafka had not yet acknowledged,
    never a 200: the missing rows are all 202s (excused, counted as `lost (excused)`)."""
    ledger, gw, topic, notes = gateway_kill9("gateway-kill9-no-spool", private_broker, spawn, [])
    assert "from a previous run" not in gw.log()  # nothing to replay without a spool
    figures = account(
        "gateway-kill9-no-spool",
        [ledger],
        read_back(private_broker.bootstrap, topic),
        TimeplusNdjson(),
        excused=lambda o: o.reply == 202,
        **notes,
    )
    check(figures)  # a missing 200 row would not be excused and fails here
    assert gw.stop() == 0, gw.log()[-3000:]


REPLAYED = re.compile(r"spool: (\d+) rows from a previous run queued again")


@pytest.mark.parametrize("dialect", DIALECTS, ids=[d.name for d in DIALECTS])
def test_gateway_kill9_with_spool_loses_nothing(
    private_broker: Broker, spawn: Spawn, tmp_path: Path, dialect: Dialect
) -> None:
    """With --spool-dir, kill -9 loses no acknowledged row, in every dialect: the restarted
    gateway replays the log, and trims it once Kafka has every row."""
    scenario = "gateway-kill9-spool" + ("" if dialect.name == "timeplus-ndjson" else f" ({dialect.name})")
    spool = tmp_path / "spool"
    spooled = not isinstance(dialect, DataSourceIngest)  # its rows are all wait=true: never spooled
    ledger, gw, topic, notes = gateway_kill9(
        scenario, private_broker, spawn, ["--spool-dir", str(spool)], dialect, hold_unacknowledged=spooled
    )
    if spooled:
        # The restarted gateway is ready (and its queues empty) before it has read the spool back:
        # wait for the replay itself, or the log below could be read before it happened.
        wait_until(lambda: REPLAYED.search(gw.log()), GUARD_S, "the spool's replay")
    wait_delivered(private_broker.bootstrap, topic, ledger.acked_rows())
    replayed = REPLAYED.search(gw.log())
    notes["rows_replayed_from_spool"] = int(replayed.group(1)) if replayed else 0
    wait_until(lambda: not list(spool.glob("*.wal")), 30, "the spool to be trimmed")
    figures = account(scenario, [ledger], read_back(private_broker.bootstrap, topic), dialect, **notes)
    check(figures)
    if spooled:
        assert notes["rows_replayed_from_spool"], "nothing was replayed: the test proves nothing"
    assert gw.stop() == 0, gw.log()[-3000:]


def test_kafka_paused_queues_fill_memory_bounded_recovers(private_broker: Broker, spawn: Spawn) -> None:
    """Kafka stops answering (SIGSTOP) for several seconds: queues fill, 429 with Retry-After,
    the gateway's memory stays under the caps plus a margin, and all recovers on SIGCONT."""
    dialect = TimeplusNdjson(pad="p" * 400)  # bigger rows: the byte caps are what bind
    cap = 16 << 20
    gw = spawn(private_broker.bootstrap, QUEUE_ARGS)
    name = unique_name("paused")
    topic = gw.create_stream(name, COLUMNS)["topic"]
    baseline = rss_bytes(gw)
    load = start_load(gw, name, "paused", dialect)
    wait_until(lambda: load.ledger.acked_rows() >= 5000, GUARD_S, "load to build up")
    peak = [rss_bytes(gw)]
    stop_sampling = threading.Event()

    def sample() -> None:
        while not stop_sampling.wait(0.05):
            peak.append(rss_bytes(gw))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    paused = time.monotonic()
    private_broker.pause()
    try:
        wait_until(lambda: load.ledger.count(429, since=paused) > 20, GUARD_S, "429 while paused")
        wait_until(lambda: time.monotonic() - paused >= 6, 7, "the pause")
    finally:
        private_broker.resume()
    resumed = time.monotonic()
    wait_until(lambda: load.ledger.count(200, since=resumed) > 0, 60, "wait=true 200s again")
    wait_until(lambda: load.ledger.count(202, since=resumed) > 10, 60, "wait=false 202s again")
    ledger = load.stop()
    stop_sampling.set()
    sampler.join()
    wait_until(lambda: metric(gw, "gateway_queue_rows") == 0, 120, "the queues to drain")
    wait_delivered(private_broker.bootstrap, topic, ledger.acked_rows())
    during = [o for o in ledger.snapshot() if paused <= o.sent < resumed]
    too_many = [o for o in ledger.snapshot() if o.reply == 429]
    margin = 64 << 20
    figures = account(
        "kafka-paused",
        [ledger],
        read_back(private_broker.bootstrap, topic),
        dialect,
        paused_s=round(resumed - paused, 1),
        replies_while_paused=replies(during),
        memory_cap_mib=cap >> 20,
        rss_baseline_mib=round(baseline / 2**20, 1),
        rss_peak_mib=round(max(peak) / 2**20, 1),
        rss_allowed_mib=round((baseline + cap + margin) / 2**20, 1),
        slowest_reply_while_paused_s=round(max(o.took for o in during), 2),
    )
    check(figures)
    assert too_many and all(o.retry_after for o in too_many), "429 without Retry-After"
    assert max(peak) <= baseline + cap + margin, figures.notes
    # Every request sent while paused was answered (none hung until the client gave up).
    assert during and {o.reply for o in during} <= ANSWERED, figures.notes
    assert gw.stop() == 0, gw.log()[-3000:]


async def delete_topic_behind_the_gateway(bootstrap: str, topic: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([topic])
    finally:
        await admin.close()


def test_topic_deleted_behind_the_gateway(private_broker: Broker, spawn: Spawn) -> None:
    """An operator deletes a stream's topic while rows flow: the gateway logs it, recreates the
    topic from its catalog and goes on; rows sent after the deletion are all delivered."""
    dialect = TimeplusNdjson()
    gw = spawn(private_broker.bootstrap, QUEUE_ARGS)
    name = unique_name("topicdel")
    topic = gw.create_stream(name, COLUMNS)["topic"]
    load = start_load(gw, name, "topicdel", dialect)
    wait_until(lambda: load.ledger.acked_rows() >= 5000, GUARD_S, "load to build up")
    asyncio.run(delete_topic_behind_the_gateway(private_broker.bootstrap, topic))
    deleted = time.monotonic()
    wait_until(lambda: "missing in Kafka" in gw.log(), 60, "the gateway to notice")
    wait_until(
        lambda: (
            load.ledger.count(200, since=time.monotonic()) > 0
            or load.ledger.count(200, since=deleted + 5) > 0
        ),
        90,
        "wait=true 200s again",
    )
    wait_until(lambda: load.ledger.count(202, since=deleted + 5) > 10, 60, "202s again")
    ledger = load.stop()
    wait_until(lambda: metric(gw, "gateway_queue_rows") == 0, 120, "the queues to drain")
    later = [o for o in ledger.snapshot() if o.sent > deleted]
    wait_delivered(private_broker.bootstrap, topic, sum(len(o.ids) for o in later if o.reply in (200, 202)))
    # Rows sent before the deletion may have been in the deleted topic: the operator removed
    # them. Every row acknowledged for a request sent after it must be in the new topic.
    figures = account(
        "topic-deleted",
        [ledger],
        read_back(private_broker.bootstrap, topic),
        dialect,
        excused=lambda o: o.sent <= deleted,
        replies_after_delete=replies(later),
    )
    check(figures)
    assert {o.reply for o in later} <= ANSWERED, figures.notes
    assert gw.proc is not None and gw.proc.poll() is None
    assert gw.stop() == 0, gw.log()[-3000:]


def test_stream_deleted_while_requests_in_flight(private_broker: Broker, spawn: Spawn) -> None:
    """DELETE of a stream under load: in-flight requests end in 2xx or 404 (never 5xx), the
    gateway goes on serving, and a stream created again under the name starts empty."""
    dialect = TimeplusNdjson()
    gw = spawn(private_broker.bootstrap, QUEUE_ARGS)
    name = unique_name("streamdel")
    topic = gw.create_stream(name, COLUMNS)["topic"]
    load = start_load(gw, name, "streamdel", dialect)
    wait_until(lambda: load.ledger.acked_rows() >= 5000, GUARD_S, "load to build up")
    reply = gw.request("DELETE", f"/api/v1beta2/streams/{name}")
    deleted = time.monotonic()
    assert reply.status == 204, reply.body
    wait_until(lambda: load.ledger.count(404, since=deleted + 0.5) > 10, 30, "404s after delete")
    first = load.stop()
    odd = [
        (round(o.sent - deleted, 2), round(o.took, 2), o.reply)
        for o in first.snapshot()
        if o.reply not in (200, 202, 404, 429)
    ]
    assert not odd, (first.replies(), "(sent after DELETE s, took s, reply):", odd, gw.log()[-4000:])
    gw.create_stream(name, COLUMNS)
    again = start_load(gw, name, "streamdel-again", dialect, clients=2)
    wait_until(lambda: again.ledger.acked_rows() >= 2000, 60, "load on the new stream")
    second = again.stop()
    wait_until(lambda: metric(gw, "gateway_queue_rows") == 0, 120, "the queues to drain")
    wait_delivered(private_broker.bootstrap, topic, second.acked_rows())
    records = read_back(private_broker.bootstrap, topic)
    # The new topic holds the second load's rows only: nothing of the deleted stream came back.
    figures = account(
        "stream-deleted", [second], records, dialect, replies_while_deleting=dict(first.replies())
    )
    check(figures)
    assert gw.stop() == 0, gw.log()[-3000:]


def test_broker_unreachable_at_gateway_start(private_broker: Broker, spawn: Spawn, tmp_path: Path) -> None:
    """The gateway starts while Kafka is down: /readyz and ingest answer 503 (no crash, no
    restart loop); once Kafka is up it becomes ready by itself and rows flow."""
    gw = spawn(private_broker.bootstrap, QUEUE_ARGS)
    name = unique_name("startdown")
    topic = gw.create_stream(name, COLUMNS)["topic"]
    assert gw.stop() == 0
    private_broker.stop()
    try:
        gw = spawn(private_broker.bootstrap, QUEUE_ARGS, wait_ready=False)
        wait_until(lambda: "retrying in" in gw.log(), 30, "a connection attempt to fail")
        # the first attempt can fail (and log) before the port is bound (gateway.server binds
        # after the app's startup tasks begin): a refused connection is not the answer tested
        wait_until(gw.answers, 30, "the gateway to listen")
        ready = http("GET", gw.url + "/readyz", timeout=5)
        ingest = gw.ingest(
            name, '{"id": "early", "seq": 0, "pad": ""}\n', wait=False, content_type="application/x-ndjson"
        )
        assert ready.status == 503 and ingest.status == 503, (ready.body, ingest.body)
        assert ingest.json()["error"] == "unavailable" and ingest.headers.get("Retry-After")
        assert gw.proc is not None and gw.proc.poll() is None
    finally:
        private_broker.start()
    gw.wait_ready(60)
    dialect = TimeplusNdjson()
    load = start_load(gw, name, "startdown", dialect, clients=2)
    wait_until(lambda: load.ledger.acked_rows() >= 1000, 60, "rows to flow")
    ledger = load.stop()
    wait_delivered(private_broker.bootstrap, topic, ledger.acked_rows())
    figures = account(
        "broker-down-at-start",
        [ledger],
        read_back(private_broker.bootstrap, topic),
        dialect,
        replies_before_kafka_was_up={"readyz": 503, "ingest": 503},
    )
    check(figures)
    assert gw.stop() == 0, gw.log()[-3000:]


def test_without_accept_during_outage_wait_false_gets_503(private_broker: Broker, spawn: Spawn) -> None:
    """--no-accept-during-outage keeps issue 2's behaviour: while Kafka is known unreachable,
    every ingest (wait=false too) gets 503 with Retry-After and nothing is queued."""
    gw = spawn(private_broker.bootstrap, [*QUEUE_ARGS, "--no-accept-during-outage"])
    name = unique_name("noaccept")
    topic = gw.create_stream(name, COLUMNS)["topic"]
    row = '{"id": "before", "seq": 1, "pad": ""}\n'
    assert gw.ingest(name, row, wait=False, content_type="application/x-ndjson").status == 202
    private_broker.pause()
    try:
        wait_until(
            lambda: http("GET", gw.url + "/readyz", timeout=5).status == 503,
            30,
            "the gateway to see Kafka unreachable",
        )
        refused = gw.ingest(
            name, '{"id": "during", "seq": 2, "pad": ""}\n', wait=False, content_type="application/x-ndjson"
        )
        assert refused.status == 503 and refused.headers.get("Retry-After"), refused.body
        assert metric(gw, "gateway_queue_rows") <= 1  # only the row from before, if unflushed
    finally:
        private_broker.resume()
    wait_until(lambda: http("GET", gw.url + "/readyz", timeout=5).status == 200, 60, "ready")
    assert (
        gw.ingest(
            name, '{"id": "after", "seq": 3, "pad": ""}\n', wait=True, content_type="application/x-ndjson"
        ).status
        == 200
    )
    ids = sorted(r.json()["id"] for r in read_back(private_broker.bootstrap, topic))
    assert ids == ["after", "before"], ids
    assert gw.stop() == 0, gw.log()[-3000:]
