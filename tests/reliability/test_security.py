"""Security: every data and management route needs a key (401), scopes are checked per stream
(403), keys never leak into logs, metrics or error bodies, stream names never become arbitrary
topic names, request ids reach error bodies and logs, and a stream's byte rate can be capped."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from gateway.app import build_app
from gateway.config import Settings
from tests.integration.harness import ADMIN_KEY, Gateway, Reply, http, unique_name, wait_until
from tests.reliability.accounting import COLUMNS, LoadDriver, TimeplusNdjson, account, record
from tests.reliability.conftest import read_back

BYTE_RATE = 200_000
# the REST proxy's root answers `{}` with no key, for load balancers' health checks (README)
OPS = {"/healthz", "/readyz", "/metrics", "/openapi.json", "/"}
# The Tinybird Events API documents 403 for a missing or invalid token; the others use 401.
DIALECT_UNAUTHENTICATED = {"/v0/events": 403}


@pytest.fixture(scope="module")
def gw(kafka: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gateway = Gateway(
        Path(tmp_path_factory.mktemp("sec")), kafka, extra=["--stream-max-bytes-per-s", str(BYTE_RATE)]
    ).start()
    yield gateway
    assert gateway.stop() == 0, gateway.log()[-3000:]


@pytest.fixture(scope="module")
def streams(gw: Gateway) -> tuple[str, str]:
    a, b = unique_name("seca"), unique_name("secb")
    gw.create_stream(a, COLUMNS)
    gw.create_stream(b, COLUMNS)
    return a, b


def all_routes(tmp_path: Path) -> list[tuple[str, str]]:
    """(method, path template) of every route the application registers, every dialect's."""
    app = build_app(Settings(data_dir=tmp_path), "unused-admin-key")
    out = []
    for route in app.router.routes():
        canonical = route.resource.canonical if route.resource else ""
        if route.method != "HEAD" and canonical not in OPS:
            out.append((route.method, canonical))
    return sorted(set(out))


def concrete(template: str, stream: str) -> str:
    values = {"version": "v1beta2", "workspace": "ws1", "name": stream, "id": "abcdefghijkl"}
    return re.sub(r"\{(\w+)(?::[^}]*)?\}", lambda m: values.get(m.group(1), "x1"), template)


def test_every_route_needs_a_key(gw: Gateway, streams: tuple[str, str], tmp_path: Path) -> None:
    routes = all_routes(tmp_path)
    assert len(routes) >= 16, routes  # the Timeplus routes with and without a workspace
    for method, template in routes:
        path = concrete(template, streams[0])
        body = b'{"id": "x", "seq": 1, "pad": ""}\n' if method in ("POST", "PUT", "PATCH") else None
        for headers in (
            {},
            {"X-Api-Key": "not-a-key-" + uuid.uuid4().hex},
            {"Authorization": "Bearer " + uuid.uuid4().hex},
        ):
            reply = http(method, gw.url + path, body, headers=headers)
            expected = DIALECT_UNAUTHENTICATED.get(template, 401)
            assert reply.status == expected, (method, path, headers, reply.status, reply.body)
            err = reply.json()  # every dialect answers JSON, in its own shape
            assert (
                "unauthenticated" in (err.get("error"), err.get("code"))
                or "access token" in err.get("detail", "")
                or err.get("error_code") == 40101
            ), err  # Kafka REST Proxy's shape


def ingest_as(gw: Gateway, key: str, stream: str, body: str) -> Reply:
    return gw.ingest(stream, body, content_type="application/x-ndjson", headers={"X-Api-Key": key})


def create_key(gw: Gateway, permissions: list[str]) -> str:
    reply = gw.request("POST", "/api/v1beta2/apikeys", {"name": "scoped", "permissions": permissions})
    assert reply.status == 201, reply.body
    key: str = reply.json()["api_key"]
    return key


