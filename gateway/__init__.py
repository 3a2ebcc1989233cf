"""HTTP event ingestion gateway: streamed bodies → schema validation → bounded queues → Kafka."""

__version__ = "0.1.0"
