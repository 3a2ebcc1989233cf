"""The record-batch encoders (native and pure Python) write byte for byte what aiokafka's own batch
builder writes for the same records, and aiokafka's reader reads them back with a valid CRC."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

import pytest
from aiokafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from hypothesis import given
from hypothesis import strategies as st

from gateway.sinks import recordbatch, recordbatch_py
from gateway.sinks.base import Headers
from gateway.sinks.recordbatch import Encoder

HAVE_COMPILER = any(shutil.which(cc) for cc in ("cc", "gcc", "clang"))
ENCODERS = [
    pytest.param(recordbatch.PURE, id="pure-python"),
    pytest.param(
        recordbatch.NATIVE,
        id="native",
        marks=pytest.mark.skipif(
            recordbatch.NATIVE is None and not HAVE_COMPILER, reason="no C compiler here"
        ),
    ),
]


@dataclass
class Flush:
    values: list[bytes]
    keys: list[bytes | None] | None
    headers: list[Headers] | None
    order: list[int] | None
    start: int
    timestamp: int
    batch_size: int
    state: tuple[int, int, int]  # producer id, epoch, base sequence


def names() -> st.SearchStrategy[str]:
    return st.text(max_size=12)  # any text, multi-byte UTF-8 included


def header_lists() -> st.SearchStrategy[Headers]:
    return st.lists(st.tuples(names(), st.one_of(st.none(), st.binary(max_size=40))), max_size=3)


def sizes() -> st.SearchStrategy[bytes]:
    """Mostly small values, some past a varint boundary (64 bytes: 2-byte length; 8192: 3), some
    as bytearray or memoryview (slices of a request body), which aiokafka's builder takes too."""
    raw = st.one_of(st.binary(max_size=80), st.integers(60, 9000).map(lambda n: b"v" * n))
    return st.one_of(raw, raw.map(bytearray), raw.map(lambda b: memoryview(b" " + b)[1:]))


@st.composite
def flushes(draw: st.DrawFn) -> Flush:
    n = draw(st.integers(1, 150))  # offset deltas past 63 (2-byte varints)
    values = draw(st.lists(sizes(), min_size=n, max_size=n))
    keys = draw(
        st.one_of(st.none(), st.lists(st.one_of(st.none(), st.binary(max_size=20)), min_size=n, max_size=n))
    )
    headers = None
    if draw(st.booleans()):  # a flush shares a few header lists between its records, as the queues do
        pool = draw(st.lists(header_lists(), min_size=1, max_size=3))
        headers = [pool[draw(st.integers(0, len(pool) - 1))] for _ in range(n)]
    order = None
    if draw(st.booleans()):
        order = draw(st.permutations(list(range(n))))[: draw(st.integers(1, n))]
    start = draw(st.integers(0, (len(order) if order is not None else n) - 1))
    total = sum(len(v) + 30 for v in values)
    # from "one record only" through "the limit cuts somewhere" to "everything fits"
    batch_size = draw(st.integers(61, total + 200))
    timestamp = draw(st.integers(0, 2**62))
    state = draw(st.tuples(st.integers(-1, 2**62), st.integers(-1, 2**15 - 1), st.integers(0, 2**31 - 1)))
    return Flush(values, keys, headers, order, start, timestamp, batch_size, state)


def aiokafka_batch(f: Flush) -> tuple[bytes, int]:
    """What aiokafka's builder (the C one the producer uses) writes for the flush."""
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=0,
        is_transactional=0,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=0,
        batch_size=f.batch_size,
    )
    indices = f.order if f.order is not None else list(range(len(f.values)))
    count = 0
    for i in indices[f.start :]:
        if (
            builder.append(
                count,
                timestamp=f.timestamp,
                key=f.keys[i] if f.keys else None,
                value=f.values[i],
                headers=f.headers[i] if f.headers else [],
            )
            is None
        ):
            break
        count += 1
    builder.set_producer_state(*f.state)
    return bytes(builder.build()), count


def our_batch(encoder: Encoder, f: Flush) -> tuple[bytes, int]:
    buffer, count = encoder.encode(f.values, f.keys, f.headers, f.order, f.start, f.batch_size)
    encoder.finish(buffer, count, f.timestamp, *f.state, 0)
    return bytes(buffer), count


@pytest.mark.parametrize("encoder", ENCODERS)
@given(flush=flushes())
def test_batches_are_aiokafkas_byte_for_byte(encoder: Encoder, flush: Flush) -> None:
    assert encoder is not None, "a C compiler is here, but the native module was not built"
    ours, count = our_batch(encoder, flush)
    theirs, their_count = aiokafka_batch(flush)
    assert count == their_count
    assert ours == theirs


@pytest.mark.parametrize("encoder", ENCODERS)
@given(flush=flushes())
def test_aiokafka_reads_them_back_with_a_valid_crc(encoder: Encoder, flush: Flush) -> None:
    assert encoder is not None, "a C compiler is here, but the native module was not built"
    data, count = our_batch(encoder, flush)
    batch = DefaultRecordBatch(data)
    assert batch.validate_crc()
    assert (batch.producer_id, batch.producer_epoch, batch.base_sequence) == flush.state
    indices = flush.order if flush.order is not None else list(range(len(flush.values)))
    indices = indices[flush.start : flush.start + count]
    records = list(batch)
    assert [r.offset for r in records] == list(range(count))
    assert [r.value for r in records] == [flush.values[i] for i in indices]
    assert [r.key for r in records] == [flush.keys[i] if flush.keys else None for i in indices]
    assert [r.headers for r in records] == [flush.headers[i] if flush.headers else [] for i in indices]
    assert {r.timestamp for r in records} == {flush.timestamp}


@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize(
    "bad",
    [
        {"values": ["text"]},
        {"keys": [1]},
        {"headers": [[("h", "text")]]},
        {"headers": [[(1, b"v")]]},
        {"headers": [("h", b"v")]},
        {"order": [5]},
    ],
)
def test_bad_records_are_refused(encoder: Encoder, bad: dict[str, list[object]]) -> None:
    """Both refuse them (the sink never passes them); the exception may differ."""
    assert encoder is not None
    args: dict[str, object] = {"values": [b"v"], "keys": None, "headers": None, "order": None}
    args |= bad
    with pytest.raises((TypeError, IndexError, ValueError, AttributeError)):
        encoder.encode(args["values"], args["keys"], args["headers"], args["order"], 0, 1 << 20)


def test_the_native_crc_is_crc32c() -> None:
    if recordbatch.NATIVE is None:
        pytest.skip("the native module is not built")
    assert recordbatch.NATIVE.crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    data = bytes(range(256)) * 41
    assert recordbatch.NATIVE.crc32c(data) == recordbatch_py.calc_crc32c(data)


def test_the_choice_is_logged_once(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recordbatch, "_told", False)
    with caplog.at_level(logging.INFO, logger="gateway.sinks.recordbatch"):
        recordbatch.announce()
        recordbatch.announce()
    assert [r.getMessage() for r in caplog.records] == [
        f"Kafka record batches are encoded by the {recordbatch.CHOICE} encoder"
    ]


@pytest.mark.parametrize(("force", "pure"), [("1", True), ("0", recordbatch.NATIVE is None)])
def test_an_environment_variable_forces_the_pure_python_encoder(force: str, pure: bool) -> None:
    code = "from gateway.sinks import recordbatch as r; print(r.ENCODER is r.PURE, r.CHOICE)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, recordbatch.FORCE_PURE_ENV: force},
    ).stdout
    assert out.startswith(f"{pure} "), out
