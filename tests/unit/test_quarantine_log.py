"""Reading quarantined rows back (gateway.evolution.quarantine_log): cursors, the dev sink's file."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.catalog.model import Column, Stream
from gateway.errors import BadRequest
from gateway.evolution.quarantine_log import FileQuarantineLog, cursor, parse_cursor


def test_cursors_round_trip_and_bad_ones_are_400() -> None:
    assert parse_cursor("1:7,0:12") == {0: 12, 1: 7} and cursor({1: 7, 0: 12}) == "0:12,1:7"
    assert parse_cursor("") == {}
    for bad in ("x", "0:", ":1", "0:-1", "0:1:2", "1" * 5000):
        with pytest.raises(BadRequest):
            parse_cursor(bad)


async def test_file_log_pages_and_stops_before_a_line_being_written(tmp_path: Path) -> None:
    stream = Stream("s", [Column("id", "string")], "t")
    (tmp_path / f"{stream.quarantine_topic}.ndjson").write_bytes(b"a\nb\nc\npartial")
    log = FileQuarantineLog(tmp_path)
    page = await log.read(stream, {}, 2)
    assert [(r.offset, r.value) for r in page.records] == [(0, b"a"), (1, b"b")]
    assert page.next == {0: 2} and not page.at_end
    page = await log.read(stream, page.next, 10)
    assert [r.value for r in page.records] == [b"c"] and page.next == {0: 3}
    assert not page.at_end  # the partial line is not read until its newline is there
    empty = await log.read(Stream("other", [], "u"), {}, 10)
    assert empty.records == [] and empty.at_end
