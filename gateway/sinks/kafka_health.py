"""Is Kafka writable for the gateway's streams? The Kafka sink's health, judged per probe round.

Each round (every `interval_s`) asks the cluster's metadata for the topics the producer writes to,
from a broker the gateway can connect to, and judges every topic by its partitions: a partition is
writable when its leader is a live broker the gateway reaches (the producer's own connection, else
a TCP connect) and its in-sync replicas reach min.insync.replicas. A round is bad when every broker
refuses, or when no topic in use has a writable partition left; one node refusing
(a rolling restart, a crashed broker) is no outage while the others lead. Kafka becomes unavailable
after DOWN_AFTER bad rounds in a row, or after `unreachable_after_s` without any reply (a broker
that is only slow answers late but works); available again after UP_AFTER good rounds or delivered
batches. So a blip does not pull every replica out of a load balancer at the same moment."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka.client import ConnectionGroup
from aiokafka.protocol.metadata import MetadataRequest

from gateway import metrics
from gateway.sinks.base import SinkUnavailable

log = logging.getLogger("gateway.sinks.kafka")
# The probe asks on connections of its own: a broker answers one connection's requests in order, so
# a Metadata request behind a Produce waiting for acks=all (while a dead follower is still in the
# ISR) would wait as long as it, and a live cluster would look silent ("no reply").
PROBE_CONNECTIONS = ConnectionGroup.COORDINATION
DOWN_AFTER = 2  # bad rounds in a row before Kafka is called unavailable
UP_AFTER = 2  # good rounds (or delivered batches) in a row before it is available again
CONNECT_S = 0.5  # a TCP connect to a broker the producer holds no connection to
HEDGE_S = 0.5  # how long a round waits for one broker's answer before asking the next as well


@dataclass(frozen=True, slots=True)
class Round:
    """What one probe round found."""

    answered: bool  # a broker replied to the metadata request
    refused: frozenset[Any]  # nodes that refused a connection (killed, stopped, not listening)
    unwritable: tuple[str, ...] = ()  # topics in use without a writable partition
    topics: int = 0  # topics in use that the reply described
    everyone_refused: bool = False  # no node merely failed to answer in time: all refused

    @property
    def good(self) -> bool:
        """A broker answered, and some topic in use (if any) can be written: a topic whose only
        leader is gone holds back its own rows, but another replica could not write them either,
        so it is no reason to send traffic elsewhere."""
        return self.answered and (not self.unwritable or len(self.unwritable) < self.topics)


def unwritable_topics(reply: Any, live: set[Any], min_insync: int) -> tuple[str, ...]:
    """Topics of a Metadata reply none of whose partitions has a live leader and enough live
    in-sync replicas (acks=all needs min.insync.replicas of them, at most as many as it has
    replicas). Only live ones count: without a controller quorum (two of three combined nodes
    down) the metadata keeps the dead in the ISR, and the leader waits for them in vain. Unknown
    topics are skipped: a topic deleted behind the gateway's back is repaired elsewhere."""
    out = []
    for error, topic, _internal, partitions, *_ in reply.topics:
        if error:
            continue
        # partition: (error, index, leader, replicas, isr, ...) in every version aiokafka speaks
        if not any(
            p[2] in live and sum(1 for r in p[4] if r in live) >= min(min_insync, len(p[3]))
            for p in partitions
        ):
            out.append(topic)
    return tuple(out)


