"""The cap on requests being decoded at once (--max-decoding-requests): with N bodies held half
sent, the next request gets 429 at once (nothing written), and once the held bodies end, requests
are let in again. No timing: the held requests are seen through the gateway's own gauge."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import ADMIN_KEY, Gateway, http, read_topic, unique_name, wait_until
from tests.reliability.rawhttp import connect, read_reply, request_bytes

CAP = 2


@pytest.fixture(scope="module")
def capped(kafka: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = Gateway(
        Path(tmp_path_factory.mktemp("capped")),
        kafka,
        extra=["--max-decoding-requests", str(CAP), "--body-min-bytes-per-s", "0"],
    )  # bodies held for as long as it takes
    gw.start()
    yield gw
    assert gw.stop() == 0, gw.log()


def metric(gw: Gateway, name: str, labels: str = "") -> float:
    text = http("GET", gw.url + "/metrics").body.decode()
    m = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def test_the_request_beyond_the_cap_gets_429_at_once_then_it_drains(capped: Gateway, kafka: str) -> None:
    name = unique_name("cap")
    topic = capped.create_stream(name, [{"name": "n", "type": "int64"}])["topic"]
    path = f"/api/v1beta2/streams/{name}/ingest?wait=true"
    headers = {"X-Api-Key": ADMIN_KEY, "Content-Type": "application/x-ndjson"}
    bodies = [f'{{"n": {i}}}\n{{"n": {i + 100}}}\n'.encode() for i in range(CAP)]
    throttled = '{cause="decoding",status="429"}'
    refused_before = metric(capped, "gateway_throttled_requests_total", throttled)
    socks = [connect(capped.port) for _ in range(CAP)]
    try:
        for sock, body in zip(socks, bodies, strict=True):  # headers and half of each body
            sock.sendall(request_bytes("POST", path, headers, body)[: -len(body) // 2])
        wait_until(
            lambda: metric(capped, "gateway_requests_decoding") == CAP, 30, f"{CAP} requests held mid-body"
        )
        refused = capped.request(
            "POST", path, '{"n": -1}\n', headers={"Content-Type": "application/x-ndjson"}
        )
        assert refused.status == 429, refused.body
        assert refused.json()["code"] == 429 and "max-decoding-requests" in refused.json()["message"]
        assert refused.headers["Retry-After"] == "1"
        assert metric(capped, "gateway_throttled_requests_total", throttled) == refused_before + 1
        for sock, body in zip(socks, bodies, strict=True):  # the rest of each body
            sock.sendall(body[-len(body) // 2 :])
        replies = [read_reply(sock) for sock in socks]
        assert [r.status for r in replies] == [200] * CAP, [r.body for r in replies]
    finally:
        for sock in socks:
            sock.close()
    assert metric(capped, "gateway_requests_decoding") == 0
    after = capped.ingest(name, '{"n": 7}\n', content_type="application/x-ndjson")
    assert after.status == 200, after.body  # let in again
    values = sorted(json.loads(r.value)["n"] for r in asyncio.run(read_topic(kafka, topic)))
    assert values == sorted([0, 100, 1, 101, 7])  # the refused row (-1) was never written
