"""Schema versions of a stream (gateway.evolution.versions): numbering, history, refusals."""

from __future__ import annotations

import pytest

from gateway.catalog.model import Column, Stream
from gateway.errors import BadRequest, NotFound
from gateway.evolution.versions import Incompatible, evolve, version, versions

COLS = [Column("id", "string"), Column("n", "int32")]


def stream(**kw: object) -> Stream:
    return Stream("s", list(COLS), "t", created_at="then", created_by="alice", **kw)  # type: ignore[arg-type]


def test_a_compatible_change_makes_the_next_version_and_keeps_the_old_one() -> None:
    s = stream()
    new = [*COLS, Column("extra", "string", nullable=True)]
    s2 = evolve(s, new, None, mode="backward", by="bob", now="now")
    s3 = evolve(s2, [COLS[0], Column("n", "int64"), new[2]], None, mode="backward", by="carol", now="later")
    assert [(v.version, len(v.columns), v.created_by, v.created_at) for v in versions(s3)] == [
        (1, 2, "alice", "then"),
        (2, 3, "bob", "now"),
        (3, 3, "carol", "later"),
    ]
    assert version(s3, 2).columns == new and s3.schema_version == 3
    assert s.schema_version == 1 and s.schemas == []  # the old record is not changed
    with pytest.raises(NotFound):
        version(s3, 4)


def test_the_same_columns_make_no_new_version() -> None:
    s = stream()
    same = [Column("id", "string", default="", description="the id"), Column("n", "int32")]
    assert evolve(s, same, "", mode="full", by="bob", now="now") is s


def test_a_refusal_lists_every_reason_and_changes_nothing() -> None:
    s = stream(mode="versioned_kv", primary_key="id")
    with pytest.raises(Incompatible) as err:
        evolve(s, [Column("n", "int16"), Column("id", "string")], "n", mode="backward", by="bob", now="now")
    assert err.value.status == 409
    assert {(r.column, r.old_type, r.new_type) for r in err.value.reasons} == {
        ("", "id", "n"),
        ("n", "int32", "int16"),
    }
    assert "primary key" in err.value.message and "narrowing" in err.value.message


def test_an_unknown_mode_is_a_bad_request() -> None:
    with pytest.raises(BadRequest):
        evolve(stream(), [Column("id", "string")], None, mode="sideways", by="b", now="n")
