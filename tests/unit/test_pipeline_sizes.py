"""A row whose JSON value cannot fit a record batch is refused (413 naming it) before anything is
queued, whether the request's rows stay one run of lines (unkeyed) or a value each (keyed)."""

from __future__ import annotations

import pytest

from gateway.catalog.model import Column, Stream
from gateway.errors import PayloadTooLarge
from gateway.ingest.schema import SchemaCache
from gateway.pipeline import Pipeline


class OpenGate:
    """An admission whose gate lets every request through (nothing else is reached)."""

    def gate(self, *, wait: bool) -> None:
        pass


@pytest.mark.parametrize("mode", ["append", "versioned_kv"])
async def test_a_row_larger_than_a_record_is_413(mode: str) -> None:
    stream = Stream(
        "s",
        [Column("id", "int64"), Column("text", "string")],
        "ingest.s",
        mode=mode,
        primary_key="id" if mode != "append" else "",
    )
    schemas = SchemaCache()
    pipeline = Pipeline(
        None,
        schemas,
        OpenGate(),
        wait_timeout_s=1.0,  # type: ignore[arg-type]
        max_record_bytes=100,
    )
    body = b'{"id":1,"text":"x"}\n{"id":2,"text":"%s"}\n{"id":3,"text":"y"}\n' % (b"z" * 90)
    rows = schemas.get(stream).decode_ndjson(body, 0)
    with pytest.raises(PayloadTooLarge) as refused:
        await pipeline.admit(stream, rows, wait=False)
    assert refused.value.row == 1
    assert "row 1 is 108 bytes as JSON" in refused.value.message
