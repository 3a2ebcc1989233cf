"""The optional, sampled access log (`--access-log`, `--access-log-sample`): one record per logged
request on the `gateway.access` logger, with the request's fields as structured data."""

from __future__ import annotations

import logging
import random
from typing import Any

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

from gateway.config import Settings

LOGGER = logging.getLogger("gateway.access")


class SampledAccessLogger(AbstractAccessLogger):
    """Logs a random `sample` fraction of requests. The query string is left out on purpose: some
    dialects carry API keys in it (`?token=`), and keys never go into a log."""

    sample = 1.0

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        if self.sample < 1.0 and random.random() >= self.sample:
            return
        http = {
            "method": request.method,
            "path": request.path,
            "status": response.status,
            "duration_ms": round(time * 1000, 3),
            "bytes_in": request.content_length,
            "bytes_out": response.body_length,
            "remote": request.remote,
            "forwarded_for": request.headers.get("X-Forwarded-For"),
            "user_agent": request.headers.get("User-Agent"),
        }
        # Answers made before the middleware (aiohttp's own 400s) have no X-Request-ID of their own.
        request_id = response.headers.get("X-Request-ID") or request.headers.get("X-Request-ID")
        self.logger.info(
            "%s %s %d %.1fms",
            request.method,
            request.path,
            response.status,
            time * 1000,
            extra={"http": http, "request_id": request_id},
        )


def runner_options(settings: Settings) -> dict[str, Any]:
    """AppRunner options that switch the access log on, sampled as configured (empty when off)."""
    if not settings.access_log:
        return {}
    logger_class = type("SampledAccessLogger", (SampledAccessLogger,), {"sample": settings.access_log_sample})
    return {"access_log": LOGGER, "access_log_class": logger_class}
