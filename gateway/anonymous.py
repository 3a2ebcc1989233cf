"""Opt-in anonymous callers (`--anonymous-scopes`): a request that carries no credentials at all
is served as the one principal "anonymous", with exactly the configured scopes and rate.

Off by default. A request that carries any credential (an `Authorization` or `X-Api-Key` header,
or a `token` query parameter), however malformed, is never downgraded to anonymous: it is checked
as a key and gets 401 when the check fails. Neither is a request from a web page (see
`may_be_anonymous`)."""

from __future__ import annotations

from collections.abc import Mapping

from gateway.auth import Principal
from gateway.scopes import ADMIN, valid_scope

ANONYMOUS = "anonymous"  # its key id and name: no key id can collide (those are 12 characters)


def parse_anonymous_scopes(text: str) -> frozenset[str]:
    """The comma-separated scopes of `--anonymous-scopes` (empty = the feature is off). Scopes
    use the keys' grammar (gateway.scopes); ValueError for an unknown one or for admin."""
    scopes = [s.strip() for s in text.split(",") if s.strip()]
    for scope in scopes:
        if scope == ADMIN:
            raise ValueError("admin can never be granted to anonymous requests")
        if not valid_scope(scope):
            shown = scope if len(scope) <= 80 else scope[:80] + "…"
            raise ValueError(
                f"unknown scope {shown!r}: use DATASOURCE:CREATE, DATASOURCE:READ, "
                "DATASOURCE:APPEND, DATASOURCE:APPEND:<stream> or DATASOURCE:READ:<stream>"
            )
    return frozenset(scopes)


def anonymous_principal(scopes_text: str, rate_limit: int) -> Principal | None:
    """The principal requests without credentials get, or None when the feature is off."""
    scopes = parse_anonymous_scopes(scopes_text)
    if not scopes:
        return None
    return Principal(ANONYMOUS, ANONYMOUS, scopes, rate_limit)


def carries_credentials(headers: Mapping[str, str], query: Mapping[str, str]) -> bool:
    """True when the request sends any credential, even an empty or malformed one."""
    return "Authorization" in headers or "X-Api-Key" in headers or "token" in query


def may_be_anonymous(headers: Mapping[str, str], query: Mapping[str, str]) -> bool:
    """True for a request that may be served as anonymous: no credentials at all, and not sent
    by a web page (no `Origin`): any page on the internet could otherwise make the browser of
    someone on the internal network write through it."""
    return "Origin" not in headers and not carries_credentials(headers, query)
