"""Real processes for integration tests: the development Kafka broker, gateway subprocesses, and a
reader that takes a topic's records back out of Kafka."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

ROOT = Path(__file__).resolve().parents[2]
KAFKA_DEV = ROOT / "deploy" / "kafka" / "kafka-dev"
ADMIN_KEY = "test-admin-key-" + uuid.uuid4().hex


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def kafka_dev(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run deploy/kafka/kafka-dev with the given subcommand."""
    return subprocess.run(
        [str(KAFKA_DEV), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
    )


def wait_until(check: Any, timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll `check()` until it returns a truthy value; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


@dataclass
class Reply:
    """An HTTP reply as the tests look at it."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http(
    method: str,
    url: str,
    body: bytes | str | dict[str, Any] | list[Any] | None = None,
    *,
    headers: dict[str, str] | None = None,
    timeout: float = 60,
) -> Reply:
    """A plain HTTP request (urllib: nothing shared with the gateway's own stack)."""
    data: bytes | None
    if isinstance(body, dict | list):
        data = json.dumps(body).encode()
    elif isinstance(body, str):
        data = body.encode()
    else:
        data = body
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return Reply(resp.status, dict(resp.headers), resp.read())
    except urllib.error.HTTPError as err:
        return Reply(err.code, dict(err.headers), err.read())


@dataclass
class Gateway:
    """A gateway subprocess started exactly as a user starts it (`python -m gateway serve`)."""

    data_dir: Path
    kafka: str | None
    extra: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    # Each gateway gets a catalog of its own unless replicas are meant to share one.
    catalog_topic: str = field(default_factory=lambda: "_test_catalog_" + uuid.uuid4().hex[:12])
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, wait_ready: bool = True) -> Gateway:
        args = [
            sys.executable,
            "-m",
            "gateway",
            "serve",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            *self.extra,
        ]
        if self.kafka:
            args += ["--kafka-bootstrap", self.kafka, "--catalog-topic", self.catalog_topic]
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.data_dir / f"gateway-{self.port}.log"
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child process
        env = {**os.environ, "GATEWAY_ADMIN_KEY": ADMIN_KEY, **self.env}
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        log.close()
        if wait_ready:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30) -> None:
        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"gateway exited with {self.proc.returncode}:\n{self.log()}")
            try:
                return http("GET", self.url + "/readyz", timeout=2).status == 200
            except OSError:
                return False

        wait_until(ready, timeout, "the gateway to be ready")

    def answers(self) -> bool:
        """True once /healthz answers 200 (the process is up, whether or not it is ready)."""
        try:
            return self.request("GET", "/healthz", key=None).status == 200
        except OSError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def signal(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, then wait for the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise

    # ---- API helpers -------------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        key: str | None = ADMIN_KEY,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        h = dict(headers or {})
        if key is not None and "X-Api-Key" not in h and "Authorization" not in h:
            h["X-Api-Key"] = key
        return http(method, self.url + path, body, headers=h)

    def create_stream(self, name: str, columns: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
        reply = self.request("POST", "/api/v1beta2/streams", {"name": name, "columns": columns, **fields})
        assert reply.status == 201, reply.body
        result: dict[str, Any] = reply.json()
        return result

    def ingest(
        self,
        stream: str,
        body: Any,
        *,
        wait: bool = True,
        content_type: str | None = None,
        headers: dict[str, str] | None = None,
        query: str = "",
    ) -> Reply:
        h = dict(headers or {})
        if content_type:
            h["Content-Type"] = content_type
        q = f"?wait={'true' if wait else 'false'}" + (f"&{query}" if query else "")
        return self.request("POST", f"/api/v1beta2/streams/{stream}/ingest{q}", body, headers=h)


def unique_name(prefix: str = "s") -> str:
    """A stream name no other test uses (letters, digits, _)."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


@dataclass
class Record:
    """A record read back from Kafka."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]] = field(default_factory=list)  # in order, as Kafka holds them
    timestamp: int = -1  # ms, as Kafka stores it

    def header(self, name: str) -> bytes | None:
        """The last value of header `name` (as Kafka clients' lastHeader), or None."""
        return next((v for n, v in reversed(self.headers) if n == name), None)

    def json(self) -> Any:
        return json.loads(self.value)


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """Each partition's end offset (how many records it holds, from offset 0)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic)
        if parts is None:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        ends = await consumer.end_offsets(tps) if tps else {}
        return {tp.partition: off for tp, off in ends.items()}
    finally:
        await consumer.stop()


async def known_partitions(bootstrap: str, topic: str, timeout: float = 60) -> set[int]:
    """The topic's partitions once the broker's metadata shows them: a topic made by CreateTopics
    reaches the broker's metadata a moment after the reply (KRaft applies it asynchronously)."""
    deadline = time.monotonic() + timeout  # a failure guard only
    while not (ends := await end_offsets(bootstrap, topic)):
        assert time.monotonic() < deadline, f"topic {topic} has no partitions after {timeout} s"
        await asyncio.sleep(0.05)
    return set(ends)


async def read_topic(bootstrap: str, topic: str) -> list[Record]:
    """Every record of the topic, from the beginning to the end offsets read first."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_uncommitted",
    )
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return []
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        out: list[Record] = []
        remaining = {tp for tp in tps if ends[tp] > 0}
        deadline = time.monotonic() + 60
        while remaining:
            if time.monotonic() > deadline:
                raise AssertionError(f"could not read {topic} to its end offsets {ends}")
            batch = await consumer.getmany(*remaining, timeout_ms=1000)
            for tp, msgs in batch.items():
                for m in msgs:
                    if m.offset < ends[tp]:
                        out.append(
                            Record(tp.partition, m.offset, m.key, m.value, list(m.headers or ()), m.timestamp)
                        )
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
        return sorted(out, key=lambda r: (r.partition, r.offset))
    finally:
        await consumer.stop()


def iter_ndjson(rows: list[dict[str, Any]]) -> Iterator[bytes]:
    """Rows as NDJSON lines."""
    for r in rows:
        yield json.dumps(r).encode() + b"\n"


async def topic_config(bootstrap: str, topic: str) -> dict[str, str]:
    """The topic's configuration as the broker describes it (admin DescribeConfigs)."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (resp,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        (_code, _message, _kind, _name, entries) = resp.resources[0]
        return {e[0]: e[1] for e in entries}
    finally:
        await admin.close()


async def topic_config_becomes(
    bootstrap: str, topic: str, expected: dict[str, str], timeout: float = 10
) -> dict[str, str]:
    """The topic's configuration once it holds `expected` (a broker serves its metadata image,
    which may lag the controller's commit by a moment); fails after `timeout` seconds."""
    import asyncio

    deadline = time.monotonic() + timeout
    while True:
        config = await topic_config(bootstrap, topic)
        if all(config.get(k) == v for k, v in expected.items()):
            return config
        if time.monotonic() > deadline:
            raise AssertionError(f"{topic} config {config} never showed {expected}")
        await asyncio.sleep(0.1)
