"""The catalog's records: streams with their columns, and API keys (stored only as salted hashes)."""

from __future__ import annotations

import re

import msgspec

STREAM_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
MODES = ("append", "changelog", "changelog_kv", "versioned_kv")
KEYED_MODES = ("changelog_kv", "versioned_kv")
DEFAULT_RETENTION_MS = 7 * 24 * 3600 * 1000
DEFAULT_RETENTION_BYTES = 10 * 1024**3


def valid_stream_name(name: str) -> bool:
    """Letters, digits and `_`, starting with a letter, at most 64 characters (the reference's rule)."""
    return STREAM_NAME.fullmatch(name) is not None


class Column(msgspec.Struct, omit_defaults=False):
    """One column of a stream: its name, type (e.g. `int64`, `nullable(string)`) and default."""

    name: str
    type: str
    default: str | None = None
    nullable: bool = False
    description: str = ""


COMPATIBILITY_MODES = ("backward", "forward", "full", "none")
ON_ERROR = ("reject", "quarantine")
# How keys choose their partition (gateway.sinks.key_partitions): Java's murmur2 (the default, as
# Confluent REST Proxy) or librdkafka's default CRC-32 (as Karapace and librdkafka clients)
DEFAULT_PARTITIONER = "murmur2"
PARTITIONERS = (DEFAULT_PARTITIONER, "consistent_random")


class SchemaVersion(msgspec.Struct):
    """One immutable earlier version of a stream's schema (the current one is the stream's own
    `columns` and `schema_version`)."""

    version: int
    columns: list[Column]
    primary_key: str = ""
    created_at: str = ""
    created_by: str = ""


class ReplayMark(msgspec.Struct):
    """Where an unfinished replay page may have written (see gateway.evolution.replay): the
    stream's and its quarantine topic's end offsets when the page was claimed, its limit, and
    the token its records carry."""

    stream: dict[int, int]
    quarantine: dict[int, int]
    limit: int
    token: str


class Stream(msgspec.Struct):
    """A stream: a schema, the Kafka topic holding its rows, and its storage settings.

    `schema_version` numbers the current `columns` (1 at creation); `schemas` keeps every earlier
    version, oldest first. `quarantine_replayed` is the quarantine topic's replay position:
    partition → the first offset not replayed yet (absent: from the beginning).
    """

    name: str
    columns: list[Column]
    topic: str
    description: str = ""
    mode: str = "append"
    primary_key: str = ""
    shards: int = 1
    replication_factor: int = 1
    logstore_retention_ms: int = DEFAULT_RETENTION_MS
    logstore_retention_bytes: int = DEFAULT_RETENTION_BYTES
    event_time_column: str = ""
    event_time_timezone: str = ""
    ttl_expression: str = ""
    archived: bool = False
    created_at: str = ""
    created_by: str = ""
    last_updated_at: str = ""
    last_updated_by: str = ""
    schema_version: int = 1
    schema_created_at: str = ""
    schema_created_by: str = ""
    schemas: list[SchemaVersion] = msgspec.field(default_factory=list)
    compatibility: str = "backward"
    on_error: str = "reject"
    partitioner: str = DEFAULT_PARTITIONER  # one of PARTITIONERS; absent in older catalogs
    quarantine_replayed: dict[int, int] = msgspec.field(default_factory=dict)
    replay_claim: str = ""  # "<replica> <until epoch s>" while a replica replays the quarantine
    replay_mark: ReplayMark | None = None  # set while a replay page is not known to be finished
    # pass-through: values are stored as the client sent them, never validated as rows (REST
    # proxy only; see gateway.dialects.restproxy_raw). `compacted`: its topic is created with
    # cleanup.policy=compact, every record keyed, and a null value is a tombstone.
    passthrough: bool = False
    compacted: bool = False

    @property
    def keyed(self) -> bool:
        """True for `*_kv` modes, whose rows carry the primary key as the Kafka record key."""
        return self.mode in KEYED_MODES

    @property
    def quarantine_topic(self) -> str:
        """The topic of rows that failed validation (`-`, unlike `.`/`_`, cannot collide in Kafka)."""
        return self.topic + "-quarantine"

    def key_columns(self) -> list[str]:
        """The primary key's column names, in order (empty for unkeyed streams)."""
        return [c.strip() for c in self.primary_key.split(",") if c.strip()] if self.keyed else []


class ApiKey(msgspec.Struct):
    """An API key as stored: never the key itself, only a salted hash of it."""

    id: str
    name: str
    salt: str
    digest: str
    masked: str
    created_at: int
    expire_at: int = 0
    permissions: list[str] = msgspec.field(default_factory=list)
    created_by: str = ""
    rate_limit: int = 0  # requests per second on rate-limited routes; 0 = the gateway's default
    allowed_origins: list[str] = msgspec.field(default_factory=list)  # empty = any (see cors.py)


class CatalogState(msgspec.Struct):
    """Everything the catalog holds, as persisted."""

    streams: dict[str, Stream] = msgspec.field(default_factory=dict)
    keys: dict[str, ApiKey] = msgspec.field(default_factory=dict)
