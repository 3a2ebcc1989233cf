"""A backlog spread over many streams reaches Kafka in Produce requests the broker accepts.

aiokafka puts one ready batch of every partition led by a broker into one Produce request, with no
size limit. A backlog over many streams (after an outage, say) used to make a request larger than
the broker's socket.request.max.bytes: the broker dropped the connection, aiokafka sent the same
request again, forever, and nothing of the backlog arrived (benchmark S7 found it). Here the
broker accepts requests of at most 4 MiB and twelve streams of three partitions hold 256 KiB
batches: one ready batch each would make a request of 9 MiB.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest

from tests.brokers import Broker, own_broker
from tests.integration.harness import Gateway, unique_name, wait_until
from tests.reliability.accounting import COLUMNS
from tests.reliability.conftest import read_back
from tests.reliability.test_faults import metric, wait_delivered

REQUEST_MAX = 4 << 20  # the broker's socket.request.max.bytes
STREAMS = 12
ROWS_PER_REQUEST = 2_000
REQUESTS_PER_STREAM = 2
PAD = "p" * 300


@pytest.fixture(scope="module")
def small_request_broker() -> Iterator[Broker]:
    with own_broker(f"socket.request.max.bytes={REQUEST_MAX}") as broker:
        yield broker


def ndjson(prefix: str, first: int) -> str:
    return "".join(
        json.dumps({"id": f"{prefix}-{first + i}", "seq": first + i, "pad": PAD}) + "\n"
        for i in range(ROWS_PER_REQUEST)
    )


def test_backlog_over_many_streams_reaches_kafka(
    small_request_broker: Broker, spawn: Callable[..., Gateway]
) -> None:
    broker = small_request_broker
    gw = spawn(
        broker.bootstrap,
        [
            "--batch-max-bytes",
            str(256 << 10),
            "--kafka-max-unsettled-bytes",
            str(2 << 20),
            "--kafka-probe-interval-s",
            "0.5",
            "--default-shards",
            "3",
        ],
    )
    topics = {}
    for i in range(STREAMS):
        name = unique_name(f"backlog{i}")
        topics[name] = gw.create_stream(name, COLUMNS)["topic"]
    broker.pause()  # the rows pile up in the gateway and in aiokafka's accumulator
    try:
        for name in topics:
            for r in range(REQUESTS_PER_STREAM):
                reply = gw.ingest(
                    name, ndjson(name, r * ROWS_PER_REQUEST), wait=False, content_type="application/x-ndjson"
                )
                assert reply.status == 202, reply.body
    finally:
        broker.resume()
    sent = ROWS_PER_REQUEST * REQUESTS_PER_STREAM
    for topic in topics.values():
        wait_delivered(broker.bootstrap, topic, sent, timeout=90)
    wait_until(lambda: metric(gw, "gateway_queue_rows") == 0, 30, "the queues to drain")
    for name, topic in topics.items():
        ids = sorted(r.json()["id"] for r in read_back(broker.bootstrap, topic))
        assert ids == sorted(f"{name}-{n}" for n in range(sent)), name
    assert gw.stop() == 0, gw.log()[-3000:]
