"""Column type names (`int64`, `nullable(string)`, `map(string, array(float64))`, …) → msgspec types."""

from __future__ import annotations

import datetime
import decimal
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Optional

import msgspec
from msgspec import Meta

_IPV4 = r"(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}"
_H = "[0-9a-fA-F]{1,4}"
UINT64_MAX = 2**64 - 1


def _groups(n: int) -> str:
    """n colon-separated hex groups ("" for none)."""
    return "" if n == 0 else _H + (f"(:{_H}){{{n - 1}}}" if n > 1 else "")


def _ipv6_pattern() -> str:
    """Every RFC 4291 text form: full, `::`-compressed, and with an embedded IPv4 tail."""
    forms = [f"({_H}:){{7}}{_H}", f"({_H}:){{6}}{_IPV4}"]
    for left in range(8):
        for right in range(8 - left):  # "::" stands for at least one group
            forms.append(_groups(left) + "::" + _groups(right))
    for left in range(6):
        for right in range(6 - left):
            tail = _groups(right) + ":" if right else ""
            forms.append(_groups(left) + "::" + tail + _IPV4)
    return "|".join(f"({f})" for f in forms)


# msgspec applies patterns with re.search: \A…\Z anchors the whole string ($ would let a
# trailing newline through).
_IPV6 = _ipv6_pattern()


def _int(bits: int, signed: bool) -> Any:
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    if hi > 2**63 - 1:  # msgspec bounds must fit an int64: uint64's top is checked after decoding
        return Annotated[int, Meta(ge=lo)]
    return Annotated[int, Meta(ge=lo, le=hi)]


_F32 = 3.4028234663852886e38
SCALARS: dict[str, Any] = {
    **{f"int{b}": _int(b, True) for b in (8, 16, 32, 64)},
    **{f"uint{b}": _int(b, False) for b in (8, 16, 32, 64)},
    "float32": Annotated[float, Meta(ge=-_F32, le=_F32)],
    "float64": float,
    "bool": bool,
    "boolean": bool,
    "string": str,
    "date": datetime.date,
    "date32": datetime.date,
    "uuid": uuid.UUID,
    "ipv4": Annotated[str, Meta(pattern=f"\\A({_IPV4})\\Z")],
    "ipv6": Annotated[str, Meta(pattern=f"\\A({_IPV6})\\Z")],
    "json": msgspec.Raw,
}
DATETIMES = ("datetime", "datetime64")
WRAPPERS = ("nullable", "low_cardinality", "lowcardinality")


class TypeError_(ValueError):
    """A column type name that the gateway does not understand."""


Check = Callable[[Any], bool]


@dataclass(frozen=True, slots=True)
class ColumnType:
    """A parsed column type: the msgspec type to decode with, and facts the schema compiler needs.

    `check` is set only for types msgspec cannot fully constrain (uint64's upper bound): it returns
    False for a decoded value that is out of range.
    """

    name: str
    py: Any
    nullable: bool
    is_datetime: bool
    is_stringlike: bool
    check: Check | None = None

    @property
    def check_hint(self) -> str:
        """What `check` wants, for the error message of a value it refused."""
        if "decimal" in self.name.lower():
            return (
                " (a finite number, at most precision - scale digits before the point and "
                "scale after it; NaN and Infinity are refused)"
            )
        return ""


def _uint64_ok(v: Any) -> bool:
    return v is None or v <= UINT64_MAX


DECIMAL_MAX_PRECISION = 76  # ClickHouse's Decimal256


def decimal_args(args: list[str]) -> tuple[int, int]:
    """(precision, scale) of `decimal(p[, s])`; TypeError_ unless 1 ≤ p ≤ 76 and 0 ≤ s ≤ p."""
    if not 1 <= len(args) <= 2 or not all(a.isdigit() and len(a) <= 3 for a in args):
        raise TypeError_("decimal takes (precision[, scale]) as whole numbers")
    p, s = int(args[0]), int(args[1]) if len(args) == 2 else 0
    if not 1 <= p <= DECIMAL_MAX_PRECISION or s > p:
        raise TypeError_(
            f"decimal({p}, {s}): precision must be 1 to {DECIMAL_MAX_PRECISION} and scale 0 to the precision"
        )
    return p, s


