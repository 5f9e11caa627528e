"""Evaluation: a parsed policy becomes closures over precomputed sets, built once."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Mapping
from typing import TypeAlias

from snsq2nats.filterpolicy.model import (
    Branch,
    KeyRule,
    MessageAttribute,
    Scope,
    Value,
    Values,
    attribute_values,
    flatten_body,
)

_Predicate: TypeAlias = Callable[[Values], bool]
_ValueTest: TypeAlias = Callable[[Value], bool]


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

        def exact_only(values: Values) -> bool:
            if values is None:
                return absent_ok
            return any(v in exact for v in values)

        return exact_only

    def general(values: Values) -> bool:
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


def build_matcher(branches: tuple[Branch, ...], scope: Scope) -> _Matcher:
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
                    if not predicate(None if attr is None else attribute_values(attr)):
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
            document = json.loads(body)  # the shared default decoder: much faster per call
        except ValueError:  # includes UnicodeDecodeError
            return False
        if not isinstance(document, dict):
            return False
        flat = flatten_body(document)
        for branch in compiled:
            for name, predicate in branch:
                if not predicate(flat.get(name)):
                    break
            else:
                return True
        return False

    return on_body
