"""API keys never leave the gateway: not in a log line (at DEBUG), a metric, an error body, a
header, nor in the catalog topic, which holds only salted hashes."""

from __future__ import annotations

from pathlib import Path

from tests.integration.harness import (
    ADMIN_KEY,
    Gateway,
    Reply,
    http,
    read_topic,
    unique_name,
    wait_until,
)

GOOD = '{"id": "a"}\n'


async def test_keys_appear_nowhere(kafka: str, tmp_path: Path) -> None:
    gw = Gateway(tmp_path, kafka, extra=["--log-level", "DEBUG"]).start()
    replies: list[Reply] = []
    secrets = [ADMIN_KEY]
    try:

        def call(method: str, path: str, body: object = None, **kw: object) -> Reply:
            reply = gw.request(method, path, body, **kw)  # type: ignore[arg-type]
            replies.append(reply)
            return reply

        name = unique_name("secret")
        gw.create_stream(name, [{"name": "id", "type": "string"}])
        ingest = f"/api/v1beta2/streams/{name}/ingest?format=streaming&wait=true"
        made = call(
            "POST", "/api/v1beta2/apikeys", {"name": "leak", "permissions": [f"DATASOURCE:APPEND:{name}"]}
        )
        short = call("POST", "/api/v1beta2/apikeys", {"name": "short", "expire_in": "1s"})
        revoked = call("POST", "/api/v1beta2/apikeys", {"name": "revoked"})
        key, short_key, revoked_key = (r.json()["api_key"] for r in (made, short, revoked))
        forged = key[:12] + "x" * (len(key) - 12)  # a real key id with a wrong secret
        secrets += [key, short_key, revoked_key, forged]
        assert call("DELETE", f"/api/v1beta2/apikeys/{revoked.json()['id']}").status == 204
        # Every way of sending a key, right and wrong, on good and failing requests.
        for k in (key, revoked_key, forged, ADMIN_KEY):
            for headers in (
                {"X-Api-Key": k},
                {"Authorization": f"ApiKey {k}"},
                {"Authorization": f"Bearer {k}"},
            ):
                call("POST", ingest, GOOD, key=None, headers=headers)
                call("POST", ingest, '{"id": 1}\n', key=None, headers=headers)
                call("GET", f"/api/v1beta2/streams/nope_{name}", key=None, headers=headers)
                call("POST", "/api/v1beta2/streams", {"name": "bad-name"}, key=None, headers=headers)
            call("POST", ingest + f"&token={k}", GOOD, key=None)
            call("GET", "/no/such/route", key=k)
            call(
                "POST",
                f"/api/v1beta2/streams/{name}/ingest",
                "x",
                key=k,
                headers={"Content-Type": "application/xml"},
            )
            call("GET", "/api/v1beta2/apikeys", key=k)
        wait_until(
            lambda: call("POST", ingest, GOOD, key=short_key).status == 401,
            10,
            "the short-lived key to expire",
        )
        statuses = {r.status for r in replies}
        assert {200, 201, 204, 400, 401, 403, 404, 415} <= statuses, statuses
        metrics = http("GET", gw.url + "/metrics").body.decode()
    finally:
        assert gw.stop() == 0
    log = gw.log()
    assert "catalog loaded" in log  # (at DEBUG, so that debug lines added later are checked too)
    catalog = b"".join((r.key or b"") + (r.value or b"") for r in await read_topic(kafka, gw.catalog_topic))
    assert catalog  # the keys' records are there: as salted hashes only
    creation_replies = {id(made), id(short), id(revoked)}
    for secret in secrets:
        hidden = secret[12:] if secret != ADMIN_KEY else secret  # the part after the public id
        assert hidden not in log, "an API key in the gateway's log"
        assert hidden not in metrics, "an API key in /metrics"
        assert hidden.encode() not in catalog, "an API key in the catalog topic"
        for r in replies:
            if id(r) in creation_replies and r.json()["api_key"] == secret:
                continue  # shown once, to its creator
            assert hidden.encode() not in r.body, (r.status, r.body)
            assert hidden not in str(r.headers), (r.status, r.headers)
