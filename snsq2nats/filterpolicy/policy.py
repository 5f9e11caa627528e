"""Parsing and validation: a policy document, checked as SNS checks it, into a FilterPolicy."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final

from snsq2nats.errors import FilterPolicyError
from snsq2nats.filterpolicy.match import build_matcher
from snsq2nats.filterpolicy.model import (
    FALSE,
    NULL,
    TRUE,
    Branch,
    JsonLiteral,
    KeyRule,
    MessageAttribute,
    Numeric,
    Scope,
    scaled,
)

MAX_KEYS: Final = 5
MAX_COMBINATIONS: Final = 150
MAX_POLICY_BYTES: Final = 256 * 1024
NUMERIC_LIMIT: Final = 10**9
# Field names that make "$or" an ordinary key when an alternative uses them (AWS: "reserved
# keywords"); "wildcard" is listed because EventBridge has it, so AWS reserves it too.
MATCH_TYPES: Final = frozenset(
    {"prefix", "suffix", "anything-but", "numeric", "exists", "equals-ignore-case", "cidr"}
)
_RESERVED: Final = MATCH_TYPES | {"wildcard"}
_NUMERIC_OPS: Final = frozenset({"=", "<", "<=", ">", ">="})

_HINT_GRAMMAR: Final = (
    "fix the policy so SNS would accept it (see the AWS SNS guide, 'subscription filter policies')"
)


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
        self._match = build_matcher(branches, scope)

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
        number = scaled(value)
        if number is None or abs(number) > NUMERIC_LIMIT * 100_000:
            raise self.fail(
                f"key {key!r}: number {value} is outside -10^9..10^9",
                hint="SNS compares numbers between -1,000,000,000 and 1,000,000,000 only",
            )
        return number

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
        exact: set[str | int | JsonLiteral] = set()
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
                exact.add(TRUE if entry is True else FALSE if entry is False else NULL)
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
                else f"use one of: {', '.join(sorted(MATCH_TYPES))}"
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
            if not prefix:
                # Decision (b) in the package docstring: AWS refuses it.
                raise self.fail(
                    f"key {key!r}: anything-but prefix is empty (every value starts with "
                    '"", so nothing could ever match)',
                    hint='give the prefix to exclude, e.g. {"anything-but": {"prefix": "order-"}}'
                    ', or use {"exists": false} for messages without the key',
                )
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
        if len({type(value) for value in excluded}) > 1:
            # Decision (a) in the package docstring: AWS refuses a mixed list.
            raise self.fail(
                f"key {key!r}: anything-but list {json.dumps(items, default=str)} mixes strings "
                "and numbers; SNS takes a list of only strings or only numbers",
                hint="keep one type in the list: a value of the other type passes anything-but "
                'anyway (a number is "anything but" any string)',
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
            network = ipaddress.ip_network(operand, strict=False)
        except ValueError as exc:
            raise self.fail(f"key {key!r}: malformed cidr {operand!r} ({exc})") from None
        if network.prefixlen == network.max_prefixlen:
            # Decision (c) in the package docstring: AWS refuses a single-address mask.
            longest = network.max_prefixlen - 1
            raise self.fail(
                f"key {key!r}: cidr {operand!r} has a /{network.prefixlen} mask; SNS takes "
                f"masks up to /{longest} for IPv{network.version}",
                hint=f"to match this one address, use the exact string "
                f'"{network.network_address}" instead of cidr (written as messages write it)',
            )
        return network


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
