"""The replay's page protocol (gateway.evolution.replay) on a file catalog and the dev sink's
quarantine file, with a pipeline that holds its rows until the test lets Kafka "acknowledge"
them: claims renewed while a page runs, a page that outlives its request, a page run again after
its position could not be saved. The scan of real topics is tested against a broker
(tests/integration/test_quarantine_replay.py)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from gateway.catalog.file import FileBackend
from gateway.catalog.model import Column, ReplayMark, Stream
from gateway.catalog.store import Catalog
from gateway.errors import Conflict, NotConfirmed
from gateway.evolution.quarantine_log import FileQuarantineLog
from gateway.evolution.replay import Replayer
from gateway.evolution.replay_scan import Scan, replay_headers, replayed_position
from gateway.ingest.schema import SchemaCache
from gateway.sinks.base import RecordMeta

ROWS = 5


class HeldPipeline:
    """Takes a page's rows and "acknowledges" them once `ack` is set; keeps what it was given."""

    def __init__(self, wait_timeout_s: float = 30.0) -> None:
        self.wait_timeout_s = wait_timeout_s
        self.ack = asyncio.Event()
        self.queued = asyncio.Event()
        self.written: list[tuple[Any, list[tuple[str, bytes]]]] = []

    async def admit(
        self,
        stream: Stream,
        rows: list[Any],
        *,
        wait: bool,
        quarantine: list[bytes] | None = None,
        meta: RecordMeta | None = None,
        quarantine_meta: RecordMeta | None = None,
        patient: bool = False,
    ) -> None:
        assert wait and patient and meta is not None
        self.written += zip(rows, meta.headers, strict=True)
        self.queued.set()
        await self.ack.wait()


class HeaderLog(FileQuarantineLog):
    """The dev sink's quarantine file, and a scan that finds what `pipeline` was given."""

    def __init__(self, directory: Path, pipeline: HeldPipeline) -> None:
        super().__init__(directory)
        self.pipeline = pipeline
        self.scans = 0

    async def written(self, stream: Stream, mark: ReplayMark, wanted: set[tuple[int, int]]) -> Scan:
        self.scans += 1
        found = {replayed_position(h, mark.token.encode()) for _, h in self.pipeline.written}
        return Scan({p for p in found if p in wanted}, True)


@pytest.fixture
async def setup(tmp_path: Path) -> Any:
    catalog = Catalog(FileBackend(tmp_path / "catalog.json"))
    await catalog.start()
    stream = Stream("s", [Column("id", "string"), Column("n", "int64", default="0")], "t")
    assert await catalog.put_stream(stream, create=True)
    lines = [
        json.dumps({"stream": "s", "error": {"message": "missing"}, "row_text": json.dumps({"id": f"r{i}"})})
        for i in range(ROWS)
    ]
    (tmp_path / "t-quarantine.ndjson").write_text("".join(f"{line}\n" for line in lines))
    pipeline = HeldPipeline()
    log = HeaderLog(tmp_path, pipeline)
    yield catalog, pipeline, log
    await catalog.close()


def replayer(catalog: Catalog, pipeline: HeldPipeline, log: HeaderLog, claim_s: float = 15.0) -> Replayer:
    return Replayer(catalog, SchemaCache(), pipeline, log, claim_s=claim_s)  # type: ignore[arg-type]


def test_a_replayed_position_counts_only_with_its_page_token() -> None:
    headers = replay_headers(1, 42, "abc")
    assert replayed_position(headers, b"abc") == (1, 42)
    assert replayed_position(headers, b"abd") is None  # forged, or another page's
    assert replayed_position([("quarantine-position", b"1:x"), ("replay-page", b"abc")], b"abc") is None
    assert replayed_position([], b"abc") is None


async def test_the_claim_is_renewed_while_a_page_waits(setup: Any) -> None:
    catalog, pipeline, log = setup
    claims: list[str] = []
    renewed = asyncio.Event()

    def watch(name: str, before: Stream | None, after: Stream | None) -> None:
        if after is not None and after.replay_claim:
            claims.append(after.replay_claim)
            if len(claims) >= 5:
                renewed.set()

    catalog.watch_streams(watch)
    claim_s = 0.3
    page = asyncio.create_task(replayer(catalog, pipeline, log, claim_s).replay("s", 100))
    await asyncio.wait_for(renewed.wait(), 30)
    # four renewals a third of claim_s apart: the first claim alone would have expired by now
    other = replayer(catalog, pipeline, log, claim_s)
    with pytest.raises(Conflict):
        await other.replay("s", 100)
    pipeline.ack.set()
    outcome = await page
    assert outcome.written == ROWS and outcome.done
    stream = catalog.stream("s")
    assert stream.replay_claim == "" and stream.replay_mark is None
    assert stream.quarantine_replayed == {0: ROWS}
    assert (await other.replay("s", 100)).read == 0  # released


async def test_a_page_outliving_its_request_saves_its_position_itself(setup: Any) -> None:
    catalog, pipeline, log = setup
    pipeline.wait_timeout_s = 0.01
    replay = replayer(catalog, pipeline, log)
    with pytest.raises(NotConfirmed):
        await replay.replay("s", 100)
    with pytest.raises(Conflict):  # the page is still running on this replica
        await replay.replay("s", 100)
    page = replay._pages["s"]
    pipeline.ack.set()
    await page
    stream = catalog.stream("s")
    assert stream.quarantine_replayed == {0: ROWS} and stream.replay_mark is None
    assert len(pipeline.written) == ROWS


async def test_a_page_whose_position_was_not_saved_is_not_written_again(
    setup: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog, pipeline, log = setup
    pipeline.ack.set()
    put = catalog.put_stream

    async def advance_fails(stream: Stream, *, create: bool) -> bool:
        if not stream.replay_claim:  # the change that saves the position
            raise Conflict("the catalog change failed")
        return await put(stream, create=create)

    monkeypatch.setattr(catalog, "put_stream", advance_fails)
    replay = replayer(catalog, pipeline, log)
    with pytest.raises(Conflict):
        await replay.replay("s", 3)
    assert len(pipeline.written) == 3 and log.scans == 0
    mark = catalog.stream("s").replay_mark
    assert mark is not None and mark.limit == 3
    monkeypatch.setattr(catalog, "put_stream", put)
    # the same page again (its limit, not this call's): found written, skipped
    outcome = await replay.replay("s", 100)
    assert (outcome.read, outcome.recovered, outcome.written) == (3, 3, 0) and log.scans == 1
    assert not outcome.done and catalog.stream("s").replay_mark is None
    outcome = await replay.replay("s", 100)
    assert (outcome.read, outcome.recovered, outcome.written) == (2, 0, 2) and outcome.done
    ids = [msgspec.to_builtins(row)["id"] for row, _ in pipeline.written]
    assert sorted(ids) == [f"r{i}" for i in range(ROWS)]
    assert log.scans == 1  # a page that finished leaves nothing to look for
