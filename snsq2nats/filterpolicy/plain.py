"""Plain values: attributes a NATS producer wrote as headers without recording a data type.

SNS attributes carry a type; a NATS header carries only text. A producer that writes the
header ``amount: 150`` means what an SNS producer means by a ``Number`` attribute 150, and a
policy comparing ``amount`` numerically would never match the String "150". The rule, stated
once here and printed by ``snsq2nats subject``:

    A plain header is a String attribute, except for an attribute a filter policy of the topic
    compares as a number (a ``numeric`` range, a number in the list, or a number in
    ``anything-but``): there a value that parses as a number (``150``, ``-2.5``, ``1e3``) is a
    Number attribute, as SNS's ``Number`` type.

One message has one type per attribute, whichever queue's policy reads it, as on SNS: the
planner collects the topic's numeric attributes (`numeric_keys` of each policy) into the
routes, and the filter router and the relay to SNS both apply them.

A plain value of such an attribute that is not a number (``"abc"``), or a number outside SNS's
range (±10^9, which SNS refuses at publish), stays a String and is reported as a `Problem`,
so a caller can count why a message did not match instead of dropping it silently. Values
whose type was recorded (messages relayed from AWS) are never retyped.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Final, Literal

from snsq2nats.filterpolicy.model import MessageAttribute
from snsq2nats.filterpolicy.policy import NUMERIC_LIMIT, FilterPolicy

NUMBER: Final = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
"""What a producer writes for a number: SNS's Number values, no `_`, no `NaN`/`Infinity`."""

RULE: Final = (
    "a header is a String attribute, except for an attribute a filter policy of the topic "
    "compares as a number (numeric, or a number value): there a value that parses as a "
    "number (150, -2.5, 1e3) is a Number, as SNS's Number type"
)

Cause = Literal["not-a-number", "number-out-of-range"]


@dataclass(frozen=True)
class Problem:
    """A plain value the policy compares as a number but that cannot be one."""

    attribute: str
    cause: Cause
    value: str


def numeric_keys(policy: FilterPolicy) -> frozenset[str]:
    """The attributes `policy` compares as numbers (empty for body-scope policies)."""
    if policy.scope != "MessageAttributes":
        return frozenset()
    names: set[str] = set()
    for branch in policy.branches:
        for rule in branch:
            if (
                rule.numeric
                or any(type(v) is int for v in rule.exact)
                or any(type(v) is int for excluded in rule.anything_but for v in excluded)
            ):
                names.add(rule.name)
    return frozenset(names)


def type_plain(
    attributes: Mapping[str, MessageAttribute],
    plain: Collection[str],
    numeric: Collection[str],
) -> tuple[dict[str, MessageAttribute], list[Problem]]:
    """`attributes` with each plain one in `numeric` typed by the module's rule.

    `plain`: the names whose type nobody recorded; `numeric`: the topic's numeric attributes.
    """
    typed = dict(attributes)
    problems: list[Problem] = []
    for name in sorted(set(plain) & set(numeric)):
        attr = typed.get(name)
        if attr is None or attr.data_type != "String":
            continue
        text = attr.text()
        if not NUMBER.fullmatch(text):
            problems.append(Problem(name, "not-a-number", text))
            continue
        if abs(Decimal(text)) > NUMERIC_LIMIT:
            problems.append(Problem(name, "number-out-of-range", text))
            continue
        typed[name] = MessageAttribute("Number", text)
    return typed, problems
