"""Record batches from runs of lines (`encode_lines`, the common path): both encoders write, batch
after batch, byte for byte what aiokafka's builder writes for the same records one by one, and
say where the next batch starts."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from aiokafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from hypothesis import given
from hypothesis import strategies as st

from gateway.sinks.base import Headers, lines_of
from gateway.sinks.recordbatch import Encoder
from tests.unit.test_recordbatch import ENCODERS, header_lists

TIMESTAMP = 1_700_000_000_123
STATE = (4321, 7, 99)  # producer id, epoch, base sequence


@dataclass
class Runs:
    runs: list[bytes]
    headers: list[Headers | None] | None
    batch_size: int
    first: int  # the record the first batch starts at

    def records(self) -> list[tuple[bytes, Headers]]:
        """Every record with its headers, in order."""
        return [
            (v, (self.headers[k] if self.headers is not None else None) or [])
            for k, run in enumerate(self.runs)
            for v in lines_of(run)
        ]

    def cursor(self, record: int) -> tuple[int, int]:
        """Where record number `record` starts, as (run, offset); (len(runs), 0) past the last."""
        for k, run in enumerate(self.runs):
            at = 0
            for value in lines_of(run):
                if record == 0:
                    return k, at
                record -= 1
                at += len(value) + 1
        return len(self.runs), 0


def values() -> st.SearchStrategy[bytes]:
    """Lines as msgspec writes them (never a raw newline), some past a varint boundary."""
    small = st.binary(max_size=80).map(lambda b: b.replace(b"\n", b" "))
    return st.one_of(small, st.integers(60, 9000).map(lambda n: b"v" * n))


@st.composite
def run_lists(draw: st.DrawFn) -> Runs:
    rows = draw(st.lists(st.lists(values(), max_size=60), min_size=1, max_size=5))  # empty runs too
    runs = [b"".join(v + b"\n" for v in run) for run in rows]
    headers = None
    if draw(st.booleans()):  # each run its own headers (a request's schema version), some none
        headers = draw(st.lists(st.one_of(st.none(), header_lists()), min_size=len(runs), max_size=len(runs)))
    total = sum(len(r) + 30 * len(v) for r, v in zip(runs, rows, strict=True))
    batch_size = draw(st.integers(61, total + 200))  # one record per batch … all in one
    first = draw(st.integers(0, sum(map(len, rows))))
    return Runs(runs, headers, batch_size, first)


def aiokafka_batch(records: list[tuple[bytes, Headers]], batch_size: int) -> tuple[bytes, int]:
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=0,
        is_transactional=0,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=0,
        batch_size=batch_size,
    )
    count = 0
    for value, headers in records:
        if builder.append(count, timestamp=TIMESTAMP, key=None, value=value, headers=headers) is None:
            break
        count += 1
    builder.set_producer_state(*STATE)
    return bytes(builder.build()), count


def batches(encoder: Encoder, r: Runs) -> list[tuple[bytes, int, tuple[int, int]]]:
    """The batches of the runs from record `r.first` on, each with where the next one starts."""
    run, offset = r.cursor(r.first)
    out = []
    while run < len(r.runs):
        buffer, count, run, offset = encoder.encode_lines(r.runs, r.headers, run, offset, r.batch_size)
        encoder.finish(buffer, count, TIMESTAMP, *STATE, 0)
        out.append((bytes(buffer), count, (run, offset)))
    return out


@pytest.mark.parametrize("encoder", ENCODERS)
@given(r=run_lists())
def test_batches_from_runs_are_aiokafkas_byte_for_byte(encoder: Encoder, r: Runs) -> None:
    assert encoder is not None, "a C compiler is here, but the native module was not built"
    records = r.records()
    start = r.first
    for data, count, cursor in batches(encoder, r):
        theirs, their_count = aiokafka_batch(records[start:], r.batch_size)
        if their_count == 0:  # only empty runs were left: nothing to send
            assert count == 0 and cursor == (len(r.runs), 0)
            continue
        assert (data, count) == (theirs, their_count)
        start += count
        assert cursor == r.cursor(start)
    assert start == len(records)  # every record, once, in order


@pytest.mark.parametrize("encoder", ENCODERS)
@given(r=run_lists())
def test_aiokafka_reads_batches_from_runs_back(encoder: Encoder, r: Runs) -> None:
    assert encoder is not None
    read = []
    for data, _, _ in batches(encoder, r):
        batch = DefaultRecordBatch(data)
        assert batch.validate_crc()
        read += [(rec.value, rec.key, rec.headers) for rec in batch]
    assert read == [(v, None, h) for v, h in r.records()[r.first :]]


@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize(
    ("runs", "headers", "run", "offset", "error"),
    [
        (["text\n"], None, 0, 0, TypeError),
        ([bytearray(b"a\n")], None, 0, 0, TypeError),
        ([b"a\nb"], None, 0, 0, ValueError),  # the last record has no newline
        ([b"a\n", b"b\n"], [None], 0, 0, IndexError),  # fewer header lists than runs
        ([b"a\n"], [[("h", "text")]], 0, 0, TypeError),
        ([b"a\n"], None, -1, 0, ValueError),
        ([b"a\n"], None, 0, 3, ValueError),  # past the end of the run
    ],
)
def test_bad_runs_are_refused(
    encoder: Encoder,
    runs: list[bytes],
    headers: list[Headers | None] | None,
    run: int,
    offset: int,
    error: type[Exception],
) -> None:
    assert encoder is not None
    with pytest.raises(error):
        encoder.encode_lines(runs, headers, run, offset, 1 << 20)
