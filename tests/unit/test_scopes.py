"""The scope grammar (issue 9 item 2) and what each scope may see (item 3)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.auth import Principal
from gateway.errors import BadRequest
from gateway.scopes import DEFAULT_SCOPES, parse_scopes, valid_scope

GOOD = [
    "admin",
    "DATASOURCE:CREATE",
    "DATASOURCE:READ",
    "DATASOURCE:APPEND",
    "DATASOURCE:APPEND:s1",
    "DATASOURCE:READ:a_b9",
]


@settings(max_examples=300, derandomize=True, deadline=None)
@given(st.text(max_size=40))
def test_only_sentences_of_the_grammar_are_valid(scope: str) -> None:
    assert valid_scope(scope) == (
        scope in GOOD[:4]
        or any(
            scope.startswith(p)
            and scope[len(p) :].isascii()
            and scope[len(p) :][:1].isalpha()
            and scope[len(p) :].replace("_", "a").isalnum()
            and len(scope) - len(p) <= 64
            for p in ("DATASOURCE:APPEND:", "DATASOURCE:READ:")
        )
    )


def test_parse_scopes() -> None:
    assert parse_scopes(None) == list(DEFAULT_SCOPES)
    assert parse_scopes(GOOD + GOOD) == GOOD
    for bad in ([], ["datasource:append"], ["DATASOURCE:APPEND:../x"], ["admin"] * 1001):
        with pytest.raises(BadRequest):
            parse_scopes(bad)


def test_what_each_scope_sees() -> None:
    def who(*scopes: str) -> Principal:
        return Principal("k", "k", frozenset(scopes))

    assert who("admin").may_read("x") and who("DATASOURCE:CREATE").may_read("x")
    assert who("DATASOURCE:READ").may_read("x")
    assert not who("DATASOURCE:APPEND").may_read("x")
    assert who("DATASOURCE:APPEND:x").may_read("x") and not who("DATASOURCE:APPEND:x").may_read("y")
    assert who("DATASOURCE:READ:x").may_read("x") and not who("DATASOURCE:READ:x").may_read("y")
