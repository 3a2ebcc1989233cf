"""Send the corpus to a running REST proxy and write its replies' summaries (see `record`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.restproxy_corpus.corpus import (
    BINARY_TOPIC,
    CASES,
    JSON_TOPIC,
    PARTITIONS,
    RECORDING,
    Case,
    cluster_id,
    send,
    summary,
)


async def create_topics(bootstrap: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in (JSON_TOPIC, BINARY_TOPIC)])
    finally:
        await admin.close()


def wait_up(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            status, _, _ = send(url, Case("up", "GET", "/topics"), "")
            if status == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"no answer from {url} in {timeout} s")
        time.sleep(0.5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--url", required=True)
    args = ap.parse_args()
    asyncio.run(create_topics(args.bootstrap))
    wait_up(args.url)
    cluster = cluster_id(args.url, None)
    recorded: dict[str, Any] = {}
    for case in CASES:
        recorded[case.name] = summary(case, *send(args.url, case, cluster))
        print(case.name, recorded[case.name]["status"], flush=True)
    doc = {"proxy": "Aiven Karapace 6.2.0 (tests/restproxy_corpus/record)", "replies": recorded}
    RECORDING.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
