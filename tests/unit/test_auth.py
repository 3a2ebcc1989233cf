"""API keys: header styles, admin key, hashed keys from new_key, expiry, scopes, masking."""

from __future__ import annotations

import re
import time

import msgspec
import pytest
from multidict import CIMultiDict

import gateway.auth
from gateway.auth import (
    ADMIN,
    APPEND,
    CREATE,
    DEFAULT_SCOPES,
    ID_LEN,
    Authenticator,
    Principal,
    key_from_headers,
    mask,
    new_key,
)
from gateway.catalog.changes import Change, api_key_key, encode
from gateway.catalog.model import ApiKey
from gateway.catalog.store import Catalog
from gateway.errors import Forbidden, Unauthenticated

ADMIN_KEY = "admin-key-for-tests-0123456789"


class MemoryBackend:
    """A catalog log in memory: every change is kept, and applied at once."""

    def __init__(self) -> None:
        self.changes: list[Change] = []
        self.catalog: Catalog | None = None

    async def start(self, catalog: Catalog) -> None:
        self.catalog = catalog

    async def append(self, change: Change) -> None:
        assert self.catalog is not None
        self.changes.append(change)
        self.catalog.apply(change)

    async def close(self) -> None:
        pass


@pytest.fixture
async def catalog() -> Catalog:
    cat = Catalog(MemoryBackend())
    await cat.start()
    return cat


@pytest.fixture
def auth(catalog: Catalog) -> Authenticator:
    return Authenticator(catalog, ADMIN_KEY)


async def stored_key(
    catalog: Catalog, *, scopes: list[str] | None = None, expire_at: int = 0, name: str = "ci"
) -> tuple[str, ApiKey]:
    key, record = new_key(
        name,
        scopes=list(DEFAULT_SCOPES if scopes is None else scopes),
        expire_at=expire_at,
        created_by="admin",
    )
    await catalog.put_key(record)
    return key, record


# ---- extraction ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"X-Api-Key": "k1"}, "k1"),
        ({"X-Api-Key": "  k1 "}, "k1"),
        ({"Authorization": "ApiKey k2"}, "k2"),
        ({"Authorization": "apikey   k2  "}, "k2"),
        ({"Authorization": "Bearer k3"}, "k3"),
        ({"Authorization": "BEARER k3"}, "k3"),
        ({"X-Api-Key": "k1", "Authorization": "Bearer k3"}, "k1"),
        ({"X-Api-Key": "", "Authorization": "Bearer k3"}, "k3"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, None),
        ({"Authorization": "Bearer"}, None),
        ({"Authorization": "Bearer   "}, None),
        ({"Authorization": "k3"}, None),
        ({}, None),
    ],
)
def test_key_from_headers(headers: dict[str, str], expected: str | None) -> None:
    assert key_from_headers(CIMultiDict(headers)) == expected


def test_header_names_are_case_insensitive_with_http_headers() -> None:
    assert key_from_headers(CIMultiDict({"x-api-key": "k"})) == "k"
    assert key_from_headers(CIMultiDict({"AUTHORIZATION": "Bearer t"})) == "t"


def test_query_token_only_when_the_query_is_passed() -> None:
    query = {"token": " qk "}
    assert key_from_headers(CIMultiDict(), None) is None
    assert key_from_headers(CIMultiDict(), query) == "qk"
    assert key_from_headers(CIMultiDict(), {"token": ""}) is None
    assert key_from_headers(CIMultiDict(), {"other": "x"}) is None
    assert key_from_headers(CIMultiDict({"X-Api-Key": "hk"}), query) == "hk"  # headers win


# ---- authentication -----------------------------------------------------------------------------
def test_admin_key(auth: Authenticator) -> None:
    principal = auth.authenticate(ADMIN_KEY)
    assert principal.admin
    assert principal.key_id == "admin"
    principal.require_admin()
    principal.require_manage()
    principal.require_append("anything")


@pytest.mark.parametrize("key", [None, ""])
def test_missing_key(auth: Authenticator, key: str | None) -> None:
    with pytest.raises(Unauthenticated, match="missing") as info:
        auth.authenticate(key)
    assert info.value.status == 401


