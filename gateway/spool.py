"""Durable mode: a local write-ahead log of accepted rows.

Each accepted wait=false request is appended as one record (length, CRC32, msgpack payload) to the
active segment file, and its 202 waits for the fsync. Appends that arrive while an fsync runs are
written and fsynced together by the next one (group commit), so many concurrent requests share one
fsync. A segment file is deleted once it is sealed (no more appends) and the sink has acknowledged
all its records. Acknowledgements are also logged, as markers written with the next group (never
waited for): at start-up the records of the segments left behind are replayed into the queues,
except those a marker says Kafka already has, so a crash re-sends few rows twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import struct
import zlib
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import msgspec

from gateway import metrics
from gateway.errors import detach
from gateway.sinks.base import RecordMeta

log = logging.getLogger(__name__)
HEADER = struct.Struct("<II")  # payload length, CRC32 of the payload
SUFFIX = ".wal"
LOCK_NAME = ".lock"
WORKER_PREFIX = "worker-"


class SpoolError(Exception):
    """The spool could not write or fsync; durable mode cannot promise anything until restart."""


def spool_directory(base: Path, worker: int, workers: int) -> Path:
    """The directory of one process's spool: `base` for a single process, `base/worker-<i>` for
    worker i of `--workers N`: each worker replays only what it wrote itself."""
    return base if workers <= 1 else base / f"{WORKER_PREFIX}{worker}"


def stranded_segments(base: Path, workers: int) -> list[Path]:
    """Segment files under `base` that no process of a `workers`-process gateway would replay: a
    single process's files under --workers N > 1, a worker's under a single process, or those of
    workers beyond N. Starting over them would leave their rows unsent, so the gateway refuses."""
    if not base.is_dir():
        return []
    mine = {spool_directory(base, i, workers) for i in range(workers)}
    places = [base, *sorted(d for d in base.glob(WORKER_PREFIX + "*") if d.is_dir())]
    return [f for d in places if d not in mine for f in sorted(d.glob("seg-*" + SUFFIX))]


class SpoolRecord(msgspec.Struct, array_like=True, tag=1):
    """One request's rows as spooled: enough to queue them again after a crash."""

    stream: str
    topic: str
    values: list[bytes | None]  # None: a tombstone (pass-through streams)
    keys: list[bytes] | None
    headers: list[tuple[str, bytes]] | None = None  # of every record (schema version)
    # each record's own key, partition and headers (RecordMeta's fields; None: none set)
    meta_keys: list[bytes | None] | None = None
    meta_partitions: list[int] | None = None
    meta_headers: list[list[tuple[str, bytes]]] | None = None

    def meta(self) -> RecordMeta | None:
        """The records' own details as queued (None for plain rows)."""
        if self.meta_keys is None or self.meta_partitions is None or self.meta_headers is None:
            return None
        return RecordMeta(self.meta_keys, self.meta_partitions, self.meta_headers)


class AckMarker(msgspec.Struct, array_like=True, tag=2):
    """Positions of records the sink has acknowledged (replay skips them)."""

    positions: list[int]


def position(seq: int, index: int) -> int:
    """One integer naming a record: its segment and its index in the segment."""
    return (seq << 32) | index


@dataclass(eq=False)
class Segment:
    """One segment file and the bookkeeping that decides when it may be deleted."""

    seq: int
    path: Path
    size: int = 0  # bytes appended (written or waiting for the writer)
    records: int = 0  # records appended (the next record's index)
    unwritten: int = 0  # records appended but not yet written and fsynced
    outstanding: int = 0  # records not yet acknowledged by the sink
    rolled: bool = False  # no record will be appended any more
    sealed: bool = False  # rolled and every record written: deletable once outstanding is 0
    fd: int | None = None


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(SpoolRecord | AckMarker)


def encode_record(record: SpoolRecord | AckMarker) -> bytes:
    """A record framed for the log: header (length, CRC32) then the msgpack payload."""
    payload = _encoder.encode(record)
    return HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def decode_records(data: bytes) -> tuple[list[SpoolRecord | AckMarker], int]:
    """The whole records at the start of `data`, and how many bytes they take. Reading stops at
    the first torn or corrupt record (a crash in the middle of a write leaves one at the end)."""
    out: list[SpoolRecord | AckMarker] = []
    pos = 0
    while pos + HEADER.size <= len(data):
        length, crc = HEADER.unpack_from(data, pos)
        start = pos + HEADER.size
        payload = data[start : start + length]
        if len(payload) < length or zlib.crc32(payload) != crc:
            break
        try:
            out.append(_decoder.decode(payload))
        except msgspec.DecodeError:
            break
        pos = start + length
    return out, pos


