"""The durable spool: group commit, trimming, replay after a crash, torn and corrupt tails."""
# ruff: noqa: ASYNC240 - tests look at the spool directory synchronously on purpose

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec

from gateway import metrics
from gateway.sinks.base import RecordMeta
from gateway.spool import AckMarker, Spool, SpoolRecord


def rows(tag: str, n: int = 3) -> list[bytes]:
    return [f'{{"id": "{tag}-{i}"}}'.encode() for i in range(n)]


async def replayed(directory: Path) -> tuple[Spool, list[SpoolRecord]]:
    spool = Spool(directory, segment_bytes=1 << 20)
    await spool.open()
    got: list[SpoolRecord] = []

    async def take(rec: SpoolRecord, pos: int) -> bool:
        got.append(rec)
        return True
    await spool.replay(take)
    return spool, got


def fsyncs() -> float:
    return metrics.SPOOL_FSYNCS._value.get()


async def test_concurrent_appends_share_fsyncs(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=1 << 20)
    await spool.open()
    before = fsyncs()
    futures = [spool.append("s", "t", rows(str(i)), None)[1] for i in range(200)]
    await asyncio.gather(*futures)
    groups = fsyncs() - before
    assert 1 <= groups < 200 / 4, groups  # group commit: many appends per fsync
    await spool.close()


async def test_replay_after_crash_skips_acknowledged_records(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=1 << 20)
    await spool.open()
    positions = []
    for i in range(10):
        pos, done = spool.append("s", "t", rows(f"r{i}"), None)
        await done
        positions.append(pos)
    spool.release(positions[:6])  # Kafka acknowledged the first six
    await spool.append("s", "t", rows("r10"), None)[1]  # the markers go out with this group
    # "crash": no close(); a new spool on the same directory replays the rest
    spool2, got = await replayed(tmp_path)
    assert [r.values[0] for r in got] == [rows(f"r{i}")[0] for i in (6, 7, 8, 9, 10)]
    await spool2.close()


async def test_segments_are_deleted_once_sealed_and_acknowledged(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=200)  # a new segment every couple of records
    await spool.open()
    positions = []
    for i in range(20):
        pos, done = spool.append("s", "t", rows(f"r{i}"), None)
        await done
        positions.append(pos)
    assert len(list(tmp_path.glob("*.wal"))) > 3
    spool.release(positions)
    await spool.close()
    assert not list(tmp_path.glob("*.wal"))


async def test_torn_and_corrupt_tails_are_skipped(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=1 << 20)
    await spool.open()
    for i in range(5):
        await spool.append("s", "t", rows(f"r{i}"), None)[1]
    (segment,) = tmp_path.glob("*.wal")
    data = segment.read_bytes()
    segment.write_bytes(data[:-7])  # a write cut short by the crash
    _, got = await replayed(tmp_path)
    assert len(got) == 4
    # a flipped byte inside the second record: replay keeps the first record only
    data = segment.read_bytes()
    first_len = int.from_bytes(data[:4], "little") + 8
    segment.write_bytes(data[:first_len + 12] + bytes([data[first_len + 12] ^ 0xFF])
                        + data[first_len + 13:])
    for other in tmp_path.glob("*.wal"):
        if other != segment:
            other.unlink()
    _, got = await replayed(tmp_path)
    assert len(got) == 1 and got[0].values == rows("r0")


async def test_refused_records_are_released(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=1 << 20)
    await spool.open()
    await spool.append("gone", "t", rows("x"), None)[1]
    spool2 = Spool(tmp_path, segment_bytes=1 << 20)
    await spool2.open()

    async def refuse(rec: SpoolRecord, pos: int) -> bool:
        return False  # e.g. the stream was deleted meanwhile
    assert await spool2.replay(refuse) == 0
    await spool2.close()
    assert not list(tmp_path.glob("*.wal"))


async def test_record_headers_survive_a_crash_and_old_records_still_read(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=1 << 20)
    await spool.open()
    await spool.append("s", "t", rows("v2"), None, [("schema-version", b"2")])[1]
    await spool.append("s", "t", rows("none"), None)[1]
    spool2, got = await replayed(tmp_path)
    assert [r.headers for r in got] == [[("schema-version", b"2")], None]
    await spool2.close()
    # a record written before headers existed (four fields) reads back without them
    old = msgspec.msgpack.encode([1, "s", "t", rows("old"), None])
    assert msgspec.msgpack.decode(old, type=SpoolRecord | AckMarker) == SpoolRecord(
        "s", "t", rows("old"), None)


async def test_records_own_keys_partitions_and_headers_survive_a_crash(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=1 << 20)
    await spool.open()
    meta = RecordMeta([b"k", None], [2, -1], [[("h", b"v")], []])
    await spool.append("s", "t", rows("m", 2), None, [("schema-version", b"1")], meta)[1]
    await spool.append("s", "t", rows("plain"), None)[1]
    spool2, got = await replayed(tmp_path)
    assert [r.meta() for r in got] == [meta, None]
    assert got[0].headers == [("schema-version", b"1")]
    await spool2.close()
