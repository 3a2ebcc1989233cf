"""Every refused request leaves a line in the gateway's log with its stream, its cause and its
request id (429s too), escaped: a stream name from the request cannot forge a line."""

from __future__ import annotations

from pathlib import Path

from tests.integration.harness import ADMIN_KEY, Gateway, http


def test_refused_requests_are_logged_with_stream_cause_and_request_id(tmp_path: Path) -> None:
    gw = Gateway(tmp_path, None).start()
    try:
        gw.create_stream("logged", [{"name": "n", "type": "int64"}])
        # a key of its own rate (1 request/s) for the 429s; the admin key keeps the default rate
        key = gw.request(
            "POST",
            "/api/v1beta2/apikeys",
            {
                "name": "slow",
                "permissions": ["DATASOURCE:APPEND:logged"],
                "rate_limit": 1,
            },
        ).json()["api_key"]
        statuses = []
        for _ in range(4):  # a burst of one second's worth (1): the others are rate limited
            reply = http("POST", f"{gw.url}/v0/events?name=logged&token={key}", '{"n": 1}')
            statuses.append((reply.status, reply.headers["X-Request-ID"]))
        limited = [rid for status, rid in statuses if status == 429]
        assert limited, statuses
        forged = http(
            "POST",
            f"{gw.url}/v0/events?name=no%0Aforged%20line",
            '{"n": 1}',
            headers={"Authorization": "Bearer " + ADMIN_KEY},
        )
        assert forged.status == 404
        unknown = http(
            "POST",
            f"{gw.url}/api/v1beta2/streams/missing/ingest",
            '{"n": 1}',
            headers={"X-Api-Key": ADMIN_KEY},
        )
        assert unknown.status == 404
    finally:
        assert gw.stop() == 0
    log = gw.log()
    assert "-> 429 rate_limited, stream logged: " in log and f"(request {limited[0]})" in log, log
    assert (
        "-> 404 not_found, stream missing: " in log and f"(request {unknown.headers['X-Request-ID']})" in log
    ), log
    assert "stream no\\x0aforged line" in log, log
    assert not any(line.startswith("forged") for line in log.splitlines()), log
    assert ADMIN_KEY not in log and key not in log
