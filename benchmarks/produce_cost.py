"""Where the Kafka sink's per-record produce CPU goes: filling record batches, finishing them (header,
CRC-32C), and encoding the Produce request around them, for each way of building the batches:

  aiokafka-append  aiokafka's public BatchBuilder.append, one Python call per record
  c-builder        aiokafka's C builder called directly per record (the sink before the encoder)
  pure-python      gateway/sinks/recordbatch_py.py: one call per batch, pure Python
  native           gateway/sinks/_recordbatch.c: one call per batch

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
Build = Callable[[list[bytes], list[Headers]], list[Any]]


def rows(n: int) -> list[bytes]:
    return [b'{"id":%d,"name":"%s","value":%d.25,"ok":true}' % (i, b"n" * (100 + i % 20), i)
            for i in range(n)]


def aiokafka_append(values: list[bytes], headers: list[Headers]) -> list[Any]:
    out, batch = [], BatchBuilder(BATCH_BYTES, 0)
    for value, hdrs in zip(values, headers, strict=True):
        if batch.append(timestamp=TS, key=None, value=value, headers=hdrs) is None:
            out.append(batch)
            batch = BatchBuilder(BATCH_BYTES, 0)
            batch.append(timestamp=TS, key=None, value=value, headers=hdrs)
    return [*out, batch]


def c_builder(values: list[bytes], headers: list[Headers]) -> list[Any]:
    """The sink's loop before the record-batch encoder (gateway/sinks/kafka.py at 49a0dcd)."""
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
    def fill(values: list[bytes], headers: list[Headers]) -> list[Any]:
        out, start = [], 0
        while start < len(values):
            batch = RecordBatch.fill(values, None, headers, None, start, TS, BATCH_BYTES, encoder=encoder)
            start += batch.record_count()
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
    values = rows(flush_rows)
    headers = [HEADERS] * flush_rows
    fill_s = finish_s = request_s = 0.0
    for _ in range(flushes):
        t0 = time.process_time()
        batches = build(values, headers)
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
    paths: dict[str, Build] = {"aiokafka-append": aiokafka_append, "c-builder": c_builder,
                               "pure-python": encoder_fill(PURE)}
    if NATIVE is not None:
        paths["native"] = encoder_fill(NATIVE)
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in paths}
    for _ in range(args.rounds):  # interleaved, so that load changes hit every path alike
        for name, build in paths.items():
            results[name].append(measure(build, args.flushes, args.flush_rows))
    print(f"CPU-s per million records, median of {args.rounds} rounds "
          f"({args.flush_rows}-row flushes, 1 MiB batches{', malloc tuned' if args.malloc_tuned else ''})")
    print(f"{'path':>16} {'fill':>7} {'finish':>7} {'request':>8} {'total':>7}  (total min-max)")
    for name, runs in results.items():
        fill, fin, req = (statistics.median(r[k] for r in runs) for k in range(3))
        totals = [sum(r) for r in runs]
        print(f"{name:>16} {fill:7.3f} {fin:7.3f} {req:8.3f} {fill + fin + req:7.3f}  "
              f"({min(totals):.3f}-{max(totals):.3f})")


if __name__ == "__main__":
    main()
