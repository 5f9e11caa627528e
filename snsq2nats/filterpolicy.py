"""SNS subscription filter policies: parse, validate, evaluate, and compile to NATS subjects.

Pure: no I/O, no AWS or NATS imports. The planner calls `parse_policy`, `choose_promoted` and
`compile_to_subjects`; the bridge's filter router calls `FilterPolicy.matches` and `subject_for`.

Grammar (AWS SNS developer guide, "Amazon SNS message filtering")
-----------------------------------------------------------------
A policy is a JSON object. Each key names a message attribute (scope ``MessageAttributes``) or
a property of the JSON message body (scope ``MessageBody``, where values may be nested objects
and only the leaf keys count). A leaf value is a non-empty array; the message passes the key
when *any* array entry matches (OR) and passes the policy when *every* key passes (AND).
Array entries are:

    "text"                                 exact string (case-sensitive)
    301.5                                  exact number (compared as a number: 3.015e2 matches)
    true / false / null                    exact literal (body values, String.Array elements)
    {"numeric": ["=", 5]}                  also "<", "<=", ">", ">=", or a range with the lower
    {"numeric": [">", 0, "<=", 150]}         bound first (">"/">=" then "<"/"<=", bottom < top)
    {"anything-but": "x" | 5 | ["x", 5]}   any value except these
    {"anything-but": {"prefix": "x"}}      any value not starting with "x"
    {"prefix": "x"}, {"suffix": "x"}       string prefix / suffix
    {"equals-ignore-case": "x"}            case-insensitive string equality (Unicode casefold)
    {"exists": true | false}               key present / absent
    {"cidr": "10.0.0.0/24"}                string holding an IPv4 or IPv6 address in the network

``"$or": [{...}, {...}]`` ORs whole sub-policies. It is an operator only when its value is an
array of at least two objects none of which uses a match type (``prefix``, ``numeric``...) as a
field name; otherwise ``$or`` is an ordinary key, exactly as AWS documents.

Rejected as SNS rejects them: malformed JSON, a non-object policy, ``wildcard`` and any other
unknown match type, ``anything-but`` with ``suffix``/``exists``/anything but ``prefix``, match
objects with more than one key, empty arrays, nested objects in attribute scope, numbers outside
±10^9, more than 5 keys (leaf keys; counted per ``$or`` alternative, the reading most permissive
to policies that already live in AWS) and more than 150 combinations. Combinations follow AWS's
documented arithmetic: the product, over leaf keys, of ``len(values) * depth`` (top level is
depth 1, so the nested example gives 3 x 4 x 2 x 3 = 72), and ``$or`` alternatives add up.
Numbers keep five decimals (AWS's stated accuracy): they are compared as integers scaled by 10^5.

Evaluation semantics
--------------------
* A key the policy names but the message lacks fails every entry except ``{"exists": false}``.
* Attribute types matter. ``String`` (and custom ``String.x``) values meet string entries,
  ``Number`` (and ``Number.x``) values meet numeric entries only, ``String.Array`` values are
  JSON arrays whose elements each meet the entries of their own JSON type, and ``Binary``
  attributes are ignored entirely (they count as absent, also for ``exists``).
* ``anything-but`` matches a value of another type (a number is "anything but" ``"x"``).
* Body scope needs a JSON object body; anything else matches only the empty policy. Arrays
  match when any element matches. Like AWS, a dotted policy key ``"a.b"`` also reaches the
  nested ``{"a": {"b": ...}}``; an empty array or an object counts as no value at that key.
* AWS's docs conflict on ``anything-but`` against a ``String.Array``: the older example says
  ``["rugby", "baseball"]`` passes ``{"anything-but": ["rugby", "tennis"]}`` (some element is
  not listed), a 2025 revision says it passes only if *no* element is listed. We follow the
  element-wise rule, which is the same "any element matches" rule every other operator uses and
  what the documented example shows; the bridge's router therefore agrees with the older text.

Subject token encoding
----------------------
``encode_token`` turns an attribute value into one NATS subject token:

* a non-empty value made only of ``[A-Za-z0-9_-]`` is its own token (``created`` -> ``created``);
* otherwise every other character is written as its UTF-8 bytes, each ``~`` + two uppercase hex
  digits (``order.placed`` -> ``order~2Eplaced``, ``café`` -> ``caf~C3~A9``, ``~`` -> ``~7E``);
* the empty string is ``~empty`` and an absent attribute (``None``) is ``~absent``.

A ``~`` in a real value's token is always followed by two uppercase hex digits, so the markers
(``~`` + a lowercase word) never collide with a value, and ``decode_token`` inverts
``encode_token`` exactly (it rejects any non-canonical spelling, which keeps the map injective).
Tokens are printable ASCII without ``.``, ``*``, ``>`` or whitespace. `subject_for` writes a
``Number``, ``String.Array`` or other non-string value as ``~typed``, a token no value filter
selects and only ``*`` matches; ``Binary`` is written as ``~absent``, as evaluation ignores it.

Compiling to JetStream filter subjects
--------------------------------------
Subjects are ``<prefix>.<tok(a1)>.<tok(a2)>...``, one token per promoted attribute in order.
A policy compiles when, for every ``$or`` alternative, each key is promoted and each entry is an
exact string (-> that value's token) or ``{"exists": false}`` (-> ``~absent``). Unconstrained
positions become ``*``. The subjects are made non-overlapping (JetStream refuses overlapping
``filter_subjects``) by dropping subjects covered by another; alternatives that still overlap
cannot be expressed. Everything else is reported with a precise reason and left to the bridge's
filter router: body scope, numbers and literals, numeric comparisons, prefix, suffix,
equals-ignore-case, cidr, anything-but, and ``exists: true`` (``*`` would also match
``~absent``).

Assumption: promoted attributes carry ``String`` values. Exact string entries also match
elements of a ``String.Array``, which one token cannot represent, so publishers (and the
bridge) must promote only ``String`` attributes; a ``String.Array`` on a promoted attribute is
written as ``~typed`` and would be missed by the compiled filters. A ``Number`` written as
``~typed`` is exact: string entries never match numbers.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any, Final, Literal, TypeAlias

from snsq2nats.errors import FilterPolicyError

__all__ = [
    "ABSENT_TOKEN",
    "EMPTY_TOKEN",
    "MAX_COMBINATIONS",
    "MAX_KEYS",
    "TYPED_TOKEN",
    "CompileResult",
    "FilterPolicy",
    "MessageAttribute",
    "Scope",
    "choose_promoted",
    "compile_to_subjects",
    "decode_token",
    "encode_token",
    "matches",
    "parse_policy",
    "subject_for",
]

Scope: TypeAlias = Literal["MessageAttributes", "MessageBody"]

MAX_KEYS: Final = 5
MAX_COMBINATIONS: Final = 150
MAX_POLICY_BYTES: Final = 256 * 1024
NUMERIC_LIMIT: Final = 10**9
_SCALE: Final = Decimal(100_000)  # five decimals of accuracy
_QUANTUM: Final = Decimal(1)

ABSENT_TOKEN: Final = "~absent"
EMPTY_TOKEN: Final = "~empty"
TYPED_TOKEN: Final = "~typed"

# Field names that make "$or" an ordinary key when an alternative uses them (AWS: "reserved
# keywords"); "wildcard" is listed because EventBridge has it, so AWS reserves it too.
_MATCH_TYPES: Final = frozenset(
    {"prefix", "suffix", "anything-but", "numeric", "exists", "equals-ignore-case", "cidr"}
)
_RESERVED: Final = _MATCH_TYPES | {"wildcard"}
_NUMERIC_OPS: Final = frozenset({"=", "<", "<=", ">", ">="})

_HINT_GRAMMAR: Final = (
    "fix the policy so SNS would accept it (see the AWS SNS guide, 'subscription filter policies')"
)


# --------------------------------------------------------------------------------------------
# Values as the matcher sees them
# --------------------------------------------------------------------------------------------


class _Literal:
    """JSON true/false/null: own objects so they never equal a number in a set (True == 1)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


