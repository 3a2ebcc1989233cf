"""Each stream's partitioner against the real implementations, for the same keys: `murmur2` against
Kafka's own Java producer code (BuiltInPartitioner.partitionForKey, from the jars kafka-dev fetches),
`consistent_random` against librdkafka (the build bundled in confluent-kafka's wheel, producing to
the real broker); then over real HTTP, that the gateway puts keyed rows and REST proxy keys on the
partition the matching client would, that the setting is shown, changed, refused when unknown,
carried by the catalog shared through Kafka and by catalog import."""

from __future__ import annotations

import base64
import json
import subprocess
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from gateway.sinks.key_partitions import consistent_random, partition_for_key
from tests.integration.harness import ROOT, Gateway, kafka_dev, read_topic, unique_name, wait_until
from tests.integration.test_catalog_transfer import catalog_cli

JAVA_SOURCE = ROOT / "tests" / "fixtures" / "partitioners" / "JavaPartitions.java"
COUNTS = (1, 2, 3, 7, 12)
GUARD_S = 60.0  # bound on waiting for the broker; never reached when green
KEYS: list[bytes] = [
    b"k1",
    b"user-42",
    b'"k1"',  # the REST proxy's JSON key "k1", as written
    b'{"user":7}',
    "Zürich ☃ 東京 🚀".encode(),
    "ключ".encode(),
    b"\x00",
    b"\x00\xff\x80\x7f",
    bytes(range(256)),
    b"x" * 1000,
    *(b"key-%d" % i for i in range(40)),
]
TEXT = [{"name": "message", "type": "string"}]
BINARY_V2 = "application/vnd.kafka.binary.v2+json"


