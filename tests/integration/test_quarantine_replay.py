"""Quarantined rows on the real broker: read with their errors, then replayed after the schema is
fixed, exactly once although the gateway restarts between two replay pages, or dies in the middle
of one after Kafka acknowledged its rows."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from gateway.evolution.replay import ACKNOWLEDGED
from gateway.evolution.replay_scan import POSITION_HEADER
from gateway.faults import FAULT_ENV, FAULT_EXIT
from tests.integration.harness import Gateway, Record, read_topic, unique_name, wait_until

COLUMNS = [{"name": "id", "type": "string"}, {"name": "n", "type": "int64"}]
NDJSON = {"Content-Type": "application/x-ndjson"}
MISSING_N, WRONG_N, GOOD = 23, 4, 6
PAGE = 10


def body() -> str:
    rows = (
        [{"id": f"good-{i}", "n": i} for i in range(GOOD)]
        + [{"id": f"missing-{i}"} for i in range(MISSING_N)]
        + [{"id": f"wrong-{i}", "n": "x"} for i in range(WRONG_N)]
    )
    return "".join(json.dumps(r) + "\n" for r in rows)


def replay(gw: Gateway, name: str, limit: int = PAGE) -> dict[str, Any]:
    reply = gw.request("POST", f"/api/v1beta2/streams/{name}/quarantine/replay?limit={limit}")
    assert reply.status == 200, reply.body
    out: dict[str, Any] = reply.json()
    return out


def quarantine_and_fix(gw: Gateway, name: str) -> None:
    """Quarantine MISSING_N + WRONG_N rows, then give `n` a default: the missing ones now pass."""
    reply = gw.ingest(name, body(), headers=NDJSON, query="on_error=quarantine")
    assert reply.status == 200, reply.body
    reply = gw.request(
        "PATCH",
        f"/api/v1beta2/streams/{name}",
        {"columns": [COLUMNS[0], {"name": "n", "type": "int64", "default": "0"}]},
    )
    assert reply.status == 200, reply.body


async def each_row_once(kafka: str, topic: str) -> list[Record]:
    """The stream's records: the good rows and the replayed ones, each exactly once."""
    records = await read_topic(kafka, topic)
    ids = Counter(r.json()["id"] for r in records)
    assert max(ids.values()) == 1, [i for i, c in ids.items() if c > 1]
    assert set(ids) == {f"good-{i}" for i in range(GOOD)} | {f"missing-{i}" for i in range(MISSING_N)}
    return records


async def test_replay_is_exactly_once_across_a_restart(kafka: str, tmp_path: Path) -> None:
    topic = "_test_catalog_" + uuid.uuid4().hex[:12]
    gw = Gateway(tmp_path / "gw", kafka, catalog_topic=topic, extra=["--default-shards", "2"])
    gw.start()
    try:
        name = unique_name("rq")
        created = gw.create_stream(name, COLUMNS)
        # without on_error=quarantine, the Timeplus route refuses the whole body
        assert gw.ingest(name, body(), headers=NDJSON).status == 400
        reply = gw.ingest(name, body(), headers=NDJSON, query="on_error=quarantine")
        assert reply.status == 200, reply.body
        assert reply.json()["rows"] == GOOD

        rows: list[dict[str, Any]] = []
        after = ""
        while True:  # read it all, a page of 7 at a time
            page = gw.request("GET", f"/api/v1beta2/streams/{name}/quarantine?limit=7&after={after}").json()
            rows += page["rows"]
            after = page["next"]
            if page["at_end"]:
                break
        assert len(rows) == MISSING_N + WRONG_N
        assert len({r["position"] for r in rows}) == len(rows)
        missing = [r for r in rows if json.loads(r["row_text"])["id"].startswith("missing")]
        assert len(missing) == MISSING_N
        assert all(r["error"]["column"] == "n" and r["schema_version"] == 1 for r in missing)

        # fix the schema: `n` gets a default (a compatible change)
        reply = gw.request(
            "PATCH",
            f"/api/v1beta2/streams/{name}",
            {"columns": [COLUMNS[0], {"name": "n", "type": "int64", "default": "0"}]},
        )
        assert reply.status == 200, reply.body
        first = replay(gw, name)
        assert first["read"] == PAGE and not first["done"]
        assert gw.stop() == 0
        gw.start()  # a new process: the replay position comes back from the catalog topic
        pages = [first]
        while not pages[-1]["done"]:
            pages.append(replay(gw, name))
            assert len(pages) < 20
        assert sum(p["written"] for p in pages) == MISSING_N
        assert sum(p["still_failing"] for p in pages) == WRONG_N
        assert all(e["column"] == "n" and "str" in e["message"] for p in pages for e in p["errors"])
    finally:
        assert gw.stop() == 0, gw.log()

    records = await each_row_once(kafka, created["topic"])
    versions = Counter((r.json()["id"].split("-")[0], r.header("schema-version")) for r in records)
    assert versions == {("good", b"1"): GOOD, ("missing", b"2"): MISSING_N}
    assert all(r.json()["n"] == 0 for r in records if r.json()["id"].startswith("missing"))
    # the rows that still fail are quarantined again, after the replay position
    quarantined = await read_topic(kafka, created["quarantine_topic"])
    assert len(quarantined) == MISSING_N + 2 * WRONG_N


