"""Admitting less while the event loop is behind (--max-loop-lag-ms): the lag a blocked loop shows,
and the 429 (`overloaded`, cause `loop_lag`) it brings before the body is decoded."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import REGISTRY

from gateway.context import Gateway
from gateway.errors import Overloaded
from gateway.ingest.formats import Format
from gateway.ingest.service import IngestRequest, StreamedBody
from gateway.limiters.loop_lag import TICK_S, LoopLag
from tests.unit.test_ingest_service import WHO, Untouchable, chunks, gw  # noqa: F401 (fixture)

BLOCK_S = 0.1


async def test_a_blocked_loop_shows_its_lag() -> None:
    lag = LoopLag()
    assert lag.lag() == 0.0  # started: nothing measured yet
    time.sleep(BLOCK_S)  # the loop is stuck in a callback past the tick's due time  # noqa: ASYNC251
    for _ in range(1000):  # let the loop run the overdue tick
        await asyncio.sleep(0)
        if lag.lag():
            break
    assert lag.lag() >= BLOCK_S - TICK_S
    lag.stop()
    assert lag.lag() == 0.0
    lag.stop()


class Behind:
    def __init__(self, lag_s: float) -> None:
        self.lag_s = lag_s

    def lag(self) -> float:
        return self.lag_s


async def test_requests_get_429_before_decoding_while_the_loop_is_behind(gw: Gateway) -> None:  # noqa: F811
    admission = gw.ingest.admission
    body = StreamedBody(Format.STREAMING, chunks(b'{"id": "a", "n": 1}\n'))
    assert (await gw.ingest.ingest(IngestRequest("s", body, WHO))).rows == 1  # the queue exists
    admission.max_loop_lag_s = 0.2
    admission.loop_lag = Behind(0.5)  # type: ignore[assignment]
    before = (
        REGISTRY.get_sample_value("gateway_throttled_requests_total", {"status": "429", "cause": "loop_lag"})
        or 0.0
    )
    with pytest.raises(Overloaded) as refused:
        await gw.ingest.ingest(IngestRequest("s", Untouchable(), WHO))
    assert (refused.value.status, refused.value.retry_after) == (429, 1.0)
    assert "--max-loop-lag-ms" in refused.value.message
    assert (
        REGISTRY.get_sample_value("gateway_throttled_requests_total", {"status": "429", "cause": "loop_lag"})
        == before + 1
    )
    admission.loop_lag = Behind(0.1)  # type: ignore[assignment]
    body = StreamedBody(Format.STREAMING, chunks(b'{"id": "b", "n": 2}\n'))
    assert (await gw.ingest.ingest(IngestRequest("s", body, WHO))).rows == 1
    admission.max_loop_lag_s = 0.0  # the default: no such rule, however far behind
    admission.loop_lag = Behind(5.0)  # type: ignore[assignment]
    body = StreamedBody(Format.STREAMING, chunks(b'{"id": "c", "n": 3}\n'))
    assert (await gw.ingest.ingest(IngestRequest("s", body, WHO))).rows == 1
