"""The refused-request log: a line with the stream, the cause and the request id; a flood is cut
to a few lines per second and one line saying how many were left out."""

from __future__ import annotations

import logging

import pytest

from gateway import refusal_log
from gateway.refusal_log import LINES_PER_S, TOTAL_PER_S, RefusalLog


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "gateway.refused"]


def test_a_refusal_names_stream_cause_and_request(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "gateway.refused")
    RefusalLog(Clock()).refused(
        "POST", "/v0/events", 429, "rate_limited", "foo", "key rate limit exceeded", "rid1"
    )
    assert lines(caplog) == [
        "refused POST /v0/events -> 429 rate_limited, stream foo: key rate limit exceeded (request rid1)"
    ]
    (record,) = [r for r in caplog.records if r.name == "gateway.refused"]
    assert (record.stream, record.cause, record.status) == ("foo", "rate_limited", 429)


def test_a_flood_is_cut_per_cause_and_stream(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "gateway.refused")
    clock = Clock()
    log = RefusalLog(clock)
    for i in range(1000):
        log.refused("POST", "/p", 429, "rate_limited", "a", "m", f"a{i}")
        log.refused("POST", "/p", 429, "overloaded", "a", "m", f"o{i}")
    log.refused("POST", "/p", 404, "not_found", "b", "m", "b0")  # another pair still gets its line
    assert len(lines(caplog)) == 2 * LINES_PER_S + 1
    clock.now += 1  # the next second: the count of what was left out, then lines again
    log.refused("POST", "/p", 429, "rate_limited", "a", "m", "next")
    assert lines(caplog)[-2:] == [
        f"suppressed {2 * (1000 - LINES_PER_S)} similar refused-request lines (by cause: "
        f"overloaded {1000 - LINES_PER_S}, rate_limited {1000 - LINES_PER_S})",
        "refused POST /p -> 429 rate_limited, stream a: m (request next)",
    ]


def test_many_streams_cannot_flood_either(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, "gateway.refused")
    log = RefusalLog(Clock())
    for i in range(10_000):  # a stream name per request (it comes from the request)
        log.refused("POST", "/p", 429, "rate_limited", f"s{i}", "m", f"r{i}")
    assert len(lines(caplog)) == TOTAL_PER_S
    assert len(log._counts) <= refusal_log.MAX_KEYS


async def test_other_refusals_are_each_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "gateway.refused")
    log = RefusalLog(Clock())
    for i in range(100):
        log.refused("GET", "/x", 404, "not_found", "", "no route", f"r{i}")
    assert len(lines(caplog)) == 100


async def test_the_count_is_reported_when_the_flood_stops(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "gateway.refused")
    log = RefusalLog(Clock())  # the clock never moves: only the timer can report
    for i in range(LINES_PER_S + 3):
        log.refused("POST", "/p", 503, "unavailable", "a", "m", f"r{i}")
    assert log._timer is not None
    log._timer._run()  # what the loop runs a second later
    assert lines(caplog)[-1] == ("suppressed 3 similar refused-request lines (by cause: unavailable 3)")
