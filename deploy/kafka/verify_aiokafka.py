#!/usr/bin/env python3
"""Smoke check: does aiokafka (0.14.x) work against the dev broker?

Exercises exactly the client features the gateway relies on:

  * AIOKafkaAdminClient: create_topics (with topic configs, incl. a
    cleanup.policy=compact topic), duplicate create -> error code,
    describe_topics, describe_configs, list_topics, delete_topics
  * AIOKafkaProducer(enable_idempotence=True, acks="all") with
    create_batch() / send_batch(batch, topic, partition=p), plus send_and_wait
  * every compression codec aiokafka can encode here (gzip always; snappy,
    lz4, zstd only when `cramjam` is installed -- otherwise reported as skipped)
  * AIOKafkaConsumer without a group (group_id=None): assign +
    seek_to_beginning + getmany until end_offsets; beginning/end offsets
  * a classic consumer group (subscribe + commit) as a bonus check

Creates randomly named topics and deletes them again (unless --keep).
Exit code 0 when every check passed, 1 otherwise.

Usage:
  python deploy/kafka/verify_aiokafka.py [--bootstrap 127.0.0.1:19092] [-v]
Bootstrap default: $KAFKA_BOOTSTRAP, else 127.0.0.1:$KAFKA_DEV_PORT (19092).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import time
import traceback
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka import __version__ as aiokafka_version
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.codec import has_lz4, has_snappy, has_zstd

# Kafka API keys we care about, for the negotiated-version printout.
API_NAMES = {
    0: "Produce",
    1: "Fetch",
    2: "ListOffsets",
    3: "Metadata",
    8: "OffsetCommit",
    9: "OffsetFetch",
    10: "FindCoordinator",
    11: "JoinGroup",
    14: "SyncGroup",
    19: "CreateTopics",
    20: "DeleteTopics",
    22: "InitProducerId",
    32: "DescribeConfigs",
}


class Checks:
    def __init__(self, verbose: bool) -> None:
        self.verbose = verbose
        self.passed: list[str] = []
        self.failed: list[str] = []
        self.skipped: list[str] = []

    def ok(self, name: str, detail: str = "") -> None:
        self.passed.append(name)
        print(f"  ok    {name}" + (f"  ({detail})" if detail else ""), flush=True)

    def fail(self, name: str, detail: str) -> None:
        self.failed.append(name)
        print(f"  FAIL  {name}: {detail}", flush=True)

    def skip(self, name: str, detail: str) -> None:
        self.skipped.append(name)
        print(f"  skip  {name}: {detail}", flush=True)

    async def run(self, name: str, coro, timeout: float = 60.0):
        """Run one check; an exception or timeout marks it failed."""
        try:
            detail = await asyncio.wait_for(coro, timeout)
        except Exception as exc:  # report anything
            msg = f"{type(exc).__name__}: {exc}"
            if self.verbose:
                msg += "\n" + traceback.format_exc()
            self.fail(name, msg)
            return False
        self.ok(name, detail or "")
        return True


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise AssertionError(msg)


# --------------------------------------------------------------------------
# admin helpers (aiokafka 0.14 returns raw protocol responses: errors are
# error_code fields, NOT exceptions)
# --------------------------------------------------------------------------


def _create_errors(resp) -> dict[str, tuple[int, str | None]]:
    # CreateTopicsResponse_v1+: topic_errors = [(topic, error_code, error_message)]
    out = {}
    for entry in resp.topic_errors:
        out[entry[0]] = (entry[1], entry[2] if len(entry) > 2 else None)
    return out


def _delete_errors(resp) -> dict[str, int]:
    # DeleteTopicsResponse_v1+: topic_error_codes = [(topic, error_code)]
    return {t: code for t, code in resp.topic_error_codes}


async def topic_configs(admin: AIOKafkaAdminClient, topic: str) -> dict[str, str]:
    resps = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    cfg: dict[str, str] = {}
    for resp in resps:
        # DescribeConfigsResponse_v1/2: resources = [(error_code, error_message,
        #   resource_type, resource_name, config_entries=[(name, value,
        #   read_only, config_source, is_sensitive, synonyms)])]
        for err, err_msg, _rtype, rname, entries in resp.resources:
            _check(err == 0, f"describe_configs({rname}) error {err}: {err_msg}")
            for entry in entries:
                cfg[entry[0]] = entry[1]
    return cfg


async def wait_topics_gone(admin, topics, timeout=20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        left = set(topics) & set(await admin.list_topics())
        if not left:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"topics still listed after delete: {sorted(left)}")
        await asyncio.sleep(0.25)


# --------------------------------------------------------------------------
# produce / consume helpers
# --------------------------------------------------------------------------


async def produce_batches(producer: AIOKafkaProducer, topic: str, partition: int, records) -> list[int]:
    """create_batch()/send_batch() -- returns the assigned offsets."""
    futures = []
    batch = producer.create_batch()
    for key, value, headers in records:
        # NB: timestamp is keyword-only and REQUIRED (None = now); it is epoch
        # *milliseconds* as an int despite the docstring saying seconds.
        md = batch.append(key=key, value=value, timestamp=None, headers=headers)
        if md is None:  # batch full -> ship it, start a new one
            futures.append(await producer.send_batch(batch, topic, partition=partition))
            batch = producer.create_batch()
            md = batch.append(key=key, value=value, timestamp=None, headers=headers)
            _check(md is not None, "record does not fit in an empty batch")
    if batch.record_count():
        futures.append(await producer.send_batch(batch, topic, partition=partition))
    offsets = []
    for fut in futures:
        meta = await fut  # RecordMetadata of the batch (offset = base offset)
        _check(meta.partition == partition, f"acked on partition {meta.partition}")
        offsets.append(meta.offset)
    return offsets


async def read_all(bootstrap: str, topic: str, partitions: list[int]) -> dict[int, list]:
    """Group-less read of everything currently in the topic."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,  # no coordinator, no commits
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_uncommitted",
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)  # {tp: last offset + 1}
        out: dict[int, list] = {p: [] for p in partitions}
        deadline = time.monotonic() + 30
        while True:
            # NB: position() is a coroutine -> no await inside any(<genexpr>)
            positions = {tp: await consumer.position(tp) for tp in tps}
            if all(positions[tp] >= end[tp] for tp in tps):
                break
            if time.monotonic() > deadline:
                raise AssertionError("timed out reading back to end offsets")
            batches = await consumer.getmany(*tps, timeout_ms=500, max_records=10_000)
            for tp, msgs in batches.items():
                out[tp.partition].extend(msgs)
        return out
    finally:
        await consumer.stop()


