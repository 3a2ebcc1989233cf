"""The Kafka health probe loop (KafkaSink._probe_loop) against a fake aiokafka client."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka.errors import NodeNotReadyError

from gateway.sinks.kafka import KafkaSink

Step = Callable[[], Any]


class FakeClient:
    """Plays one scripted step per probe; closes the sink after the last one."""

    def __init__(self, sink: KafkaSink, steps: list[Step], node: int | None = 1) -> None:
        self.sink, self.steps, self.node, self.probes = sink, steps, node, 0

    def get_random_node(self) -> int | None:
        if self.node is None:
            self._next()
        return self.node

    def _next(self) -> Any:
        step = self.steps[self.probes]
        self.probes += 1
        if self.probes == len(self.steps):
            self.sink._closing = True
        return step()

    async def send(self, node: int, request: Any) -> Any:
        return self._next()


class FakeProducer:
    def __init__(self, client: FakeClient) -> None:
        self.client = client


def fail(exc: BaseException) -> Step:
    def step() -> Any:
        raise exc
    return step


def healthy_sink(steps: list[Step], node: int | None = 1) -> tuple[KafkaSink, FakeClient]:
    # unreachable_after_s is huge: only a refused connection can mark Kafka down in these tests
    sink = KafkaSink("127.0.0.1:1", batch_max_bytes=1 << 20, probe_interval_s=0.001,
                     unreachable_after_s=1e9)
    client = FakeClient(sink, steps, node)
    sink._producer = FakeProducer(client)
    sink._set_healthy(True)
    return sink, client


async def test_an_unexpected_probe_error_does_not_stop_the_probing() -> None:
    # What aiokafka's conn.send raises under uvloop when the broker reset the connection and the
    # read task has not closed it yet (the reader holds the error, so `connected()` is still
    # true). Before the fix this ended the probe task silently: Kafka stayed "reachable" through
    # the refused connections that followed (the broker-kill9 test then got early 429s).
    closed = RuntimeError("unable to perform operation on <TCPTransport closed=True reading=False"
                          " 0x55>; the handler is closed")
    sink, client = healthy_sink([fail(closed),
                                 fail(NodeNotReadyError("refused"))])
    await sink._probe_loop()  # returns once the last step closed the sink
    assert client.probes == 2
    assert not sink.available()


async def test_an_unexpected_probe_error_alone_is_not_an_outage() -> None:
    sink, client = healthy_sink([fail(RuntimeError("surprise"))])
    await sink._probe_loop()
    assert client.probes == 1
    assert sink.available()


async def test_no_known_broker_counts_as_a_refused_connection() -> None:
    sink, client = healthy_sink([lambda: None], node=None)
    await sink._probe_loop()
    assert client.probes == 1
    assert not sink.available()



async def test_a_probe_ending_before_close_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    sink, _ = healthy_sink([])

    async def dies() -> None:
        raise RuntimeError("surprise")
    task = asyncio.create_task(dies())
    await asyncio.gather(task, return_exceptions=True)
    with caplog.at_level(logging.ERROR, logger="gateway.sinks.kafka"):
        sink._probe_ended(task)
        sink._closing = True
        sink._probe_ended(task)  # at close the end is expected: no second record
    # ERROR only: another test may have left the logger at INFO ("... is reachable")
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [
        "the Kafka probe stopped before close (RuntimeError: surprise); Kafka outages go "
        "unnoticed now"]
