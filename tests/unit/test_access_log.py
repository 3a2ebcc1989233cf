"""The sampled access log: the configured fraction of requests, no query strings."""

from __future__ import annotations

import logging
import random

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from gateway.access_log import LOGGER, runner_options
from gateway.config import Settings


def _log_many(settings: Settings, n: int, caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    options = runner_options(settings)
    logger = options["access_log_class"](options["access_log"], "")
    request = make_mocked_request(
        "POST", "/api/v1beta2/streams/s/ingest?token=SECRET", headers={"X-Forwarded-For": "203.0.113.9"}
    )
    response = web.Response(status=202, headers={"X-Request-ID": "rid"})
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=LOGGER.name):
        for _ in range(n):
            logger.log(request, response, 0.0015)
    return [r for r in caplog.records if r.name == LOGGER.name]


def test_off_by_default() -> None:
    assert runner_options(Settings()) == {}


def test_every_request_at_sample_1(caplog: pytest.LogCaptureFixture) -> None:
    records = _log_many(Settings(access_log=True), 50, caplog)
    assert len(records) == 50
    record = records[0]
    assert record.getMessage() == "POST /api/v1beta2/streams/s/ingest 202 1.5ms"
    assert record.request_id == "rid"  # type: ignore[attr-defined]
    http = record.http  # type: ignore[attr-defined]
    assert http["path"] == "/api/v1beta2/streams/s/ingest" and http["status"] == 202
    assert http["forwarded_for"] == "203.0.113.9" and http["duration_ms"] == 1.5
    assert "SECRET" not in repr(record.__dict__)  # the query string (keys!) is never logged


def test_sampled_fraction(caplog: pytest.LogCaptureFixture) -> None:
    random.seed(7)
    records = _log_many(Settings(access_log=True, access_log_sample=0.1), 5000, caplog)
    assert 400 <= len(records) <= 600  # 10% of 5000, with room for chance