class KafkaHealth:
    """The sink's availability with hysteresis, fed by probe rounds and by batch outcomes."""

    def __init__(
        self, bootstrap: str, *, interval_s: float, unreachable_after_s: float, min_insync: int
    ) -> None:
        self.bootstrap = bootstrap
        self.interval_s = interval_s
        self.unreachable_after_s = unreachable_after_s
        self.min_insync = min_insync
        self.available = False
        self.last_reply = 0.0  # monotonic time of the last probe reply or delivered batch
        self._good = self._bad = 0
        self._prefer: Any = None  # the node that answered last: asked first
        self.round_s = max(interval_s * 2, 2.0)  # the longest a round waits for an answer
        self._wake = asyncio.Event()
        self.closing = False

    # ---- state -----------------------------------------------------------------------------
    def set(self, available: bool, why: str = "") -> None:
        """Change the state now (the sink connected; a test)."""
        if available != self.available:
            # losing Kafka is a warning; finding it (at start or again) is good news
            if available:
                log.info("Kafka at %s is reachable", self.bootstrap)
            else:
                log.warning("Kafka at %s is UNREACHABLE%s", self.bootstrap, f" ({why})" if why else "")
        self.available = available
        self._good = self._bad = 0
        if available:
            self.last_reply = time.monotonic()
        metrics.SINK_AVAILABLE.set(1 if available else 0)

    def delivered(self) -> None:
        """A batch was acknowledged: Kafka answers and takes writes (called once per flush)."""
        self.last_reply = time.monotonic()
        self._bad = 0
        if not self.available:
            self._good += 1
            if self._good >= UP_AFTER:
                self.set(True)

    def failed(self) -> None:
        """A batch failed: judge Kafka now instead of at the next round (the round decides)."""
        self._wake.set()

    def judge(self, found: Round) -> None:
        """Apply one round's findings, with hysteresis."""
        if found.answered:
            self.last_reply = time.monotonic()
        if found.good:
            self._bad = 0
            if not self.available:
                self._good += 1
                if self._good >= UP_AFTER:
                    self.set(True)
            return
        self._good = 0
        if found.answered or found.everyone_refused:
            self._bad += 1
            if self.available and self._bad >= DOWN_AFTER:
                self.set(
                    False,
                    f"no topic in use has a writable partition: {found.unwritable[:3]}"
                    f", refused: {sorted(found.refused, key=str)}"
                    if found.answered
                    else "no broker accepts connections",
                )
        else:
            self.no_reply()

    def no_reply(self) -> None:
        """Unreachable once no probe or batch got a reply for `unreachable_after_s`."""
        if self.available and time.monotonic() - self.last_reply >= self.unreachable_after_s:
            self.set(False, f"no reply for {self.unreachable_after_s:g} s")

    # ---- probing ---------------------------------------------------------------------------
    async def run(self, client: Callable[[], Any], topics: Callable[[], Iterable[str]]) -> None:
        """Probe every `interval_s` (at once after a failed batch) until `closing`. Nothing but
        cancellation ends the loop: it is awaited only at close, so an exception escaping it
        would stop the probing silently and leave Kafka "reachable" through a whole outage."""
        self.last_reply = time.monotonic()
        while not self.closing:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval_s):
                    await self._wake.wait()
            self._wake.clear()
            if self.closing:
                return
            try:
                async with asyncio.timeout(self.round_s + CONNECT_S + 1):
                    found = await self.probe(client(), sorted(topics()))
            except TimeoutError:
                metrics.SINK_ERRORS.labels(kind="probe_TimeoutError").inc()
                self.no_reply()
            except Exception as exc:  # a bug or an aiokafka surprise: no reply, keep probing
                metrics.SINK_ERRORS.labels(kind="probe_unexpected").inc()
                log.error(
                    "the Kafka probe failed unexpectedly (%s: %s); probing goes on", type(exc).__name__, exc
                )
                self.no_reply()
            else:
                self.judge(found)

    async def probe(self, client: Any, topics: list[str]) -> Round:
        """One round: which nodes refuse, and (from the first node that answers) which topics
        in use have no writable partition."""
        brokers = {b.nodeId: b for b in client.cluster.brokers()}
        if not brokers:  # nothing to connect to, as when refused
            return Round(False, frozenset({None}), everyone_refused=True)
        reachable = await asyncio.gather(*(self._reachable(client, b) for b in brokers.values()))
        refused = frozenset(n for n, ok in zip(brokers, reachable, strict=True) if not ok)
        # the node that answered last first
        order = sorted(set(brokers) - refused, key=lambda n: n != self._prefer)
        reply = await self._first_answer(client, order, topics)
        if reply is not None:
            live = {b[0] for b in reply.brokers} - refused
            if not live:
                return Round(True, refused, ("(no live broker)",), 1)
            known = sum(1 for t in reply.topics if not t[0])
            return Round(True, refused, unwritable_topics(reply, live, self.min_insync), known)
        # some node took the connection but did not answer in time: slow, not known down
        return Round(False, refused, everyone_refused=len(refused) == len(brokers))

    async def _first_answer(self, client: Any, order: list[Any], topics: list[str]) -> Any:
        """The first Metadata reply from the nodes in `order`, asked one after another: the next
        one as soon as the last failed or after HEDGE_S without an answer (a frozen or overloaded
        broker delays the round by HEDGE_S, not the round's budget); None after `round_s`.
        Metadata for no topics when none is in use keeps the reply tiny (all topics cost a
        broker with hundreds of them ~20 ms of CPU per probe)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.round_s
        pending: dict[asyncio.Task[Any], Any] = {}
        try:
            for i, node in enumerate(order):
                ask = client.send(node, MetadataRequest(topics, False), group=PROBE_CONNECTIONS)
                pending[asyncio.create_task(ask)] = node
                last = i == len(order) - 1
                while pending:
                    wait = deadline - loop.time() if last else min(HEDGE_S, deadline - loop.time())
                    done, _ = await asyncio.wait(
                        pending, timeout=max(wait, 0), return_when=asyncio.FIRST_COMPLETED
                    )
                    if not done:
                        break  # no answer yet: ask the next node too (or give up, after the last)
                    for task in done:
                        asked = pending.pop(task)
                        exc = task.exception()
                        if exc is None:
                            self._prefer = asked
                            return task.result()
                        metrics.SINK_ERRORS.labels(kind="probe_" + type(exc).__name__).inc()
                    if not last:
                        break  # a failure: ask the next node now
            return None
        finally:
            for task in pending:
                task.cancel()

    async def _reachable(self, client: Any, broker: Any) -> bool:
        """The producer holds a live connection to the broker, or it accepts one now."""
        conn = getattr(client, "_conns", {}).get((broker.nodeId, ConnectionGroup.DEFAULT))
        if conn is not None and conn.connected():
            return True
        try:
            async with asyncio.timeout(CONNECT_S):
                _, writer = await asyncio.open_connection(broker.host, broker.port)
        except TimeoutError:
            return True  # accepts nothing yet refuses nothing (paused, overloaded): not refused
        except OSError:
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True


async def check_replication(client: Any, replication_factor: int, bootstrap: str) -> None:
    """SinkUnavailable (with the reason) when the cluster has fewer brokers than topics are to
    be replicated to: creating them would fail. A broker that is down right now still counts when
    some topic has a replica on it (a rolling restart must not stop a gateway from starting)."""
    if replication_factor <= 1:
        return
    node = client.get_random_node()
    reply = await client.send(node, MetadataRequest(None, False))  # once, at start: every topic
    brokers = {b[0] for b in reply.brokers}
    for _error, _topic, _internal, partitions, *_ in reply.topics:
        for p in partitions:
            brokers.update(p[3])
    if replication_factor > len(brokers):
        raise SinkUnavailable(
            f"--replication-factor {replication_factor} needs at least {replication_factor} Kafka "
            f"brokers, and the cluster at {bootstrap} has {len(brokers)} "
            f"(node ids {sorted(brokers)}): lower --replication-factor or add brokers"
        )
