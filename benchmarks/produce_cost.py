"""Where the Kafka sink's per-record produce CPU goes: filling record batches, finishing them (header,
CRC-32C), and encoding the Produce request around them, for each way of building the batches:

  aiokafka-append  aiokafka's public BatchBuilder.append, one Python call per record
  c-builder        aiokafka's C builder called directly per record (the sink before the encoder)
  pure-python      gateway/sinks/recordbatch_py.py: one call per batch, pure Python
  native           gateway/sinks/_recordbatch.c: one call per batch
  *-lines          the same encoders given the flush as runs of lines (`encode_lines`: one run per
                   100-row request, as the queues hand them over) instead of a bytes object per record

    python -m benchmarks.produce_cost [--rounds 7] [--flushes 200] [--flush-rows 1000] [--malloc-tuned]

--malloc-tuned applies the Kafka sink's glibc malloc settings first (gateway/sinks/malloc_tuning.py),
as KafkaSink.start does.

CPU time of this process (time.process_time), median of the rounds, in CPU-seconds per million
records: repeatable on a loaded machine where wall-clock rates are not. Every record is a ~150-byte
JSON row carrying the one `schema-version` header the sink adds, as in S1.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.protocol.produce import ProduceRequest, ProduceRequest_v7

from gateway.sinks.aiokafka_batch import RecordBatch
from gateway.sinks.base import Headers
from gateway.sinks.malloc_tuning import keep_request_buffers
from gateway.sinks.recordbatch import NATIVE, PURE, Encoder

BATCH_BYTES = 1 << 20
TS = 1_700_000_000_000
HEADERS: Headers = [("schema-version", b"1")]
REQUEST_ROWS = 100  # rows per run of lines (an S1 request)


@dataclass
class Flush:
    """One flush's records, both ways the sink takes them."""

    values: list[bytes]
    headers: list[Headers]  # per record
    runs: list[bytes]  # the same records as runs of lines
    run_headers: list[Headers | None]  # per run

    @classmethod
    def of(cls, values: list[bytes]) -> Flush:
        runs = [
            b"".join(v + b"\n" for v in values[i : i + REQUEST_ROWS])
            for i in range(0, len(values), REQUEST_ROWS)
        ]
        return cls(values, [HEADERS] * len(values), runs, [HEADERS] * len(runs))


Build = Callable[[Flush], list[Any]]


def rows(n: int) -> list[bytes]:
    return [
        b'{"id":%d,"name":"%s","value":%d.25,"ok":true}' % (i, b"n" * (100 + i % 20), i) for i in range(n)
    ]


def aiokafka_append(flush: Flush) -> list[Any]:
    out, batch = [], BatchBuilder(BATCH_BYTES, 0)
    for value, hdrs in zip(flush.values, flush.headers, strict=True):
        if batch.append(timestamp=TS, key=None, value=value, headers=hdrs) is None:
            out.append(batch)
            batch = BatchBuilder(BATCH_BYTES, 0)
            batch.append(timestamp=TS, key=None, value=value, headers=hdrs)
    return [*out, batch]


def c_builder(flush: Flush) -> list[Any]:
    """The sink's loop before the record-batch encoder (gateway/sinks/kafka.py at 49a0dcd)."""
    values, headers = flush.values, flush.headers
    out, batch = [], BatchBuilder(BATCH_BYTES, 0)
    append, count = batch._builder.append, 0
    for i, value in enumerate(values):
        hdrs = headers[i] if headers is not None else []
        if append(count, TS, None, value, hdrs) is None:
            batch._relative_offset = count
            batch.close()
            out.append(batch)
            batch = BatchBuilder(BATCH_BYTES, 0)
            append, count = batch._builder.append, 0
            append(count, TS, None, value, hdrs)
        count += 1
    batch._relative_offset = count
    batch.close()
    return [*out, batch]


def encoder_fill(encoder: Encoder) -> Build:
    def fill(flush: Flush) -> list[Any]:
        out, start = [], 0
        while start < len(flush.values):
            batch = RecordBatch.fill(
                flush.values, None, flush.headers, None, start, TS, BATCH_BYTES, encoder=encoder
            )
            start += batch.record_count()
            out.append(batch)
        return out

    return fill


def encoder_fill_lines(encoder: Encoder) -> Build:
    def fill(flush: Flush) -> list[Any]:
        out, run, offset = [], 0, 0
        while run < len(flush.runs):
            batch, run, offset = RecordBatch.fill_lines(
                flush.runs, flush.run_headers, run, offset, TS, BATCH_BYTES, encoder=encoder
            )
            out.append(batch)
        return out

    return fill


def finish(batches: list[Any]) -> list[bytes]:
    """What aiokafka's sender does per batch: number it (idempotent producer), take its bytes."""
    for seq, batch in enumerate(batches):
        batch._set_producer_state(1000, 0, seq)
    return [batch._build() for batch in batches]


def request(buffers: list[bytes]) -> bytes:
    """The Produce request aiokafka encodes around the batches (one per partition)."""
    req = ProduceRequest(None, -1, 30_000, [("ingest.s1", list(enumerate(buffers)))])
    data: bytes = req.build(ProduceRequest_v7).encode()
    return data


def measure(build: Build, flushes: int, flush_rows: int) -> tuple[float, float, float]:
    """CPU-seconds per million records: (fill, finish, Produce request)."""
    flush = Flush.of(rows(flush_rows))
    fill_s = finish_s = request_s = 0.0
    for _ in range(flushes):
        t0 = time.process_time()
        batches = build(flush)
        t1 = time.process_time()
        buffers = finish(batches)
        t2 = time.process_time()
        request(buffers)
        t3 = time.process_time()
        fill_s, finish_s, request_s = fill_s + t1 - t0, finish_s + t2 - t1, request_s + t3 - t2
    per_m = 1e6 / (flushes * flush_rows)
    return fill_s * per_m, finish_s * per_m, request_s * per_m


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--flushes", type=int, default=200)
    parser.add_argument("--flush-rows", type=int, default=1000)
    parser.add_argument("--malloc-tuned", action="store_true")
    args = parser.parse_args()
    if args.malloc_tuned:
        keep_request_buffers()
    paths: dict[str, Build] = {
        "aiokafka-append": aiokafka_append,
        "c-builder": c_builder,
        "pure-python": encoder_fill(PURE),
        "pure-python-lines": encoder_fill_lines(PURE),
    }
    if NATIVE is not None:
        paths["native"] = encoder_fill(NATIVE)
        paths["native-lines"] = encoder_fill_lines(NATIVE)
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in paths}
    for _ in range(args.rounds):  # interleaved, so that load changes hit every path alike
        for name, build in paths.items():
            results[name].append(measure(build, args.flushes, args.flush_rows))
    print(
        f"CPU-s per million records, median of {args.rounds} rounds "
        f"({args.flush_rows}-row flushes, 1 MiB batches{', malloc tuned' if args.malloc_tuned else ''})"
    )
    print(f"{'path':>16} {'fill':>7} {'finish':>7} {'request':>8} {'total':>7}  (total min-max)")
    for name, runs in results.items():
        fill, fin, req = (statistics.median(r[k] for r in runs) for k in range(3))
        totals = [sum(r) for r in runs]
        print(
            f"{name:>16} {fill:7.3f} {fin:7.3f} {req:8.3f} {fill + fin + req:7.3f}  "
            f"({min(totals):.3f}-{max(totals):.3f})"
        )


if __name__ == "__main__":
    main()
