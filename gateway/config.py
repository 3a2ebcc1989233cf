"""One typed settings object, filled from command-line flags, `GATEWAY_*` environment variables and
an optional TOML file. Precedence: flags > environment > file > defaults."""

from __future__ import annotations

import argparse
import difflib
import math
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from gateway.anonymous import parse_anonymous_scopes
from gateway.cors import parse_origins
from gateway.limiters.address_share import parse_networks

MiB = 1024 * 1024
CONFIG_ENV = "GATEWAY_CONFIG"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


@dataclass(frozen=True, slots=True)
class Settings:
    """Every tunable of the gateway: flags > environment variables > config file > defaults."""

    host: str = field(default="127.0.0.1", metadata={"help": "address to listen on"})
    port: int = field(default=8000, metadata={"help": "port to listen on"})
    kafka_bootstrap: str = field(
        default="", metadata={"help": "Kafka bootstrap servers HOST:PORT[,…]; empty = embedded sink"}
    )
    data_dir: Path = field(
        default=Path("./data"), metadata={"help": "embedded sink and local catalog directory"}
    )
    admin_key: str = field(
        default="", metadata={"help": "admin API key; empty: one made once in <data-dir>/admin.key"}
    )
    catalog_topic: str = field(
        default="_ingest_gateway_catalog",
        metadata={"help": "compacted topic holding the catalog shared by replicas (Kafka mode)"},
    )
    topic_prefix: str = field(default="ingest.", metadata={"help": "prefix of stream topics"})
    default_shards: int = field(default=3, metadata={"help": "partitions of a new stream's topic"})
    replication_factor: int = field(default=1, metadata={"help": "default topic replication"})
    min_insync_replicas: int = field(
        default=0,
        metadata={
            "help": "min.insync.replicas of the topics the gateway creates (at most "
            "each topic's replication); 0 = min(2, --replication-factor)"
        },
    )
    max_body_bytes: int = field(default=64 * MiB, metadata={"help": "largest request body (413)"})
    max_decompressed_bytes: int = field(default=256 * MiB, metadata={"help": "largest body after gzip (413)"})
    max_row_bytes: int = field(
        default=0,
        metadata={
            "help": "longest row text a body may hold (an NDJSON object, a line, "
            "a raw body, a compact `data` element): longer is 413 as soon "
            "as that many bytes arrived without the row ending (0: "
            "--batch-max-bytes, as a record must fit a batch)"
        },
    )
    max_gzip_members: int = field(
        default=1000,
        metadata={
            "help": "gzip (or deflate) members one body may concatenate; more "
            "is 413 (each costs a decoder, whatever its size)"
        },
    )
    queue_max_rows: int = field(default=500_000, metadata={"help": "rows one stream may buffer"})
    queue_max_bytes: int = field(default=128 * MiB, metadata={"help": "bytes one stream may buffer"})
    memory_cap_bytes: int = field(
        default=512 * MiB, metadata={"help": "bytes all streams together may buffer"}
    )
    batch_max_bytes: int = field(
        default=1 * MiB, metadata={"help": "largest Kafka record batch (≤ broker message.max.bytes)"}
    )
    kafka_max_unsettled_bytes: int = field(
        default=32 * MiB,
        metadata={
            "help": "batch bytes handed to Kafka and not yet acknowledged, "
            "all streams together (bounds each Produce request; "
            "keep under the broker's socket.request.max.bytes)"
        },
    )
    kafka_request_timeout_ms: int = field(
        default=30_000,
        metadata={
            "help": "how long the Kafka producer waits for a broker's reply "
            "before it fails the batch and retries it (the rows are "
            "retried, never dropped)"
        },
    )
    partition_stall_ms: float = field(
        default=2000.0,
        metadata={
            "help": "a partition holding batches Kafka has not acknowledged "
            "for this long is stalled (its leader does not answer): "
            "unkeyed rows go to the other partitions"
        },
    )
    partition_max_bytes: int = field(
        default=16 * MiB,
        metadata={
            "help": "bytes a stalled partition may hold before the streams "
            "whose rows need it are refused (503; unkeyed streams "
            "only when every partition is stalled); 0 = no bound "
            "but the stream's"
        },
    )
    gc_gen0_threshold: int = field(
        default=50_000,
        metadata={
            "help": "allocations between young-generation garbage "
            "collections (Python's default is 700; 0 keeps it)"
        },
    )
    linger_ms: float = field(default=5.0, metadata={"help": "how long a flush waits to fill a batch"})
    max_in_flight_flushes: int = field(
        default=4, metadata={"help": "flush rounds one stream may have awaiting Kafka at once"}
    )
    wait_timeout_s: float = field(
        default=30.0, metadata={"help": "how long wait=true waits for Kafka before 504"}
    )
    replay_claim_s: float = field(
        default=15.0,
        metadata={
            "help": "how long a quarantine replay page's claim lasts unless "
            "renewed (every third of it while the page runs): a "
            "replica that died mid-page blocks replays this long"
        },
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
    kafka_unreachable_after_s: float = field(
        default=5.0,
        metadata={
            "help": "Kafka whose brokers all refuse connections (or whose topics "
            "in use have no writable partition) is unavailable after 2 "
            "probes; one that stops answering, after this long"
        },
    )
    accept_during_outage: bool = field(
        default=True,
        metadata={
            "help": "queue wait=false rows while Kafka is unreachable (202 until "
            "the queues are full, then 429); off: 503 at once"
        },
    )
    spool_dir: str = field(
        default="",
        metadata={
            "help": "durable mode: write-ahead log of wait=false rows, fsynced "
            "before the 202 and replayed after a crash; empty = off"
        },
    )
    spool_segment_bytes: int = field(
        default=64 * MiB, metadata={"help": "size at which the spool starts a new segment file"}
    )
    stream_max_bytes_per_s: int = field(
        default=0, metadata={"help": "bytes/s of rows one stream may take (429 beyond); 0 = no limit"}
    )
    header_read_timeout_s: float = field(
        default=10.0, metadata={"help": "time a client has to send a request's headers"}
    )
    body_read_timeout_s: float = field(
        default=30.0, metadata={"help": "longest wait for the next piece of a request body (408)"}
    )
    body_total_timeout_s: float = field(
        default=300.0, metadata={"help": "longest time a whole request body may take (408)"}
    )
    keepalive_timeout_s: float = field(
        default=75.0, metadata={"help": "idle keep-alive connections are closed after this"}
    )
    max_connections: int = field(
        default=10_000, metadata={"help": "open client connections; beyond, new ones get 503 and are closed"}
    )
    max_decoding_requests: int = field(
        default=64,
        metadata={
            "help": "ingest requests whose bodies may be read and decoded at once; "
            "beyond, 429 at once (0 = no cap)"
        },
    )
    key_share: float = field(
        default=0.25,
        metadata={
            "help": "largest fraction of the decoding slots "
            "(--max-decoding-requests, at least one) and of the memory "
            "cap's body bytes in flight one API key may hold at once "
            "(429 beyond)"
        },
    )
    admin_reserve: float = field(
        default=0.1,
        metadata={
            "help": "fraction of the decoding slots and of the memory cap's "
            "body bytes in flight that only admin keys may use"
        },
    )
    address_share: float = field(
        default=0.1,
        metadata={
            "help": "largest fraction of --max-connections one client address "
            "(an IPv6 address: its /64) may hold open (429 beyond)"
        },
    )
    share_exempt_addresses: str = field(
        default="",
        metadata={
            "help": "comma-separated addresses or networks (CIDR) not held to "
            "--address-share: a reverse proxy in front, which must "
            "limit its own clients (nginx: limit_conn)"
        },
    )
    body_min_bytes_per_s: float = field(
        default=1024.0,
        metadata={
            "help": "a request body arriving slower than this, averaged over "
            "--body-rate-window-s of waiting for it, gets 408 "
            "(0 = no such rule)"
        },
    )
    body_rate_window_s: float = field(
        default=10.0, metadata={"help": "the window over which --body-min-bytes-per-s is averaged"}
    )
    max_head_bytes: int = field(
        default=32 * 1024,
        metadata={
            "help": "largest request head (request line and headers "
            "together; 431 beyond); an unfinished head's bytes "
            "are held against --memory-cap-bytes"
        },
    )
    max_headers: int = field(
        default=128, metadata={"help": "most header fields in a request head (431 beyond)"}
    )
    max_loop_lag_ms: float = field(
        default=0.0,
        metadata={
            "help": "ingest requests get 429 before decoding while the event "
            "loop is this far behind (ms; 0 = no such rule): under CPU "
            "overload, admit less so admitted requests do not wait"
        },
    )
    rate_limit_per_key: float = field(
        default=1000.0,
        metadata={
            "help": "requests per second one API key may make to the ingest "
            "routes, and apart from those to the management API, "
            "across all replicas (0 = unlimited; a key's rate_limit "
            "wins)"
        },
    )
    rate_share_interval_ms: float = field(
        default=250.0,
        metadata={
            "help": "Kafka mode: how often each replica (and worker) tells the "
            "others how many requests it let in per key, so that a "
            "key's rate holds across them (ms; 0 = each process "
            "limits on its own)"
        },
    )
    rate_share_topic: str = field(
        default="",
        metadata={
            "help": "short-retention topic the replicas announce their keys' use "
            "on (Kafka mode; empty = the catalog topic + `_rates`: "
            "replicas of one catalog share it)"
        },
    )
    anonymous_scopes: str = field(
        default="",
        metadata={
            "help": "comma-separated scopes (the API keys' grammar, admin "
            "excepted) that requests carrying no credentials at all get, "
            "as the one principal `anonymous`; empty = off (401). For "
            "internal networks only: see README, Security"
        },
    )
    anonymous_rate_limit: int = field(
        default=100,
        metadata={
            "help": "requests per second all anonymous requests together may make, "
            "across all replicas (--anonymous-scopes)"
        },
    )
    cors_allow_origins: str = field(
        default="*",
        metadata={
            "help": "origins whose web pages may send to the ingest routes: * "
            "(any), empty (none), or a comma-separated list of "
            "scheme://host[:port]; the management API never"
        },
    )
    # -- what replies may name, and bounds on what creators can make (issue 20, authz) --
    public_url: str = field(
        default="",
        metadata={
            "help": "the gateway's public base URL (https://host[:port]) for "
            "the URLs replies contain (REST proxy v3); empty = "
            "relative URLs. Never taken from the request's Host"
        },
    )
    max_shards: int = field(
        default=256, metadata={"help": "most shards (partitions) a stream may have (400)"}
    )
    max_columns: int = field(default=1000, metadata={"help": "most columns a stream may have (400)"})
    max_schema_versions: int = field(
        default=100, metadata={"help": "most schema versions a stream may keep (400)"}
    )
    max_stream_record_bytes: int = field(
        default=256 * 1024,
        metadata={"help": "largest catalog record of a stream, every schema version included, as JSON (400)"},
    )
    log_level: str = field(default="INFO", metadata={"help": "DEBUG, INFO, WARNING or ERROR"})
    log_format: str = field(default="text", metadata={"help": "text, or json: one JSON object per line"})
    access_log: bool = field(default=False, metadata={"help": "log requests (logger gateway.access)"})
    access_log_sample: float = field(
        default=1.0, metadata={"help": "fraction of requests the access log records (0 < f ≤ 1)"}
    )
    workers: str = field(
        default="1", metadata={"help": "worker processes sharing the port (SO_REUSEPORT); auto = cores"}
    )

    @property
    def embedded(self) -> bool:
        """True when no Kafka is configured and the local development sink is used."""
        return not self.kafka_bootstrap

    @property
    def sink(self) -> str:
        """The sink's name in `gateway.app.SINKS`: `kafka` with a bootstrap address, else `local`."""
        return "local" if self.embedded else "kafka"

    @property
    def min_insync(self) -> int:
        """The min.insync.replicas the gateway's topics get: the setting, else min(2, replication)."""
        return self.min_insync_replicas or min(2, self.replication_factor)

    @property
    def row_bytes_limit(self) -> int:
        """The longest row text a body may hold (`max_row_bytes`, else `batch_max_bytes`)."""
        return self.max_row_bytes or self.batch_max_bytes

    @property
    def worker_count(self) -> int:
        """How many worker processes `workers` asks for (`auto`: one per core)."""
        if self.workers.strip().lower() == "auto":
            return os.cpu_count() or 1
        return int(self.workers)


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
    """Add `--config` and one flag per setting, documenting its environment variable and default."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help=f"TOML file with settings (keys as the flags, with _: queue_max_rows = "
        f"100000); flags and environment variables win over it (env "
        f"{CONFIG_ENV})",
    )
    defaults = Settings()
    for f in fields(Settings):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        help_text = f"{f.metadata.get('help', '')} (env {env_name(f.name)}, default {default!r})"
        if f.type in (bool, "bool"):
            parser.add_argument(
                flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        else:
            parser.add_argument(flag, dest=f.name, default=None, help=help_text)


_TOML_TYPES: dict[str, tuple[type, ...]] = {
    "bool": (bool,),
    "int": (int,),
    "float": (int, float),
    "str": (str,),
    "Path": (str,),
}


def load_file(path: Path) -> dict[str, Any]:
    """Settings from a TOML file; ValueError naming the file for unknown keys and wrong types."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ValueError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"config file {path} is not valid TOML: {exc}") from None
    kinds = {f.name: str(f.type) for f in fields(Settings)}
    values: dict[str, Any] = {}
    value: Any
    for key, value in data.items():
        if key not in kinds:
            close = difflib.get_close_matches(key.replace("-", "_"), kinds, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"config file {path}: unknown setting {key!r}{hint}")
        kind = kinds[key]
        if key == "workers" and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # workers = 4 as well as workers = "auto"
        if not isinstance(value, _TOML_TYPES[kind]) or (kind != "bool" and isinstance(value, bool)):
            raise ValueError(f"config file {path}: {key} must be of type {kind}, got {value!r}")
        values[key] = _convert(kind, str(value)) if kind in ("Path", "float") else value
    return values


def from_sources(args: argparse.Namespace | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Build settings from flags, the environment and the config file (in that order of precedence);
    raise ValueError naming the source when a value is invalid."""
    env = os.environ if environ is None else environ
    config = getattr(args, "config", None) or env.get(CONFIG_ENV)
    values: dict[str, Any] = load_file(Path(config)) if config else {}
    for f in fields(Settings):
        raw = getattr(args, f.name, None) if args is not None else None
        source = "--" + f.name.replace("_", "-")
        if raw is None:
            raw = env.get(env_name(f.name))
            source = env_name(f.name)
        if raw is None:
            continue
        try:
            values[f.name] = raw if isinstance(raw, bool) else _convert(f.type, str(raw))
        except ValueError as exc:
            raise ValueError(f"invalid value {raw!r} for {f.name} ({source}): {exc}") from None
    settings = Settings(**values)
    _check(settings)
    return settings


def _check(s: Settings) -> None:
    positive = (
        "port",
        "default_shards",
        "replication_factor",
        "max_body_bytes",
        "max_decompressed_bytes",
        "queue_max_rows",
        "queue_max_bytes",
        "memory_cap_bytes",
        "batch_max_bytes",
        "kafka_max_unsettled_bytes",
        "max_in_flight_flushes",
        "spool_segment_bytes",
        "max_connections",
        "header_read_timeout_s",
        "body_read_timeout_s",
        "body_total_timeout_s",
        "keepalive_timeout_s",
        "replay_claim_s",
        "partition_stall_ms",
        "kafka_request_timeout_ms",
    )
    for name in positive:
        if getattr(s, name) <= 0:
            raise ValueError(f"{name} must be positive, got {getattr(s, name)}")
    for name in ("max_shards", "max_columns", "max_schema_versions", "max_stream_record_bytes"):
        if getattr(s, name) <= 0:
            raise ValueError(f"{name} must be positive, got {getattr(s, name)}")
    if s.default_shards > s.max_shards:
        raise ValueError(f"default_shards ({s.default_shards}) must be at most max_shards ({s.max_shards})")
    if s.public_url and not s.public_url.startswith(("http://", "https://")):
        raise ValueError(f"public_url must start with http:// or https://, got {s.public_url!r}")
    if s.partition_max_bytes < 0:
        raise ValueError("partition_max_bytes must be ≥ 0 (0 = no bound but the stream's)")
    if s.gc_gen0_threshold < 0:
        raise ValueError("gc_gen0_threshold must be ≥ 0 (0 = Python's default)")
    if s.kafka_max_unsettled_bytes < s.batch_max_bytes:
        raise ValueError("kafka_max_unsettled_bytes must be at least batch_max_bytes")
    if not 1 <= s.port <= 65535:
        raise ValueError(f"port must be 1..65535, got {s.port}")
    if s.max_row_bytes < 0 or s.max_gzip_members < 1:
        raise ValueError("max_row_bytes must be ≥ 0 (0 = --batch-max-bytes) and max_gzip_members ≥ 1")
    if s.max_decoding_requests < 0:
        raise ValueError(f"max_decoding_requests must be ≥ 0 (0 = no cap), got {s.max_decoding_requests}")
    for name in ("key_share", "address_share"):
        if not 0 < getattr(s, name) <= 1:
            raise ValueError(f"{name} must be in (0, 1], got {getattr(s, name)}")
    if not 0 <= s.admin_reserve < 1:
        raise ValueError(f"admin_reserve must be in [0, 1), got {s.admin_reserve}")
    if s.body_min_bytes_per_s < 0 or s.body_rate_window_s <= 0:
        raise ValueError("body_min_bytes_per_s must be ≥ 0 and body_rate_window_s positive")
    if s.max_head_bytes < 1024 or s.max_headers < 1:
        raise ValueError("max_head_bytes must be at least 1024 and max_headers positive")
    try:
        parse_networks(s.share_exempt_addresses)
    except ValueError as exc:
        raise ValueError(f"share_exempt_addresses: {exc}") from None
    if s.max_loop_lag_ms < 0:
        raise ValueError(f"max_loop_lag_ms must be ≥ 0 (0 = no such rule), got {s.max_loop_lag_ms}")
    if s.rate_limit_per_key < 0:
        raise ValueError(f"rate_limit_per_key must be ≥ 0, got {s.rate_limit_per_key}")
    if s.linger_ms < 0 or s.wait_timeout_s <= 0 or s.drain_timeout_s < 0:
        raise ValueError("linger_ms must be ≥ 0, wait_timeout_s > 0 and drain_timeout_s ≥ 0")
    if s.stream_max_bytes_per_s < 0:
        raise ValueError("stream_max_bytes_per_s must be ≥ 0 (0 = no limit)")
    if not 0 <= s.min_insync_replicas <= s.replication_factor:
        raise ValueError(
            f"min_insync_replicas must be 0..replication_factor ({s.replication_factor}),"
            f" got {s.min_insync_replicas}: acks=all could never be met"
        )
    if s.kafka_probe_interval_s <= 0 or s.kafka_unreachable_after_s <= 0:
        raise ValueError("kafka_probe_interval_s and kafka_unreachable_after_s must be positive")
    if s.rate_share_interval_ms < 0:
        raise ValueError(
            f"rate_share_interval_ms must be ≥ 0 (0 = per process), got {s.rate_share_interval_ms}"
        )
    if not s.catalog_topic.strip():
        raise ValueError("catalog_topic must not be empty")
    if s.log_level.upper() not in LOG_LEVELS:
        raise ValueError(f"log_level must be DEBUG, INFO, WARNING or ERROR, got {s.log_level!r}")
    if s.log_format not in ("text", "json"):
        raise ValueError(f"log_format must be text or json, got {s.log_format!r}")
    if not 0 < s.access_log_sample <= 1:
        raise ValueError(f"access_log_sample must be in (0, 1], got {s.access_log_sample}")
    try:
        parse_anonymous_scopes(s.anonymous_scopes)
    except ValueError as exc:
        raise ValueError(f"anonymous_scopes: {exc}") from None
    if s.anonymous_rate_limit < 1:
        raise ValueError(f"anonymous_rate_limit must be positive, got {s.anonymous_rate_limit}")
    try:
        parse_origins(s.cors_allow_origins)
    except ValueError as exc:
        raise ValueError(f"cors_allow_origins: {exc}") from None
    workers = s.workers.strip().lower()
    if workers != "auto" and not (workers.isdigit() and int(workers) >= 1):
        raise ValueError(f"workers must be a positive integer or auto, got {s.workers!r}")
    if s.worker_count > 1 and s.embedded:
        raise ValueError(
            "workers > 1 needs Kafka (--kafka-bootstrap): the embedded development "
            "sink and its files belong to one process"
        )