def decimal_check(p: int, s: int) -> Check:
    """True for null and for finite decimals with at most p - s digits before the point and s
    after it; NaN, sNaN, ±Infinity and extra fractional digits (other than zeros) are refused, as
    ClickHouse does in strict mode, never rounded. The exponent is looked at first, so `1e999999999`
    costs no more than `1`."""
    quantum = decimal.Decimal(1).scaleb(-s)
    exact = decimal.Context(prec=p, traps=[decimal.Inexact, decimal.InvalidOperation])

    def ok(v: Any) -> bool:
        if v is None:
            return True
        if not v.is_finite() or (not v.is_zero() and v.adjusted() >= p - s):
            return False
        try:
            v.quantize(quantum, context=exact)  # Inexact: a nonzero digit past the scale
        except decimal.DecimalException:
            return False
        return True

    return ok


def _check_of(text: str) -> Check | None:
    """A value checker for types containing uint64 or decimal, else None."""
    t = text.strip().lower().replace(" ", "")
    if "uint64" not in t and "decimal" not in t:
        return None
    head, _, inner = t.partition("(")
    inner = inner[:-1]
    if t == "uint64":
        return _uint64_ok
    if head == "decimal":
        return decimal_check(*decimal_args(split_args(inner)))
    if head in WRAPPERS:
        return _check_of(inner)
    if head == "array":
        item = _check_of(inner)
        return (lambda v: v is None or all(map(item, v))) if item else None
    if head == "map":
        value = _check_of(split_args(inner)[1])
        return (lambda v: v is None or all(map(value, v.values()))) if value else None
    return None


def nullable_of(py: Any) -> Any:
    """`py` or null. msgspec.Raw already takes null (and `Optional[Raw]` would take only null)."""
    return py if py is msgspec.Raw else Optional[py]  # noqa: UP045


def split_args(inner: str) -> list[str]:
    """The top-level comma-separated arguments of a type, e.g. `string, array(int8)`."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(inner):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(inner[start:i].strip())
            start = i + 1
    parts.append(inner[start:].strip())
    return parts


def _parse(text: str) -> tuple[Any, bool, bool, bool]:
    """Return (msgspec type, nullable, is top-level datetime, is string-like) for a type name."""
    t = text.strip().lower()
    if "(" in t:
        if not t.endswith(")"):
            raise TypeError_(f"unknown column type {text!r}")
        head, inner = t[: t.index("(")].strip(), t[t.index("(") + 1 : -1]
        args = split_args(inner)
        if head in WRAPPERS and len(args) == 1:
            py, inner_nullable, is_dt, strlike = _parse(args[0])
            nullable = head == "nullable" or inner_nullable
            return (nullable_of(py) if head == "nullable" else py), nullable, is_dt, strlike
        if head == "array" and len(args) == 1:
            return list[_parse(args[0])[0]], False, False, False  # type: ignore[misc]
        if head == "map" and len(args) == 2:
            key = _parse(args[0])
            if key[0] is not str:
                raise TypeError_(f"map keys must be string in {text!r}")
            return dict[str, _parse(args[1])[0]], False, False, False  # type: ignore[misc]
        if head in DATETIMES:
            return datetime.datetime, False, True, True
        if head == "fixed_string" and len(args) == 1 and args[0].isdigit():
            return Annotated[str, Meta(max_length=int(args[0]))], False, False, True
        if head == "decimal":
            decimal_args(args)
            return decimal.Decimal, False, False, False
        raise TypeError_(f"unknown column type {text!r}")
    if t in DATETIMES:
        return datetime.datetime, False, True, True
    if t in SCALARS:
        py = SCALARS[t]
        return py, False, False, py is str or t in ("date", "date32", "uuid", "ipv4", "ipv6")
    raise TypeError_(f"unknown column type {text!r}")


MAX_TYPE_LEN = 1024
MAX_TYPE_DEPTH = 16


def parse_type(text: str) -> ColumnType:
    """Parse a column type name; raise `TypeError_` with a clear message when it is unknown, longer
    than MAX_TYPE_LEN or nested deeper than MAX_TYPE_DEPTH (the parser recurses per level)."""
    if len(text) > MAX_TYPE_LEN:
        raise TypeError_(f"column type is longer than {MAX_TYPE_LEN} characters")
    depth = deepest = 0
    for ch in text:
        depth += ch == "("
        depth -= ch == ")"
        deepest = max(deepest, depth)
    if deepest > MAX_TYPE_DEPTH:
        raise TypeError_(f"column type is nested deeper than {MAX_TYPE_DEPTH} levels")
    py, nullable, is_dt, strlike = _parse(text)
    return ColumnType(text, py, nullable, is_dt, strlike, _check_of(text))
