"""The one place that turns a wait into the `Retry-After` header, for every dialect and limiter."""

from __future__ import annotations

import math

MIN_S = 1
MAX_S = 60


def retry_after_header(seconds: float) -> dict[str, str]:
    """`{"Retry-After": whole seconds}`, rounded up and bounded to 1..60 s."""
    return {"Retry-After": str(min(MAX_S, max(MIN_S, math.ceil(seconds))))}
