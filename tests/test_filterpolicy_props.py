"""Properties: compiled subjects select exactly what evaluation selects; tokens round-trip."""

from __future__ import annotations

import re
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
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
