"""API keys: extraction from every header style, salted hashing, constant-time checks, scopes."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
import time
from collections.abc import Mapping
from dataclasses import dataclass

from gateway.catalog.model import ApiKey
from gateway.catalog.store import Catalog
from gateway.errors import Forbidden, Unauthenticated
from gateway.log_sanitize import register_secret
from gateway.scopes import ADMIN, APPEND, CREATE, READ
from gateway.scopes import DEFAULT_SCOPES as DEFAULT_SCOPES  # re-exported (tests, older imports)

ID_LEN = 12
CACHE_MAX = 10_000  # keys remembered after a successful check (see Authenticator)
_ALPHABET = string.ascii_letters + string.digits


@dataclass(frozen=True, slots=True)
class Principal:
    """Who made a request: a key id and name (never the key) and its scopes."""

    key_id: str
    name: str
    scopes: frozenset[str]
    rate_limit: int = 0  # requests per second; 0 = the gateway's default
    allowed_origins: tuple[str, ...] = ()  # web pages that may use the key; empty = any

    @property
    def admin(self) -> bool:
        """True for the admin key and keys with the admin scope."""
        return ADMIN in self.scopes

    def may_append(self, stream: str) -> bool:
        """True when the key may write rows into `stream` (whether or not it exists)."""
        return (
            self.admin
            or CREATE in self.scopes
            or APPEND in self.scopes
            or f"{APPEND}:{stream}" in self.scopes
        )

    def require_append(self, stream: str) -> None:
        """403 unless the key may write rows into `stream`."""
        if not self.may_append(stream):
            raise Forbidden(f"this key may not append to stream {stream!r}")

    def require_append_some(self) -> None:
        """403 unless the key may write rows into some stream (checked before a body that names
        its stream is read)."""
        if not (
            self.admin
            or CREATE in self.scopes
            or APPEND in self.scopes
            or any(s.startswith(f"{APPEND}:") for s in self.scopes)
        ):
            raise Forbidden("this key may not append to any stream; nothing was read")

    @property
    def reads_all(self) -> bool:
        """True when the key may see every stream (admin, DATASOURCE:CREATE or DATASOURCE:READ)."""
        return self.admin or CREATE in self.scopes or READ in self.scopes

    def may_read(self, stream: str) -> bool:
        """True when the key may see `stream`: a read-all scope, or a scope naming the stream."""
        return self.reads_all or f"{APPEND}:{stream}" in self.scopes or f"{READ}:{stream}" in self.scopes

    def require_read(self, stream: str) -> None:
        """403 unless the key may see `stream` (checked before the lookup: no existence oracle)."""
        if not self.may_read(stream):
            raise Forbidden(f"this key may not read stream {stream!r}")

    def require_origin(self, origin: str | None) -> None:
        """403 when a browser sends the key from a page whose origin the key does not allow."""
        if origin is not None and self.allowed_origins and origin not in self.allowed_origins:
            raise Forbidden("this key may not be used from this origin; nothing was written")

    def require_manage(self) -> None:
        """403 unless the key may create, change and delete streams."""
        if not (self.admin or CREATE in self.scopes):
            raise Forbidden("this key may not manage streams (needs DATASOURCE:CREATE)")

    def require_admin(self) -> None:
        """403 unless the key is an admin key."""
        if not self.admin:
            raise Forbidden("this key may not manage API keys (needs admin)")


def key_from_headers(headers: Mapping[str, str], query: Mapping[str, str] | None = None) -> str | None:
    """The key of `X-Api-Key: K`, `Authorization: ApiKey K` / `Bearer K`, or `?token=K`."""
    key = headers.get("X-Api-Key")
    if key:
        return key.strip()
    auth = headers.get("Authorization", "")
    scheme, _, value = auth.strip().partition(" ")
    if scheme.lower() in ("apikey", "bearer") and value.strip():
        return value.strip()
    if query is not None and query.get("token"):
        return query["token"].strip()
    return None


def _digest(salt: str, key: str) -> str:
    return hashlib.sha256(f"{salt}:{key}".encode()).hexdigest()


def mask(key: str) -> str:
    """The displayable form of a key: first and last four characters (`vthm****OjXG`)."""
    return f"{key[:4]}****{key[-4:]}"


def new_key(
    name: str,
    *,
    scopes: list[str],
    expire_at: int,
    created_by: str,
    rate_limit: int = 0,
    allowed_origins: list[str] | None = None,
) -> tuple[str, ApiKey]:
    """A fresh key and the record that stores it (hashed). The key is shown to its owner once."""
    key_id = "".join(secrets.choice(_ALPHABET) for _ in range(ID_LEN))
    secret = "".join(secrets.choice(_ALPHABET) for _ in range(48))
    key = key_id + secret
    salt = secrets.token_hex(16)
    display = f"{name} ({mask(key)})" if name else mask(key)
    record = ApiKey(
        id=key_id,
        name=display,
        salt=salt,
        digest=_digest(salt, key),
        masked=mask(key),
        created_at=int(time.time()),
        expire_at=expire_at,
        permissions=list(scopes),
        created_by=created_by,
        rate_limit=rate_limit,
        allowed_origins=list(allowed_origins or ()),
    )
    return key, record


class Authenticator:
    """Checks keys against the admin key and the catalog's hashed keys.

    A key that passed its hash check is remembered with the catalog record it matched (bounded
    by CACHE_MAX): the next request with it costs a dict lookup and an identity check instead of
    two salted SHA-256 digests. Revocation stays immediate: every use looks the record up in the
    catalog again, and a deleted, replaced or reloaded record is another object (or none), which
    sends the key through the full check again. Keys that fail are never remembered."""

    def __init__(self, catalog: Catalog, admin_key: str, anonymous: Principal | None = None) -> None:
        self._catalog = catalog
        self.anonymous = anonymous  # what requests without credentials get (None: 401)
        self._admin_salt = secrets.token_hex(16)
        self._admin_digest = _digest(self._admin_salt, admin_key)
        register_secret(admin_key)  # the admin key has no fixed shape: the log masks it by value
        self._admin = Principal("admin", "admin", frozenset({ADMIN}))
        self._known: dict[str, tuple[ApiKey | None, Principal]] = {}  # key -> (record, principal)

    def authenticate(self, key: str | None, *, may_be_anonymous: bool = False) -> Principal:
        """The principal of a key; 401 when it is missing, unknown, expired or revoked. A request
        that `may_be_anonymous` (no credentials at all, not from a web page) gets the anonymous
        principal when one is configured (gateway.anonymous)."""
        if not key:
            if may_be_anonymous and self.anonymous is not None:
                return self.anonymous
            raise Unauthenticated("missing API key: send `X-Api-Key: KEY` or `Authorization: ApiKey KEY`")
        known = self._known.get(key)
        if known is not None:
            record, who = known
            if record is None:  # the admin key
                return who
            if self._catalog.api_key(record.id) is record:
                _check_expiry(record)
                return who
            del self._known[key]  # deleted, replaced or reloaded: check it afresh
        return self._check(key)

    def _check(self, key: str) -> Principal:
        """The full check: salted digests compared in constant time."""
        if hmac.compare_digest(_digest(self._admin_salt, key), self._admin_digest):
            self._remember(key, None, self._admin)
            return self._admin
        record = self._catalog.api_key(key[:ID_LEN]) if len(key) > ID_LEN else None
        if record is None or not hmac.compare_digest(_digest(record.salt, key), record.digest):
            raise Unauthenticated("invalid API key")
        _check_expiry(record)
        who = Principal(
            record.id,
            record.name,
            frozenset(record.permissions),
            record.rate_limit,
            tuple(record.allowed_origins),
        )
        self._remember(key, record, who)
        return who

    def _remember(self, key: str, record: ApiKey | None, who: Principal) -> None:
        if len(self._known) >= CACHE_MAX:
            self._known.clear()  # only valid keys get here: a full cache is rare and cheap to refill
        self._known[key] = (record, who)


def _check_expiry(record: ApiKey) -> None:
    # worded as an unknown key: "expired" would confirm to whoever holds it that it was real
    if record.expire_at and record.expire_at <= time.time():
        raise Unauthenticated("invalid API key")
