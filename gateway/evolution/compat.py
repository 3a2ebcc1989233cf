"""Schema compatibility: may a stream's columns change from `old` to `new` under a mode?

The modes are Schema Registry's, read for a stream's rows:
- `backward`: consumers on the new schema read rows written under the old one, so an added
  column needs a default (or is nullable), and a kept column may only widen
  (`int32`→`int64`, `float32`→`float64`, `decimal(p,s)` to more precision, `T`→`nullable(T)`);
- `forward`: consumers still on the old schema read new rows, so a kept column may only narrow;
- `full`: both, so kept columns keep their type;
- `none`: no check of the columns.
In every mode but `none` a dropped column must have had a default (or been nullable): consumers
that still expect it fill it in. In every mode, the primary key of a `*_kv` stream cannot
change: it decides the Kafka record key, so its partition and its compaction.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.catalog.model import Column
from gateway.ingest.types import WRAPPERS, split_args

_INT_BITS = {f"{s}int{b}": (s == "", b) for s in ("", "u") for b in (8, 16, 32, 64)}
_EQUIVALENT = {"boolean": "bool", "date32": "date", "datetime64": "datetime"}


@dataclass(frozen=True, slots=True)
class Reason:
    """Why a change is refused: the column, its old and new type, and the rule it breaks."""

    column: str
    old_type: str
    new_type: str
    rule: str


def _norm(text: str) -> str:
    t = text.strip().lower().replace(" ", "")
    return _EQUIVALENT.get(t, t)


def _split(t: str) -> tuple[str, list[str]]:
    if "(" not in t or not t.endswith(")"):
        return t, []
    head = t[: t.index("(")]
    return head, [_norm(a) for a in split_args(t[t.index("(") + 1 : -1])]


def _unwrap(t: str) -> tuple[str, bool]:
    """The type without nullable / low_cardinality wrappers, and whether it was nullable."""
    nullable = False
    while True:
        head, args = _split(t)
        if head not in WRAPPERS or len(args) != 1:
            return t, nullable
        nullable = nullable or head == "nullable"
        t = args[0]


def _int_widens(old: str, new: str) -> bool:
    (o_signed, o_bits), (n_signed, n_bits) = _INT_BITS[old], _INT_BITS[new]
    if o_signed == n_signed:
        return n_bits >= o_bits
    return n_signed and n_bits > o_bits  # uintN fits in intM only for M > N


def _decimal(args: list[str]) -> tuple[int, int] | None:
    if not 1 <= len(args) <= 2 or not all(a.isdigit() for a in args):
        return None
    return int(args[0]), int(args[1]) if len(args) == 2 else 0


def widens(old: str, new: str) -> bool:
    """True when every value of type `old` is a value of type `new` (equal types included)."""
    o, o_null = _unwrap(_norm(old))
    n, n_null = _unwrap(_norm(new))
    if o_null and not n_null:
        return False
    if o == n:
        return True
    if o in _INT_BITS and n in _INT_BITS:
        return _int_widens(o, n)
    if o in _INT_BITS and n in ("float32", "float64"):
        return _INT_BITS[o][1] <= (16 if n == "float32" else 32)  # exact in the mantissa
    if (o, n) == ("float32", "float64"):
        return True
    (oh, oa), (nh, na) = _split(o), _split(n)
    if oh == nh == "decimal":
        od, nd = _decimal(oa), _decimal(na)
        return od is not None and nd is not None and nd[1] >= od[1] and nd[0] - nd[1] >= od[0] - od[1]
    if oh == "fixed_string":
        return n == "string" or (
            nh == "fixed_string" and na[0].isdigit() and oa[0].isdigit() and int(na[0]) >= int(oa[0])
        )
    if oh == nh == "array" and len(oa) == len(na) == 1:
        return widens(oa[0], na[0])
    if oh == nh == "map" and len(oa) == len(na) == 2:
        return oa[0] == na[0] and widens(oa[1], na[1])
    return False


def _optional(col: Column) -> bool:
    """A column rows may leave out: it has a default or is nullable."""
    return bool(col.default) or col.nullable or _unwrap(_norm(col.type))[1]


def _type_of(col: Column) -> str:
    """The column's type with its `nullable` flag folded in."""
    return f"nullable({col.type})" if col.nullable else col.type


def check(
    old: list[Column], new: list[Column], mode: str, *, old_key: str = "", new_key: str = ""
) -> list[Reason]:
    """Every reason the change from `old` to `new` is refused under `mode` (empty: accepted).
    `old_key`/`new_key` are the primary keys of a `*_kv` stream (empty otherwise)."""
    reasons: list[Reason] = []
    if old_key.replace(" ", "") != new_key.replace(" ", ""):
        reasons.append(Reason("", old_key, new_key, "the primary key of a *_kv stream cannot change"))
    if mode == "none":
        return reasons
    before = {c.name: c for c in old}
    after = {c.name: c for c in new}
    for name, col in before.items():
        if name not in after and not _optional(col):
            reasons.append(Reason(name, _type_of(col), "", "a column without a default cannot be dropped"))
    for name, col in after.items():
        prev = before.get(name)
        if prev is None:
            if mode in ("backward", "full") and not _optional(col):
                reasons.append(
                    Reason(name, "", _type_of(col), "an added column needs a default or must be nullable")
                )
            continue
        o, n = _type_of(prev), _type_of(col)
        if mode in ("backward", "full") and not widens(o, n):
            rule = (
                "narrowing" if widens(n, o) else "type change"
            ) + f" is refused in {mode} mode; only widening is allowed"
            reasons.append(Reason(name, o, n, rule))
        elif mode in ("forward", "full") and not widens(n, o):
            rule = (
                "widening" if widens(o, n) else "type change"
            ) + f" is refused in {mode} mode; only narrowing is allowed"
            reasons.append(Reason(name, o, n, rule))
    return reasons
