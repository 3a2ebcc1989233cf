"""Send the corpus to a running REST proxy and write its replies' summaries (see `record`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import urllib.error
import urllib.request
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.restproxy_corpus.corpus import (
    BINARY_TOPIC,
    CASES,
    JSON_TOPIC,
    PARTITIONS,
    RECORDING,
    Case,
    summary,
)


def send(url: str, case: Case, cluster: str) -> tuple[int, dict[str, str], bytes]:
    """One request over plain urllib (no credentials: Karapace runs without auth)."""
    path = case.path.replace("{cluster}", cluster)
    req = urllib.request.Request(url + path, data=case.data(), method=case.method, headers=case.headers)
    if case.data() is None and case.method in ("POST", "PUT"):
        req.data = b""
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def cluster_id(url: str) -> str:
    """The cluster id the proxy names in GET /v3/clusters, or the gateway's fixed one."""
    status, _, body = send(url, Case("", "GET", "/v3/clusters"), "")
    try:
        return str(json.loads(body)["data"][0]["cluster_id"]) if status == 200 else "ingest-gateway"
    except (ValueError, KeyError, IndexError, TypeError):
        return "ingest-gateway"


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
            status, _, _ = send(url, Case("", "GET", "/topics"), "")
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
    cluster = cluster_id(args.url)
    recorded: dict[str, Any] = {}
    for case in CASES:
        recorded[case.name] = summary(case, *send(args.url, case, cluster))
        print(case.name, recorded[case.name]["status"], flush=True)
    doc = {"proxy": "Aiven Karapace 6.2.0 (tests/restproxy_corpus/record)", "replies": recorded}
    RECORDING.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
