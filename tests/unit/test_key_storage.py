"""API keys in the embedded catalog file: salted hashes only, and gone once deleted."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.auth import ID_LEN, Authenticator, new_key
from gateway.catalog.file import FileBackend
from gateway.catalog.store import Catalog
from gateway.errors import Unauthenticated


async def test_catalog_file_holds_salted_hashes_only(tmp_path: Path) -> None:
    path = tmp_path / "catalog.json"
    catalog = Catalog(FileBackend(path))
    await catalog.start()
    key, record = new_key("k", scopes=["DATASOURCE:APPEND"], expire_at=0, created_by="admin")
    other, other_record = new_key("k", scopes=[], expire_at=0, created_by="admin")
    await catalog.put_key(record)
    await catalog.put_key(other_record)
    stored = path.read_text()
    for secret in (key, other):
        assert secret[ID_LEN:] not in stored and secret[ID_LEN + 4 : -4] not in stored
    assert record.digest in stored and record.salt in stored
    assert record.salt != other_record.salt and len(record.salt) >= 32
    # Read back by a new process: the key still authenticates, against the stored hash.
    reopened = Catalog(FileBackend(path))
    await reopened.start()
    auth = Authenticator(reopened, "the-admin-key-0123456789")
    assert auth.authenticate(key).key_id == record.id
    await reopened.delete_key(record.id)
    again = Catalog(FileBackend(path))
    await again.start()
    with pytest.raises(Unauthenticated, match="invalid"):
        Authenticator(again, "the-admin-key-0123456789").authenticate(key)
    assert Authenticator(again, "x" * 20).authenticate(other).key_id == other_record.id
