"""The catalog's log rule and apply logic, with replicas sharing an in-memory log (no broker)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
import pytest

from gateway.catalog import store
from gateway.catalog.changes import ABSENT, Change, admits, encode, stream_key
from gateway.catalog.file import FileBackend
from gateway.catalog.kafka_log import to_change
from gateway.catalog.model import ApiKey, Column, Stream
from gateway.catalog.store import Catalog
from gateway.errors import Unavailable
from gateway.ingest.schema import SchemaCache


class SharedLog:
    """One partition shared by replicas: appends get an offset, every replica reads them in order."""

    def __init__(self) -> None:
        self.records: list[Change] = []
        self.readers: list[LogReader] = []

    def reader(self) -> LogReader:
        r = LogReader(self)
        self.readers.append(r)
        return r

    def compacted(self) -> list[Change]:
        """What compaction keeps: the last record of each key, in log order."""
        last = {c.key: i for i, c in enumerate(self.records)}
        return [c for i, c in enumerate(self.records) if last[c.key] == i]


class LogReader:
    """A catalog backend reading a SharedLog from the beginning, like every Kafka replica does."""

    def __init__(self, log: SharedLog) -> None:
        self.log = log
        self.catalog: Catalog | None = None
        self.position = 0
        self.paused = False

    async def start(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.pump()

    def pump(self) -> None:
        while self.catalog is not None and not self.paused and self.position < len(self.log.records):
            change = self.log.records[self.position]
            self.position += 1
            self.catalog.apply(change)

    async def append(self, change: Change) -> None:
        self.log.records.append(change)
        await asyncio.sleep(0)  # the "produce" round trip: other writers may get in first
        for r in self.log.readers:
            r.pump()

    async def close(self) -> None:
        self.catalog = None


def stream(name: str, *cols: str, description: str = "") -> Stream:
    return Stream(
        name=name, columns=[Column(c, "string") for c in cols], topic="t." + name, description=description
    )


async def replicas(log: SharedLog, n: int) -> list[Catalog]:
    out = [Catalog(log.reader()) for _ in range(n)]
    for c in out:
        await c.start()
    return out


def state(c: Catalog) -> tuple[list[Stream], list[ApiKey]]:
    return c.streams(), c.api_keys()


# ---- the rule ---------------------------------------------------------------------------------
def test_rule_first_record_of_a_key_always_applies() -> None:
    assert admits({}, Change("stream:a", b"{}", "w1", ABSENT))
    assert admits({}, Change("stream:a", b"{}", "w2", "some-compacted-version"))


def test_rule_prev_must_match_the_current_version() -> None:
    versions = {"stream:a": "w1", "stream:b": ABSENT}
    assert admits(versions, Change("stream:a", b"{}", "w2", "w1"))
    assert not admits(versions, Change("stream:a", b"{}", "w2", ABSENT))  # create of a taken name
    assert not admits(versions, Change("stream:a", None, "w2", "w0"))  # based on an old version
    assert admits(versions, Change("stream:b", b"{}", "w3", ABSENT))  # re-create after delete
    assert not admits(versions, Change("stream:b", b"{}", "w3", "w1"))


def test_kafka_records_to_changes() -> None:
    assert to_change(7, b"stream:a", b"{}", [("wid", b"w1"), ("prev", b"w0")]) == Change(
        "stream:a", b"{}", "w1", "w0"
    )
    assert to_change(7, b"key:k", None, ()) == Change("key:k", None, "@7", ABSENT)
    assert to_change(7, None, b"{}", ()) is None


# ---- one replica --------------------------------------------------------------------------------
async def test_reads_wait_for_the_catalog_to_load() -> None:
    c = Catalog(SharedLog().reader())
    with pytest.raises(Unavailable):
        c.stream("a")
    with pytest.raises(Unavailable):
        c.api_key("k")
    await c.start()
    assert c.stream("a") is None and c.loaded


async def test_a_failed_start_is_replayed_from_scratch() -> None:
    log = SharedLog()
    log.records = [
        Change("stream:s", encode(stream("s", "x")), "w1", ABSENT),
        Change("stream:s", encode(stream("s", "y")), "w2", "w1"),
    ]

    class FailsOnce(LogReader):
        failed = False

        async def start(self, catalog: Catalog) -> None:
            await super().start(catalog)
            if not self.failed:
                self.failed = True
                self.position = 0
                raise Unavailable("broker went away")

    c = Catalog(FailsOnce(log))
    with pytest.raises(Unavailable):
        await c.start()
    await c.start()
    assert c.stream("s") == stream("s", "y") and c.version("stream:s") == "w2"
    assert not c._tasks  # nothing was taken for a lost race


async def test_writes_are_visible_once_read_back() -> None:
    log = SharedLog()
    [c] = await replicas(log, 1)
    s = stream("a", "x")
    assert await c.put_stream(s, create=True)
    assert c.stream("a") == s
    assert not await c.put_stream(stream("a", "y"), create=True)  # taken: refused before writing
    assert len(log.records) == 1
    changed = stream("a", "x", description="new")
    assert await c.put_stream(changed, create=False)
    assert c.stream("a") == changed
    assert await c.delete_stream("a") == changed
    assert c.stream("a") is None and await c.delete_stream("a") is None
    assert not await c.put_stream(changed, create=False)  # replace needs an existing stream
    assert [ch.value is None for ch in log.records] == [False, False, True]


async def test_undecodable_and_unknown_records_are_skipped() -> None:
    log = SharedLog()
    log.records += [
        Change("stream:a", b"not json", "w1", ABSENT),
        Change("other:x", b"{}", "w2", ABSENT),
        Change("stream:b", encode(stream("c")), "w3", ABSENT),  # name mismatch
        Change("stream:d", encode(stream("d")), "w4", ABSENT),
    ]
    [c] = await replicas(log, 1)
    assert [s.name for s in c.streams()] == ["d"]
    assert c.version("stream:a") is None  # not seen: a readable record of it will apply


async def test_a_changed_stream_is_a_new_object_and_the_schema_cache_recompiles() -> None:
    log = SharedLog()
    a, b = await replicas(log, 2)
    seen: list[tuple[str, Stream | None, Stream | None]] = []
    b.watch_streams(lambda name, before, after: seen.append((name, before, after)))
    schemas = SchemaCache()
    assert await a.put_stream(stream("s", "x"), create=True)
    first = b.stream("s")
    assert first is not None
    compiled = schemas.get(first)
    assert await a.delete_stream("s") is not None
    assert await a.put_stream(stream("s", "x", "y"), create=True)
    second = b.stream("s")
    assert second is not None and second is not first
    recompiled = schemas.get(second)
    assert recompiled is not compiled and recompiled.stream is second
    assert seen == [("s", None, first), ("s", first, None), ("s", None, second)]


# ---- replicas racing ----------------------------------------------------------------------------
async def test_concurrent_creates_one_winner_everywhere() -> None:
    log = SharedLog()
    a, b, c = await replicas(log, 3)
    results = await asyncio.gather(
        a.put_stream(stream("s", "from_a"), create=True), b.put_stream(stream("s", "from_b"), create=True)
    )
    assert sorted(results) == [False, True]
    winner = stream("s", "from_a") if results[0] else stream("s", "from_b")
    assert a.stream("s") == b.stream("s") == c.stream("s") == winner
    creates = [ch for ch in log.records if ch.prev == ABSENT and not ch.repair]
    assert len(creates) == 2, "both creates must reach the log for the race to be real"
    # The loser repaired the key: the latest record is one every replica applied ...
    await asyncio.sleep(0)
    for _ in range(10):
        if log.records[-1].repair:
            break
        await asyncio.sleep(0)
    assert log.records[-1].repair and log.records[-1].value == encode(winner)
    # ... so a replica reading only what compaction keeps reaches the same state.
    fresh_log = SharedLog()
    fresh_log.records = log.compacted()
    [fresh] = await replicas(fresh_log, 1)
    assert state(fresh) == state(a)
    assert fresh.version("stream:s") == a.version("stream:s")


async def test_the_log_order_decides_not_the_writer() -> None:
    log = SharedLog()
    [a, b] = await replicas(log, 2)
    ra, rb = log.readers
    ra.paused = rb.paused = True  # neither replica has read anything yet when both write
    ta = asyncio.create_task(a.put_stream(stream("s", "from_a"), create=True))
    tb = asyncio.create_task(b.put_stream(stream("s", "from_b"), create=True))
    for _ in range(5):
        await asyncio.sleep(0)
    assert [ch.value for ch in log.records] == [encode(stream("s", "from_a")), encode(stream("s", "from_b"))]
    rb.paused = False
    rb.pump()  # b reads first, and still b loses: a's record is first in the log
    ra.paused = False
    ra.pump()
    assert (await ta, await tb) == (True, False)
    assert a.stream("s") == b.stream("s") == stream("s", "from_a")


async def test_update_racing_a_delete() -> None:
    log = SharedLog()
    a, b = await replicas(log, 2)
    assert await a.put_stream(stream("s", "x"), create=True)
    updated, deleted = await asyncio.gather(
        a.put_stream(stream("s", "x", description="changed"), create=False), b.delete_stream("s")
    )
    # The update came first in the log; the delete, based on the old version, was ignored and
    # retried on the newer one: the stream ends deleted, and the delete returns what it deleted.
    assert updated is True
    assert deleted is not None and deleted.description == "changed"
    assert a.stream("s") is None and b.stream("s") is None
    assert [ch.value is None for ch in log.records if not ch.repair] == [False, False, True, True]


async def test_key_revoked_on_one_replica_is_gone_on_the_other() -> None:
    log = SharedLog()
    a, b = await replicas(log, 2)
    key = ApiKey(id="abcdefabcdef", name="n", salt="s", digest="d", masked="m", created_at=1)
    await a.put_key(key)
    assert b.api_key(key.id) == key
    assert await b.delete_key(key.id) == key
    assert a.api_key(key.id) is None and b.api_key(key.id) is None
    assert await a.delete_key(key.id) is None


async def test_an_ignored_repair_is_repaired_in_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "REPAIR_DELAY_S", 0.001)
    log = SharedLog()
    log.records = [
        Change("stream:s", encode(stream("s", "x")), "w1", ABSENT),
        Change("stream:s", encode(stream("s", "y")), "w0", "w0"),
    ]  # overtaken repair
    [c] = await replicas(log, 1)
    assert c.stream("s") == stream("s", "x")
    await asyncio.wait_for(asyncio.gather(*c._tasks), 5)
    assert log.records[-1] == Change("stream:s", encode(stream("s", "x")), "w1", "w1")
    fresh_log = SharedLog()
    fresh_log.records = log.compacted()
    [fresh] = await replicas(fresh_log, 1)
    assert state(fresh) == state(c)


async def test_replicas_that_disagree_stop_repairing(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(store, "REPAIR_DELAY_S", 0.001)
    log = SharedLog()
    log.records = [Change("stream:s", encode(stream("s", "x")), "w1", ABSENT)]
    [a] = await replicas(log, 1)

    # b read a record of s that the others never saw (as if records were lost): it believes in
    # another version of s than a does.
    class Diverged(LogReader):
        async def start(self, catalog: Catalog) -> None:
            catalog.apply(Change("stream:s", encode(stream("s", "z")), "other", ABSENT))
            await super().start(catalog)

    b = Catalog(Diverged(log))
    log.readers.append(b._backend)  # type: ignore[arg-type]
    await b.start()
    assert b.stream("s") == stream("s", "z") and a.stream("s") == stream("s", "x")
    await a.put_stream(stream("s", "x", description="a's"), create=False)
    async with asyncio.timeout(5):  # they stop by themselves
        while a._tasks or b._tasks:
            await asyncio.gather(*a._tasks, *b._tasks)
    repairs = [ch for ch in log.records if ch.repair]
    assert 0 < len(repairs) <= 2 * store.MAX_REPAIRS + 2
    assert "replicas disagree about stream:s" in caplog.text


async def test_compaction_survivor_applies_with_an_unknown_prev() -> None:
    log = SharedLog()
    log.records = [Change("stream:s", encode(stream("s", "x")), "w9", "w8")]
    [c] = await replicas(log, 1)
    assert c.stream("s") == stream("s", "x") and c.version("stream:s") == "w9"
    assert await c.put_stream(stream("s", "y"), create=False)
    assert log.records[-1].prev == "w9"


# ---- the file backend ---------------------------------------------------------------------------
async def test_file_backend_persists_applied_changes_only(tmp_path: Path) -> None:
    path = tmp_path / "catalog.json"
    c = Catalog(FileBackend(path))
    await c.start()
    assert await c.put_stream(stream("a", "x"), create=True)
    assert await c.put_stream(stream("b", "x"), create=True)
    assert await c.delete_stream("b") is not None
    key = ApiKey(id="abcdefabcdef", name="n", salt="s", digest="d", masked="m", created_at=1)
    await c.put_key(key)
    backend = c._backend
    assert isinstance(backend, FileBackend)
    stale = Change(stream_key("a"), encode(stream("a", "stale")), "w", "not-the-version")
    await backend.append(stale)  # ignored by the rule: neither applied nor written
    assert c.stream("a") == stream("a", "x")
    await c.close()
    again = Catalog(FileBackend(path))
    await again.start()
    assert state(again) == state(c)
    assert msgspec.json.decode(path.read_bytes())["streams"]["a"]["columns"][0]["name"] == "x"


# ---- what a replica does when another one deletes a stream ----------------------------------------
async def test_stream_deleted_elsewhere_drops_its_queue_here() -> None:
    from gateway.queues import Limits, Queues
    from gateway.sinks.local import LocalSink
    from gateway.streams import StreamDefaults, StreamService

    log = SharedLog()
    a, b = await replicas(log, 2)
    queues = Queues(
        LocalSink(Path("/nonexistent")),
        Limits(
            max_rows=10, max_bytes=1000, memory_cap=1000, batch_max_bytes=1000, linger_s=0.01, max_in_flight=1
        ),
    )
    service = StreamService(
        b, LocalSink(Path("/nonexistent")), queues, SchemaCache(), StreamDefaults("t.", 1, 1)
    )
    assert await a.put_stream(stream("s", "x"), create=True)
    old = queues.queue("s", "t.s")
    reader_b = log.readers[1]
    reader_b.paused = True  # b applies the delete and the re-create in one go
    assert await a.delete_stream("s") is not None
    assert await a.put_stream(stream("s", "y"), create=True)
    reader_b.paused = False
    reader_b.pump()
    new = queues.queue("s", "t.s")  # rows for the re-created stream, before the old queue stopped
    assert new is not old and not new._closed
    await asyncio.gather(*service._dropping)
    assert old._closed and queues.get("s", "t.s") is new and not new._closed
    await queues.stop()
