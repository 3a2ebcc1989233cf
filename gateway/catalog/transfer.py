"""`ingest-gateway catalog export | import`: the catalog (streams and API keys) copied between
stores, directly, with no gateway in between: embedded mode's `<data-dir>/catalog.json` and the
Kafka catalog topic shared by the replicas. The file is the catalog's own format (the one
catalog.json holds): API keys as salted hashes only, so the keys themselves keep working."""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec
from aiokafka.admin import AIOKafkaAdminClient

from gateway.app import make_catalog_backend as backend_of
from gateway.catalog.model import PARTITIONERS, CatalogState
from gateway.catalog.store import Catalog
from gateway.config import Settings
from gateway.sinks.kafka_topics import create_topics


async def export_catalog(settings: Settings) -> bytes:
    """The whole catalog as JSON (catalog.json's format)."""
    catalog = Catalog(backend_of(settings))
    await catalog.start()
    try:
        return msgspec.json.format(msgspec.json.encode(catalog.snapshot()), indent=2)
    finally:
        await catalog.close()


@dataclass
class Imported:
    """What an import did: names of streams and ids of keys added, and those already there."""

    streams: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    kept_streams: list[str] = field(default_factory=list)
    kept_keys: list[str] = field(default_factory=list)


async def import_catalog(settings: Settings, data: bytes) -> Imported:
    """Add the file's streams (with their Kafka topics) and API keys to the store; a stream or a
    key the store already has is kept as it is. Raises ValueError for a file that is not a
    catalog."""
    try:
        state = msgspec.json.decode(data, type=CatalogState)
    except msgspec.DecodeError as exc:
        raise ValueError(f"not a catalog export: {exc}") from None
    for name, stream in sorted(state.streams.items()):
        if stream.partitioner not in PARTITIONERS:
            raise ValueError(
                f"stream {name!r}: unknown partitioner {stream.partitioner!r}; "
                f"one of {', '.join(PARTITIONERS)}"
            )
    done = Imported()
    catalog = Catalog(backend_of(settings))
    await catalog.start()
    admin = None
    try:
        if not settings.embedded:
            admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
            await admin.start()
        for name in sorted(state.streams):
            stream = state.streams[name]
            if catalog.stream(name) is not None:
                done.kept_streams.append(name)
                continue
            if admin is not None:
                await create_topics(admin, stream)
            if await catalog.put_stream(stream, create=True):
                done.streams.append(name)
            else:  # created meanwhile through a replica
                done.kept_streams.append(name)
        for key_id, key in sorted(state.keys.items()):
            if catalog.api_key(key_id) is not None:
                done.kept_keys.append(key_id)
                continue
            await catalog.put_key(key)
            done.keys.append(key_id)
    finally:
        if admin is not None:
            await admin.close()
        await catalog.close()
    return done
