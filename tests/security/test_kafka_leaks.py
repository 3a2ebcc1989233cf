"""Issue 20 items 11, 12, 14 and 15 against a real broker of the module's own: a deleted stream
leaves no metric series and no producer metadata behind (no `Topic … not found` lines after
create/delete cycles); a permanent CreateTopics error is 422, not a retryable 503; stats calls
share a bounded set of consumers; with Kafka down a stats call's 503 names no address or
exception, and SIGTERM ends without a traceback."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.catalog.model import Column, Stream
from gateway.sinks.kafka import KafkaSink
from gateway.sinks.kafka_stats import POOL_SIZE, KafkaStats
from gateway.sinks.kafka_topics import create_topics
from tests.brokers import Broker, own_broker
from tests.integration.harness import Gateway, http, unique_name, wait_until
from tests.security.conftest import COLUMNS

STREAMS = "/api/v1beta2/streams"
CYCLES = 6


@pytest.fixture(scope="module")
def broker() -> Iterator[Broker]:
    with own_broker() as b:
        yield b


def start(broker: Broker, tmp: Path, *extra: str) -> Gateway:
    return Gateway(tmp, broker.bootstrap, extra=["--log-level", "INFO", "--linger-ms", "5", *extra]).start()


def test_deleted_streams_leave_nothing_behind(broker: Broker, tmp_path: Path) -> None:
    gw = start(broker, tmp_path)
    try:
        names = []
        for _ in range(CYCLES):
            name = unique_name("gone")
            names.append(name)
            gw.create_stream(name, COLUMNS)
            assert gw.ingest(name, '{"id": "a", "n": 1}\n', content_type="application/x-ndjson").status == 200
            # its stats: the pooled stats consumers must not keep tracking its topic either
            assert gw.request("GET", f"{STREAMS}/{name}/stats").status == 200
            assert gw.request("DELETE", f"{STREAMS}/{name}").status == 204
        # each new topic the producer meets makes it refresh its metadata: a deleted topic it
        # still tracked was logged as an ERROR at every refresh (quadratic in the cycles). (A
        # brand-new topic may be "not found" once before the broker knows it: only what is
        # logged after the cycles counts.)
        after = len(gw.log())
        for _ in range(3):
            alive = unique_name("alive")
            gw.create_stream(alive, COLUMNS)
            assert (
                gw.ingest(alive, '{"id": "a", "n": 1}\n', content_type="application/x-ndjson").status == 200
            )
        log = gw.log()[after:]
        not_found = [
            line for line in log.splitlines() if "not found" in line and any(n in line for n in names)
        ]
        assert not_found == [], not_found[:5]
        scrape = http("GET", gw.url + "/metrics").body.decode()
        leftover = [
            line
            for line in scrape.splitlines()
            if not line.startswith("#") and any(f'"{n}"' in line for n in names)
        ]
        assert leftover == [], leftover[:8]
        assert f'stream="{alive}"' in scrape  # the live stream's series are still there
    finally:
        assert gw.stop() == 0, gw.log()[-3000:]


def test_permanent_topic_errors_are_not_503(broker: Broker, tmp_path: Path) -> None:
    gw = start(broker, tmp_path)
    try:
        name = unique_name("rf")
        reply = gw.request(
            "POST", STREAMS, {"name": name, "columns": COLUMNS, "replication_factor": 3}
        )  # one broker
        assert reply.status == 422, (reply.status, reply.body)
        assert "InvalidReplicationFactor" in reply.json()["message"]
        assert "127.0.0.1" not in reply.body.decode() and str(broker.port) not in reply.body.decode()
        assert gw.request("GET", f"{STREAMS}/{name}").status == 404
    finally:
        assert gw.stop() == 0, gw.log()[-3000:]


async def test_stats_calls_share_a_bounded_set_of_consumers(broker: Broker) -> None:
    sink = KafkaSink(
        broker.bootstrap,
        batch_max_bytes=1 << 20,
        probe_interval_s=1.0,
        unreachable_after_s=5.0,
        max_unsettled_bytes=32 << 20,
        topic_owner=lambda topic: None,
    )
    await sink.start()
    stats = KafkaStats(sink)
    try:
        stream = Stream(unique_name("st"), [Column("id", "string")], "t", shards=2)
        stream.topic = "ingest." + stream.name
        await create_topics(sink.admin, stream)
        got = await asyncio.gather(*(stats.topic_stats(stream, 1) for _ in range(20)))
        assert all(g.rows == 0 for g in got)
        assert 1 <= stats.made <= POOL_SIZE, stats.made  # it was one new consumer per call
        await asyncio.gather(*(stats.topic_stats(stream, 0) for _ in range(5)))
        assert stats.made <= POOL_SIZE
    finally:
        await stats.close()
        await sink.close()


def test_with_kafka_down_replies_name_nothing_internal_and_sigterm_is_clean(
    broker: Broker, tmp_path: Path
) -> None:
    """Last in this module: it stops the module's broker."""
    gw = start(broker, tmp_path, "--drain-timeout-s", "5")
    try:
        name = unique_name("down")
        gw.create_stream(name, COLUMNS)
        key = gw.request(
            "POST", "/api/v1beta2/apikeys", {"name": "a", "permissions": [f"DATASOURCE:APPEND:{name}"]}
        ).json()
        broker.stop()
        replies = [
            gw.request("GET", f"{STREAMS}/{name}/stats", key=key["api_key"]),
            gw.request("GET", f"{STREAMS}/{name}/stats"),
            gw.request("PATCH", f"{STREAMS}/{name}", {"logstore_retention_ms": 1000}),
        ]
        for reply in replies:
            assert reply.status in (503, 504), (reply.status, reply.body)
            text = reply.body.decode()
            for leak in ("127.0.0.1", str(broker.port), "Error", "bootstrap", "AddressFamily"):
                assert leak not in text, (leak, text)
            assert reply.headers.get("Server") == "ingest-gateway"
        wait_until(
            lambda: gw.request("GET", "/readyz", key=None).status == 503, 30, "the gateway to see Kafka down"
        )
        gw.signal(signal.SIGTERM)
        assert gw.proc is not None
        gw.proc.wait(60)
        log = gw.log()
        assert "Traceback" not in log and "CancelledError" not in log, log[-4000:]
    finally:
        gw.stop()
        broker.start()
