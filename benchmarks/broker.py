"""The benchmark's Kafka side: the development broker (deploy/kafka/kafka-dev), topic end offsets
(rows delivered), topics for the producer ceilings, and Kafka's own ProducerPerformance tool."""

from __future__ import annotations

import asyncio
import os
import re
import resource
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from benchmarks.procs import ROOT, Pinning

KAFKA_DEV = ROOT / "deploy" / "kafka" / "kafka-dev"
DEFAULT_PORT = 19392  # not the development/test broker's 19092/19292: a benchmark never disturbs it
# The Java producer configured like the gateway's producer: acks=all, idempotent, 1 MiB batches.
PRODUCER_PERF_PROPS = [
    "acks=all",
    "enable.idempotence=true",
    "batch.size=1048576",
    "linger.ms=5",
    "max.request.size=1114112",
]
_PP_SUMMARY = re.compile(
    r"(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg latency, "
    r"([\d.]+) ms max latency, (\d+) ms 50th, (\d+) ms 95th, (\d+) ms 99th, (\d+) ms 99.9th"
)


async def kafka_dev(*args: str, port: int) -> tuple[int, str, str]:
    """Run deploy/kafka/kafka-dev; (exit code, stdout, stderr).

    Output goes through files, not pipes: a broker that `start` launches would inherit the pipes
    (uvloop's socketpairs are inheritable) and keep them open, so reading to EOF would never end.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = await asyncio.create_subprocess_exec(
            str(KAFKA_DEV),
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env={**os.environ, "KAFKA_DEV_PORT": str(port)},
            close_fds=True,
        )
        code = await proc.wait()
        return code, _read_back(out), _read_back(err)


def _read_back(f: IO[bytes]) -> str:
    f.seek(0)
    return f.read().decode(errors="replace")


async def ensure_broker(port: int) -> bool:
    """Start the development broker on `port` unless it runs; True when this call started it."""
    code, _, _ = await kafka_dev("status", port=port)
    if code == 0:
        return False
    code, _, err = await kafka_dev("start", port=port)
    if code != 0:
        raise RuntimeError(f"kafka-dev start failed on port {port}:\n{err}")
    return True


async def kafka_version(port: int) -> str | None:
    """The Kafka version of the fetched jars (kafka_2.13-<version>.jar on kafka-dev's classpath)."""
    code, out, _ = await kafka_dev("classpath", port=port)
    return _jar_version(Path(out.strip().rstrip("*").rstrip("/"))) if code == 0 else None


def _jar_version(lib: Path) -> str | None:
    for jar in sorted(lib.glob("kafka_2.13-*.jar")):
        m = re.fullmatch(r"kafka_2\.13-([\d.]+)\.jar", jar.name)
        if m:
            return m.group(1)
    return None


class Offsets:
    """Sums of topics' end offsets, with one consumer kept open for the whole run."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._consumer: Any = None

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await self._consumer.start()

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    async def _partitions(self, topics: list[str], timeout: float = 30) -> list[TopicPartition]:
        """Every partition of the topics; waits for new topics to appear in the metadata."""
        c = self._consumer
        deadline = time.monotonic() + timeout
        while True:
            missing = [t for t in topics if not c.partitions_for_topic(t)]
            if not missing:
                return [TopicPartition(t, p) for t in topics for p in c.partitions_for_topic(t)]
            if time.monotonic() > deadline:
                raise RuntimeError(f"topics without partitions after {timeout:.0f} s: {missing[:5]}")
            await c._client.force_metadata_update()
            if any(not c.partitions_for_topic(t) for t in missing):
                await asyncio.sleep(0.2)

    async def max_partitions(self, topics: list[str], timeout: float = 120) -> int:
        """The most partitions any of the topics has (new topics: waits until they are known;
        200 just created took over 30 s to appear at a load average of 12-18)."""
        counts: dict[str, int] = {}
        for tp in await self._partitions(topics, timeout):
            counts[tp.topic] = counts.get(tp.topic, 0) + 1
        return max(counts.values(), default=1)

    async def total(self, topics: Iterable[str]) -> int:
        """Records in the topics (sum of every partition's end offset)."""
        tps = await self._partitions(list(topics))
        ends = await asyncio.wait_for(self._consumer.end_offsets(tps), 30)
        return int(sum(ends.values()))

    async def wait_for(self, topics: list[str], target: int, timeout: float) -> tuple[int, float]:
        """Poll until the topics hold ≥ `target` records or `timeout` passes: (total, seconds)."""
        start = time.monotonic()
        interval = min(0.5, 0.1 + len(topics) / 500)  # 200 topics: ListOffsets for 600 partitions
        while True:
            total = await self.total(topics)
            waited = time.monotonic() - start
            if total >= target or waited > timeout:
                return total, waited
            await asyncio.sleep(interval)


async def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        resp = await admin.create_topics([NewTopic(topic, partitions, 1)])
        for _name, code, *_ in resp.topic_errors:
            if code not in (0, 36):
                raise RuntimeError(f"could not create topic {topic}: error {code}")
    finally:
        await admin.close()


async def delete_topics(bootstrap: str, topics: list[str]) -> None:
    if not topics:
        return
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics(topics)
    finally:
        await admin.close()


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


async def producer_perf(
    port: int, bootstrap: str, topic: str, records: int, payload_file: Path, pinning: Pinning
) -> dict[str, Any]:
    """Kafka's ProducerPerformance with the benchmark's rows as payload; its final summary line."""
    argv = pinning.wrap(
        "gateway",
        [
            str(KAFKA_DEV),
            "run-class",
            "org.apache.kafka.tools.ProducerPerformance",
            "--topic",
            topic,
            "--num-records",
            str(records),
            "--payload-file",
            str(payload_file),
            "--throughput",
            "-1",
            "--command-property",
            f"bootstrap.servers={bootstrap}",
            *PRODUCER_PERF_PROPS,
        ],
    )
    cpu0 = _children_cpu()
    start = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "KAFKA_DEV_PORT": str(port)},
    )
    out, err = await proc.communicate()
    elapsed = time.monotonic() - start
    text = out.decode()
    matches = _PP_SUMMARY.findall(text)
    if proc.returncode != 0 or not matches:
        raise RuntimeError(
            f"ProducerPerformance failed ({proc.returncode}):\n{text[-2000:]}\n{err.decode()[-2000:]}"
        )
    sent, rate, mb, avg, mx, p50, p95, p99, p999 = matches[-1]
    return {
        "records": int(sent),
        "records_per_s": float(rate),
        "mb_per_s": float(mb),
        "latency_ms": {
            "avg": float(avg),
            "max": float(mx),
            "p50": int(p50),
            "p95": int(p95),
            "p99": int(p99),
            "p999": int(p999),
        },
        "cpu_s": _children_cpu() - cpu0,
        "wall_s": elapsed,
        "properties": PRODUCER_PERF_PROPS,
    }
