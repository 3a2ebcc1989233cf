"""One catalog change as a log record, and the rule every replica applies to decide whether it counts.

A change is what a backend persists and replays: `key` names the entity (`stream:<name>` or
`key:<id>`), `value` is the msgspec-JSON record (None deletes, a Kafka tombstone), `wid` is the
write's unique id and `prev` the version the writer based it on (`""` = "the entity is absent").

The rule (the same on every replica, applied in log order, so all replicas agree):
- an entity's version is the `wid` of the last change applied to it, or `""` once deleted;
- a change applies when the replica has not seen its key yet, or when its `prev` equals the
  key's current version. Otherwise it is ignored (a lost race: the loser's request gets 409).
Two creates of one name both carry `prev=""`: the first in log order sets the version to its own
`wid`, so the second no longer matches and is ignored. "Not seen yet" only happens for the first
record of a key, which in a compacted log may be the survivor of older, removed records.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import msgspec

from gateway.catalog.model import ApiKey, CatalogState, Stream

STREAM_PREFIX = "stream:"
KEY_PREFIX = "key:"
ABSENT = ""  # the version of a deleted entity, and the `prev` of a create

_stream_decoder = msgspec.json.Decoder(Stream)
_key_decoder = msgspec.json.Decoder(ApiKey)
_encoder = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class Change:
    """One record of the catalog log."""

    key: str
    value: bytes | None
    wid: str
    prev: str

    @property
    def repair(self) -> bool:
        """A repair re-asserts the current version (`wid == prev`): see `Catalog` for why."""
        return self.wid == self.prev


def stream_key(name: str) -> str:
    """The log key of a stream."""
    return STREAM_PREFIX + name


def api_key_key(key_id: str) -> str:
    """The log key of an API key record."""
    return KEY_PREFIX + key_id


def encode(record: Stream | ApiKey) -> bytes:
    """The log value of a record (msgspec JSON)."""
    return _encoder.encode(record)


def entity(key: str) -> tuple[Literal["stream", "key"], str] | None:
    """("stream", name) or ("key", id) of a log key; None for keys this version does not know."""
    if key.startswith(STREAM_PREFIX):
        return "stream", key[len(STREAM_PREFIX) :]
    if key.startswith(KEY_PREFIX):
        return "key", key[len(KEY_PREFIX) :]
    return None


def decode(change: Change) -> Stream | ApiKey | None:
    """The record a change carries (None for a delete); raises ValueError when it is unreadable."""
    kind = entity(change.key)
    if kind is None:
        raise ValueError(f"unknown catalog key {change.key!r}")
    if change.value is None:
        return None
    try:
        record: Stream | ApiKey = (_stream_decoder if kind[0] == "stream" else _key_decoder).decode(
            change.value
        )
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
        raise ValueError(f"unreadable catalog record {change.key!r}: {exc}") from None
    name = record.name if isinstance(record, Stream) else record.id
    if name != kind[1]:
        raise ValueError(f"catalog record {change.key!r} holds {name!r}")
    return record


def admits(versions: dict[str, str], change: Change) -> bool:
    """The conflict rule: unseen key, or `prev` equal to the key's current version."""
    current = versions.get(change.key)
    return current is None or current == change.prev


def put(state: CatalogState, key: str, record: Stream | ApiKey | None) -> None:
    """Store (or with None remove) the record of `key` in `state`."""
    kind = entity(key)
    if kind is None:
        return
    what, ident = kind
    if record is None:
        if what == "stream":
            state.streams.pop(ident, None)
        else:
            state.keys.pop(ident, None)
    elif isinstance(record, Stream):
        state.streams[ident] = record
    else:
        state.keys[ident] = record
