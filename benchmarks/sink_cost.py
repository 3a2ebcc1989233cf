"""The Kafka sink alone against a real broker: CPU (user and system) of this process per million
records for flushes sent with KafkaSink.send and awaited (as wait=true does), everything the
produce path costs from the flush to the broker's acknowledgement: batch encoding, aiokafka's
sender, the Produce request, socket writes, replies. No HTTP, no decoding.

    python benchmarks/sink_cost.py --kafka-bootstrap 127.0.0.1:19680 [--flushes 400] [--lines]

--lines hands each flush over as runs of lines (KafkaSink.send_lines, one run per 100-row request,
as the queues do for unkeyed streams) instead of a bytes object per record (KafkaSink.send).

Run it by path with PYTHONPATH set to the checkout to measure (it imports only `gateway`). For an
instruction count that load on the machine does not change, run it under
`perf stat -e instructions -D -1 --control fifo:CTL` with PERF_CTL_FIFO=CTL: counting is then
enabled for the measured flushes only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid

from aiokafka.admin import NewTopic

from gateway.sinks.base import Landed, Lines
from gateway.sinks.kafka import KafkaSink

HEADERS = [("schema-version", b"1")]
CTL = os.environ.get("PERF_CTL_FIFO")
IN_FLIGHT = 4  # flushes handed over and not yet acknowledged, as the queues allow
REQUEST_ROWS = 100  # rows per run of lines (an S1 request)


def rows(n: int) -> list[bytes]:
    return [
        b'{"id":%d,"name":"%s","value":%d.25,"ok":true}' % (i, b"n" * (100 + i % 20), i) for i in range(n)
    ]


def perf(command: str) -> None:
    if CTL:
        with open(CTL, "w") as ctl:
            ctl.write(command + "\n")


async def flushes(sink: KafkaSink, topic: str, values: list[bytes], count: int, as_lines: bool) -> None:
    pending: list[asyncio.Future[Landed | None]] = []
    headers = [HEADERS] * len(values)
    runs = [
        b"".join(v + b"\n" for v in values[i : i + REQUEST_ROWS]) for i in range(0, len(values), REQUEST_ROWS)
    ]
    for _ in range(count):
        if as_lines:  # a new Lines per flush, as the queues make one
            sent = await sink.send_lines(topic, Lines(runs, [HEADERS] * len(runs), len(values)))
        else:
            sent = await sink.send(topic, values, None, headers=headers)
        pending.append(sent)
        if len(pending) >= IN_FLIGHT:
            await pending.pop(0)
    await asyncio.gather(*pending)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kafka-bootstrap", required=True)
    parser.add_argument("--flushes", type=int, default=400)
    parser.add_argument("--flush-rows", type=int, default=1000)
    parser.add_argument("--lines", action="store_true", help="hand flushes over as runs of lines")
    args = parser.parse_args()
    sink = KafkaSink(args.kafka_bootstrap, batch_max_bytes=1 << 20)
    await sink.start()
    try:
        topic = "bench.sink-cost-" + uuid.uuid4().hex[:8]
        await sink.admin.create_topics([NewTopic(topic, 3, 1)])
        values = rows(args.flush_rows)
        await flushes(sink, topic, values, 20, args.lines)  # warm-up: connections, metadata
        perf("enable")
        t0, c0 = os.times(), time.perf_counter()
        await flushes(sink, topic, values, args.flushes, args.lines)
        t1, c1 = os.times(), time.perf_counter()
        perf("disable")
        await sink.admin.delete_topics([topic])
    finally:
        await sink.close()
    per_m = 1e6 / (args.flushes * args.flush_rows)
    print(
        f"user {(t1.user - t0.user) * per_m:.3f} sys {(t1.system - t0.system) * per_m:.3f} "
        f"CPU-s per million records; {args.flushes * args.flush_rows / (c1 - c0):,.0f} records/s"
    )


if __name__ == "__main__":
    asyncio.run(main())