_TRUE: Final = _Literal("true")
_FALSE: Final = _Literal("false")
_NULL: Final = _Literal("null")

# str for strings, int for numbers scaled by 10^5, a _Literal for true/false/null.
_Value: TypeAlias = "str | int | _Literal"
_Values: TypeAlias = "Sequence[_Value] | None"  # None = the key is absent


def _scaled(number: int | float | Decimal | str) -> int | None:
    """A number as an integer count of 10^-5, or None when it is not a finite number."""
    try:
        dec = Decimal(repr(number)) if isinstance(number, float) else Decimal(number)
        if not dec.is_finite():
            return None
        return int((dec * _SCALE).to_integral_value(ROUND_HALF_EVEN))
    except (InvalidOperation, ValueError):
        return None


def _json_value(value: object) -> _Value | None:
    """A JSON scalar as a matcher value; None for objects and arrays (they hold no leaf)."""
    if isinstance(value, str):
        return value
    if value is True:
        return _TRUE
    if value is False:
        return _FALSE
    if value is None:
        return _NULL
    if isinstance(value, int | float | Decimal):
        return _scaled(value)
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


def _attribute_values(attr: MessageAttribute) -> _Values:
    data_type = attr.data_type
    if data_type == "String":
        return (attr.text(),)
    if data_type == "String.Array":
        try:
            items = json.loads(attr.text(), parse_float=Decimal)
        except ValueError:
            return ()
        if not isinstance(items, list):
            return ()
        return [v for v in map(_json_value, items) if v is not None]
    base = data_type.split(".", 1)[0]
    if base == "String":
        return (attr.text(),)
    if base == "Number":
        number = _scaled(attr.text().strip())
        return () if number is None else (number,)
    return None  # Binary and unknown types: ignored, as if absent