def java_partitions(pairs: list[tuple[bytes, int]]) -> list[int]:
    """The partition Kafka's Java producer gives each (key, partition count)."""
    classpath = kafka_dev("classpath")
    assert classpath.returncode == 0, classpath.stderr
    run = subprocess.run(
        ["java", "-XX:-UsePerfData", "-cp", classpath.stdout.strip(), str(JAVA_SOURCE)],
        input="".join(f"{key.hex()} {n}\n" for key, n in pairs),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    return [int(line) for line in run.stdout.split()]


def new_topics(kafka: str, counts: tuple[int, ...]) -> dict[int, str]:
    """A fresh topic per partition count."""
    topics = {n: f"librdkafka_{uuid.uuid4().hex[:10]}_{n}" for n in counts}
    admin = AdminClient({"bootstrap.servers": kafka})
    made = admin.create_topics(
        [NewTopic(t, num_partitions=n, replication_factor=1) for n, t in topics.items()]
    )
    for future in made.values():
        future.result(timeout=GUARD_S)
    return topics


def librdkafka_partitions(kafka: str, topic: str, keys: list[bytes], **conf: Any) -> list[int]:
    """Where librdkafka's default partitioner (consistent_random) put each key's record."""
    producer = Producer(
        {"bootstrap.servers": kafka, "partitioner": "consistent_random", "linger.ms": 0, **conf}
    )
    landed: dict[int, int] = {}
    failed: list[str] = []

    def report(i: int, err: Any, msg: Any) -> None:
        if err is not None:
            failed.append(str(err))
        else:
            landed[i] = msg.partition()

    for i, key in enumerate(keys):
        producer.produce(topic, value=b"v", key=key, on_delivery=lambda e, m, i=i: report(i, e, m))
    assert producer.flush(GUARD_S) == 0, "librdkafka did not deliver every record in time"
    assert not failed, failed
    return [landed[i] for i in range(len(keys))]


def test_murmur2_is_kafkas_java_partitioner() -> None:
    pairs = [(key, n) for n in COUNTS for key in [b"", *KEYS]]
    java = java_partitions(pairs)
    assert len(java) == len(pairs)
    assert [partition_for_key(key, n) for key, n in pairs] == java


def test_consistent_random_is_librdkafkas_partitioner(kafka: str) -> None:
    topics = new_topics(kafka, COUNTS)
    differ = 0
    for n, topic in topics.items():
        expected = librdkafka_partitions(kafka, topic, KEYS)
        assert [consistent_random(key, n) for key in KEYS] == expected, n
        differ += sum(a != b for a, b in zip(expected, (partition_for_key(k, n) for k in KEYS), strict=True))
    assert differ > len(KEYS), "the two partitioners must place many of these keys differently"


def test_empty_keys_choose_no_partition_in_librdkafka(kafka: str) -> None:
    """librdkafka sends a record with an empty key at random, as one without a key: 40 such
    records (no sticky linger: each drawn on its own) do not all land on one of 4 partitions
    (chance 4^-39), so an empty key is no CRC-32 of b"" (which would be partition 0 every time)."""
    (topic,) = new_topics(kafka, (4,)).values()
    landed = librdkafka_partitions(kafka, topic, [b""] * 40, **{"sticky.partitioning.linger.ms": 0})
    assert len(set(landed)) > 1, landed
    assert consistent_random(b"", 4) == -1  # the gateway's sticky partition, as for no key


def stream_path(name: str) -> str:
    return f"/api/v1beta2/streams/{name}"


def by_key(records: list[Any]) -> dict[bytes, set[int]]:
    out: defaultdict[bytes, set[int]] = defaultdict(set)
    for r in records:
        out[r.key].add(r.partition)
    return dict(out)


async def test_keyed_stream_follows_its_partitioner_across_replicas(
    pair: tuple[Gateway, Gateway], kafka: str
) -> None:
    """Created on replica a with the default, rows sent through b go where Java's producer puts
    their keys; after a PATCH on a to consistent_random, rows sent through b go where librdkafka
    puts them (b learns the change from the catalog topic)."""
    a, b = pair
    name = unique_name("kv")
    made = a.create_stream(
        name,
        [{"name": "id", "type": "string"}, {"name": "n", "type": "int64"}],
        mode="changelog_kv",
        primary_key="id",
        shards=7,
    )
    assert made["partitioner"] == "murmur2", made
    ids = ["k1", "user-42", "Zürich ☃ 東京 🚀", "ключ", *(f"key-{i}" for i in range(30))]

    def send(n: int) -> None:
        rows = "".join(json.dumps({"id": i, "n": n}) + "\n" for i in ids)
        reply = b.ingest(name, rows, content_type="application/x-ndjson")
        assert reply.status == 200, reply.body

    wait_until(
        lambda: b.request("GET", stream_path(name)).status == 200, GUARD_S, "replica b to read the stream"
    )
    send(1)
    first = by_key(await read_topic(kafka, made["topic"]))
    assert len(first) == len(ids) and all(len(p) == 1 for p in first.values())
    keys = sorted(first)
    assert [first[k] for k in keys] == [{p} for p in java_partitions([(k, 7) for k in keys])]

    patched = a.request("PATCH", stream_path(name), {"partitioner": "consistent_random"})
    assert patched.status == 200 and patched.json()["partitioner"] == "consistent_random", patched.body

    def b_sees() -> bool:
        return bool(b.request("GET", stream_path(name)).json()["partitioner"] == "consistent_random")

    wait_until(b_sees, GUARD_S, "replica b to read the PATCH from the catalog topic")
    send(2)
    second = by_key([r for r in await read_topic(kafka, made["topic"]) if r.json()["n"] == 2])
    (side,) = new_topics(kafka, (7,)).values()
    expected = librdkafka_partitions(kafka, side, keys)
    assert [second[k] for k in keys] == [{p} for p in expected]
    assert sum(first[k] != second[k] for k in keys) > len(keys) // 2  # the change did something


async def test_rest_proxy_keys_land_where_librdkafka_puts_them(gateway: Gateway, kafka: str) -> None:
    """A Karapace client's keyed records (binary keys: unicode, NUL, 0xff, long) through the v2
    produce route of a consistent_random stream: each reply's partition, and the record read back
    there, are where librdkafka's producer puts the same key bytes."""
    name = unique_name("rpk")
    made = gateway.create_stream(name, TEXT, shards=7, partitioner="consistent_random")
    assert made["partitioner"] == "consistent_random"
    keys = [k for k in KEYS if len(k) < 300]
    body = {
        "records": [
            {"key": base64.b64encode(k).decode(), "value": base64.b64encode(b"v%d" % i).decode()}
            for i, k in enumerate(keys)
        ]
    }
    reply = gateway.request(
        "POST", f"/topics/{made['topic']}", json.dumps(body), headers={"Content-Type": BINARY_V2}
    )
    assert reply.status == 200, reply.body
    partitions = [o["partition"] for o in reply.json()["offsets"]]
    (side,) = new_topics(kafka, (7,)).values()
    assert partitions == librdkafka_partitions(kafka, side, keys)
    stored = {(r.partition, r.key) for r in await read_topic(kafka, made["topic"])}
    assert stored == set(zip(partitions, keys, strict=True))


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("POST", "", {"columns": TEXT, "partitioner": "crc32"}),
        ("POST", "", {"columns": TEXT, "partitioner": 7}),
        ("PATCH", "/{name}", {"partitioner": "murmur2_random"}),
        ("PATCH", "/{name}", {"partitioner": ""}),
    ],
)
def test_unknown_partitioner_is_a_400(
    gateway: Gateway, method: str, suffix: str, body: dict[str, Any]
) -> None:
    name = unique_name("bad")
    if method == "PATCH":
        gateway.create_stream(name, TEXT)
    else:
        body = {"name": name, **body}
    reply = gateway.request(method, "/api/v1beta2/streams" + suffix.format(name=name), body)
    assert reply.status == 400, reply.body
    assert "partitioner" in reply.json()["message"], reply.body
    if method == "PATCH":
        assert gateway.request("GET", stream_path(name)).json()["partitioner"] == "murmur2"
    else:
        assert gateway.request("GET", stream_path(name)).status == 404


def test_catalog_import_checks_and_defaults_the_partitioner(gateway: Gateway, tmp_path: Path) -> None:
    """An old catalog (no `partitioner`) imports as murmur2; one naming an unknown partitioner is
    refused whole, nothing imported."""
    old, bad, fine = unique_name("old"), unique_name("bad"), unique_name("ok")
    target = ["--kafka-bootstrap", gateway.kafka or "", "--catalog-topic", gateway.catalog_topic]

    def stream(name: str, **extra: Any) -> dict[str, Any]:
        return {
            "name": name,
            "columns": [{"name": "message", "type": "string"}],
            "topic": f"t.{name}",
            **extra,
        }

    refused = tmp_path / "refused.json"
    refused.write_text(json.dumps({"streams": {bad: stream(bad, partitioner="crc"), fine: stream(fine)}}))
    run = catalog_cli("import", str(refused), *target)
    assert run.returncode != 0 and "partitioner" in run.stderr, (run.returncode, run.stderr)
    assert gateway.request("GET", stream_path(fine)).status == 404

    legacy = tmp_path / "legacy.json"
    legacy.write_text(json.dumps({"streams": {old: stream(old)}, "keys": {}}))
    run = catalog_cli("import", str(legacy), *target)
    assert run.returncode == 0, run.stderr

    got = wait_until(
        lambda: (r := gateway.request("GET", stream_path(old))).status == 200 and r.json(),
        GUARD_S,
        "the imported stream",
    )
    assert got["partitioner"] == "murmur2"
