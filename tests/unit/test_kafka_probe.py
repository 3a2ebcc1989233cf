"""Kafka's health (gateway/sinks/kafka_health.py) against a fake aiokafka client: probe rounds,
their verdicts per topic partition, and the hysteresis between them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka.client import ConnectionGroup
from aiokafka.errors import NodeNotReadyError

from gateway.sinks import kafka_health
from gateway.sinks.kafka import KafkaSink
from gateway.sinks.kafka_health import KafkaHealth, Round, unwritable_topics
from tests.integration.harness import free_port

Step = Callable[[], Any]


@dataclass(frozen=True)
class BrokerMeta:
    nodeId: int  # aiokafka's name
    host: str
    port: int


class Conn:
    def __init__(self, up: bool) -> None:
        self.up = up

    def connected(self) -> bool:
        return self.up


class Cluster:
    def __init__(self, brokers: list[BrokerMeta]) -> None:
        self._brokers = brokers

    def brokers(self) -> set[BrokerMeta]:
        return set(self._brokers)


@dataclass
class Reply:
    brokers: list[tuple[int, str, int, None]]
    topics: list[tuple[int, str, bool, list[tuple[int, int, int, list[int], list[int]]]]]


def reply(live: list[int], *partitions: tuple[int, list[int], list[int]], topic: str = "t") -> Reply:
    """A Metadata reply: `live` brokers, topic `topic` with (leader, replicas, isr) partitions."""
    return Reply(
        [(n, "127.0.0.1", 1, None) for n in live],
        [
            (
                0,
                topic,
                False,
                [(0, i, leader, replicas, isr) for i, (leader, replicas, isr) in enumerate(partitions)],
            )
        ],
    )


class FakeClient:
    """Nodes that are `up` hold a live producer connection; the others refuse (a port nobody
    listens on). `send` plays one scripted step per call; the health closes after the last."""

    def __init__(self, health: KafkaHealth, steps: list[Step], up: dict[int, bool]) -> None:
        self.health, self.steps, self.probes = health, steps, 0
        self.cluster = Cluster([BrokerMeta(n, "127.0.0.1", free_port()) for n in up])
        self._conns = {(n, ConnectionGroup.DEFAULT): Conn(ok) for n, ok in up.items()}
        self.asked: list[int] = []
        self.groups: list[Any] = []

    async def send(self, node: int, request: Any, *, group: Any = ConnectionGroup.DEFAULT) -> Any:
        self.asked.append(node)
        self.groups.append(group)
        step = self.steps[self.probes]
        self.probes += 1
        if self.probes == len(self.steps):
            self.health.closing = True
        return step()


def fail(exc: BaseException) -> Step:
    def step() -> Any:
        raise exc

    return step


def healthy(steps: list[Step], up: dict[int, bool] | None = None) -> tuple[KafkaHealth, FakeClient]:
    # unreachable_after_s is huge: only refusals and unwritable topics can mark Kafka down here
    health = KafkaHealth("127.0.0.1:1", interval_s=0.001, unreachable_after_s=1e9, min_insync=2)
    client = FakeClient(health, steps, up or {1: True})
    health.set(True)
    return health, client


async def run(health: KafkaHealth, client: FakeClient, topics: list[str] | None = None) -> None:
    await asyncio.wait_for(health.run(lambda: client, lambda: topics or []), 30)


async def test_an_unexpected_probe_error_does_not_stop_the_probing() -> None:
    # What aiokafka's conn.send raises under uvloop when the broker reset the connection and the
    # read task has not closed it yet. Before, this ended the probe task silently: Kafka stayed
    # "reachable" through the refused connections that followed.
    closed = RuntimeError(
        "unable to perform operation on <TCPTransport closed=True reading=False 0x55>; the handler is closed"
    )

    def reset_then_refused() -> Any:
        client._conns[(1, ConnectionGroup.DEFAULT)].up = False  # the node refuses from now on
        raise closed

    health, client = healthy([reset_then_refused, fail(NodeNotReadyError("never asked"))])
    went_down = asyncio.Event()
    judge = health.judge

    def judged(found: Round) -> None:
        judge(found)
        if not health.available:
            went_down.set()
            health.closing = True

    health.judge = judged  # type: ignore[method-assign]
    probing = asyncio.create_task(health.run(lambda: client, list))
    await asyncio.wait_for(went_down.wait(), 30)  # a failure guard only
    await probing
    assert client.probes == 1  # a refusing node is not even asked


async def test_an_unexpected_probe_error_alone_is_not_an_outage() -> None:
    health, client = healthy([fail(RuntimeError("surprise"))])
    await run(health, client)
    assert client.probes == 1
    assert health.available


async def test_no_known_broker_counts_as_refused() -> None:
    health, client = healthy([])
    client.cluster = Cluster([])
    found = await health.probe(client, [])
    assert not found.answered and found.refused
    health.judge(found)
    assert health.available  # one bad round is a blip
    health.judge(found)
    assert not health.available


async def test_one_node_refusing_is_no_outage_while_another_answers() -> None:
    # A rolling restart: node 1 is down, 2 and 3 lead. The old probe asked one broker at random,
    # and a refusal from the down one made all of Kafka "unreachable" at once.
    steps = [lambda: reply([2, 3], (2, [1, 2, 3], [2, 3]), (3, [1, 2, 3], [2, 3]))] * 3
    health, client = healthy(steps, {1: False, 2: True, 3: True})
    await run(health, client, ["t"])
    assert client.probes == 3 and 1 not in client.asked
    assert health.available


async def test_one_node_refusing_while_the_others_are_slow_is_no_outage() -> None:
    # A killed node refuses, the live ones answer late (a busy machine): slow is not down.
    async def slow() -> Any:
        await asyncio.sleep(3600)

    health, client = healthy([], {1: False, 2: True, 3: True})
    health.round_s = 0.05
    client.send = lambda node, request, group=None: slow()  # type: ignore[method-assign]
    for _ in range(3):
        found = await health.probe(client, ["t"])
        assert not found.answered and found.refused and not found.everyone_refused
        health.judge(found)
    assert health.available
    client._conns[(2, ConnectionGroup.DEFAULT)].up = False
    client._conns[(3, ConnectionGroup.DEFAULT)].up = False
    for _ in range(2):
        health.judge(await health.probe(client, ["t"]))
    assert not health.available  # every node refuses: down after two rounds


def test_one_unwritable_topic_of_several_is_no_outage() -> None:
    # its rows wait for a leader; another replica of the gateway could not write them either
    assert Round(True, frozenset(), ("t",), 2).good
    assert not Round(True, frozenset(), ("t", "u"), 2).good


async def test_a_topic_without_a_writable_partition_is_an_outage_after_two_rounds() -> None:
    # Two of three brokers down: the survivor leads, but acks=all needs two in-sync replicas.
    steps = [lambda: reply([3], (3, [1, 2, 3], [3]))] * 2
    health, client = healthy(steps, {1: False, 2: False, 3: True})
    await run(health, client, ["t"])
    assert not health.available


def test_hysteresis_both_ways() -> None:
    health = KafkaHealth("k:1", interval_s=1, unreachable_after_s=1e9, min_insync=1)
    health.set(True)
    bad, good = Round(True, frozenset(), ("t",), 1), Round(True, frozenset())
    for rounds, expected in (
        ([bad, good, bad, good], True),
        ([bad, bad], False),
        ([good, bad, good], False),
        ([good, good], True),
    ):
        for r in rounds:
            health.judge(r)
        assert health.available is expected, rounds
    assert kafka_health.DOWN_AFTER == kafka_health.UP_AFTER == 2  # as the README says


def test_delivered_batches_bring_kafka_back() -> None:
    health = KafkaHealth("k:1", interval_s=1, unreachable_after_s=1e9, min_insync=1)
    health.delivered()
    assert not health.available
    health.delivered()
    assert health.available


def test_silence_is_an_outage_only_after_unreachable_after_s() -> None:
    health = KafkaHealth("k:1", interval_s=1, unreachable_after_s=1e9, min_insync=1)
    health.set(True)
    for _ in range(5):  # a slow broker: no answer, no refusal
        health.judge(Round(False, frozenset()))
    assert health.available
    health.unreachable_after_s = 0
    health.judge(Round(False, frozenset()))
    assert not health.available


def test_a_topic_is_writable_while_one_partition_is() -> None:
    live = {2, 3}
    one_left = reply([2, 3], (1, [1, 2, 3], [1, 2, 3]), (2, [1, 2, 3], [2, 3]))
    assert unwritable_topics(one_left, live, 2) == ()
    none_left = reply([2, 3], (1, [1, 2, 3], [1, 2, 3]), (-1, [1, 2, 3], [1]))
    assert unwritable_topics(none_left, live, 2) == ("t",)
    dead_in_sync = reply([2, 3], (2, [1, 2, 3], [1, 2, 3]))  # no quorum to shrink the ISR
    assert unwritable_topics(dead_in_sync, {2}, 2) == ("t",)
    too_few_in_sync = reply([2], (2, [1, 2, 3], [2]))
    assert unwritable_topics(too_few_in_sync, {2}, 2) == ("t",)
    assert unwritable_topics(too_few_in_sync, {2}, 1) == ()
    single_replica = reply([2], (2, [2], [2]))  # min.insync is capped at the replica count
    assert unwritable_topics(single_replica, {2}, 2) == ()
    unknown = Reply([(2, "h", 1, None)], [(3, "gone", False, [])])
    assert unwritable_topics(unknown, {2}, 2) == ()


async def test_a_probe_ending_before_close_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    sink = KafkaSink("127.0.0.1:1", batch_max_bytes=1 << 20)

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
        "the Kafka probe stopped before close (RuntimeError: surprise); Kafka outages go unnoticed now"
    ]


async def test_a_frozen_broker_delays_a_round_by_the_hedge_only() -> None:
    # A paused (SIGSTOP) broker keeps its connections open and never answers: the round asks
    # the next broker after HEDGE_S instead of spending its whole budget on the frozen one.
    health, client = healthy([], {1: True, 2: True})
    health._prefer = 1

    async def send(node: int, request: Any, *, group: Any = ConnectionGroup.DEFAULT) -> Any:
        client.asked.append(node)
        if node == 1:
            await asyncio.sleep(3600)
        return reply([1, 2], (1, [1, 2], [1, 2]), (2, [1, 2], [1, 2]))

    client.send = send  # type: ignore[method-assign]
    health.round_s = 3600  # the frozen node alone would hold the round this long
    found = await asyncio.wait_for(health.probe(client, ["t"]), 60)  # a failure guard
    assert found.good and client.asked == [1, 2]
    assert health._prefer == 2


async def test_the_probe_asks_on_connections_of_its_own() -> None:
    """A broker answers one connection's requests in order: on the producer's connections a
    Metadata request would wait behind a Produce held for acks=all (a dead follower still in the
    ISR), and a live cluster would look silent."""
    health, client = healthy([], {1: True, 2: True})
    client.steps = [lambda: reply([1, 2], (1, [1, 2], [1, 2]), (2, [1, 2], [1, 2]))]
    found = await asyncio.wait_for(health.probe(client, ["t"]), 60)  # a failure guard
    assert found.good
    assert client.groups == [ConnectionGroup.COORDINATION]
