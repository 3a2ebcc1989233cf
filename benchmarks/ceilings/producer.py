"""Ceiling (4): a bare aiokafka batch-API producer loop (create_batch/append/send_batch, acks=all,
idempotent; batches built by benchmarks.ceilings.batch with --builder), producing the benchmark's
own row values round-robin over the topic's partitions (20,000 values, taken in turn, over and over).

`python -m benchmarks.ceilings.producer --bootstrap B --topic T --partitions N --seconds S
[--builder aiokafka|native]`
prints one JSON line: records acknowledged, elapsed seconds, CPU seconds of this process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time
from collections import deque
from typing import Any

import uvloop

from benchmarks.ceilings.batch import BUILDERS, producer, send_values
from benchmarks.payloads import RowFactory, sample_lines

MAX_IN_FLIGHT = 16


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def produce(
    bootstrap: str, topic: str, partitions: int, seconds: float, builder: str = "aiokafka"
) -> dict[str, Any]:
    values = sample_lines(RowFactory("ceiling"), 20_000)
    kafka = producer(bootstrap)
    await kafka.start()
    in_flight: deque[tuple[asyncio.Future[Any], int]] = deque()
    acked = 0
    batches = 0
    i = 0
    n = len(values)
    try:
        cpu0 = _cpu()
        start = time.perf_counter()
        end = start + seconds
        while time.perf_counter() < end:
            fut, after = await send_values(
                kafka, topic, batches % partitions, values, i, cycle=True, builder=builder
            )
            batches += 1
            in_flight.append((fut, after - i))
            i = after % n
            while len(in_flight) >= MAX_IN_FLIGHT:
                done, rows = in_flight.popleft()
                await done
                acked += rows
        while in_flight:
            done, rows = in_flight.popleft()
            await done
            acked += rows
        elapsed = time.perf_counter() - start
        cpu = _cpu() - cpu0
    finally:
        await kafka.stop()
    return {
        "builder": builder,
        "records": acked,
        "batches": batches,
        "elapsed_s": elapsed,
        "cpu_s": cpu,
        "records_per_s": acked / elapsed,
        "value_bytes_mean": sum(map(len, values)) / n,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--partitions", type=int, required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--builder", choices=BUILDERS, default="aiokafka")
    args = p.parse_args()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        result = runner.run(produce(args.bootstrap, args.topic, args.partitions, args.seconds, args.builder))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