@pytest.mark.parametrize(
    "key", [ADMIN_KEY + "x", ADMIN_KEY[:-1], ADMIN_KEY.upper(), "nope", "x" * ID_LEN, "x" * 60]
)
def test_unknown_keys_rejected(auth: Authenticator, key: str) -> None:
    with pytest.raises(Unauthenticated, match="invalid"):
        auth.authenticate(key)


async def test_new_key_authenticates(auth: Authenticator, catalog: Catalog) -> None:
    key, record = await stored_key(catalog, scopes=[APPEND], name="ingest")
    principal = auth.authenticate(key)
    assert principal == Principal(record.id, record.name, frozenset({APPEND}))
    assert not principal.admin
    assert principal.key_id == key[:ID_LEN]


async def test_wrong_secret_with_valid_id_prefix_rejected(auth: Authenticator, catalog: Catalog) -> None:
    key, _ = await stored_key(catalog)
    last = "A" if key[-1] != "A" else "B"
    for wrong in (
        key[:-1] + last,
        key[:ID_LEN] + "x" * (len(key) - ID_LEN),
        key[: ID_LEN + 1],
        key + "x",
        key[:ID_LEN],
    ):
        with pytest.raises(Unauthenticated):
            auth.authenticate(wrong)
    assert auth.authenticate(key).key_id == key[:ID_LEN]


async def test_expired_key_rejected(auth: Authenticator, catalog: Catalog) -> None:
    expired, _ = await stored_key(catalog, expire_at=int(time.time()) - 1)
    with pytest.raises(Unauthenticated, match=r"^invalid API key$"):  # as an unknown key
        auth.authenticate(expired)
    future, _ = await stored_key(catalog, expire_at=int(time.time()) + 3600)
    assert auth.authenticate(future)
    forever, _ = await stored_key(catalog, expire_at=0)
    assert auth.authenticate(forever)


async def test_deleted_key_rejected(auth: Authenticator, catalog: Catalog) -> None:
    key, record = await stored_key(catalog)
    auth.authenticate(key)
    await catalog.delete_key(record.id)
    with pytest.raises(Unauthenticated):
        auth.authenticate(key)


