"""deploy/kafka/kafka-dev consume: the records, without Kafka's per-call banners and warnings."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.integration.harness import kafka_dev, unique_name


async def test_consume_prints_the_records_and_no_noise(kafka: str) -> None:
    topic = unique_name("consume")
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=kafka)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b'{"n": 1}', key=b"k1")
        await producer.send_and_wait(topic, b'{"n": 2}', key=b"k2")
    finally:
        await producer.stop()
    done = kafka_dev(
        "consume",
        topic,
        "--from-beginning",
        "-n",
        "2",
        "--property",
        "print.key=true",
        env={"KAFKA_DEV_PORT": kafka.rsplit(":", 1)[1]},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ['k1\t{"n": 1}', 'k2\t{"n": 2}']
    noise = [line for line in done.stderr.splitlines() if "Processed a total of" not in line]
    assert noise == [], done.stderr
