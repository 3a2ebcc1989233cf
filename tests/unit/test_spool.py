"""The durable spool: group commit, trimming, replay after a crash, torn and corrupt tails."""
# ruff: noqa: ASYNC240 - tests look at the spool directory synchronously on purpose

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from gateway import metrics
from gateway.sinks.base import RecordMeta
from gateway.spool import AckMarker, Spool, SpoolRecord, spool_directory, stranded_segments


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
    segment.write_bytes(
        data[: first_len + 12] + bytes([data[first_len + 12] ^ 0xFF]) + data[first_len + 13 :]
    )
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
        "s", "t", rows("old"), None
    )


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


def test_each_worker_spools_in_its_own_folder(tmp_path: Path) -> None:
    assert spool_directory(tmp_path, 0, 1) == tmp_path
    assert spool_directory(tmp_path, 0, 2) == tmp_path / "worker-0"
    assert spool_directory(tmp_path, 1, 2) == tmp_path / "worker-1"


def test_segments_no_process_would_replay_are_found(tmp_path: Path) -> None:
    for folder in (tmp_path, tmp_path / "worker-0", tmp_path / "worker-1", tmp_path / "worker-2"):
        folder.mkdir(exist_ok=True)
        (folder / "seg-0000000000000001.wal").write_bytes(b"")
    names = lambda paths: sorted(str(p.relative_to(tmp_path)) for p in paths)  # noqa: E731
    assert names(stranded_segments(tmp_path, 1)) == [
        "worker-0/seg-0000000000000001.wal",
        "worker-1/seg-0000000000000001.wal",
        "worker-2/seg-0000000000000001.wal",
    ]
    assert names(stranded_segments(tmp_path, 2)) == [
        "seg-0000000000000001.wal",
        "worker-2/seg-0000000000000001.wal",
    ]
    assert names(stranded_segments(tmp_path, 3)) == ["seg-0000000000000001.wal"]
    assert stranded_segments(tmp_path / "missing", 2) == []


def test_a_second_process_cannot_open_a_spool_in_use(tmp_path: Path) -> None:
    """Two writers in one folder would replay and delete each other's segments."""
    script = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from gateway.spool import Spool, SpoolError\n"
        "async def main():\n"
        "    try:\n"
        "        await Spool(Path(sys.argv[1]), segment_bytes=1 << 20).open()\n"
        "    except SpoolError as exc:\n"
        "        print(exc)\n"
        "        return 7\n"
        "    return 0\n"
        "sys.exit(asyncio.run(main()))\n"
    )

    async def run() -> tuple[int, str]:
        spool = Spool(tmp_path, segment_bytes=1 << 20)
        await spool.open()
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", script, str(tmp_path), stdout=asyncio.subprocess.PIPE
            )
            out, _ = await proc.communicate()
            assert proc.returncode is not None
            return proc.returncode, out.decode()
        finally:
            await spool.close()

    code, out = asyncio.run(run())
    assert code == 7, out
    assert "in use by another gateway process" in out
    # once the first has closed it, another process may take it
    assert subprocess.run([sys.executable, "-c", script, str(tmp_path)]).returncode == 0


def test_serve_refuses_to_start_over_stranded_segments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A single process's segments are not replayed by workers: starting would leave them unsent."""
    from gateway import cli

    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / "seg-0000000000000001.wal").write_bytes(b"")
    code = cli.main(
        [
            "serve",
            "--workers",
            "2",
            "--spool-dir",
            str(spool),
            "--data-dir",
            str(tmp_path / "data"),
            "--kafka-bootstrap",
            "127.0.0.1:9",
        ]
    )
    assert code == 2
    assert "would not be replayed with --workers 2" in capsys.readouterr().err
