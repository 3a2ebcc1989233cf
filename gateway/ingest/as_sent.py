"""A pass-through stream's values as Kafka records: kept as the client sent them, never encoded."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class AsSent:
    """What `CompiledSchema.encode` makes of rows (`Encoded`), for values kept as sent: one bytes
    object per record, None for a tombstone (a record with no value). Keys travel in the
    request's RecordMeta, never here."""

    values: list[bytes | None]
    keys: None = None

    @property
    def rows(self) -> int:
        """How many records."""
        return len(self.values)

    @property
    def nbytes(self) -> int:
        """The values' size, one byte each added (as `Encoded` counts a newline per row)."""
        return sum(len(v) for v in self.values if v is not None) + len(self.values)
