"""Schema versions on the real broker, with two replicas sharing one catalog topic: a compatible
change under steady load on both replicas loses, duplicates and mixes nothing; an incompatible
one is refused with its reasons."""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from typing import Any

from tests.integration.harness import Gateway, read_topic, unique_name, wait_until

COLUMNS = [{"name": "id", "type": "string"}, {"name": "n", "type": "int64"}]
NDJSON = {"Content-Type": "application/x-ndjson"}
ROWS_PER_REQUEST = 20
WRITERS_PER_REPLICA = 2
REQUESTS_AFTER_SWITCH = 40  # on b, after b reported the new version


class Load:
    """Writers posting to one replica until told to stop; every reply and request kept."""

    def __init__(self, gw: Gateway, stream: str, tag: str) -> None:
        self.gw, self.stream, self.tag = gw, stream, tag
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.acked: list[tuple[str, float]] = []  # (request id, monotonic time it was sent)
        self.statuses: Counter[int] = Counter()
        self.threads = [
            threading.Thread(target=self._run, args=(w,), daemon=True) for w in range(WRITERS_PER_REPLICA)
        ]

    def _run(self, writer: int) -> None:
        seq = 0
        while not self.stop.is_set():
            rid = f"{self.tag}{writer}-{seq}"
            body = "".join(
                f'{{"id": "{rid}-{i}", "n": {i}, "extra": "e"}}\n' for i in range(ROWS_PER_REQUEST)
            )
            sent = time.monotonic()
            status = self.gw.ingest(self.stream, body, headers=NDJSON).status
            with self.lock:
                self.statuses[status] += 1
                if status == 200:
                    self.acked.append((rid, sent))
            seq += 1

    def sent_since(self, when: float) -> int:
        with self.lock:
            return sum(1 for _, sent in self.acked if sent >= when)


def schema_version(gw: Gateway, name: str) -> int:
    reply = gw.request("GET", f"/api/v1beta2/streams/{name}")
    assert reply.status == 200, reply.body
    version: int = reply.json()["schema_version"]
    return version


async def test_adding_a_nullable_column_under_load_on_two_replicas(
    pair: tuple[Gateway, Gateway], kafka: str, record_property: Any
) -> None:
    a, b = pair
    name = unique_name("ver")
    topic = a.create_stream(name, COLUMNS, shards=2)["topic"]
    wait_until(
        lambda: b.request("GET", f"/api/v1beta2/streams/{name}").status == 200, 30, "b to know the stream"
    )
    loads = [Load(a, name, "a"), Load(b, name, "b")]
    for load in loads:
        for t in load.threads:
            t.start()
    try:
        wait_until(lambda: all(len(x.acked) >= 10 for x in loads), 60, "load on both replicas")
        sent = time.monotonic()
        reply = a.request(
            "PATCH",
            f"/api/v1beta2/streams/{name}",
            {"columns": [*COLUMNS, {"name": "extra", "type": "nullable(string)"}]},
        )
        assert reply.status == 200, reply.body
        assert reply.json()["schema_version"] == 2
        wait_until(lambda: schema_version(b, name) == 2, 30, "b to report version 2", interval=0.01)
        b_switched = time.monotonic()
        took = b_switched - sent
        record_property("schema_version_propagation_s", took)
        print(f"b reported schema version 2 {took * 1000:.0f} ms after the PATCH was sent to a")
        wait_until(
            lambda: loads[1].sent_since(b_switched) >= REQUESTS_AFTER_SWITCH,
            120,
            "requests on b after the switch",
        )
    finally:
        for load in loads:
            load.stop.set()
        for load in loads:
            for t in load.threads:
                t.join(60)
    for load in loads:
        assert set(load.statuses) == {200}, load.statuses

    records = await read_topic(kafka, topic)
    ids = Counter(r.json()["id"] for r in records)
    acked = [rid for load in loads for rid, _ in load.acked]
    expected = {f"{rid}-{i}" for rid in acked for i in range(ROWS_PER_REQUEST)}
    assert set(ids) == expected  # nothing lost, nothing that was not acknowledged
    assert max(ids.values()) == 1  # nothing duplicated
    versions_of: dict[str, set[bytes]] = defaultdict(set)
    for r in records:
        row = r.json()
        version = r.header("schema-version")
        # v1 rows were encoded without `extra`, v2 rows with it: never one with the other
        assert (version, "extra" in row) in ((b"1", False), (b"2", True)), (version, row)
        versions_of[row["id"].rsplit("-", 1)[0]].add(version or b"")
    assert all(len(v) == 1 for v in versions_of.values())  # no request half-and-half
    seen = Counter(v for vs in versions_of.values() for v in vs)
    assert seen[b"1"] and seen[b"2"], seen
    after = [rid for rid, sent in loads[1].acked if sent >= b_switched]
    assert all(versions_of[rid] == {b"2"} for rid in after)  # b validates with v2 once it says so

    schemas = b.request("GET", f"/api/v1beta2/streams/{name}/schemas").json()
    assert [(s["version"], s["current"], len(s["columns"])) for s in schemas] == [(1, False, 2), (2, True, 3)]
    v1 = b.request("GET", f"/api/v1beta2/streams/{name}/schemas/1")
    assert v1.status == 200 and [c["name"] for c in v1.json()["columns"]] == ["id", "n"]
    assert b.request("GET", f"/api/v1beta2/streams/{name}/schemas/3").status == 404


def test_an_incompatible_change_is_refused_with_every_reason(pair: tuple[Gateway, Gateway]) -> None:
    a, b = pair
    name = unique_name("inc")
    a.create_stream(name, COLUMNS)
    reply = a.request(
        "PATCH",
        f"/api/v1beta2/streams/{name}",
        {"columns": [{"name": "n", "type": "int32"}, {"name": "k", "type": "string"}]},
    )
    assert reply.status == 409, reply.body
    reasons = {r["column"]: r for r in reply.json()["reasons"]}
    assert set(reasons) == {"id", "n", "k"}
    assert (reasons["n"]["old_type"], reasons["n"]["new_type"]) == ("int64", "int32")
    assert "narrowing" in reasons["n"]["rule"]
    assert schema_version(a, name) == 1
    # with compatibility none, the same change is accepted; both replicas then serve version 2
    reply = a.request(
        "PATCH",
        f"/api/v1beta2/streams/{name}",
        {
            "compatibility": "none",
            "columns": [{"name": "n", "type": "int32"}, {"name": "k", "type": "string"}],
        },
    )
    assert reply.status == 200, reply.body
    wait_until(lambda: schema_version(b, name) == 2, 30, "b to report version 2")