@pytest.fixture
def digests(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every salted digest the authenticator computes (the full check's cost), by salt."""
    made: list[str] = []
    real = gateway.auth._digest

    def counting(salt: str, key: str) -> str:
        made.append(salt)
        return real(salt, key)

    monkeypatch.setattr(gateway.auth, "_digest", counting)
    return made


async def test_a_checked_key_is_remembered(auth: Authenticator, catalog: Catalog, digests: list[str]) -> None:
    key, _ = await stored_key(catalog)
    for k in (key, ADMIN_KEY):
        first = auth.authenticate(k)
        count = len(digests)
        assert auth.authenticate(k) is first and auth.authenticate(k) is first
        assert len(digests) == count  # no digest for a key already checked
    for _ in range(3):  # keys that fail are checked every time, never remembered
        with pytest.raises(Unauthenticated):
            auth.authenticate(key[:-1] + "!")
    assert len(digests) == count + 6


async def test_a_remembered_key_is_revoked_at_once(auth: Authenticator, catalog: Catalog) -> None:
    key, record = await stored_key(catalog)
    auth.authenticate(key)
    auth.authenticate(key)
    await catalog.delete_key(record.id)
    with pytest.raises(Unauthenticated, match="invalid"):
        auth.authenticate(key)


async def test_a_changed_record_is_checked_afresh(
    auth: Authenticator, catalog: Catalog, digests: list[str]
) -> None:
    """Another replica changes the key's record (here: its scopes): the next use sees the change."""
    key, record = await stored_key(catalog, scopes=[APPEND])
    assert auth.authenticate(key).scopes == {APPEND}
    log_key = api_key_key(record.id)
    changed = msgspec.structs.replace(record, permissions=[CREATE])
    assert catalog.apply(Change(log_key, encode(changed), "w2", catalog.version(log_key) or ""))
    count = len(digests)
    assert auth.authenticate(key).scopes == {CREATE}
    assert len(digests) == count + 2  # checked again: admin digest, then the record's


async def test_a_reloaded_catalog_checks_keys_afresh(
    auth: Authenticator, catalog: Catalog, digests: list[str]
) -> None:
    key, record = await stored_key(catalog)
    auth.authenticate(key)
    await catalog.start()  # a reload replays the log from scratch: every record is a new object
    for change in catalog._backend.changes:  # type: ignore[attr-defined]
        catalog.apply(change)
    count = len(digests)
    assert auth.authenticate(key).key_id == record.id
    assert len(digests) == count + 2


async def test_a_remembered_key_expires_on_time(
    auth: Authenticator, catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = time.time()
    key, _ = await stored_key(catalog, expire_at=int(now) + 60)
    auth.authenticate(key)
    monkeypatch.setattr(gateway.auth.time, "time", lambda: now + 61)
    with pytest.raises(Unauthenticated, match=r"^invalid API key$"):
        auth.authenticate(key)


async def test_stored_record_never_contains_the_key(catalog: Catalog) -> None:
    key, record = await stored_key(catalog, name="svc")
    secret = key[ID_LEN:]
    stored = msgspec.json.encode(record)
    persisted = b"".join(c.key.encode() + (c.value or b"") for c in catalog._backend.changes)  # type: ignore[attr-defined]
    for blob in (stored, persisted):
        assert key.encode() not in blob
        assert secret.encode() not in blob
        assert secret[4:-4].encode() not in blob
    assert record.id == key[:ID_LEN]
    assert record.masked == mask(key)
    assert record.name == f"svc ({mask(key)})"
    assert record.digest != key and len(record.digest) == 64
    assert record.permissions == list(DEFAULT_SCOPES)
    assert record.created_by == "admin"
    assert abs(record.created_at - time.time()) < 60


def test_new_keys_are_unique_and_well_formed() -> None:
    made = [new_key("", scopes=[], expire_at=0, created_by="t") for _ in range(20)]
    keys = {k for k, _ in made}
    assert len(keys) == 20
    assert len({r.id for _, r in made}) == 20
    assert len({r.salt for _, r in made}) == 20
    for key, record in made:
        assert re.fullmatch(r"[A-Za-z0-9]{60}", key)
        assert record.name == mask(key)


# ---- scopes -------------------------------------------------------------------------------------
def principal(*scopes: str) -> Principal:
    return Principal("id", "name", frozenset(scopes))


def test_scope_append_to_one_stream() -> None:
    p = principal(f"{APPEND}:clicks")
    p.require_append("clicks")
    with pytest.raises(Forbidden) as info:
        p.require_append("orders")
    assert info.value.status == 403
    with pytest.raises(Forbidden):
        p.require_append("click")
    with pytest.raises(Forbidden):
        p.require_manage()
    with pytest.raises(Forbidden):
        p.require_admin()


def test_scope_append_to_all_streams() -> None:
    p = principal(APPEND)
    p.require_append("a")
    p.require_append("b")
    with pytest.raises(Forbidden):
        p.require_manage()


def test_scope_create_implies_manage_and_append() -> None:
    p = principal(CREATE)
    p.require_manage()
    p.require_append("x")
    with pytest.raises(Forbidden):
        p.require_admin()


def test_scope_admin() -> None:
    p = principal(ADMIN)
    assert p.admin
    p.require_admin()
    p.require_manage()
    p.require_append("x")


def test_no_scopes() -> None:
    p = principal()
    assert not p.admin
    for check in (lambda: p.require_append("x"), p.require_manage, p.require_admin):
        with pytest.raises(Forbidden):
            check()


# ---- masking ------------------------------------------------------------------------------------
def test_mask_format() -> None:
    assert mask("abcdefghijklmnopwxyz") == "abcd****wxyz"
    key, _ = new_key("", scopes=[], expire_at=0, created_by="t")
    assert re.fullmatch(r"[A-Za-z0-9]{4}\*{4}[A-Za-z0-9]{4}", mask(key))
    assert mask(key) == key[:4] + "****" + key[-4:]
