"""Filter-policy evaluation speed: a compiled 5-key policy, and its ratio to a naive baseline.

The baseline is what a straightforward router would do: keep the policy as JSON text and, for
each message, parse it and walk it. Both run in the same process on the same messages, so the
ratio is meaningful on any machine; the absolute rate is checked against the issue's target of
100,000 evaluations per second on one core.

`run()` returns rows ``{"name", "value", "unit", "target"}``; `target` is the minimum
acceptable value, or None where there is none.
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from snsq2nats.filterpolicy import MessageAttribute, parse_policy

POLICY: dict[str, Any] = {
    "store": ["example_corp", "other_corp"],
    "event": [{"anything-but": "order_cancelled"}],
    "customer_interests": ["rugby", "football", "baseball"],
    "price_usd": [{"numeric": [">=", 100, "<", 1000]}],
    "region": [{"prefix": "eu-"}],
}
POLICY_TEXT = json.dumps(POLICY)
TARGET_EVALS_PER_S = 100_000


def _messages() -> list[dict[str, MessageAttribute]]:
    def msg(store: str, event: str, interests: list[str], price: str, region: str) -> Any:
        return {
            "store": MessageAttribute("String", store),
            "event": MessageAttribute("String", event),
            "customer_interests": MessageAttribute("String.Array", json.dumps(interests)),
            "price_usd": MessageAttribute("Number", price),
            "region": MessageAttribute("String", region),
            "trace": MessageAttribute("String", "abc123"),
        }

    return [
        msg("example_corp", "order_placed", ["soccer", "rugby"], "210.75", "eu-west-1"),  # match
        msg("example_corp", "order_cancelled", ["rugby"], "210.75", "eu-west-1"),
        msg("other_corp", "order_placed", ["hockey", "baseball"], "999.99", "eu-central-1"),
        msg("example_corp", "order_placed", ["rugby"], "99", "eu-west-1"),
        msg("example_corp", "order_placed", ["rugby"], "500", "us-east-1"),
    ]


# ---- the naive baseline: parse the policy text and interpret it on every call --------------


def _naive_value_matches(entry: Any, value: Any, is_number: bool) -> bool:
    if isinstance(entry, str):
        return not is_number and value == entry
    if isinstance(entry, int | float) and not isinstance(entry, bool):
        return is_number and float(value) == float(entry)
    if isinstance(entry, dict):
        ((kind, operand),) = entry.items()
        if kind == "prefix":
            return not is_number and str(value).startswith(operand)
        if kind == "suffix":
            return not is_number and str(value).endswith(operand)
        if kind == "equals-ignore-case":
            return not is_number and str(value).casefold() == operand.casefold()
        if kind == "anything-but":
            if isinstance(operand, dict):
                return not str(value).startswith(operand["prefix"])
            listed = operand if isinstance(operand, list) else [operand]
            return all(not _naive_value_matches(x, value, is_number) for x in listed)
        if kind == "numeric":
            if not is_number:
                return False
            number = float(value)
            checks: dict[str, Callable[[float, float], bool]] = {
                "=": lambda a, b: a == b,
                "<": lambda a, b: a < b,
                "<=": lambda a, b: a <= b,
                ">": lambda a, b: a > b,
                ">=": lambda a, b: a >= b,
            }
            return all(
                checks[operand[i]](number, float(operand[i + 1])) for i in range(0, len(operand), 2)
            )
        if kind == "cidr":
            try:
                return ipaddress.ip_address(str(value)) in ipaddress.ip_network(operand)
            except ValueError:
                return False
    return False


def naive_matches(policy_text: str, attributes: Mapping[str, MessageAttribute]) -> bool:
    policy = json.loads(policy_text)
    for key, entries in policy.items():
        attr = attributes.get(key)
        if attr is None:
            if not any(isinstance(e, dict) and e.get("exists") is False for e in entries):
                return False
            continue
        if any(isinstance(e, dict) and e.get("exists") is True for e in entries):
            continue
        if attr.data_type == "String.Array":
            values = [(v, isinstance(v, int | float)) for v in json.loads(str(attr.value))]
        else:
            values = [(attr.value, attr.data_type.startswith("Number"))]
        if not any(
            _naive_value_matches(e, v, is_number) for e in entries for v, is_number in values
        ):
            return False
    return True


# ---- timing -----------------------------------------------------------------------------------


def _rate(evaluate: Callable[[Mapping[str, MessageAttribute]], bool], seconds: float) -> float:
    """Evaluations per second, best of three rounds (the least disturbed by other load)."""
    messages = _messages()
    best = 0.0
    for _ in range(3):
        count = 0
        start = time.perf_counter()
        deadline = start + seconds / 3
        while True:
            for message in messages:
                evaluate(message)
            count += len(messages)
            now = time.perf_counter()
            if now >= deadline:
                break
        best = max(best, count / (now - start))
    return best


def run(seconds: float = 1.5) -> list[dict[str, Any]]:
    policy = parse_policy(POLICY_TEXT, source="bench")
    messages = _messages()
    expected = [naive_matches(POLICY_TEXT, m) for m in messages]
    actual = [policy.matches(m, None) for m in messages]
    if actual != expected:  # a fast wrong answer is not a result
        raise AssertionError(f"compiled {actual} != naive {expected}")

    compiled = _rate(lambda m: policy.matches(m, None), seconds)
    naive = _rate(lambda m: naive_matches(POLICY_TEXT, m), seconds)
    body_policy = parse_policy(POLICY_TEXT, scope="MessageBody")
    body = json.dumps(
        {
            "store": "example_corp",
            "event": "order_placed",
            "customer_interests": ["soccer", "rugby"],
            "price_usd": 210.75,
            "region": "eu-west-1",
        }
    )
    body_rate = _rate(lambda m: body_policy.matches(None, body), seconds)
    return [
        {
            "name": "filterpolicy.compiled_5key_attributes",
            "value": round(compiled),
            "unit": "evals/s",
            "target": TARGET_EVALS_PER_S,
        },
        {
            "name": "filterpolicy.compiled_vs_naive_reparse",
            "value": round(compiled / naive, 2),
            "unit": "x",
            "target": 2.0,
        },
        {
            "name": "filterpolicy.compiled_5key_body",
            "value": round(body_rate),
            "unit": "evals/s",
            "target": None,
        },
    ]


if __name__ == "__main__":
    for row in run():
        print(row)
