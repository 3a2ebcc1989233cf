"""One typed settings object, filled from command-line flags and `GATEWAY_*` environment variables."""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Settings:
    """Every tunable of the gateway. Flags win over environment variables, which win over defaults."""

    host: str = field(default="127.0.0.1", metadata={"help": "address to listen on"})
    port: int = field(default=8000, metadata={"help": "port to listen on"})
    kafka_bootstrap: str = field(
        default="", metadata={"help": "Kafka bootstrap servers HOST:PORT[,…]; empty = embedded sink"}
    )
    data_dir: Path = field(
        default=Path("./data"), metadata={"help": "embedded sink and local catalog directory"}
    )
    admin_key: str = field(
        default="", metadata={"help": "admin API key; generated and printed once when empty"}
    )
    topic_prefix: str = field(default="ingest.", metadata={"help": "prefix of stream topics"})
    default_shards: int = field(default=3, metadata={"help": "partitions of a new stream's topic"})
    replication_factor: int = field(default=1, metadata={"help": "default topic replication"})
    max_body_bytes: int = field(default=64 * MiB, metadata={"help": "largest request body (413)"})
    max_decompressed_bytes: int = field(
        default=256 * MiB, metadata={"help": "largest body after gzip (413)"}
    )
    queue_max_rows: int = field(default=500_000, metadata={"help": "rows one stream may buffer"})
    queue_max_bytes: int = field(default=128 * MiB, metadata={"help": "bytes one stream may buffer"})
    memory_cap_bytes: int = field(
        default=512 * MiB, metadata={"help": "bytes all streams together may buffer"}
    )
    batch_max_bytes: int = field(
        default=1 * MiB, metadata={"help": "largest Kafka record batch (≤ broker message.max.bytes)"}
    )
    linger_ms: float = field(default=5.0, metadata={"help": "how long a flush waits to fill a batch"})
    max_in_flight_flushes: int = field(
        default=4, metadata={"help": "flush rounds one stream may have awaiting Kafka at once"}
    )
    wait_timeout_s: float = field(
        default=30.0, metadata={"help": "how long wait=true waits for Kafka before 504"}
    )
    reject_unknown_fields: bool = field(
        default=False, metadata={"help": "reject rows with fields the schema does not have"}
    )
    drain_timeout_s: float = field(
        default=60.0, metadata={"help": "how long SIGTERM waits for queues to reach Kafka"}
    )
    kafka_probe_interval_s: float = field(
        default=1.0, metadata={"help": "how often Kafka reachability is re-checked"}
    )
    accept_during_outage: bool = field(
        default=True, metadata={"help": "queue wait=false rows while Kafka is unreachable (202 until "
                                        "the queues are full, then 429); off: 503 at once"})
    spool_dir: str = field(
        default="", metadata={"help": "durable mode: write-ahead log of wait=false rows, fsynced "
                                      "before the 202 and replayed after a crash; empty = off"})
    spool_segment_bytes: int = field(
        default=64 * MiB, metadata={"help": "size at which the spool starts a new segment file"})
    stream_max_bytes_per_s: int = field(
        default=0, metadata={"help": "bytes/s of rows one stream may take (429 beyond); 0 = no limit"})
    header_read_timeout_s: float = field(
        default=10.0, metadata={"help": "time a client has to send a request's headers"})
    body_read_timeout_s: float = field(
        default=30.0, metadata={"help": "longest wait for the next piece of a request body (408)"})
    body_total_timeout_s: float = field(
        default=300.0, metadata={"help": "longest time a whole request body may take (408)"})
    keepalive_timeout_s: float = field(
        default=75.0, metadata={"help": "idle keep-alive connections are closed after this"})
    max_connections: int = field(
        default=10_000, metadata={"help": "open client connections; beyond, new ones get 503 and "
                                          "are closed"})
    rate_limit_per_key: float = field(
        default=1000.0, metadata={"help": "requests per second one API key may make to the Tinybird "
                                          "events route (0 = unlimited; a key's rate_limit wins)"}
    )
    log_level: str = field(default="INFO", metadata={"help": "DEBUG, INFO, WARNING or ERROR"})

    @property
    def embedded(self) -> bool:
        """True when no Kafka is configured and the local development sink is used."""
        return not self.kafka_bootstrap


def env_name(name: str) -> str:
    """The environment variable that sets the setting `name`."""
    return "GATEWAY_" + name.upper()


def _convert(kind: Any, raw: str) -> Any:
    if kind in (bool, "bool"):
        word = raw.strip().lower()
        if word in ("1", "true", "yes", "on"):
            return True
        if word in ("0", "false", "no", "off", ""):
            return False
        raise ValueError("expected true or false")
    if kind in (int, "int"):
        return int(raw)
    if kind in (float, "float"):
        value = float(raw)
        if not math.isfinite(value):
            raise ValueError("expected a finite number")
        return value
    if kind in (Path, "Path"):
        return Path(raw)
    return raw


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per setting, documenting its environment variable and default."""
    defaults = Settings()
    for f in fields(Settings):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        help_text = f"{f.metadata.get('help', '')} (env {env_name(f.name)}, default {default!r})"
        if f.type in (bool, "bool"):
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                                default=None, help=help_text)
        else:
            parser.add_argument(flag, dest=f.name, default=None, help=help_text)


def from_sources(args: argparse.Namespace | None = None,
                 environ: dict[str, str] | None = None) -> Settings:
    """Build settings from parsed flags and the environment; raise ValueError when one is invalid."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in fields(Settings):
        raw = getattr(args, f.name, None) if args is not None else None
        if raw is None:
            raw = env.get(env_name(f.name))
        if raw is None:
            continue
        try:
            values[f.name] = raw if isinstance(raw, bool) else _convert(f.type, str(raw))
        except ValueError as exc:
            raise ValueError(f"invalid value {raw!r} for {f.name}: {exc}") from None
    settings = Settings(**values)
    _check(settings)
    return settings


def _check(s: Settings) -> None:
    positive = ("port", "default_shards", "replication_factor", "max_body_bytes",
                "max_decompressed_bytes", "queue_max_rows", "queue_max_bytes",
                "memory_cap_bytes", "batch_max_bytes", "max_in_flight_flushes",
                "spool_segment_bytes", "max_connections", "header_read_timeout_s",
                "body_read_timeout_s", "body_total_timeout_s", "keepalive_timeout_s")
    for name in positive:
        if getattr(s, name) <= 0:
            raise ValueError(f"{name} must be positive, got {getattr(s, name)}")
    if not 1 <= s.port <= 65535:
        raise ValueError(f"port must be 1..65535, got {s.port}")
    if s.rate_limit_per_key < 0:
        raise ValueError(f"rate_limit_per_key must be ≥ 0, got {s.rate_limit_per_key}")
    if s.linger_ms < 0 or s.wait_timeout_s <= 0 or s.drain_timeout_s < 0:
        raise ValueError("linger_ms must be ≥ 0, wait_timeout_s > 0 and drain_timeout_s ≥ 0")
    if s.stream_max_bytes_per_s < 0:
        raise ValueError("stream_max_bytes_per_s must be ≥ 0 (0 = no limit)")
    if s.kafka_probe_interval_s <= 0:
        raise ValueError(f"kafka_probe_interval_s must be positive, got {s.kafka_probe_interval_s}")
    if s.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError(f"log_level must be DEBUG, INFO, WARNING or ERROR, got {s.log_level!r}")