class Spool:
    """The write-ahead log in one directory: `seg-<seq>.wal` files, oldest first."""

    def __init__(self, directory: Path, *, segment_bytes: int) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self._segments: dict[int, Segment] = {}
        self._left_behind: list[Segment] = []
        self._active: Segment | None = None
        self._pending: list[tuple[Segment, bytes]] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        # One thread: writes stay in append order and the event loop never blocks on the disk.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool")
        self.failed: BaseException | None = None
        self._closed = False
        self._acked: list[int] = []  # positions acknowledged since the last group was written
        self._lock_fd: int | None = None

    # ---- lifecycle -------------------------------------------------------------------------
    async def open(self) -> None:
        """Find the segments a previous run left behind (to replay) and start a new one. Raises
        SpoolError when another process holds the directory: two writers would replay and delete
        each other's segments."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock()
        found = sorted(self.directory.glob("seg-*" + SUFFIX))
        last = 0
        for path in found:
            seq = int(path.stem.split("-", 1)[1])
            seg = Segment(seq, path, size=path.stat().st_size, rolled=True)
            self._segments[seq] = seg
            self._left_behind.append(seg)
            last = max(last, seq)
        self._active = self._new_segment(last + 1)
        self._writer = asyncio.create_task(self._write_loop(), name="spool-writer")
        if found:
            log.warning(
                "spool %s holds %d segment(s) from a previous run; replaying them", self.directory, len(found)
            )

    async def close(self) -> None:
        """Write what is pending, stop the writer, and delete the segments that are done."""
        if self._writer is not None:
            while self._pending and self.failed is None:
                try:
                    await asyncio.shield(self._waiters[-1])
                except SpoolError:
                    break
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        if self._active is not None:
            self._active.rolled = True
            self._seal(self._active)
        await asyncio.get_running_loop().run_in_executor(self._pool, self._close_files)
        self._pool.shutdown(wait=True)
        self._closed = True
        left = [s.path.name for s in self._segments.values() if s.path.exists()]
        if left:
            log.warning("spool keeps %d segment(s) with unacknowledged rows: %s", len(left), ", ".join(left))

    def _lock(self) -> None:
        # A POSIX record lock: held per process, so a restart in the same process (tests) takes
        # it again, and released by the kernel when the process dies.
        fd = os.open(self.directory / LOCK_NAME, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise SpoolError(
                f"the spool directory {self.directory} is in use by another gateway "
                "process; give each process its own --spool-dir"
            ) from None
        self._lock_fd = fd

    def _close_files(self) -> None:
        for seg in self._segments.values():
            if seg.fd is not None:
                os.close(seg.fd)
                seg.fd = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _new_segment(self, seq: int) -> Segment:
        seg = Segment(seq, self.directory / f"seg-{seq:016d}{SUFFIX}")
        self._segments[seq] = seg
        return seg

    # ---- appending (the hot path) ----------------------------------------------------------
    def append(
        self,
        stream: str,
        topic: str,
        values: list[bytes],
        keys: list[bytes] | None,
        headers: list[tuple[str, bytes]] | None = None,
        meta: RecordMeta | None = None,
    ) -> tuple[int, asyncio.Future[None]]:
        """Log a request's rows; returns the record's position and a future that resolves once
        it is fsynced (or fails with SpoolError). Synchronous up to the future, so a caller can
        log and queue rows with nothing in between."""
        if self.failed is not None:
            raise SpoolError(f"the spool failed earlier: {self.failed}")
        seg = self._active
        assert seg is not None, "Spool.open() was not called"
        if seg.size >= self.segment_bytes:
            seg.rolled = True
            if seg.unwritten == 0:  # else the writer seals it after its last write
                self._seal(seg)
            seg = self._active = self._new_segment(seg.seq + 1)
        listed = cast(list[bytes | None], values)  # a pass-through stream's tombstones are None
        data = encode_record(
            SpoolRecord(stream, topic, listed, keys, headers)
            if meta is None
            else SpoolRecord(stream, topic, listed, keys, headers, meta.keys, meta.partitions, meta.headers)
        )
        pos = position(seg.seq, seg.records)
        seg.records += 1
        seg.outstanding += 1
        self._queue_write(seg, data)
        metrics.SPOOL_RECORDS.inc()
        if not self._waiters or self._waiters[-1].done():
            self._waiters.append(asyncio.get_running_loop().create_future())
        return pos, self._waiters[-1]

    def _queue_write(self, seg: Segment, data: bytes) -> None:
        seg.size += len(data)
        seg.unwritten += 1
        self._pending.append((seg, data))
        self._wake.set()

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
            if self._acked and self._active is not None and not self._active.rolled:
                marker = encode_record(AckMarker(self._acked))
                self._acked = []
                self._queue_write(self._active, marker)
            group, self._pending = self._pending, []
            waiters, self._waiters = self._waiters, []
            try:
                await loop.run_in_executor(self._pool, self._write, group)
            except OSError as exc:
                log.error("spool write failed, durable mode is off until restart: %s", exc)
                metrics.SINK_ERRORS.labels(kind="spool_write").inc()
                self.failed = detach(exc)  # kept for good: no traceback pinning `group`
                for w in waiters:
                    if not w.done():
                        w.set_exception(SpoolError(str(exc)))
                continue
            metrics.SPOOL_FSYNCS.inc()
            for w in waiters:
                if not w.done():
                    w.set_result(None)
            for seg, _ in group:
                seg.unwritten -= 1
            for seg in {id(s): s for s, _ in group}.values():
                if seg.rolled and seg.unwritten == 0:
                    self._seal(seg)

    def _write(self, group: list[tuple[Segment, bytes]]) -> None:
        """Append a group of records to their segment files, then fsync each file once."""
        touched: dict[int, Segment] = {}
        created = False
        start = 0
        while start < len(group):
            seg = group[start][0]
            end = start
            while end < len(group) and group[end][0] is seg:
                end += 1
            if seg.fd is None:
                seg.fd = os.open(seg.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                created = True
            view = memoryview(b"".join(d for _, d in group[start:end]))
            while view:
                view = view[os.write(seg.fd, view) :]
            touched[seg.seq] = seg
            start = end
        for seg in touched.values():
            os.fsync(seg.fd)  # type: ignore[arg-type]
        if created:  # the new file's directory entry must be durable too
            dfd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)

    # ---- trimming --------------------------------------------------------------------------
    def release(self, positions: Iterable[int]) -> None:
        """The sink acknowledged (or a stream deletion discarded) the records at `positions`."""
        for pos in positions:
            self._acked.append(pos)
            seg = self._segments.get(pos >> 32)
            if seg is None:
                continue
            seg.outstanding -= 1
            if seg.sealed and seg.outstanding <= 0:
                self._delete(seg)
        if len(self._acked) > 10_000:  # no append for long: write the markers on their own
            self._wake.set()

    def _seal(self, seg: Segment) -> None:
        seg.sealed = True
        if seg.outstanding <= 0:
            self._delete(seg)

    def _delete(self, seg: Segment) -> None:
        self._segments.pop(seg.seq, None)

        def remove() -> None:
            if seg.fd is not None:
                os.close(seg.fd)
                seg.fd = None
            seg.path.unlink(missing_ok=True)

        if self._closed:
            remove()
        else:
            self._pool.submit(remove)

    def segment_files(self) -> int:
        """Segment files on disk or about to be (metrics and tests)."""
        return len(self._segments)

    # ---- recovery --------------------------------------------------------------------------
    async def replay(self, requeue: Callable[[SpoolRecord, int], Awaitable[bool]]) -> int:
        """Hand every unacknowledged record of the segments left behind to `requeue(record, pos)`;
        records it refuses (False: e.g. the stream was deleted) count as done. Returns the rows."""
        loop = asyncio.get_running_loop()
        acked: set[int] = set()
        for seg in self._left_behind:  # first pass: the acknowledgement markers
            data = await loop.run_in_executor(self._pool, seg.path.read_bytes)
            for item in decode_records(data)[0]:
                if isinstance(item, AckMarker):
                    acked.update(item.positions)
        rows = skipped = 0
        for seg in self._left_behind:
            data = await loop.run_in_executor(self._pool, seg.path.read_bytes)
            records, used = decode_records(data)
            if used < len(data):
                log.warning(
                    "spool segment %s: %d bytes after the last whole record are torn "
                    "or corrupt and were skipped",
                    seg.path.name,
                    len(data) - used,
                )
            index = 0
            for rec in records:
                if isinstance(rec, AckMarker):
                    continue
                pos = position(seg.seq, index)
                index += 1
                if pos in acked:
                    skipped += 1
                    continue
                seg.outstanding += 1
                if await requeue(rec, pos):
                    rows += len(rec.values)
                else:
                    self.release([pos])
            seg.records = index
            self._seal(seg)
            log.info("spool segment %s: %d records, queued again", seg.path.name, index)
        if skipped:
            log.info("spool: %d records were already acknowledged and were not replayed", skipped)
        self._left_behind.clear()
        return rows
