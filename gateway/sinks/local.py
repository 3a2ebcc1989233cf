"""The embedded development sink: an append-only NDJSON file per topic, fsynced before acknowledging."""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from gateway.catalog.model import Stream
from gateway.sinks.base import Headers, Landed, Lines, OnBatch, RecordMeta, TopicStats

log = logging.getLogger(__name__)


class LocalSink:
    """Writes each topic's record values, one per line, to `<dir>/<topic>.ndjson`."""

    name = "local"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        # One thread keeps each file's appends in hand-over order and off the event loop.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="local-sink")
        self._files: dict[str, int] = {}

    def path_of(self, topic: str) -> Path:
        """The file holding a topic's records."""
        return self.directory / f"{topic}.ndjson"

    async def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        log.warning(
            "no Kafka configured: using the embedded DEVELOPMENT sink in %s "
            "(one NDJSON file per stream; not for production)",
            self.directory,
        )

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._pool, self._close_files)
        self._pool.shutdown(wait=True)

    def _close_files(self) -> None:
        for fd in self._files.values():
            os.close(fd)
        self._files.clear()

    def available(self) -> bool:
        return True

    def held_back(self, topic: str, keyed: bool) -> int | None:
        return None  # one file per topic: no partitions

    async def ensure_topic(self, stream: Stream) -> None:
        self.path_of(stream.topic).touch()
        self.path_of(stream.quarantine_topic).touch()

    async def delete_topic(self, stream: Stream) -> None:
        def remove() -> None:
            for topic in (stream.topic, stream.quarantine_topic):
                fd = self._files.pop(topic, None)
                if fd is not None:
                    os.close(fd)
                self.path_of(topic).unlink(missing_ok=True)

        await asyncio.get_running_loop().run_in_executor(self._pool, remove)

    def forget_topics(self, topics: list[str]) -> None:
        """Nothing to do: delete_topic closed the topics' files (embedded mode has one process)."""

    async def update_topic(self, stream: Stream) -> None:
        """Nothing to do: the development sink keeps everything (no retention)."""

    async def topic_stats(self, stream: Stream, days: int) -> TopicStats:
        """Lines and bytes of the topic's file (no record timestamps, no daily counts)."""

        def count() -> TopicStats:
            path = self.path_of(stream.topic)
            if not path.exists():
                return TopicStats(rows=0, nbytes=0)
            lines = 0
            with open(path, "rb") as f:
                while block := f.read(1 << 20):
                    lines += block.count(b"\n")
            return TopicStats(rows=lines, nbytes=path.stat().st_size)

        return await asyncio.get_running_loop().run_in_executor(self._pool, count)

    def _append(self, topic: str, data: bytes) -> Landed | None:
        fd = self._files.get(topic)
        if fd is None:
            fd = os.open(self.path_of(topic), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            self._files[topic] = fd
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
        return None  # a file has no partitions or offsets to report

    async def send(
        self,
        topic: str,
        values: list[bytes],
        keys: list[bytes] | None,
        meta: RecordMeta | None = None,
        headers: list[Headers] | None = None,
        on_batch: OnBatch | None = None,
    ) -> asyncio.Future[Landed | None]:
        """Append the values, one per line (an NDJSON file has no place for keys or headers; a
        pass-through stream's tombstone, a None value, is written as `null`)."""
        data = b"\n".join(b"null" if v is None else v for v in values) + b"\n"
        return asyncio.wrap_future(self._pool.submit(self._append, topic, data))

    async def send_lines(
        self, topic: str, lines: Lines, on_batch: OnBatch | None = None
    ) -> asyncio.Future[Landed | None]:
        """Append the runs as they are: already one value per line."""
        return asyncio.wrap_future(self._pool.submit(self._append, topic, b"".join(lines.runs)))
