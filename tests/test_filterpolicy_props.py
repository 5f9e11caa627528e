"""Properties: compiled subjects select exactly what evaluation selects; tokens round-trip."""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any

from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from snsq2nats.filterpolicy import (
    MessageAttribute,
    compile_to_subjects,
    decode_token,
    encode_token,
    parse_policy,
    subject_for,
)

# Deterministic, so CI sees the same examples every run.
settings.register_profile(
    "filterpolicy",
    derandomize=True,
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
FAST = settings.get_profile("filterpolicy")

PROMOTED = ["a", "b", "c"]
NAMES = [*PROMOTED, "d"]
TRICKY = [
    "x",
    "y",
    "created",
    "a.b",
    "a b",
    "*",
    ">",
    "x.*",
    "é",
    "日本",
    "",
    "~",
    "~41",
    "-",
    "\t",
]
VALID_TOKEN = re.compile(r"[!-~]+")  # printable ASCII, no space


def nats_match(filter_subject: str, subject: str) -> bool:
    """NATS wildcard semantics: `*` is exactly one token, a trailing `>` one or more."""
    pattern = filter_subject.split(".")
    tokens = subject.split(".")
    for i, part in enumerate(pattern):
        if part == ">":
            return len(tokens) > i
        if i >= len(tokens) or (part != "*" and part != tokens[i]):
            return False
    return len(tokens) == len(pattern)


def test_nats_match_itself() -> None:
    assert nats_match("p.*.x", "p.a.x")
    assert not nats_match("p.*.x", "p.a.y")
    assert nats_match("p.>", "p.a.b")
    assert not nats_match("p.>", "p")
    assert not nats_match("p.*", "p.a.b")


entries = st.one_of(
    st.sampled_from(TRICKY),
    st.just({"exists": False}),
)
conjunction = st.dictionaries(
    st.sampled_from(PROMOTED), st.lists(entries, min_size=1, max_size=2), min_size=1, max_size=2
)


@st.composite
def compilable_policies(draw: st.DrawFn) -> dict[str, Any]:
    policy: dict[str, Any] = draw(st.one_of(st.just({}), conjunction))
    if draw(st.booleans()):
        policy["$or"] = draw(st.lists(conjunction, min_size=2, max_size=3))
    return policy


attribute = st.one_of(
    st.none(),
    st.builds(lambda v: MessageAttribute("String", v), st.sampled_from(TRICKY)),
    st.just(MessageAttribute("Number", "1")),
    st.just(MessageAttribute("Binary", b"\x00")),
    st.just(MessageAttribute("String.custom", "x")),
)


@st.composite
def messages(draw: st.DrawFn) -> dict[str, MessageAttribute]:
    drawn = {name: draw(attribute) for name in NAMES}
    return {name: attr for name, attr in drawn.items() if attr is not None}


@FAST
@given(compilable_policies(), st.lists(messages(), min_size=1, max_size=8))
def test_compiled_subjects_agree_with_evaluation(
    document: dict[str, Any], batch: list[dict[str, MessageAttribute]]
) -> None:
    policy = parse_policy(document)
    result = compile_to_subjects(policy, PROMOTED, "sns.topic")
    if "$or" not in document:
        assert result.exact, result.reason
    assume(result.exact)
    assert len(result.subjects) <= 150
    for message in batch:
        subject = subject_for(message, PROMOTED, "sns.topic")
        selected = [f for f in result.subjects if nats_match(f, subject)]
        assert len(selected) <= 1, "filter subjects must not overlap"
        assert bool(selected) is policy.matches(message, None), (subject, result.subjects)


@FAST
@given(compilable_policies(), st.permutations(PROMOTED))
def test_promotion_order_does_not_change_what_compiles(
    document: dict[str, Any], order: list[str]
) -> None:
    policy = parse_policy(document)
    first = compile_to_subjects(policy, PROMOTED, "p")
    second = compile_to_subjects(policy, order, "p")
    assert first.exact == second.exact
    assert len(first.subjects) == len(second.subjects)


@FAST
@given(st.one_of(st.none(), st.text(), st.sampled_from(TRICKY)))
def test_token_round_trips_and_is_valid(value: str | None) -> None:
    token = encode_token(value)
    assert VALID_TOKEN.fullmatch(token), token
    assert not set(token) & {".", "*", ">"}
    assert decode_token(token) == value


@FAST
@given(st.from_regex(r"[A-Za-z0-9_-]+", fullmatch=True))
def test_plain_values_stay_readable(value: str) -> None:
    assert encode_token(value) == value


@FAST
@given(st.one_of(st.none(), st.text(max_size=6)), st.one_of(st.none(), st.text(max_size=6)))
def test_token_encoding_is_injective(a: str | None, b: str | None) -> None:
    if a != b:
        assert encode_token(a) != encode_token(b)


# ---- the compiled matcher against a plain reading of the grammar ---------------------------

WORDS = ["rugby", "Rugby", "base", "baseball", "10.0.0.7", "10.1.0.1", "2001:db8::1", "", "é"]
NUMBERS = [0, 1, 99.5, 100, 150, -3]


def reference(policy: dict[str, Any], attributes: dict[str, MessageAttribute]) -> bool:
    """An interpreter written straight from the module docs, slow and obvious."""

    def values(attr: MessageAttribute) -> list[Any] | None:
        kind = attr.data_type
        if kind == "String.Array":
            return list(json.loads(str(attr.value)))
        if kind.startswith("String"):
            return [attr.value]
        if kind.startswith("Number"):
            return [float(attr.value)]
        return None

    def is_num(v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool)

    def entry_ok(entry: Any, v: Any) -> bool:
        if isinstance(entry, str):
            return isinstance(v, str) and v == entry
        if is_num(entry):
            return is_num(v) and float(v) == float(entry)
        ((kind, arg),) = entry.items()
        text = v if isinstance(v, str) else None
        if kind == "prefix":
            return text is not None and text.startswith(arg)
        if kind == "suffix":
            return text is not None and text.endswith(arg)
        if kind == "equals-ignore-case":
            return text is not None and text.casefold() == arg.casefold()
        if kind == "anything-but":
            if isinstance(arg, dict):
                return not (text is not None and text.startswith(arg["prefix"]))
            listed = arg if isinstance(arg, list) else [arg]
            return not any(entry_ok(x, v) for x in listed)
        if kind == "numeric":
            if not is_num(v):
                return False
            ops = {"=": float.__eq__, "<": float.__lt__, "<=": float.__le__}
            ops |= {">": float.__gt__, ">=": float.__ge__}
            return all(ops[arg[i]](float(v), float(arg[i + 1])) for i in range(0, len(arg), 2))
        if kind == "cidr":
            try:
                return ipaddress.ip_address(text or "") in ipaddress.ip_network(arg)
            except (ValueError, TypeError):
                return False
        raise AssertionError(kind)

    for key, entries in policy.items():
        attr = attributes.get(key)
        found = None if attr is None else values(attr)
        ok = False
        for entry in entries:
            if isinstance(entry, dict) and "exists" in entry:
                ok = ok or (found is not None) == entry["exists"]
            elif found is not None:
                ok = ok or any(entry_ok(entry, v) for v in found)
        if not ok:
            return False
    return True


any_entry = st.one_of(
    st.sampled_from(WORDS),
    st.sampled_from(NUMBERS),
    st.builds(lambda w: {"prefix": w[:3]}, st.sampled_from(WORDS)),
    st.builds(lambda w: {"suffix": w[-3:]}, st.sampled_from(WORDS)),
    st.builds(lambda w: {"equals-ignore-case": w}, st.sampled_from(WORDS)),
    # SNS takes anything-but lists of one type and non-empty prefixes only (see filterpolicy).
    st.builds(
        lambda xs: {"anything-but": xs},
        st.lists(st.sampled_from(WORDS), min_size=1, max_size=2)
        | st.lists(st.sampled_from(NUMBERS), min_size=1, max_size=2),
    ),
    st.builds(
        lambda w: {"anything-but": {"prefix": w[:2]}}, st.sampled_from([w for w in WORDS if w])
    ),
    st.builds(
        lambda op, n: {"numeric": [op, n]},
        st.sampled_from(["=", "<", "<=", ">", ">="]),
        st.sampled_from(NUMBERS),
    ),
    st.just({"numeric": [">", 0, "<=", 100]}),
    st.sampled_from([{"cidr": "10.0.0.0/24"}, {"cidr": "2001:db8::/32"}]),
    st.sampled_from([{"exists": True}, {"exists": False}]),
)
any_attribute = st.one_of(
    st.none(),
    st.builds(lambda w: MessageAttribute("String", w), st.sampled_from(WORDS)),
    st.builds(lambda n: MessageAttribute("Number", str(n)), st.sampled_from(NUMBERS)),
    st.builds(
        lambda xs: MessageAttribute("String.Array", json.dumps(xs)),
        st.lists(st.sampled_from(WORDS + NUMBERS), max_size=3),
    ),
)


@FAST
@given(
    st.dictionaries(
        st.sampled_from(["k1", "k2", "k3"]), st.lists(any_entry, min_size=1, max_size=3), max_size=3
    ),
    st.fixed_dictionaries({k: any_attribute for k in ["k1", "k2", "k3"]}),
)
def test_matcher_agrees_with_a_plain_reading(
    document: dict[str, Any], drawn: dict[str, MessageAttribute | None]
) -> None:
    attributes = {k: v for k, v in drawn.items() if v is not None}
    expected = reference(document, attributes)
    event(f"matches={expected}")
    assert parse_policy(document).matches(attributes, None) == expected
