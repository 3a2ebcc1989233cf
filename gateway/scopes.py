"""The closed grammar of API-key scopes, checked when a key is created:

    scope  = "admin"                        every route, API keys included
           | "DATASOURCE:CREATE"            create, change and delete streams; append to and read any
           | "DATASOURCE:READ"              list every stream, read any stream's schema and stats
           | "DATASOURCE:APPEND"            append to any stream (sees only streams it is scoped to)
           | "DATASOURCE:APPEND:" stream    append to, and read, that one stream
           | "DATASOURCE:READ:" stream      read that one stream's schema and stats
    stream = [A-Za-z][A-Za-z0-9_]{0,63}

Scopes are case-sensitive. A key needs at least one scope; a key created without a `permissions`
field gets DATASOURCE:CREATE and DATASOURCE:APPEND."""

from __future__ import annotations

from gateway.catalog.model import STREAM_NAME
from gateway.errors import BadRequest

ADMIN = "admin"
APPEND = "DATASOURCE:APPEND"
CREATE = "DATASOURCE:CREATE"
READ = "DATASOURCE:READ"
DEFAULT_SCOPES = (CREATE, APPEND)
MAX_SCOPES = 1000
_WHOLE = frozenset({ADMIN, CREATE, READ, APPEND})
_PER_STREAM = (APPEND + ":", READ + ":")


def valid_scope(scope: str) -> bool:
    """True when `scope` is a sentence of the grammar above."""
    if scope in _WHOLE:
        return True
    for prefix in _PER_STREAM:
        if scope.startswith(prefix):
            return STREAM_NAME.fullmatch(scope[len(prefix) :]) is not None
    return False


def parse_scopes(permissions: list[str] | None) -> list[str]:
    """The scopes of a new key: the defaults when absent; 400 when empty, too many or ill-formed."""
    if permissions is None:
        return list(DEFAULT_SCOPES)
    if not permissions:
        raise BadRequest(
            "permissions must name at least one scope (an empty list would grant "
            "nothing); omit the field for the default DATASOURCE:CREATE and "
            "DATASOURCE:APPEND"
        )
    if len(permissions) > MAX_SCOPES:
        raise BadRequest(f"at most {MAX_SCOPES} permissions per key")
    bad = [p for p in permissions if not valid_scope(p)]
    if bad:
        shown = bad[0] if len(bad[0]) <= 80 else bad[0][:80] + "…"
        raise BadRequest(
            f"unknown permission {shown!r}: use admin, DATASOURCE:CREATE, "
            "DATASOURCE:READ, DATASOURCE:APPEND, DATASOURCE:APPEND:<stream> or "
            "DATASOURCE:READ:<stream>"
        )
    return list(dict.fromkeys(permissions))
