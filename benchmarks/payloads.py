"""Benchmark payloads: rows of ~150 B with 8 typed columns, generated once per run with unique ids,
framed as NDJSON or compact bodies (optionally gzip), and pools of distinct request bodies."""

from __future__ import annotations

import datetime
import gzip
import random
from dataclasses import dataclass
from typing import Any

import msgspec

# The stream schema every benchmark stream uses (the gateway's create-stream body).
COLUMNS: list[dict[str, str]] = [
    {"name": "id", "type": "string"},
    {"name": "seq", "type": "int64"},
    {"name": "value", "type": "float64"},
    {"name": "ok", "type": "bool"},
    {"name": "at", "type": "datetime64(3)"},
    {"name": "tags", "type": "array(string)"},
    {"name": "note", "type": "nullable(string)"},
    {"name": "code", "type": "uint32"},
]
COLUMN_NAMES = [c["name"] for c in COLUMNS]
_TAGS = ["web", "ios", "android", "eu-west", "us-east", "beta", "checkout", "search", "cart"]
_NOTES = [None, None, "retry", "slow path", "cache miss", "user=anonymous"]
_EPOCH = datetime.datetime(2024, 5, 1, tzinfo=datetime.UTC)


@dataclass(frozen=True, slots=True)
class Payload:
    """What one request carries: the framing, rows per request, and whether it is gzipped."""

    fmt: str  # "ndjson", "compact" or "restproxy" (a Kafka REST Proxy v2 json produce body)
    rows: int
    gzip: bool = False

    @property
    def key(self) -> str:
        """A short name, e.g. `ndjson100`, `compact1000`, `ndjson1000gz`."""
        return f"{self.fmt}{self.rows}{'gz' if self.gzip else ''}"

    @property
    def content_type(self) -> str:
        if self.fmt == "restproxy":
            return "application/vnd.kafka.json.v2+json"
        return "application/x-ndjson" if self.fmt == "ndjson" else "application/json"


@dataclass(frozen=True, slots=True)
class Body:
    """One pre-built request body and the rows it holds."""

    data: bytes
    rows: int
    raw_bytes: int  # size before compression


class RowFactory:
    """Rows with unique ids (`<run>-<n>`); the values vary but are deterministic for a seed."""

    def __init__(self, run_tag: str, seed: int = 1) -> None:
        self.run_tag = run_tag
        self.rng = random.Random(seed)
        self.count = 0

    def row(self) -> list[Any]:
        """One row as a list in COLUMNS order."""
        rng = self.rng
        n = self.count
        self.count += 1
        at = _EPOCH + datetime.timedelta(milliseconds=n * 7 + rng.randrange(1000))
        return [
            f"{self.run_tag}-{n:09d}",
            n,
            round(rng.uniform(0, 10_000), 3),
            rng.random() < 0.5,
            at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z",
            rng.sample(_TAGS, rng.randrange(1, 4)),
            rng.choice(_NOTES),
            rng.randrange(100, 600),
        ]


_encoder = msgspec.json.Encoder()


def ndjson_line(row: list[Any]) -> bytes:
    """A row as one NDJSON line (an object with every column), newline included."""
    return _encoder.encode(dict(zip(COLUMN_NAMES, row, strict=True))) + b"\n"


def make_body(payload: Payload, rows: list[list[Any]]) -> Body:
    """Frame rows as the payload's format, then gzip when asked."""
    if payload.fmt == "ndjson":
        raw = b"".join(ndjson_line(r) for r in rows)
    elif payload.fmt == "compact":
        raw = _encoder.encode({"columns": COLUMN_NAMES, "data": rows})
    elif payload.fmt == "restproxy":
        raw = _encoder.encode({"records": [{"value": dict(zip(COLUMN_NAMES, r, strict=True))} for r in rows]})
    else:
        raise ValueError(f"unknown payload format {payload.fmt!r}")
    data = gzip.compress(raw, compresslevel=6, mtime=0) if payload.gzip else raw
    return Body(data, len(rows), len(raw))


def pool_size(payload: Payload, target_rows: int = 20_000, minimum: int = 16) -> int:
    """How many distinct bodies to pre-build: about `target_rows` rows, at least `minimum` bodies."""
    return max(minimum, target_rows // payload.rows)


def make_pool(payload: Payload, factory: RowFactory, size: int | None = None) -> list[Body]:
    """`size` distinct bodies (every row of every body has its own id)."""
    count = pool_size(payload) if size is None else size
    return [make_body(payload, [factory.row() for _ in range(payload.rows)]) for _ in range(count)]


def sample_lines(factory: RowFactory, count: int) -> list[bytes]:
    """`count` rows as NDJSON lines without the newline (record values for the producer ceilings)."""
    return [ndjson_line(factory.row())[:-1] for _ in range(count)]
