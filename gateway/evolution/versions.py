"""Schema versions of a stream: a new column list becomes version N+1 when the stream's
compatibility mode accepts it; earlier versions stay in the stream's catalog record, unchanged."""

from __future__ import annotations

import msgspec

from gateway.catalog.model import COMPATIBILITY_MODES, Column, SchemaVersion, Stream
from gateway.errors import BadRequest, Conflict, NotFound
from gateway.evolution.compat import Reason, check


class Incompatible(Conflict):
    """A schema change the stream's compatibility mode refuses; `reasons` lists every rule broken."""

    code = "incompatible_schema"

    def __init__(self, message: str, reasons: list[Reason]) -> None:
        super().__init__(message)
        self.reasons = reasons


def versions(stream: Stream) -> list[SchemaVersion]:
    """Every version of the stream's schema, oldest first (the last is the current one)."""
    current = SchemaVersion(
        stream.schema_version,
        stream.columns,
        stream.primary_key,
        stream.schema_created_at or stream.created_at,
        stream.schema_created_by or stream.created_by,
    )
    return [*stream.schemas, current]


def version(stream: Stream, number: int) -> SchemaVersion:
    """One version of the stream's schema, or 404."""
    for v in versions(stream):
        if v.version == number:
            return v
    raise NotFound(f"stream {stream.name!r} has no schema version {number}")


def _same(a: list[Column], b: list[Column]) -> bool:
    """Equal as schemas (descriptions aside; an empty default is no default)."""

    def shape(cols: list[Column]) -> list[tuple[str, str, str | None, bool]]:
        return [(c.name, c.type, c.default or None, c.nullable) for c in cols]

    return shape(a) == shape(b)


def evolve(
    stream: Stream, columns: list[Column], primary_key: str | None, *, mode: str, by: str, now: str
) -> Stream:
    """The stream with `columns` as its new current version (the same stream when they do not
    change); 409 `Incompatible` listing every reason when `mode` refuses the change."""
    if mode not in COMPATIBILITY_MODES:
        raise BadRequest(f"invalid compatibility {mode!r}; one of {', '.join(COMPATIBILITY_MODES)}")
    new_key = stream.primary_key if primary_key is None else primary_key
    if _same(columns, stream.columns) and new_key == stream.primary_key:
        return stream
    keyed = stream.keyed
    reasons = check(
        stream.columns,
        columns,
        mode,
        old_key=stream.primary_key if keyed else "",
        new_key=new_key if keyed else "",
    )
    if reasons:
        raise Incompatible(
            f"the new columns of stream {stream.name!r} are not {mode}-compatible"
            f" with version {stream.schema_version}: "
            + "; ".join(f"{r.column or 'primary key'}: {r.rule}" for r in reasons),
            reasons,
        )
    previous = versions(stream)[-1]
    return msgspec.structs.replace(
        stream,
        columns=columns,
        primary_key=new_key,
        schema_version=stream.schema_version + 1,
        schema_created_at=now,
        schema_created_by=by,
        schemas=[*stream.schemas, previous],
        last_updated_at=now,
        last_updated_by=by,
    )
