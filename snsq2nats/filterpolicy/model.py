"""The values a filter policy compares and the parsed form of one key's entries."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any, Final, Literal, TypeAlias

Scope: TypeAlias = Literal["MessageAttributes", "MessageBody"]

SCALE: Final = Decimal(100_000)  # five decimals of accuracy

# --------------------------------------------------------------------------------------------
# Values as the matcher sees them
# --------------------------------------------------------------------------------------------


class JsonLiteral:
    """JSON true/false/null: own objects so they never equal a number in a set (True == 1)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


TRUE: Final = JsonLiteral("true")
FALSE: Final = JsonLiteral("false")
NULL: Final = JsonLiteral("null")

# str for strings, int for numbers scaled by 10^5, a JsonLiteral for true/false/null.
Value: TypeAlias = "str | int | JsonLiteral"
Values: TypeAlias = "Sequence[Value] | None"  # None = the key is absent


def scaled(number: int | float | Decimal | str) -> int | None:
    """A number as an integer count of 10^-5, or None when it is not a finite number."""
    try:
        dec = Decimal(repr(number)) if isinstance(number, float) else Decimal(number)
        if not dec.is_finite():
            return None
        return int((dec * SCALE).to_integral_value(ROUND_HALF_EVEN))
    except (InvalidOperation, ValueError):
        return None


def json_value(value: object) -> Value | None:
    """A JSON scalar as a matcher value; None for objects and arrays (they hold no leaf)."""
    if isinstance(value, str):
        return value
    if value is True:
        return TRUE
    if value is False:
        return FALSE
    if value is None:
        return NULL
    if isinstance(value, int | float | Decimal):
        return scaled(value)
    return None


@dataclass(frozen=True, slots=True)
class MessageAttribute:
    """One SNS/SQS message attribute.

    `data_type` is ``String``, ``Number``, ``String.Array``, ``Binary`` or a custom type such as
    ``Number.int``; `value` is the string value (bytes for Binary).
    """

    data_type: str
    value: str | bytes

    @classmethod
    def from_aws(cls, raw: Mapping[str, Any]) -> MessageAttribute:
        """From SQS's ``{"DataType", "StringValue"|"BinaryValue"}`` or SNS's envelope
        ``{"Type", "Value"}`` shape."""
        data_type = str(raw.get("DataType") or raw.get("Type") or "String")
        for key in ("StringValue", "BinaryValue", "Value"):
            if key in raw and raw[key] is not None:
                value = raw[key]
                return cls(data_type, value if isinstance(value, bytes) else str(value))
        return cls(data_type, "")

    def text(self) -> str:
        return (
            self.value.decode("utf-8", "replace") if isinstance(self.value, bytes) else self.value
        )


def attribute_values(attr: MessageAttribute) -> Values:
    data_type = attr.data_type
    if data_type == "String":
        return (attr.text(),)
    if data_type == "String.Array":
        try:
            items = json.loads(attr.text())  # floats stay exact to 5 decimals via repr
        except ValueError:
            return ()
        if not isinstance(items, list):
            # A JSON scalar ("100") is a one-element array: SNS delivers it to a policy
            # [100, 500] (moto's test of it was checked against AWS; the guide only says "an
            # array, formatted as a string"). An object holds no leaf: no value, as before.
            items = [items]
        return [v for v in map(json_value, items) if v is not None]
    base = data_type.split(".", 1)[0]
    if base == "String":
        return (attr.text(),)
    if base == "Number":
        number = scaled(attr.text().strip())
        return () if number is None else (number,)
    return None  # Binary and unknown types: ignored, as if absent


def flatten_body(obj: Mapping[str, Any]) -> dict[str, list[Value]]:
    """Every leaf of a JSON object under its dotted path; array elements share their path."""
    out: dict[str, list[Value]] = {}

    def leaf(value: object, path: str) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                leaf(v, f"{path}.{k}")
        elif isinstance(value, list):
            for v in value:
                leaf(v, path)
        else:
            normal = json_value(value)
            if normal is not None:
                out.setdefault(path, []).append(normal)

    for key, value in obj.items():
        leaf(value, str(key))
    return out


@dataclass(frozen=True, slots=True)
class Numeric:
    """A numeric range on scaled integers; None means unbounded on that side."""

    low: int | None
    low_inclusive: bool
    high: int | None
    high_inclusive: bool

    def test(self, value: Value) -> bool:
        if type(value) is not int:
            return False
        if self.low is not None and (
            value < self.low or (value == self.low and not self.low_inclusive)
        ):
            return False
        return not (
            self.high is not None
            and (value > self.high or (value == self.high and not self.high_inclusive))
        )


@dataclass(frozen=True, slots=True)
class KeyRule:
    """The entries of one leaf key: the key passes when any of them matches (OR)."""

    path: tuple[str, ...]
    exact: frozenset[str | int | JsonLiteral] = frozenset()
    exists_true: bool = False
    exists_false: bool = False
    prefixes: tuple[str, ...] = ()
    suffixes: tuple[str, ...] = ()
    ignore_case: tuple[str, ...] = ()  # casefolded
    numeric: tuple[Numeric, ...] = ()
    anything_but: tuple[frozenset[str | int], ...] = ()
    anything_but_prefix: tuple[str, ...] = ()
    cidrs: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    size: int = 0  # number of entries, for the combination count

    @property
    def name(self) -> str:
        return ".".join(self.path)

    def is_exact_string_only(self) -> bool:
        """True when the key only uses exact strings and exists:false (a subject can say it)."""
        return not (
            self.exists_true
            or self.prefixes
            or self.suffixes
            or self.ignore_case
            or self.numeric
            or self.anything_but
            or self.anything_but_prefix
            or self.cidrs
        ) and all(type(v) is str for v in self.exact)


# One $or alternative after expansion: every rule must pass.
Branch: TypeAlias = tuple[KeyRule, ...]
