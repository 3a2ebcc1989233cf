"""The schema compatibility matrix (gateway.evolution.compat), table-driven."""

from __future__ import annotations

import pytest

from gateway.catalog.model import Column
from gateway.evolution.compat import check, widens

BASE = [
    Column("id", "int32"),
    Column("name", "string"),
    Column("score", "float32"),
    Column("price", "decimal(10,2)"),
    Column("tag", "string", default="'x'"),
]


def changed(
    *,
    add: Column | None = None,
    drop: str | None = None,
    retype: tuple[str, str] | None = None,
    nullable: str | None = None,
) -> list[Column]:
    cols = [Column(c.name, c.type, c.default, c.nullable) for c in BASE if c.name != drop]
    for c in cols:
        if retype and c.name == retype[0]:
            c.type = retype[1]
        if nullable == c.name:
            c.nullable = True
    return cols + ([add] if add else [])


ADD_NULLABLE = changed(add=Column("extra", "nullable(string)"))
ADD_NULLABLE_FLAG = changed(add=Column("extra", "string", nullable=True))
ADD_DEFAULTED = changed(add=Column("extra", "int64", default="0"))
ADD_REQUIRED = changed(add=Column("extra", "int64"))
WIDEN_INT = changed(retype=("id", "int64"))
WIDEN_FLOAT = changed(retype=("score", "float64"))
WIDEN_DECIMAL = changed(retype=("price", "decimal(12,2)"))
WIDEN_NULLABLE = changed(retype=("name", "nullable(string)"))
WIDEN_NULLABLE_FLAG = changed(nullable="name")
NARROW_INT = changed(retype=("id", "int16"))
NARROW_DECIMAL = changed(retype=("price", "decimal(9,2)"))
CHANGE_TYPE = changed(retype=("name", "int64"))
DROP_REQUIRED = changed(drop="name")
DROP_DEFAULTED = changed(drop="tag")
ADD_DEFAULT = [Column(c.name, c.type, "'?'" if c.name == "name" else c.default) for c in BASE]

OK, NO = True, False
#                        backward forward full  none
MATRIX = [
    ("add nullable", ADD_NULLABLE, OK, OK, OK, OK),
    ("add nullable (flag)", ADD_NULLABLE_FLAG, OK, OK, OK, OK),
    ("add with default", ADD_DEFAULTED, OK, OK, OK, OK),
    ("add required", ADD_REQUIRED, NO, OK, NO, OK),
    ("int32 -> int64", WIDEN_INT, OK, NO, NO, OK),
    ("float32 -> float64", WIDEN_FLOAT, OK, NO, NO, OK),
    ("decimal(10,2) -> decimal(12,2)", WIDEN_DECIMAL, OK, NO, NO, OK),
    ("T -> nullable(T)", WIDEN_NULLABLE, OK, NO, NO, OK),
    ("T -> nullable flag", WIDEN_NULLABLE_FLAG, OK, NO, NO, OK),
    ("int32 -> int16", NARROW_INT, NO, OK, NO, OK),
    ("decimal(10,2) -> decimal(9,2)", NARROW_DECIMAL, NO, OK, NO, OK),
    ("string -> int64", CHANGE_TYPE, NO, NO, NO, OK),
    ("drop required", DROP_REQUIRED, NO, NO, NO, OK),
    ("drop defaulted", DROP_DEFAULTED, OK, OK, OK, OK),
    ("add a default", ADD_DEFAULT, OK, OK, OK, OK),
    ("unchanged", BASE, OK, OK, OK, OK),
]
MODES = ("backward", "forward", "full", "none")


@pytest.mark.parametrize(
    ("mode", "case", "new", "accepted"),
    [(mode, row[0], row[1], row[2 + i]) for row in MATRIX for i, mode in enumerate(MODES)],
)
def test_matrix(mode: str, case: str, new: list[Column], accepted: bool) -> None:
    reasons = check(BASE, new, mode)
    assert (not reasons) == accepted, (case, reasons)


def test_every_reason_is_listed_with_column_types_and_rule() -> None:
    new = changed(drop="name", retype=("id", "int16"), add=Column("extra", "int64"))
    reasons = check(BASE, new, "backward")
    by_column = {r.column: r for r in reasons}
    assert set(by_column) == {"name", "id", "extra"}
    assert (by_column["id"].old_type, by_column["id"].new_type) == ("int32", "int16")
    assert "narrowing" in by_column["id"].rule
    assert by_column["name"].old_type == "string" and by_column["name"].new_type == ""
    assert "default" in by_column["extra"].rule


@pytest.mark.parametrize("mode", MODES)
def test_primary_key_of_a_kv_stream_cannot_change(mode: str) -> None:
    reasons = check(BASE, BASE, mode, old_key="id", new_key="name")
    assert [(r.old_type, r.new_type) for r in reasons] == [("id", "name")]
    assert "primary key" in reasons[0].rule
    assert not check(BASE, BASE, mode, old_key="id, name", new_key="id,name")


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("int8", "int16", True),
        ("int64", "int32", False),
        ("uint8", "int16", True),
        ("uint32", "int32", False),
        ("int32", "uint64", False),
        ("uint16", "uint32", True),
        ("int16", "float32", True),
        ("int32", "float32", False),
        ("int32", "float64", True),
        ("float64", "float32", False),
        ("decimal(10,2)", "decimal(12,4)", True),
        ("decimal(10,2)", "decimal(11,4)", False),
        ("decimal(5)", "decimal(6,1)", True),
        ("nullable(int32)", "int64", False),
        ("nullable(int32)", "nullable(int64)", True),
        ("int32", "low_cardinality(nullable(int64))", True),
        ("string", "low_cardinality(string)", True),
        ("fixed_string(4)", "fixed_string(8)", True),
        ("fixed_string(8)", "string", True),
        ("string", "fixed_string(8)", False),
        ("array(int32)", "array(int64)", True),
        ("array(int64)", "array(int32)", False),
        ("map(string, float32)", "map(string,float64)", True),
        ("date", "date32", True),
        ("Boolean", "bool", True),
        ("string", "uuid", False),
    ],
)
def test_widens(old: str, new: str, expected: bool) -> None:
    assert widens(old, new) is expected