def _flatten_body(obj: Mapping[str, Any]) -> dict[str, list[_Value]]:
    """Every leaf of a JSON object under its dotted path; array elements share their path."""
    out: dict[str, list[_Value]] = {}

    def leaf(value: object, path: str) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                leaf(v, f"{path}.{k}")
        elif isinstance(value, list):
            for v in value:
                leaf(v, path)
        else:
            normal = _json_value(value)
            if normal is not None:
                out.setdefault(path, []).append(normal)

    for key, value in obj.items():
        leaf(value, str(key))
    return out


# --------------------------------------------------------------------------------------------
# The parsed policy
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Numeric:
    """A numeric range on scaled integers; None means unbounded on that side."""

    low: int | None
    low_inclusive: bool
    high: int | None
    high_inclusive: bool

    def test(self, value: _Value) -> bool:
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
    exact: frozenset[str | int | _Literal] = frozenset()
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


class FilterPolicy:
    """A validated filter policy, compiled once into a matcher.

    `branches` is the policy in disjunctive form: ``$or`` alternatives expanded, each a tuple
    of leaf-key rules that must all pass. `keys` lists the leaf keys (dotted when nested).
    """

    __slots__ = ("_match", "branches", "combinations", "document", "keys", "scope", "source")

    def __init__(
        self,
        document: Mapping[str, Any],
        branches: tuple[Branch, ...],
        *,
        scope: Scope,
        source: str | None,
        combinations: int,
    ) -> None:
        self.document = document
        self.branches = branches
        self.scope: Scope = scope
        self.source = source
        self.combinations = combinations
        names: dict[str, None] = {}
        for branch in branches:
            for rule in branch:
                names.setdefault(rule.name, None)
        self.keys: tuple[str, ...] = tuple(names)
        self._match = _build_matcher(branches, scope)

    def matches(
        self,
        attributes: Mapping[str, MessageAttribute] | None = None,
        body: str | bytes | None = None,
    ) -> bool:
        """Whether SNS would deliver a message with these attributes and body."""
        return self._match(attributes, body)

    def __repr__(self) -> str:
        doc = json.dumps(self.document, sort_keys=True, default=str)
        return f"FilterPolicy({doc}, scope={self.scope!r})"


# --------------------------------------------------------------------------------------------
# Parsing and validation
# --------------------------------------------------------------------------------------------


