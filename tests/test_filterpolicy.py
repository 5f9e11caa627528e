"""The filter-policy engine against AWS's documented examples, limits and rejections."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from snsq2nats.errors import FilterPolicyError
from snsq2nats.filterpolicy import (
    ABSENT_TOKEN,
    EMPTY_TOKEN,
    TYPED_TOKEN,
    CompileResult,
    MessageAttribute,
    choose_promoted,
    compile_to_subjects,
    decode_token,
    encode_token,
    matches,
    parse_policy,
    subject_for,
)

DATA = Path(__file__).parent / "data" / "filterpolicy"
MATCHING = json.loads((DATA / "matching.json").read_text())["cases"]
VALIDATION = json.loads((DATA / "validation.json").read_text())
SUB = "arn:aws:sns:eu-west-1:123456789012:orders:5f3c"


def _message(raw: dict[str, Any]) -> tuple[dict[str, MessageAttribute] | None, str | None]:
    attributes = {k: MessageAttribute.from_aws(v) for k, v in raw.get("attributes", {}).items()}
    if "body_raw" in raw:
        body: str | None = raw["body_raw"]
    elif "body" in raw:
        body = json.dumps(raw["body"])
    else:
        body = None
    return attributes, body


def _matching_params() -> list[Any]:
    params = []
    for case in MATCHING:
        for expected, key in ((True, "match"), (False, "no_match")):
            for i, message in enumerate(case[key]):
                params.append(pytest.param(case, message, expected, id=f"{case['name']}-{key}-{i}"))
    return params


@pytest.mark.parametrize(("case", "message", "expected"), _matching_params())
def test_documented_vector(case: dict[str, Any], message: dict[str, Any], expected: bool) -> None:
    policy = parse_policy(case["policy"], scope=case["scope"], source=SUB)
    attributes, body = _message(message)
    assert policy.matches(attributes, body) is expected
    # The JSON text form parses to the same matcher.
    again = parse_policy(json.dumps(case["policy"]), scope=case["scope"])
    assert again.matches(attributes, body) is expected


@pytest.mark.parametrize(
    "item", VALIDATION["rejected"], ids=[r["name"] for r in VALIDATION["rejected"]]
)
def test_rejected_policy(item: dict[str, Any]) -> None:
    policy = item["raw"] if "raw" in item else json.dumps(item["policy"])
    with pytest.raises(FilterPolicyError) as caught:
        parse_policy(policy, scope=item["scope"], source=SUB)
    error = caught.value
    assert item["error"] in error.what
    assert error.where == SUB, "every error names the subscription"
    assert error.hint, "every error says what to do"
    assert SUB in error.one_line()


@pytest.mark.parametrize(
    "item", VALIDATION["accepted"], ids=[a["name"] for a in VALIDATION["accepted"]]
)
def test_accepted_at_the_limits(item: dict[str, Any]) -> None:
    policy = parse_policy(item["policy"], scope=item["scope"])
    assert policy.combinations == item["combinations"]


def test_dict_and_text_input_agree_on_numbers() -> None:
    as_text = parse_policy('{"p": [{"numeric": [">", 0.1, "<", 0.3]}]}')
    as_dict = parse_policy({"p": [{"numeric": [">", 0.1, "<", 0.3]}]})
    for value, expected in (("0.2", True), ("0.1", False), ("0.30000", False)):
        attrs = {"p": MessageAttribute("Number", value)}
        assert as_text.matches(attrs, None) is expected
        assert as_dict.matches(attrs, None) is expected


def test_numbers_keep_five_decimals() -> None:
    policy = parse_policy({"p": [1.000001]})
    assert policy.matches({"p": MessageAttribute("Number", "1")}, None)
    assert not policy.matches({"p": MessageAttribute("Number", "1.00001")}, None)


def test_malformed_values_do_not_match() -> None:
    policy = parse_policy({"n": [{"numeric": [">", 0]}], "s": [{"exists": True}]})
    assert not policy.matches(
        {"n": MessageAttribute("Number", "lots"), "s": MessageAttribute("String", "x")}, None
    )
    arr = parse_policy({"a": ["x"]})
    assert not arr.matches({"a": MessageAttribute("String.Array", "[not json")}, None)
    assert not arr.matches({"a": MessageAttribute("String.Array", '{"x": 1}')}, None)
    body = parse_policy({"a": ["x"]}, scope="MessageBody")
    assert not body.matches(None, b"\xff\xfe")
    assert not body.matches(None, None)
    assert body.matches(None, b'{"a": "x"}')


def test_module_level_matches() -> None:
    assert matches('{"a": ["x"]}', {"a": MessageAttribute("String", "x")}, None)
    assert matches({"a": ["x"]}, None, '{"a": ["y", "x"]}', scope="MessageBody")
    policy = parse_policy({"a": ["x"]})
    assert not matches(policy, {"a": MessageAttribute("String", "y")})


def test_attribute_from_aws_shapes() -> None:
    sqs = MessageAttribute.from_aws({"DataType": "Number", "StringValue": "5"})
    sns = MessageAttribute.from_aws({"Type": "String", "Value": "x"})
    binary = MessageAttribute.from_aws({"DataType": "Binary", "BinaryValue": b"\x00"})
    assert (sqs.data_type, sqs.value) == ("Number", "5")
    assert (sns.data_type, sns.value) == ("String", "x")
    assert binary.value == b"\x00"


def test_policy_exposes_its_keys() -> None:
    policy = parse_policy(
        {"a": ["1"], "n": {"m": ["2"]}, "$or": [{"b": ["3"]}, {"c": ["4"]}]}, scope="MessageBody"
    )
    assert policy.keys == ("a", "n.m", "b", "c")
    assert len(policy.branches) == 2
    assert "FilterPolicy(" in repr(policy)


# ---- tokens --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "token"),
    [
        ("created", "created"),
        ("order_placed-2", "order_placed-2"),
        ("order.placed", "order~2Eplaced"),
        ("a b", "a~20b"),
        ("*", "~2A"),
        (">", "~3E"),
        ("~", "~7E"),
        ("café", "caf~C3~A9"),
        ("AWS/EC2", "AWS~2FEC2"),
        ("", EMPTY_TOKEN),
        (None, ABSENT_TOKEN),
    ],
)
def test_token_encoding(value: str | None, token: str) -> None:
    assert encode_token(value) == token
    assert decode_token(token) == value


@pytest.mark.parametrize("token", ["", "a.b", "~41", "~2a", "~zz", "~", "~typed", "a b", "~C3"])
def test_decode_rejects_what_encode_never_produces(token: str) -> None:
    with pytest.raises(ValueError):
        decode_token(token)


def test_subject_for_message() -> None:
    attrs = {
        "event": MessageAttribute("String", "order.placed"),
        "count": MessageAttribute("Number", "3"),
        "blob": MessageAttribute("Binary", b"\x01"),
        "tags": MessageAttribute("String.Array", '["a"]'),
        "kind": MessageAttribute("String.custom", "x"),
    }
    subject = subject_for(attrs, ["event", "count", "blob", "tags", "kind", "missing"], "sns.t")
    assert subject == (
        f"sns.t.order~2Eplaced.{TYPED_TOKEN}.{ABSENT_TOKEN}.{TYPED_TOKEN}.x.{ABSENT_TOKEN}"
    )
    assert subject_for(None, [], "sns.t") == "sns.t"


# ---- compiling -----------------------------------------------------------------------------


def _compile(policy: dict[str, Any], promoted: list[str]) -> CompileResult:
    return compile_to_subjects(parse_policy(policy), promoted, "sns.orders")


def test_compile_exact_strings() -> None:
    result = _compile({"event": ["created", "order.placed"]}, ["event", "region"])
    assert result.exact
    assert result.subjects == ["sns.orders.created.*", "sns.orders.order~2Eplaced.*"]


def test_compile_exists_false_and_empty_policy() -> None:
    result = _compile({"region": [{"exists": False}, "eu"]}, ["event", "region"])
    assert result.subjects == ["sns.orders.*.eu", f"sns.orders.*.{ABSENT_TOKEN}"]
    assert _compile({}, ["event"]).subjects == ["sns.orders.*"]
    assert _compile({}, []).subjects == ["sns.orders"]


def test_compile_or_alternatives() -> None:
    disjoint = _compile(
        {"event": ["a"], "$or": [{"region": ["eu"]}, {"region": ["us"]}]}, ["event", "region"]
    )
    assert disjoint.subjects == ["sns.orders.a.eu", "sns.orders.a.us"]
    covered = _compile(
        {"$or": [{"event": ["a"]}, {"event": ["a"], "region": ["eu"]}]}, ["event", "region"]
    )
    assert covered.subjects == ["sns.orders.a.*"]
    overlapping = _compile({"$or": [{"event": ["a"]}, {"region": ["eu"]}]}, ["event", "region"])
    assert overlapping.reason is not None
    assert "overlap" in overlapping.reason


def test_compile_same_key_twice_intersects() -> None:
    both = _compile(
        {"event": ["a", "b"], "$or": [{"event": ["b", "c"]}, {"x": ["1"]}]}, ["event", "x"]
    )
    # (event in {a,b} and event in {b,c}) or (event in {a,b} and x = 1); b.1 is inside b.*
    assert both.subjects == ["sns.orders.a.1", "sns.orders.b.*"]
    only = _compile({"event": ["a", "b"], "$or": [{"event": ["b"]}, {"event": ["c"]}]}, ["event"])
    assert only.subjects == ["sns.orders.b"]


@pytest.mark.parametrize(
    ("policy", "fragment"),
    [
        ({"event": [{"prefix": "order"}]}, "prefix"),
        ({"event": [{"suffix": "ed"}]}, "suffix"),
        ({"event": [{"anything-but": "x"}]}, "anything-but"),
        ({"event": [{"anything-but": {"prefix": "x"}}]}, "anything-but"),
        ({"event": [{"equals-ignore-case": "x"}]}, "equals-ignore-case"),
        ({"event": [{"cidr": "10.0.0.0/8"}]}, "cidr"),
        ({"event": [{"numeric": [">", 1]}]}, "numeric comparison"),
        ({"event": [{"exists": True}]}, "exists:true"),
        ({"event": [5]}, "matches a number"),
        ({"event": [True]}, "true/false/null"),
        ({"other": ["x"]}, "'other' is not a promoted attribute"),
    ],
)
def test_compile_reasons(policy: dict[str, Any], fragment: str) -> None:
    result = _compile(policy, ["event"])
    assert result.subjects == []
    assert result.reason is not None
    assert fragment in result.reason


def test_body_scope_never_compiles() -> None:
    policy = parse_policy({"event": ["x"]}, scope="MessageBody")
    result = compile_to_subjects(policy, ["event"], "sns.t")
    assert result.reason is not None
    assert "message body" in result.reason


def test_compiled_subjects_fit_the_limit() -> None:
    policy = {"a": [f"v{i}" for i in range(10)], "b": [f"w{i}" for i in range(15)]}
    result = _compile(policy, ["a", "b"])
    assert len(result.subjects) == 150


# ---- choosing promoted attributes ---------------------------------------------------------


def _policies(*docs: dict[str, Any]) -> list[Any]:
    return [parse_policy(d) for d in docs]


def test_choose_promoted_maximises_compiled_policies() -> None:
    policies = _policies(
        {"event": ["a"]},
        {"event": ["b"], "region": ["eu"]},
        {"tier": ["gold"]},
        {"event": [{"prefix": "x"}]},  # never compiles: must not pull "event" in by itself
        {"region": ["us"], "tier": ["gold"], "event": ["c"], "kind": ["k"]},
    )
    assert choose_promoted(policies, max_tokens=2) == ["event", "region"]
    assert choose_promoted(policies, max_tokens=3) == ["event", "region", "tier"]
    assert choose_promoted(policies, max_tokens=1) == ["event"]


def test_choose_promoted_is_deterministic_and_stable() -> None:
    policies = _policies({"b": ["1"]}, {"a": ["1"]})
    assert choose_promoted(policies, max_tokens=1) == ["a"]
    assert choose_promoted(list(reversed(policies)), max_tokens=1) == ["a"]
    assert choose_promoted(_policies({"x": [{"prefix": "p"}]})) == []
    assert choose_promoted([]) == []


# ---- moto as a second opinion --------------------------------------------------------------

# Where moto 5's FilterPolicyMatcher and the AWS guide part ways, we follow the guide. Keys are
# (case name, "match" | "no_match", index) in matching.json; values say why moto differs.
MOTO_DISAGREES = {
    **{
        (
            "equals-ignore-case with an upper-case pattern (moto lowercases one side only)",
            "match",
            i,
        ): "moto lowercases only the message side"
        for i in range(3)
    },
    **{
        (name, "match", i): "moto has no cidr"
        for name in (
            "cidr IPv4",
            "cidr IPv6",
            "cidr /31 (the longest IPv4 mask SNS takes)",
            "cidr /127 (the longest IPv6 mask SNS takes)",
        )
        for i in range(2)
    },
    (
        "anything-but list",
        "no_match",
        3,
    ): "moto passes a String.Array whose elements are all excluded",
    (
        "anything-but numbers",
        "no_match",
        2,
    ): "moto passes a String.Array whose elements are all excluded",
    ("numeric on a custom Number type", "match", 0): "moto ignores custom Number.x types",
    ("Binary attributes are ignored", "no_match", 0): "moto lets exists see Binary attributes",
    **{
        ("$or operator (body, nested)", k, i): "moto's $or works in attribute scope only"
        for k, i in (("match", 0), ("match", 1), ("no_match", 0))
    },
    (
        "$or with reserved field names is an ordinary key",
        "match",
        1,
    ): "moto does not match numeric entries under a key named $or",
    ("nested body keys", "match", 2): "moto does not let a dotted body key meet a nested policy",
    (
        "dotted policy key reaches nested body",
        "match",
        0,
    ): "moto does not let a dotted policy key reach nested body",
    ("literals in body", "match", 0): "moto does not match false/null literals",
}


def test_moto_agrees_except_where_documented() -> None:
    utils = pytest.importorskip("moto.sns.utils")
    disagreements = set()
    for case in MATCHING:
        for key in ("match", "no_match"):
            for i, message in enumerate(case[key]):
                attributes, body = _message(message)
                ours = parse_policy(case["policy"], scope=case["scope"]).matches(attributes, body)
                try:
                    matcher = utils.FilterPolicyMatcher(case["policy"], case["scope"])
                    theirs = matcher.matches(message.get("attributes", {}), body or "")
                except Exception:  # moto crashes on some policies it does not support
                    theirs = None
                if theirs != ours:
                    disagreements.add((case["name"], key, i))
    assert disagreements == set(MOTO_DISAGREES)


def test_string_array_holding_one_scalar_is_a_one_element_array() -> None:
    """AWS's guide documents String.Array only as "an array, formatted as a string" (its vector:
    `[100, 50]` is not "anything-but" [100, 500]-excluded, since 50 is not listed). A value that
    is one JSON scalar is delivered by SNS as a one-element array (moto's test
    `test_filtering_string_array_with_number_no_array_match`, checked against AWS): the engine,
    and moto agree on it (moto's numeric ranges and anything-but skip String.Array elements)."""
    utils = pytest.importorskip("moto.sns.utils")

    def array(value: str) -> dict[str, MessageAttribute]:
        return {"price": MessageAttribute("String.Array", value)}

    # (policy, value, SNS delivers it, moto evaluates this operator on String.Array elements)
    vectors: list[tuple[dict[str, Any], str, bool, bool]] = [
        ({"price": [100, 500]}, "100", True, True),
        ({"price": [100, 500]}, "500.0", True, True),
        ({"price": [100, 500]}, "[100, 50]", True, True),
        ({"price": [100, 500]}, "700", False, True),
        ({"price": ["rugby"]}, '"rugby"', True, True),
        ({"price": ["rugby"]}, '"soccer"', False, True),
        ({"price": [{"numeric": [">=", 100]}]}, "150", True, False),
        ({"price": [{"numeric": [">=", 100]}]}, "99", False, False),
        # The documented vector (numeric-value-matching: anything-but on an array).
        ({"price": [{"anything-but": [100, 500]}]}, "[100, 50]", True, True),
        ({"price": [{"anything-but": [100, 500]}]}, "100", False, False),
    ]
    for policy, value, expected, moto_knows in vectors:
        ours = parse_policy(policy).matches(array(value), None)
        assert ours is expected, (policy, value)
        if moto_knows:
            envelope = {"price": {"Type": "String.Array", "Value": value}}
            theirs = utils.FilterPolicyMatcher(policy, "MessageAttributes").matches(envelope, "")
            assert theirs is expected, ("moto", policy, value)
    # Still no value: an object, or text that is not JSON.
    assert not parse_policy({"price": [100]}).matches(array('{"price": 100}'), None)
    assert not parse_policy({"price": ["rugby"]}).matches(array("rugby"), None)