def test_scopes_are_checked_per_stream(gw: Gateway, streams: tuple[str, str]) -> None:
    a, b = streams
    key = create_key(gw, [f"DATASOURCE:APPEND:{a}"])
    row = '{"id": "s", "seq": 1, "pad": ""}\n'
    assert ingest_as(gw, key, a, row).status == 200
    denied = [
        ingest_as(gw, key, b, row),
        gw.request(
            "POST", "/api/v1beta2/streams", {"name": unique_name("nope"), "columns": COLUMNS}, key=key
        ),
        gw.request("DELETE", f"/api/v1beta2/streams/{a}", key=key),
        gw.request("GET", "/api/v1beta2/apikeys", key=key),
        gw.request("POST", "/api/v1beta2/apikeys", {"name": "x"}, key=key),
        gw.request("DELETE", "/api/v1beta2/apikeys/abcdefghijkl", key=key),
    ]
    for reply in denied:
        assert reply.status == 403, reply.body
        assert reply.json()["error"] == "forbidden"
    assert gw.request("GET", f"/api/v1beta2/streams/{a}", key=key).status == 200


def test_keys_never_in_logs_metrics_or_error_bodies(gw: Gateway, streams: tuple[str, str]) -> None:
    a, _ = streams
    good = create_key(gw, [f"DATASOURCE:APPEND:{a}"])
    wrong = "wrong-key-" + uuid.uuid4().hex
    bodies: list[Reply] = []
    for key in (good, wrong, ADMIN_KEY):
        bodies += [
            ingest_as(gw, key, a, "not json"),
            ingest_as(gw, key, "no_such_stream", "{}"),
            gw.request("GET", "/api/v1beta2/apikeys", key=key),
            gw.request(
                "GET", "/api/v1beta2/streams/no_such", key=key, headers={"Authorization": f"Bearer {key}"}
            ),
        ]
    metrics_text = http("GET", gw.url + "/metrics").body.decode()
    for secret in (good, wrong, ADMIN_KEY):
        assert secret not in gw.log(), "a key was logged"
        assert secret not in metrics_text, "a key is in the metrics"
        for reply in bodies:
            assert secret.encode() not in reply.body, reply.body
    listed = gw.request("GET", "/api/v1beta2/apikeys").body.decode()
    assert good not in listed and good[-4:] in listed  # only the masked form is shown


INJECTIONS = [
    "a.b",
    "../x",
    "__consumer_offsets",
    "_schemas",
    "a/b",
    "a b",
    "ingest.x",
    "",
    "x" * 65,
    "1abc",
    "ä",
    "a;b",
    "a\\b",
    "a-b",
    "%2e%2e",
]