class _Parser:
    def __init__(self, scope: Scope, source: str | None) -> None:
        self.scope = scope
        self.source = source

    def fail(self, what: str, hint: str = _HINT_GRAMMAR) -> FilterPolicyError:
        return FilterPolicyError(f"invalid filter policy: {what}", where=self.source, hint=hint)

    def number(self, value: object, key: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
            raise self.fail(f"key {key!r}: {value!r} is not a number")
        scaled = _scaled(value)
        if scaled is None or abs(scaled) > NUMERIC_LIMIT * 100_000:
            raise self.fail(
                f"key {key!r}: number {value} is outside -10^9..10^9",
                hint="SNS compares numbers between -1,000,000,000 and 1,000,000,000 only",
            )
        return scaled

    def parse_object(
        self, obj: Mapping[str, Any], path: tuple[str, ...]
    ) -> tuple[list[Branch], int]:
        """(alternatives, combinations) for one policy object at nesting `path`."""
        depth = len(path) + 1
        alternatives: list[Branch] = [()]
        combinations = 1
        for raw_key, value in obj.items():
            key = str(raw_key)
            if key == "$or" and _is_or(value):
                branches: list[Branch] = []
                total = 0
                for i, alternative in enumerate(value):
                    if not alternative:
                        raise self.fail(f"$or alternative {i + 1} is an empty object")
                    sub, count = self.parse_object(alternative, path)
                    branches.extend(sub)
                    total += count
                alternatives = [a + b for a in alternatives for b in branches]
                combinations *= total
            elif isinstance(value, dict):
                if self.scope == "MessageAttributes":
                    raise self.fail(
                        f"key {key!r} holds an object, but attribute scope does not nest",
                        hint="use FilterPolicyScope MessageBody for nested keys, or a flat array",
                    )
                if not value:
                    raise self.fail(f"key {'.'.join((*path, key))!r} holds an empty object")
                sub, count = self.parse_object(value, (*path, key))
                alternatives = [a + b for a in alternatives for b in sub]
                combinations *= count
            elif isinstance(value, list):
                rule = self.rule((*path, key), value)
                alternatives = [(*a, rule) for a in alternatives]
                combinations *= rule.size * depth
            else:
                raise self.fail(f"key {key!r} must hold an object or an array, not {value!r}")
        return alternatives, combinations

    def rule(self, path: tuple[str, ...], values: list[Any]) -> KeyRule:
        key = ".".join(path)
        if not values:
            raise self.fail(f"key {key!r} holds an empty array (SNS rejects empty arrays)")
        exact: set[str | int | _Literal] = set()
        parts: dict[str, list[Any]] = {
            "prefix": [],
            "suffix": [],
            "equals-ignore-case": [],
            "numeric": [],
            "anything-but": [],
            "anything-but-prefix": [],
            "cidr": [],
        }
        exists: set[bool] = set()
        for entry in values:
            if isinstance(entry, str):
                exact.add(entry)
            elif entry is True or entry is False or entry is None:
                exact.add(_TRUE if entry is True else _FALSE if entry is False else _NULL)
            elif isinstance(entry, int | float | Decimal):
                exact.add(self.number(entry, key))
            elif isinstance(entry, dict):
                self.match_object(key, entry, parts, exists)
            else:
                raise self.fail(
                    f"key {key!r}: {json.dumps(entry, default=str)} is not a match value",
                    hint="entries are strings, numbers, true, false, null or one-key objects",
                )
        return KeyRule(
            path=path,
            exact=frozenset(exact),
            exists_true=True in exists,
            exists_false=False in exists,
            prefixes=tuple(parts["prefix"]),
            suffixes=tuple(parts["suffix"]),
            ignore_case=tuple(s.casefold() for s in parts["equals-ignore-case"]),
            numeric=tuple(parts["numeric"]),
            anything_but=tuple(parts["anything-but"]),
            anything_but_prefix=tuple(parts["anything-but-prefix"]),
            cidrs=tuple(parts["cidr"]),
            size=len(values),
        )

    def match_object(
        self, key: str, entry: dict[str, Any], parts: dict[str, list[Any]], exists: set[bool]
    ) -> None:
        if len(entry) != 1:
            raise self.fail(
                f"key {key!r}: match object {json.dumps(entry, default=str)} has "
                f"{len(entry)} keys; SNS allows exactly one",
                hint='split it into separate array entries, e.g. [{"prefix": ..}, {..}]',
            )
        ((kind, operand),) = entry.items()
        if kind in ("prefix", "suffix", "equals-ignore-case"):
            if not isinstance(operand, str):
                raise self.fail(f"key {key!r}: {kind} needs a string, not {operand!r}")
            parts[kind].append(operand)
        elif kind == "exists":
            if not isinstance(operand, bool):
                raise self.fail(f"key {key!r}: exists needs true or false, not {operand!r}")
            exists.add(operand)
        elif kind == "numeric":
            parts["numeric"].append(self.numeric(key, operand))
        elif kind == "cidr":
            parts["cidr"].append(self.cidr(key, operand))
        elif kind == "anything-but":
            self.anything_but(key, operand, parts)
        else:
            hint = (
                "SNS has no wildcard matching; use prefix or suffix, or filter in the consumer"
                if kind == "wildcard"
                else f"use one of: {', '.join(sorted(_MATCH_TYPES))}"
            )
            raise self.fail(f"key {key!r}: unrecognized match type {kind!r}", hint=hint)

    def anything_but(self, key: str, operand: object, parts: dict[str, list[Any]]) -> None:
        if isinstance(operand, dict):
            if len(operand) != 1 or "prefix" not in operand:
                names = ", ".join(map(repr, operand)) or "{}"
                raise self.fail(
                    f"key {key!r}: unsupported anything-but pattern {names}",
                    hint='SNS supports anything-but with a value, a list or {"prefix": ...}',
                )
            prefix = operand["prefix"]
            if not isinstance(prefix, str):
                raise self.fail(f"key {key!r}: anything-but prefix needs a string")
            parts["anything-but-prefix"].append(prefix)
            return
        items = operand if isinstance(operand, list) else [operand]
        if not items:
            raise self.fail(f"key {key!r}: anything-but holds an empty array")
        excluded: set[str | int] = set()
        for item in items:
            if isinstance(item, str):
                excluded.add(item)
            elif isinstance(item, int | float | Decimal) and not isinstance(item, bool):
                excluded.add(self.number(item, key))
            else:
                raise self.fail(
                    f"key {key!r}: anything-but accepts strings and numbers, not {item!r}"
                )
        parts["anything-but"].append(frozenset(excluded))

    def numeric(self, key: str, operand: object) -> Numeric:
        if not isinstance(operand, list) or not operand:
            raise self.fail(
                f'key {key!r}: numeric needs an array such as [">", 0, "<=", 150]',
            )
        if len(operand) not in (2, 4):
            raise self.fail(f"key {key!r}: numeric takes one comparison or one range")
        ops = operand[0::2]
        for op in ops:
            if not isinstance(op, str) or op not in _NUMERIC_OPS:
                raise self.fail(f"key {key!r}: unrecognized numeric operator {op!r}")
        nums = [self.number(v, key) for v in operand[1::2]]
        if len(ops) == 1:
            op, num = ops[0], nums[0]
            if op == "=":
                return Numeric(num, True, num, True)
            if op in (">", ">="):
                return Numeric(num, op == ">=", None, False)
            return Numeric(None, False, num, op == "<=")
        if ops[0] not in (">", ">=") or ops[1] not in ("<", "<="):
            raise self.fail(
                f"key {key!r}: a numeric range is a lower bound (> or >=) then an upper bound "
                f"(< or <=), got {ops[0]!r} then {ops[1]!r}"
            )
        if nums[0] >= nums[1]:
            raise self.fail(f"key {key!r}: numeric range bottom must be less than top")
        return Numeric(nums[0], ops[0] == ">=", nums[1], ops[1] == "<=")

    def cidr(self, key: str, operand: object) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        if not isinstance(operand, str) or operand.count("/") != 1:
            raise self.fail(f'key {key!r}: cidr needs a string like "10.0.0.0/24"')
        try:
            return ipaddress.ip_network(operand, strict=False)
        except ValueError as exc:
            raise self.fail(f"key {key!r}: malformed cidr {operand!r} ({exc})") from None


def _is_or(value: object) -> bool:
    """AWS's rule: an array of at least two objects, none using a match type as a field."""
    return (
        isinstance(value, list)
        and len(value) >= 2
        and all(isinstance(v, dict) for v in value)
        and not any(k in _RESERVED for v in value for k in v)
    )


def _parse_number_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON number")


def parse_policy(
    policy: str | bytes | Mapping[str, Any],
    *,
    scope: Scope = "MessageAttributes",
    source: str | None = None,
) -> FilterPolicy:
    """Validate a filter policy as SNS does and compile it into a matcher.

    `source` (e.g. the subscription ARN) is named in every error. Raises `FilterPolicyError`.
    """
    parser = _Parser(scope, source)
    if scope not in ("MessageAttributes", "MessageBody"):
        raise FilterPolicyError(
            f"unknown FilterPolicyScope {scope!r}",
            where=source,
            hint="use MessageAttributes or MessageBody",
        )
    if isinstance(policy, str | bytes):
        text = policy.decode("utf-8", "replace") if isinstance(policy, bytes) else policy
        if len(text.encode("utf-8")) > MAX_POLICY_BYTES:
            raise parser.fail("the policy is larger than 256 KB")
        try:
            document = json.loads(text, parse_float=Decimal, parse_constant=_parse_number_constant)
        except ValueError as exc:
            raise parser.fail(
                f"not valid JSON ({exc})", hint="check quotes, commas and brackets"
            ) from None
    else:
        document = policy
    if not isinstance(document, Mapping):
        raise parser.fail(f"the policy must be a JSON object, not {type(document).__name__}")
    branches, combinations = parser.parse_object(document, ())
    for branch in branches:
        leaf_keys = {rule.path for rule in branch}
        if len(leaf_keys) > MAX_KEYS:
            raise parser.fail(
                f"{len(leaf_keys)} keys ({', '.join(sorted('.'.join(k) for k in leaf_keys))}); "
                f"SNS allows at most {MAX_KEYS}",
                hint="split the subscription or move conditions into the consumer",
            )
    if combinations > MAX_COMBINATIONS:
        raise parser.fail(
            f"too complex: {combinations} value combinations, SNS allows at most "
            f"{MAX_COMBINATIONS}",
            hint="use fewer values per key (prefix or anything-but can replace long lists)",
        )
    return FilterPolicy(
        dict(document),
        tuple(branches),
        scope=scope,
        source=source,
        combinations=combinations,
    )


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------

_Predicate: TypeAlias = Callable[[_Values], bool]
_ValueTest: TypeAlias = Callable[[_Value], bool]


def _starts(p: str) -> _ValueTest:
    return lambda v: type(v) is str and v.startswith(p)


def _ends(s: str) -> _ValueTest:
    return lambda v: type(v) is str and v.endswith(s)


def _folds_to(folded: str) -> _ValueTest:
    return lambda v: type(v) is str and v.casefold() == folded


def _not_in(excluded: frozenset[str | int]) -> _ValueTest:
    return lambda v: v not in excluded


def _not_starts(p: str) -> _ValueTest:
    return lambda v: not (type(v) is str and v.startswith(p))


def _in_cidr(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> _ValueTest:
    return lambda v: type(v) is str and _in_network(v, net)


def _value_tests(rule: KeyRule) -> list[_ValueTest]:
    """The non-exact entries of a key as value tests; their order follows the entry kinds."""
    tests: list[_ValueTest] = []
    tests.extend(map(_starts, rule.prefixes))
    tests.extend(map(_ends, rule.suffixes))
    tests.extend(map(_folds_to, rule.ignore_case))
    tests.extend(rng.test for rng in rule.numeric)
    tests.extend(map(_not_in, rule.anything_but))
    tests.extend(map(_not_starts, rule.anything_but_prefix))
    tests.extend(map(_in_cidr, rule.cidrs))
    return tests


def _in_network(text: str, net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    return address.version == net.version and address in net


def _key_predicate(rule: KeyRule) -> _Predicate:
    if rule.exists_true:
        # Present satisfies the whole OR; nothing else can add to it.
        return lambda values: values is not None
    absent_ok = rule.exists_false
    exact = rule.exact
    tests = _value_tests(rule)
    if not tests:

        def exact_only(values: _Values) -> bool:
            if values is None:
                return absent_ok
            return any(v in exact for v in values)

        return exact_only

    def general(values: _Values) -> bool:
        if values is None:
            return absent_ok
        for v in values:
            if v in exact:
                return True
            for test in tests:
                if test(v):
                    return True
        return False

    return general


_Matcher: TypeAlias = Callable[[Mapping[str, MessageAttribute] | None, "str | bytes | None"], bool]


def _build_matcher(branches: tuple[Branch, ...], scope: Scope) -> _Matcher:
    compiled = tuple(tuple((rule.name, _key_predicate(rule)) for rule in b) for b in branches)
    if not any(compiled):
        return lambda attributes, body: True

    if scope == "MessageAttributes":

        def on_attributes(
            attributes: Mapping[str, MessageAttribute] | None, body: str | bytes | None
        ) -> bool:
            attrs = attributes or {}
            for branch in compiled:
                for name, predicate in branch:
                    attr = attrs.get(name)
                    if not predicate(None if attr is None else _attribute_values(attr)):
                        break
                else:
                    return True
            return False

        return on_attributes

    def on_body(
        attributes: Mapping[str, MessageAttribute] | None, body: str | bytes | None
    ) -> bool:
        if body is None:
            return False
        try:
            document = json.loads(body, parse_float=Decimal)
        except ValueError:  # includes UnicodeDecodeError
            return False
        if not isinstance(document, dict):
            return False
        flat = _flatten_body(document)
        for branch in compiled:
            for name, predicate in branch:
                if not predicate(flat.get(name)):
                    break
            else:
                return True
        return False

    return on_body


def matches(
    policy: FilterPolicy | str | Mapping[str, Any],
    attributes: Mapping[str, MessageAttribute] | None = None,
    body: str | bytes | None = None,
    scope: Scope = "MessageAttributes",
) -> bool:
    """One-off evaluation. Parse once with `parse_policy` when evaluating many messages."""
    if not isinstance(policy, FilterPolicy):
        policy = parse_policy(policy, scope=scope)
    return policy.matches(attributes, body)


# --------------------------------------------------------------------------------------------
# Subject tokens
# --------------------------------------------------------------------------------------------

_PLAIN: Final = re.compile(r"[A-Za-z0-9_-]+")
_PLAIN_CHARS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_ESCAPED: Final = re.compile(r"(?:[A-Za-z0-9_-]|~[0-9A-F]{2})+")


def encode_token(value: str | None) -> str:
    """One NATS subject token for an attribute value (None = absent). See the module docs."""
    if value is None:
        return ABSENT_TOKEN
    if not value:
        return EMPTY_TOKEN
    if _PLAIN.fullmatch(value):
        return value
    out: list[str] = []
    for ch in value:
        if ch in _PLAIN_CHARS:
            out.append(ch)
        else:
            out.extend(f"~{b:02X}" for b in ch.encode("utf-8", "surrogatepass"))
    return "".join(out)


def decode_token(token: str) -> str | None:
    """The value `encode_token` turned into `token`; ValueError for anything it cannot produce."""
    if token == ABSENT_TOKEN:
        return None
    if token == EMPTY_TOKEN:
        return ""
    if not _ESCAPED.fullmatch(token):
        raise ValueError(f"{token!r} is not a token encode_token produces")
    if "~" not in token:
        return token
    raw = bytearray()
    i = 0
    while i < len(token):
        if token[i] == "~":
            raw.append(int(token[i + 1 : i + 3], 16))
            i += 3
        else:
            raw.append(ord(token[i]))
            i += 1
    try:
        value = raw.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        raise ValueError(f"{token!r} does not hold UTF-8") from None
    if encode_token(value) != token:  # e.g. "~41" for "A": not canonical
        raise ValueError(f"{token!r} is not the canonical token of {value!r}")
    return value


def subject_for(
    attributes: Mapping[str, MessageAttribute] | None, promoted: Sequence[str], prefix: str
) -> str:
    """The concrete subject for a message: `prefix` then one token per promoted attribute."""
    attrs = attributes or {}
    tokens = [prefix]
    for name in promoted:
        attr = attrs.get(name)
        if attr is None:
            tokens.append(ABSENT_TOKEN)
            continue
        base = "String.Array" if attr.data_type == "String.Array" else attr.data_type.split(".")[0]
        if base == "String":
            tokens.append(encode_token(attr.text()))
        elif base == "Binary" or _attribute_values(attr) is None:
            tokens.append(ABSENT_TOKEN)  # evaluation ignores it, so the subject must too
        else:
            tokens.append(TYPED_TOKEN)
    return ".".join(tokens)


# --------------------------------------------------------------------------------------------
# Compiling to subjects
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CompileResult:
    """Either `subjects` (exact, non-overlapping JetStream filter subjects) or a `reason`."""

    subjects: list[str] = field(default_factory=list)
    reason: str | None = None

    @property
    def exact(self) -> bool:
        return self.reason is None


def _entry_reason(rule: KeyRule) -> str | None:
    """Why this key's entries cannot become subject tokens, or None when they can."""
    key = rule.name
    checks: list[tuple[Any, str]] = [
        (rule.exists_true, "exists:true (a '*' token would also match the absent marker)"),
        (rule.numeric, "a numeric comparison"),
        (rule.prefixes, "prefix matching"),
        (rule.suffixes, "suffix matching"),
        (rule.ignore_case, "equals-ignore-case"),
        (rule.cidrs, "cidr matching"),
        (rule.anything_but or rule.anything_but_prefix, "anything-but"),
    ]
    for present, what in checks:
        if present:
            return f"key {key!r} uses {what}"
    if any(type(v) is int for v in rule.exact):
        return (
            f"key {key!r} matches a number, which only Number or String.Array attributes carry "
            "(promoted attributes are String tokens)"
        )
    if any(type(v) is _Literal for v in rule.exact):
        return (
            f"key {key!r} matches true/false/null, which only String.Array attributes carry "
            "(promoted attributes are String tokens)"
        )
    return None


def _policy_reason(policy: FilterPolicy) -> str | None:
    """Why the policy cannot compile whatever is promoted, or None."""
    if policy.scope != "MessageAttributes":
        return "the policy filters on the message body (FilterPolicyScope MessageBody)"
    for branch in policy.branches:
        for rule in branch:
            reason = _entry_reason(rule)
            if reason:
                return reason
    return None


def _covers(general: tuple[str, ...], specific: tuple[str, ...]) -> bool:
    return all(g == "*" or g == s for g, s in zip(general, specific, strict=True))


def _overlap(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    return all(x == "*" or y == "*" or x == y for x, y in zip(a, b, strict=True))


def compile_to_subjects(
    policy: FilterPolicy, promoted: Sequence[str], prefix: str
) -> CompileResult:
    """Exact JetStream filter subjects for `policy` under `subject_for`'s layout, or why not."""
    reason = _policy_reason(policy)
    if reason:
        return CompileResult(reason=reason)
    position = {name: i for i, name in enumerate(promoted)}
    patterns: list[tuple[str, ...]] = []
    for branch in policy.branches:
        allowed: list[set[str] | None] = [None] * len(promoted)
        for rule in branch:
            if rule.name not in position:
                shown = ", ".join(promoted) or "none"
                return CompileResult(
                    reason=f"key {rule.name!r} is not a promoted attribute (promoted: {shown})"
                )
            tokens = {encode_token(str(v)) for v in rule.exact}
            if rule.exists_false:
                tokens.add(ABSENT_TOKEN)
            slot = position[rule.name]
            current = allowed[slot]
            allowed[slot] = tokens if current is None else current & tokens
        choices = [sorted(a) if a is not None else ["*"] for a in allowed]
        patterns.extend(itertools.product(*choices))
    unique = sorted(set(patterns))
    kept = [p for p in unique if not any(q != p and _covers(q, p) for q in unique)]
    for a, b in itertools.combinations(kept, 2):
        if _overlap(a, b):
            return CompileResult(
                reason=(
                    f"$or alternatives overlap ({_join(prefix, a)} and {_join(prefix, b)}); "
                    "JetStream refuses overlapping filter subjects"
                )
            )
    if len(kept) > MAX_COMBINATIONS:
        return CompileResult(reason=f"{len(kept)} subjects, more than {MAX_COMBINATIONS}")
    return CompileResult(subjects=[_join(prefix, p) for p in kept])


def _join(prefix: str, tokens: Iterable[str]) -> str:
    return ".".join([prefix, *tokens])


def choose_promoted(policies: Sequence[FilterPolicy], max_tokens: int = 3) -> list[str]:
    """The attributes to promote so the most policies compile.

    Ties go to fewer attributes, then to the alphabetically first set. The result lists the
    attributes most policies use first (then by name), so output is stable for equal input.
    """
    needs: list[frozenset[str]] = []
    for policy in policies:
        if _policy_reason(policy) is not None:
            continue
        keys = frozenset(policy.keys)
        if len(keys) > max_tokens:
            continue
        # Overlap between $or alternatives does not depend on extra promoted positions.
        if not compile_to_subjects(policy, sorted(keys), "x").exact:
            continue
        needs.append(keys)
    if not needs:
        return []
    distinct = set(needs)
    candidates: set[frozenset[str]] = {k for k in distinct}
    frontier = set(candidates)
    while frontier:
        grown = {c | d for c in frontier for d in distinct if len(c | d) <= max_tokens}
        frontier = grown - candidates
        candidates |= frontier

    def score(candidate: frozenset[str]) -> tuple[int, int, list[str]]:
        served = sum(1 for k in needs if k <= candidate)
        return (-served, len(candidate), sorted(candidate))

    best = min(candidates, key=score)
    usage = {name: sum(1 for k in needs if name in k) for name in best}
    return sorted(best, key=lambda name: (-usage[name], name))