async def test_a_page_killed_after_kafka_acknowledged_it_is_not_written_again(
    kafka: str, tmp_path: Path
) -> None:
    gw = Gateway(
        tmp_path / "gw",
        kafka,
        env={FAULT_ENV: ACKNOWLEDGED},
        extra=["--default-shards", "2", "--replay-claim-s", "2"],
    )
    gw.start()
    try:
        name = unique_name("rk")
        created = gw.create_stream(name, COLUMNS)
        quarantine_and_fix(gw, name)
        # one page of every quarantined row: all written (or quarantined again) and acknowledged,
        # then the process exits before the replay position is saved
        with pytest.raises(OSError):
            replay(gw, name, limit=1000)
        assert gw.proc is not None and gw.proc.wait(30) == FAULT_EXIT, gw.log()
        gw.env = {}
        gw.start()

        def replayed() -> dict[str, Any] | None:  # 409 until the dead replica's claim expires
            reply = gw.request("POST", f"/api/v1beta2/streams/{name}/quarantine/replay?limit=1000")
            assert reply.status in (200, 409), reply.body
            return reply.json() if reply.status == 200 else None

        pages = [wait_until(replayed, 30, "the dead replica's replay claim to expire")]
        while not pages[-1]["done"]:
            pages.append(replay(gw, name, limit=1000))
            assert len(pages) < 5
    finally:
        assert gw.stop() == 0, gw.log()

    records = await each_row_once(kafka, created["topic"])
    replayed_from = Counter(r.header(POSITION_HEADER) for r in records)
    assert replayed_from.pop(None) == GOOD and set(replayed_from.values()) == {1}
    # each row that still fails was quarantined again once per page that read it
    quarantined = await read_topic(kafka, created["quarantine_topic"])
    copies = Counter(r.header(POSITION_HEADER) for r in quarantined)
    assert copies.pop(None) == MISSING_N + WRONG_N and set(copies.values()) == {1}
    assert sum(copies.values()) == 2 * WRONG_N
    # the same page again: every record found written, none written again; then the copies
    assert pages[0]["recovered"] == MISSING_N + WRONG_N, pages[0]
    assert pages[0]["written"] == pages[0]["still_failing"] == 0, pages[0]
    assert sum(p["still_failing"] for p in pages) == WRONG_N


@pytest.mark.parametrize("limit", ["0", "x", "10001"])
def test_replay_limit_is_checked(gateway: Gateway, limit: str) -> None:
    name = unique_name("rl")
    gateway.create_stream(name, COLUMNS)
    reply = gateway.request("POST", f"/api/v1beta2/streams/{name}/quarantine/replay?limit={limit}")
    assert reply.status == 400, reply.body
    reply = gateway.request("GET", f"/api/v1beta2/streams/{name}/quarantine?after=zz")
    assert reply.status == 400, reply.body


def test_a_stream_can_quarantine_by_default(gateway: Gateway) -> None:
    name = unique_name("oe")
    gateway.create_stream(name, COLUMNS)
    path = f"/api/v1beta2/streams/{name}"
    for bad in (
        {"on_error": "drop"},
        {"compatibility": "sideways"},
        {"columns": [{"name": "id", "type": "no_such_type"}]},
    ):
        reply = gateway.request("PATCH", path, bad)
        assert reply.status == 400, (bad, reply.body)
    reply = gateway.request("PATCH", path, {"on_error": "quarantine"})
    assert reply.status == 200 and reply.json()["on_error"] == "quarantine", reply.body
    reply = gateway.ingest(name, body(), headers=NDJSON)
    assert reply.status == 200 and reply.json()["rows"] == GOOD, reply.body
    # per request, reject still wins; the compact format cannot set rows aside
    assert gateway.ingest(name, body(), headers=NDJSON, query="on_error=reject").status == 400
    compact = {"columns": ["id", "n"], "data": [["a", 1], ["b", "x"]]}
    assert gateway.ingest(name, compact).status == 400
    assert gateway.ingest(name, compact, query="on_error=quarantine").status == 400
    page = gateway.request("GET", f"{path}/quarantine?limit=1000").json()
    assert len(page["rows"]) == MISSING_N + WRONG_N and page["at_end"]