@pytest.mark.parametrize("name", INJECTIONS)
def test_stream_names_never_become_topic_names(gw: Gateway, kafka: str, name: str) -> None:
    reply = gw.request("POST", "/api/v1beta2/streams", {"name": name, "columns": COLUMNS})
    assert reply.status == 400, reply.body
    assert "invalid stream name" in reply.json()["message"]

    async def topics() -> set[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
        await admin.start()
        try:
            return set(await admin.list_topics())
        finally:
            await admin.close()

    existing = asyncio.run(topics())
    assert not any(t.endswith(name) for t in existing if name and t != name), name
    ingest = http(
        "POST",
        f"{gw.url}/api/v1beta2/streams/{quote(name, safe='')}/ingest",
        "{}",
        headers={"X-Api-Key": ADMIN_KEY},
    )
    assert ingest.status in (400, 404, 405), ingest.body  # never 2xx, never 5xx


def test_request_ids_in_error_bodies_and_logs(gw: Gateway) -> None:
    given = "req-" + uuid.uuid4().hex[:12]
    reply = gw.request("GET", "/api/v1beta2/streams/no_such_stream", headers={"X-Request-ID": given})
    assert reply.status == 404
    assert reply.headers["X-Request-ID"] == given and reply.json()["request_id"] == given
    wait_until(lambda: given in gw.log(), 10, "the request id in the log")
    made = gw.request("GET", "/api/v1beta2/streams/no_such_stream")
    rid = made.headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", rid) and made.json()["request_id"] == rid
    wait_until(lambda: rid in gw.log(), 10, "the generated request id in the log")
    unsafe = gw.request("GET", "/api/v1beta2/streams/no_such_stream", headers={"X-Request-ID": "x" * 500})
    assert re.fullmatch(r"[0-9a-f]{32}", unsafe.json()["request_id"])  # replaced, not echoed


def test_per_stream_byte_rate_limit(gw: Gateway, kafka: str, streams: tuple[str, str]) -> None:
    """Over --stream-max-bytes-per-s a stream gets 429 with Retry-After (nothing written); another
    stream is not affected. The accepted byte rate is reported, not asserted (a wall-clock bound
    fails by chance on a busy machine): tests/unit/test_stream_byte_rate.py bounds it on a
    controlled clock."""
    a, b = streams
    dialect = TimeplusNdjson(pad="r" * 150)
    load = LoadDriver(gw.url, ADMIN_KEY, a, dialect, prefix="rate", clients=4, rows_per_request=50).start()
    started = time.monotonic()
    wait_until(
        lambda: load.ledger.count(429) > 20 and time.monotonic() - started > 3,
        60,
        "429s from the byte-rate limit",
    )
    other = gw.ingest(b, '{"id": "o", "seq": 1, "pad": ""}\n', content_type="application/x-ndjson")
    ledger = load.stop()
    elapsed = time.monotonic() - started
    assert other.status == 200, other.body
    limited = [o for o in ledger.snapshot() if o.reply == 429]
    assert all(o.retry_after for o in limited)
    topic = gw.request("GET", f"/api/v1beta2/streams/{a}").json()["topic"]
    records = [r for r in read_back(kafka, topic) if json.loads(r.value)["id"].startswith("rate")]
    wait_until(
        lambda: (
            len([r for r in read_back(kafka, topic) if json.loads(r.value)["id"].startswith("rate")])
            >= ledger.acked_rows()
        ),
        30,
        "rows delivered",
    )
    records = [r for r in read_back(kafka, topic) if json.loads(r.value)["id"].startswith("rate")]
    accepted_bytes = sum(len(r.value) + 1 for r in records)
    rate = accepted_bytes / elapsed
    figures = account(
        "stream-byte-rate-limit",
        [ledger],
        records,
        dialect,
        limit_bytes_per_s=BYTE_RATE,
        accepted_bytes_per_s=round(rate),
        seconds=round(elapsed, 1),
    )
    record(figures)
    assert not figures.problems(), figures.problems()
    assert limited and ledger.acked_rows() > 0, figures.notes  # limited, not shut


def test_revoked_and_expired_keys_are_refused(gw: Gateway, streams: tuple[str, str]) -> None:
    a, _ = streams
    row = '{"id": "k", "seq": 1, "pad": ""}\n'
    revoked = gw.request("POST", "/api/v1beta2/apikeys", {"name": "revoked"})
    key, key_id = revoked.json()["api_key"], revoked.json()["id"]
    assert ingest_as(gw, key, a, row).status == 200
    assert gw.request("DELETE", f"/api/v1beta2/apikeys/{key_id}").status == 204
    assert ingest_as(gw, key, a, row).status == 401
    short = gw.request("POST", "/api/v1beta2/apikeys", {"name": "short", "expire_in": "2s"})
    expiring = short.json()["api_key"]
    assert ingest_as(gw, expiring, a, row).status == 200
    wait_until(lambda: ingest_as(gw, expiring, a, row).status == 401, 10, "the key to expire")
    # told as an unknown key is told: "expired" would confirm the key was real (issue 20)
    assert (
        ingest_as(gw, expiring, a, row).json()["message"] == ingest_as(gw, "x" * 60, a, row).json()["message"]
    )
