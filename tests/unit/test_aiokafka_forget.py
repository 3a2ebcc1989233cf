"""`forget_producer_topics` relies on one private member of aiokafka's client (`_topics`, the
topics it asks metadata for): this fails loudly if an aiokafka upgrade renames or changes it."""

from __future__ import annotations

import inspect

from aiokafka import AIOKafkaProducer
from aiokafka.client import AIOKafkaClient

from gateway.sinks.aiokafka_batch import forget_producer_topics


def test_aiokafka_still_tracks_topics_in_client_topics() -> None:
    for method in (AIOKafkaClient.add_topic, AIOKafkaClient.set_topics, AIOKafkaClient._md_synchronizer):
        assert "self._topics" in inspect.getsource(method), method.__name__


async def test_forgotten_topics_leave_the_metadata_request() -> None:
    producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1")  # never started
    client = producer.client
    client._topics = {"ingest.a", "ingest.a-quarantine", "ingest.b"}
    forget_producer_topics(producer, ["ingest.a", "ingest.a-quarantine"])
    assert client._topics == {"ingest.b"}
    forget_producer_topics(producer, ["ingest.b", "ingest.never"])
    assert client._topics == set()
    await client.close()
