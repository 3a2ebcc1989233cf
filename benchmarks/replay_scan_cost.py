"""What the quarantine replay's recovery scan costs at its bound: reading MAX_SCAN records of each
of three partitions that hold none of the wanted positions (the worst case: an interrupted page
whose rows were never written, on a busy stream), with gateway.evolution.replay_scan itself.

    python -m benchmarks.replay_scan_cost --kafka-bootstrap 127.0.0.1:PORT [--records N]

Produces the records to a new topic of the broker, then scans them three times and prints each
scan's wall and CPU time (CPU time is the steadier one on a loaded machine).
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from gateway.evolution.replay_scan import MAX_SCAN, scan_written

PARTITIONS = 3
VALUE = b'{"id":"row-000000","n":123456789,"text":"some event text of typical size"}'


async def fill(bootstrap: str, records: int) -> str:
    """A new topic with `records` records in each partition."""
    topic = "replay_scan_cost_" + uuid.uuid4().hex[:8]
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, acks="all", max_batch_size=1 << 20, enable_idempotence=True
    )
    await producer.start()
    try:
        for p in range(PARTITIONS):
            sent = [
                await producer.send(topic, VALUE, partition=p, headers=[("schema-version", b"1")])
                for _ in range(records)
            ]
            await asyncio.gather(*sent)
    finally:
        await producer.stop()
    return topic


async def main(bootstrap: str, records: int, rounds: int) -> None:
    topic = await fill(bootstrap, records)
    starts = {TopicPartition(topic, p): 0 for p in range(PARTITIONS)}
    for run in range(rounds):
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
        await consumer.start()
        try:
            wall, cpu = time.perf_counter(), time.process_time()
            scan = await scan_written(consumer, starts, "token", {(0, 1 << 40)}, records)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        finally:
            await consumer.stop()
        print(
            f"run {run}: {PARTITIONS}x{records} records scanned in {wall:.2f} s wall, "
            f"{cpu:.2f} s CPU ({PARTITIONS * records / cpu / 1e3:.0f}k records per CPU-s), "
            f"complete={scan.complete}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kafka-bootstrap", required=True)
    parser.add_argument("--records", type=int, default=MAX_SCAN, help="records a partition")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.kafka_bootstrap, args.records, args.rounds))