def _negotiated_versions(client) -> str:
    parts = []
    for conn in list(getattr(client, "_conns", {}).values()):
        versions = getattr(conn, "_versions", None) or {}
        for key, name in API_NAMES.items():
            if key in versions:
                lo, hi = versions[key]
                parts.append(f"{name}[{lo}..{hi}]")
        if parts:
            break
    return " ".join(parts)


# --------------------------------------------------------------------------


async def main(args) -> int:
    bootstrap = args.bootstrap
    checks = Checks(args.verbose)
    run_id = uuid.uuid4().hex[:10]
    topic = f"verify-{run_id}"
    compact_topic = f"verify-compact-{run_id}"
    nparts = 3
    print(f"verify_aiokafka: aiokafka {aiokafka_version} -> {bootstrap}", flush=True)

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    try:
        await asyncio.wait_for(admin.start(), 30)
    except Exception as exc:
        checks.fail("admin.start", f"{type(exc).__name__}: {exc}")
        return 1
    created: list[str] = []
    try:

        async def c_cluster():
            info = await admin.describe_cluster()
            _check(len(info["brokers"]) >= 1, f"no brokers: {info}")
            return (
                f"cluster_id={info.get('cluster_id')} "
                f"controller={info.get('controller_id')}; "
                f"broker API ranges: {_negotiated_versions(admin._client)}"
            )

        await checks.run("admin.describe_cluster", c_cluster())

        async def c_create():
            resp = await admin.create_topics(
                [
                    NewTopic(
                        topic,
                        num_partitions=nparts,
                        replication_factor=1,
                        topic_configs={"retention.ms": "3600000"},
                    ),
                    NewTopic(
                        compact_topic,
                        num_partitions=1,
                        replication_factor=1,
                        topic_configs={
                            "cleanup.policy": "compact",
                            "retention.ms": "-1",
                            "min.cleanable.dirty.ratio": "0.01",
                            "segment.ms": "100",
                        },
                    ),
                ],
                timeout_ms=15000,
            )
            errs = _create_errors(resp)
            created.extend(t for t, (code, _m) in errs.items() if code == 0)
            bad = {t: e for t, e in errs.items() if e[0] != 0}
            _check(not bad, f"create errors {bad}")
            return f"{type(resp).__name__}: {sorted(errs)}"

        if not await checks.run("admin.create_topics(configs)", c_create()):
            return 1

        async def c_dup():
            resp = await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
            code, msg = _create_errors(resp)[topic]
            _check(code == 36, f"expected TOPIC_ALREADY_EXISTS(36), got {code} {msg}")
            return "error_code 36 returned in response (no exception)"

        await checks.run("admin.create_topics(duplicate)", c_dup())

        async def c_describe():
            deadline = time.monotonic() + 15
            while True:
                desc = await admin.describe_topics([topic, compact_topic])
                by_name = {d["topic"]: d for d in desc}
                ready = all(
                    by_name.get(t, {}).get("error_code") == 0
                    and all(p["leader"] >= 0 for p in by_name[t]["partitions"])
                    for t in (topic, compact_topic)
                )
                if ready or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            _check(ready, f"topics not ready: {desc}")
            n = len(by_name[topic]["partitions"])
            _check(n == nparts, f"{topic} has {n} partitions")
            return f"{topic}: {n} partitions with leaders"

        await checks.run("admin.describe_topics", c_describe())

        async def c_configs():
            cfg = await topic_configs(admin, compact_topic)
            _check(cfg.get("cleanup.policy") == "compact", f"cleanup.policy={cfg.get('cleanup.policy')}")
            _check(cfg.get("retention.ms") == "-1", f"retention.ms={cfg.get('retention.ms')}")
            cfg2 = await topic_configs(admin, topic)
            _check(cfg2.get("retention.ms") == "3600000", f"retention.ms={cfg2.get('retention.ms')}")
            _check(cfg2.get("cleanup.policy") == "delete", f"cleanup.policy={cfg2.get('cleanup.policy')}")
            return "cleanup.policy=compact, retention.ms as requested"

        await checks.run("admin.describe_configs", c_configs())

        # ---------------- produce: idempotent, acks=all, create_batch/send_batch
        codecs: list[str] = ["gzip"]
        for name, has in (("snappy", has_snappy), ("lz4", has_lz4), ("zstd", has_zstd)):
            if has():
                codecs.append(name)
            else:
                checks.skip(f"produce compression={name}", "client codec lib (cramjam) not installed")
        codecs.append(None)  # uncompressed

        expected: dict[int, list[tuple[bytes, bytes]]] = {p: [] for p in range(nparts)}
        for codec in codecs:
            label = f"produce compression={codec or 'none'} (idempotent, acks=all, send_batch)"

            async def c_produce(codec=codec):
                producer = AIOKafkaProducer(
                    bootstrap_servers=bootstrap,
                    enable_idempotence=True,
                    acks="all",
                    compression_type=codec,
                    linger_ms=5,
                    max_batch_size=16384,
                    request_timeout_ms=15000,
                )
                await producer.start()
                try:
                    total = 0
                    for p in range(nparts):
                        recs = [
                            (
                                f"k{p}-{i}".encode(),
                                f"{codec}-p{p}-{i}-".encode() + b"x" * 200,
                                [("codec", (codec or "none").encode())],
                            )
                            for i in range(300)  # > 1 batch at 16 KiB
                        ]
                        offs = await produce_batches(producer, topic, p, recs)
                        _check(offs == sorted(offs), f"non-monotonic batch offsets {offs}")
                        expected[p].extend((k, v) for k, v, _h in recs)
                        total += len(recs)
                    # plain send_and_wait on the same idempotent producer
                    md = await producer.send_and_wait(
                        topic, b"single-" + (codec or "none").encode(), key=b"single", partition=0
                    )
                    expected[0].append((b"single", b"single-" + (codec or "none").encode()))
                    total += 1
                    # idempotence really negotiated: InitProducerId gave us a pid
                    pid = producer._txn_manager.producer_id if producer._txn_manager else -1
                    _check(pid >= 0, f"no producer id (idempotence not active): {pid}")
                    return f"{total} records, producer_id={pid}, last offset p0={md.offset}"
                finally:
                    await producer.stop()

            await checks.run(label, c_produce())

        # ---------------- consume group-less from the beginning
        async def c_consume():
            got = await read_all(bootstrap, topic, list(range(nparts)))
            for p in range(nparts):
                pairs = [(m.key, m.value) for m in got[p]]
                _check(
                    pairs == expected[p],
                    f"partition {p}: read {len(pairs)} records, expected {len(expected[p])} (order/content?)",
                )
                offs = [m.offset for m in got[p]]
                _check(offs == list(range(len(offs))), f"partition {p}: offsets not contiguous from 0")
            m0 = got[0][0]
            _check(dict(m0.headers).get("codec") is not None, f"headers lost: {m0.headers}")
            _check(abs(m0.timestamp / 1000 - time.time()) < 600, f"odd timestamp {m0.timestamp}")
            return ", ".join(f"p{p}={len(got[p])}" for p in range(nparts))

        await checks.run("consume group_id=None assign+seek_to_beginning+end_offsets", c_consume())

        async def c_offsets():
            consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
            await consumer.start()
            try:
                tps = [TopicPartition(topic, p) for p in range(nparts)]
                begin = await consumer.beginning_offsets(tps)
                end = await consumer.end_offsets(tps)
                for tp in tps:
                    _check(begin[tp] == 0, f"{tp} begin {begin[tp]}")
                    _check(
                        end[tp] == len(expected[tp.partition]),
                        f"{tp} end {end[tp]} != {len(expected[tp.partition])}",
                    )
                return "end=" + ",".join(str(end[tp]) for tp in tps)
            finally:
                await consumer.stop()

        await checks.run("consumer.beginning_offsets/end_offsets", c_offsets())

        # ---------------- compacted topic: keyed records + tombstone
        async def c_compact():
            producer = AIOKafkaProducer(
                bootstrap_servers=bootstrap, enable_idempotence=True, acks="all", compression_type="gzip"
            )
            await producer.start()
            try:
                recs = [(f"id-{i % 5}".encode(), f"v{i}".encode(), []) for i in range(20)]
                recs.append((b"id-0", None, []))  # tombstone
                await produce_batches(producer, compact_topic, 0, recs)
            finally:
                await producer.stop()
            got = (await read_all(bootstrap, compact_topic, [0]))[0]
            # the cleaner may or may not have run yet: only check that the latest
            # value per key is right and the tombstone (if still there) is last
            latest = {}
            for m in got:
                latest[m.key] = m.value
            _check(latest.get(b"id-1") == b"v16", f"latest id-1 = {latest.get(b'id-1')}")
            _check(latest.get(b"id-0") is None, "tombstone not latest for id-0")
            return f"{len(got)} records read back (tombstone ok)"

        await checks.run("compacted topic produce/read (keys + tombstone)", c_compact())

        # ---------------- classic consumer group (bonus)
        async def c_group():
            group = f"verify-group-{run_id}"
            consumer = AIOKafkaConsumer(
                topic,
                bootstrap_servers=bootstrap,
                group_id=group,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                session_timeout_ms=10000,
                heartbeat_interval_ms=1000,
            )
            await consumer.start()
            try:
                n = 0
                want = sum(len(v) for v in expected.values())
                deadline = time.monotonic() + 30
                while n < want and time.monotonic() < deadline:
                    batches = await consumer.getmany(timeout_ms=500)
                    n += sum(len(v) for v in batches.values())
                _check(n == want, f"group consumer read {n}/{want}")
                await consumer.commit()
                committed = await consumer.committed(TopicPartition(topic, 0))
                _check(committed == len(expected[0]), f"committed p0 = {committed}")
                return f"{n} records, committed p0={committed}"
            finally:
                await consumer.stop()

        await checks.run("consumer group subscribe+commit (classic protocol)", c_group())

        # ---------------- delete
        async def c_delete():
            resp = await admin.delete_topics(list(created), timeout_ms=15000)
            errs = _delete_errors(resp)
            bad = {t: c for t, c in errs.items() if c != 0}
            _check(not bad, f"delete errors {bad}")
            await wait_topics_gone(admin, created)
            deleted = list(created)
            created.clear()
            return f"deleted {deleted}"

        if args.keep:
            checks.skip("admin.delete_topics", f"--keep given; topics left: {created}")
        else:
            await checks.run("admin.delete_topics", c_delete())
    finally:
        if created and not args.keep:  # best-effort cleanup after a failure
            with contextlib.suppress(Exception):
                await admin.delete_topics(list(created))
        await admin.close()

    total = len(checks.passed) + len(checks.failed)
    if checks.failed:
        print(f"verify_aiokafka: FAILED {len(checks.failed)}/{total} checks: {checks.failed}")
        return 1
    print(
        f"verify_aiokafka: OK, all {total} checks passed"
        + (f" ({len(checks.skipped)} skipped)" if checks.skipped else "")
    )
    return 0


def _default_bootstrap() -> str:
    if os.environ.get("KAFKA_BOOTSTRAP"):
        return os.environ["KAFKA_BOOTSTRAP"]
    return f"127.0.0.1:{os.environ.get('KAFKA_DEV_PORT', '19092')}"


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap", default=_default_bootstrap())
    ap.add_argument("--keep", action="store_true", help="do not delete the test topics")
    ap.add_argument("-v", "--verbose", action="store_true", help="tracebacks + aiokafka debug log")
    args = ap.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    sys.exit(asyncio.run(main(args)))
