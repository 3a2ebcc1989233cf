"""Every Prometheus metric of the gateway, declared in one place.

With several workers (`serve --workers N`) the parent sets PROMETHEUS_MULTIPROC_DIR before the
workers import this module: every worker then writes its values to files there, and `exposition()`
adds them up, so one scrape of any worker returns the totals of all of them. Counters of a worker
that died stay in the sums; its `live*` gauges leave them (gateway.workers marks it dead).
"""

from __future__ import annotations

import os

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

REQUESTS = Counter(
    "gateway_http_requests_total", "HTTP requests by route and status", ["route", "method", "status"]
)
REQUEST_LATENCY = Histogram(
    "gateway_http_request_duration_seconds", "HTTP request latency by route", ["route"], buckets=_LATENCY
)
ROWS_ACCEPTED = Counter("gateway_rows_accepted_total", "rows accepted into a stream's queue", ["stream"])
BYTES_ACCEPTED = Counter(
    "gateway_bytes_accepted_total", "encoded bytes of rows accepted into a stream's queue", ["stream"]
)
ROWS_REJECTED = Counter(
    "gateway_rows_rejected_total", "rows of requests answered with an error, by cause", ["stream", "cause"]
)
BYTES_REJECTED = Counter(
    "gateway_bytes_rejected_total", "request body bytes answered with an error, by cause", ["stream", "cause"]
)
ROWS_QUARANTINED = Counter(
    "gateway_rows_quarantined_total", "invalid rows written to a stream's quarantine topic", ["stream"]
)
ROWS_DELIVERED = Counter(
    "gateway_rows_delivered_total", "rows acknowledged by the sink (Kafka or local)", ["stream"]
)
QUEUE_ROWS = Gauge(
    "gateway_queue_rows", "rows queued or in flight, per stream", ["stream"], multiprocess_mode="livesum"
)
QUEUE_BYTES = Gauge(
    "gateway_queue_bytes", "bytes queued or in flight, per stream", ["stream"], multiprocess_mode="livesum"
)
# Every metric labelled by stream: a deleted stream's series are removed from each (forget_stream).
_S, _SC = ("stream",), ("stream", "cause")
PER_STREAM = (
    (ROWS_ACCEPTED, _S),
    (BYTES_ACCEPTED, _S),
    (ROWS_REJECTED, _SC),
    (BYTES_REJECTED, _SC),
    (ROWS_QUARANTINED, _S),
    (ROWS_DELIVERED, _S),
    (QUEUE_ROWS, _S),
    (QUEUE_BYTES, _S),
)
QUEUE_LIMIT = Gauge(
    "gateway_queue_limit",
    "configured queue bounds (stream_rows, stream_bytes, "
    "memory_bytes), summed over the workers like the queue gauges",
    ["bound"],
    multiprocess_mode="livesum",
)
BATCH_ROWS = Histogram(
    "gateway_sink_batch_rows",
    "records per record batch sent to the sink",
    buckets=(1, 10, 100, 500, 1000, 2500, 5000, 10000, 25000, 50000),
)
BATCH_BYTES = Histogram(
    "gateway_sink_batch_bytes",
    "bytes per record batch sent to the sink",
    buckets=(1e3, 1e4, 6.4e4, 2.56e5, 5.12e5, 1.05e6, 4.2e6, 1.68e7),
)
PRODUCE_LATENCY = Histogram(
    "gateway_sink_produce_duration_seconds",
    "time from handing a flush to the sink to its acknowledgement",
    buckets=_LATENCY,
)
SINK_ERRORS = Counter("gateway_sink_errors_total", "sink (Kafka) errors by kind", ["kind"])
PRODUCER_RESETS = Counter(
    "gateway_sink_producer_resets_total",
    "Kafka producers replaced by a new one (new producer id) after the broker "
    "rejected their sequence numbers or id; their unacknowledged rows are sent "
    "again, so duplicates are possible",
)
SINK_AVAILABLE = Gauge(
    "gateway_sink_available",
    "1 while the sink (Kafka) is reachable (from every worker)",
    multiprocess_mode="livemin",
)
PARTITIONS_HELD_BACK = Gauge(
    "gateway_sink_partitions_held_back",
    "partitions holding batches Kafka has not acknowledged "
    "for --partition-stall-ms (state=stalled; unkeyed rows go to other partitions), and of those "
    "the ones holding more than --partition-max-bytes (state=full; streams that need them get "
    "503)",
    ["state"],
    multiprocess_mode="livesum",
)
DECODING = Gauge(
    "gateway_requests_decoding",
    "ingest requests whose bodies are being read and decoded (capped by --max-decoding-requests)",
    multiprocess_mode="livesum",
)
HEAD_BYTES = Gauge(
    "gateway_request_head_bytes",
    "memory held by unfinished request heads as "
    "counted against --memory-cap-bytes (twice the bytes received)",
    multiprocess_mode="livesum",
)
THROTTLED = Counter(
    "gateway_throttled_requests_total",
    "requests refused with 429 or 503 (and heads refused with 431), by cause",
    ["status", "cause"],
)
RATE_SHARE = Counter(
    "gateway_rate_share_messages_total",
    "announcements of keys' use between replicas (a key's rate across them), by "
    "direction (sent, received, failed)",
    ["direction"],
)
SPOOL_FSYNCS = Counter(
    "gateway_spool_fsyncs_total", "group commits of the durable spool (one fsync serves many requests)"
)
SPOOL_RECORDS = Counter("gateway_spool_records_total", "requests appended to the durable spool")

WORKER_RESTARTS = Counter(
    "gateway_worker_restarts_total", "worker processes started again after one died (serve --workers N)"
)

MULTIPROCESS = "PROMETHEUS_MULTIPROC_DIR" in os.environ
if MULTIPROCESS:
    _registry = CollectorRegistry()
    MultiProcessCollector(_registry)  # type: ignore[no-untyped-call]
else:
    _registry = REGISTRY


def forget_stream(stream: str) -> None:
    """Remove every series of a deleted stream, in this process (with --workers, values other
    workers wrote to their files stay in the sums until those workers restart)."""
    for metric, names in PER_STREAM:
        seen = {
            tuple(s.labels[n] for n in names)
            for family in metric.collect()
            for s in family.samples
            if s.labels.get("stream") == stream
        }
        for values in seen:
            metric.remove(*values)


def exposition() -> bytes:
    """The Prometheus text exposition: this process's metrics, or the sum over all workers."""
    return generate_latest(_registry)
