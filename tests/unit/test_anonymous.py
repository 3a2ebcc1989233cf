"""Opt-in anonymous callers: the settings, the principal they get, and that only a request with no
credentials at all is served as it (a wrong or malformed one stays 401)."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from gateway.anonymous import (
    ANONYMOUS,
    anonymous_principal,
    carries_credentials,
    may_be_anonymous,
    parse_anonymous_scopes,
)
from gateway.auth import Authenticator
from gateway.catalog.store import Catalog
from gateway.config import Settings, from_sources
from gateway.errors import Forbidden, Unauthenticated
from tests.unit.test_auth import ADMIN_KEY, MemoryBackend, stored_key


@pytest.fixture
async def catalog() -> Catalog:
    cat = Catalog(MemoryBackend())
    await cat.start()
    return cat


def test_off_by_default() -> None:
    s = Settings()
    assert (
        s.anonymous_scopes == "" and anonymous_principal(s.anonymous_scopes, s.anonymous_rate_limit) is None
    )
    assert anonymous_principal(" , ", 5) is None


def test_settings_from_the_environment() -> None:
    s = from_sources(
        None,
        {
            "GATEWAY_ANONYMOUS_SCOPES": "DATASOURCE:APPEND:events, DATASOURCE:READ:events",
            "GATEWAY_ANONYMOUS_RATE_LIMIT": "7",
        },
    )
    who = anonymous_principal(s.anonymous_scopes, s.anonymous_rate_limit)
    assert who is not None
    assert who.key_id == who.name == ANONYMOUS and who.rate_limit == 7
    assert who.scopes == {"DATASOURCE:APPEND:events", "DATASOURCE:READ:events"}


@pytest.mark.parametrize(
    ("scopes", "words"),
    [
        ("admin", "admin can never"),
        ("DATASOURCE:APPEND:events,admin", "admin can never"),
        ("DATASOURCE:WRITE", "unknown scope 'DATASOURCE:WRITE'"),
        ("DATASOURCE:APPEND:9bad", "unknown scope"),
        ("datasource:append", "unknown scope"),  # case-sensitive, as keys' scopes
    ],
)
def test_bad_scopes_refuse_to_start(scopes: str, words: str) -> None:
    with pytest.raises(ValueError, match=f"anonymous_scopes: {words}"):
        from_sources(None, {"GATEWAY_ANONYMOUS_SCOPES": scopes})


@pytest.mark.parametrize("rate", ["0", "-1"])
def test_anonymous_rate_must_be_positive(rate: str) -> None:
    with pytest.raises(ValueError, match="anonymous_rate_limit must be positive"):
        from_sources(None, {"GATEWAY_ANONYMOUS_RATE_LIMIT": rate})


def test_scopes_parse_as_keys_scopes() -> None:
    assert parse_anonymous_scopes("") == frozenset()
    assert parse_anonymous_scopes("DATASOURCE:APPEND:a,,DATASOURCE:APPEND:a") == {"DATASOURCE:APPEND:a"}


def test_exactly_the_configured_scopes() -> None:
    who = anonymous_principal("DATASOURCE:APPEND:events", 10)
    assert who is not None
    assert who.may_append("events") and not who.may_append("other")
    assert who.may_read("events") and not who.may_read("other") and not who.reads_all
    who.require_append_some()
    with pytest.raises(Forbidden):
        who.require_append("other")
    with pytest.raises(Forbidden):
        who.require_manage()
    with pytest.raises(Forbidden):
        who.require_admin()
    assert not who.admin


@pytest.mark.parametrize(
    ("headers", "query", "carries"),
    [
        ({}, {}, False),
        ({"Content-Type": "application/json"}, {"wait": "true"}, False),
        ({"Authorization": ""}, {}, True),
        ({"authorization": "Basic !!!"}, {}, True),  # header names are case-insensitive
        ({"Authorization": "Digest x"}, {}, True),
        ({"X-Api-Key": ""}, {}, True),
        ({}, {"token": ""}, True),
    ],
)
def test_what_counts_as_credentials(headers: dict[str, str], query: dict[str, str], carries: bool) -> None:
    assert carries_credentials(CIMultiDict(headers), query) is carries
    assert may_be_anonymous(CIMultiDict(headers), query) is not carries


def test_web_pages_are_never_anonymous() -> None:
    assert not may_be_anonymous(CIMultiDict({"Origin": "https://evil.example"}), {})
    assert not may_be_anonymous(CIMultiDict({"origin": "null"}), {})


async def test_authenticator_serves_anonymous_only_without_credentials(catalog: Catalog) -> None:
    anon = anonymous_principal("DATASOURCE:APPEND:events", 10)
    auth = Authenticator(catalog, ADMIN_KEY, anon)
    assert auth.authenticate(None, may_be_anonymous=True) is anon
    assert auth.authenticate("", may_be_anonymous=True) is anon
    for key in (None, ""):  # credentials were sent but held no key: never downgraded
        with pytest.raises(Unauthenticated):
            auth.authenticate(key)
    with pytest.raises(Unauthenticated):
        auth.authenticate("wrong-key-0123456789")
    key, record = await stored_key(catalog, scopes=["DATASOURCE:APPEND"])
    assert auth.authenticate(key, may_be_anonymous=True).key_id == record.id  # a key is a key


async def test_authenticator_without_anonymous_is_401(catalog: Catalog) -> None:
    auth = Authenticator(catalog, ADMIN_KEY)
    with pytest.raises(Unauthenticated, match="missing API key"):
        auth.authenticate(None, may_be_anonymous=True)
