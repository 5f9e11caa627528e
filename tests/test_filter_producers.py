"""NATS producers lose nothing to filters (issue 18, section 3).

A nats-py producer publishes exactly as `snsq2nats subject` says — the printed subject, every
attribute a plain header (no data type recorded) — to a topic fanning out through stream
sources, with a numeric, an exact (on a promoted attribute), a MessageBody filter and an
unfiltered queue. The plan is applied to a real nats-server and the bridge's routes run: each
queue holds exactly SNS's share, once. What cannot be evaluated is counted by cause and makes
`status` say not drained; a subject token that disagrees with its header is routed by the header.
"""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from snsq2nats import filterpolicy
from snsq2nats.apply import apply_plan
from snsq2nats.bridge.codec import (
    Attribute,
    attributes_to_headers,
    headers_to_attributes,
    plain_names,
    string_attributes,
)
from snsq2nats.bridge.context import BridgeContext
from snsq2nats.bridge.metrics import render
from snsq2nats.bridge.runtime import run_bridge
from snsq2nats.cli import main
from snsq2nats.jetstream.api import JetStreamApiError, api
from snsq2nats.jetstream.spec import ServerInfo
from snsq2nats.plan.pipeline import assemble_plan, publish_subject
from snsq2nats.plan.rules import load_rules
from snsq2nats.report.live import line
from snsq2nats.status import collect
from tests.fixtures.bridge import FAST
from tests.fixtures.wait import until
from tests.test_mapping import case_inventory

TOPIC = "arn:aws:sns:us-east-1:123456789012:orders"
POLICIES: dict[str, tuple[str, str | None]] = {
    "fraud": ("MessageAttributes", '{"amount": [{"numeric": [">=", 100]}]}'),
    "created": ("MessageAttributes", '{"kind": ["created"]}'),
    "large": ("MessageBody", '{"order": {"size": ["large"]}}'),
    # Compares amount as a string: an SNS producer sends amount as a Number (the fraud policy
    # needs one), which a string entry never matches; one type per attribute here too.
    "code150": ("MessageAttributes", '{"amount": ["150"]}'),
    "all": ("MessageAttributes", None),
}
RULES = """
overrides:
  - match: "arn:aws:sqs:*"
    cutover: {consumers: nats}
  - match: "orders"
    cutover: {producers: nats}
"""


def estate(tmp_path: Path, version: str) -> Any:
    subs = []
    for name, (scope, policy) in POLICIES.items():
        sub: dict[str, Any] = {
            "arn": f"{TOPIC}:{name}",
            "topic_arn": TOPIC,
            "endpoint": f"arn:aws:sqs:us-east-1:123456789012:{name}",
            "raw_message_delivery": True,
            "filter_policy_scope": scope,
        }
        if policy:
            sub["filter_policy"] = policy
        subs.append(sub)
    inventory = case_inventory(
        {
            "queues": [{"name": n} for n in POLICIES],
            "topics": [{"name": "orders"}],
            "subscriptions": subs,
        }
    )
    rules_path = tmp_path / "rules.yaml"
    rules_path.write_text(RULES, encoding="utf-8")
    return assemble_plan(
        inventory,
        load_rules([rules_path]),
        None,
        server=ServerInfo(reachable=False, version=version),
    )


def sns_share(amount: str, kind: str | None, size: str) -> set[str]:
    """What SNS delivers when the producer sends amount as a Number and kind as a String."""
    out = {"all"}
    if float(amount) >= 100:
        out.add("fraud")
    if kind == "created":
        out.add("created")
    if size == "large":
        out.add("large")
    return out


async def bodies(nc: Any, stream: str) -> list[str]:
    state = (await api(nc, f"$JS.API.STREAM.INFO.{stream}"))["state"]
    out = []
    for seq in range(int(state["first_seq"]), int(state["last_seq"]) + 1):
        try:
            got = (await api(nc, f"$JS.API.STREAM.MSG.GET.{stream}", {"seq": seq}))["message"]
        except JetStreamApiError:
            continue
        out.append(json.loads(base64.b64decode(got["data"]))["id"])
    return out


# --- pure: the typing rule --------------------------------------------------------------------


def test_plain_header_is_a_number_where_the_policy_compares_numbers() -> None:
    policy = filterpolicy.parse_policy(
        '{"amount": [{"numeric": [">=", 100]}], "code": ["150"], "n": [{"anything-but": [5]}]}'
    )
    assert filterpolicy.numeric_keys(policy) == {"amount", "n"}
    plain = {
        "amount": filterpolicy.MessageAttribute("String", "150"),
        "code": filterpolicy.MessageAttribute("String", "150"),
        "n": filterpolicy.MessageAttribute("String", "5.0"),
    }
    typed, problems = filterpolicy.type_plain(plain, plain, filterpolicy.numeric_keys(policy))
    assert problems == []
    assert typed["amount"].data_type == "Number"
    assert typed["code"].data_type == "String"  # compared as a string: stays one
    assert not policy.matches(typed)  # n = 5.0 is the Number 5, which anything-but excludes
    typed["n"] = filterpolicy.MessageAttribute("Number", "6")
    assert policy.matches(typed)
    assert not policy.matches(plain)  # the old reading: "150" never meets a numeric range


def test_recorded_types_are_kept_and_bad_numbers_are_reported() -> None:
    relayed = attributes_to_headers({"amount": Attribute("String", "150")})
    assert plain_names(relayed) == frozenset()
    assert plain_names({"amount": "150", "Nats-Msg-Id": "x"}) == {"amount"}
    attrs = string_attributes(headers_to_attributes(relayed))
    typed, _ = filterpolicy.type_plain(attrs, plain_names(relayed), {"amount"})
    assert typed["amount"].data_type == "String"  # AWS said String: SNS would not match it
    for value, cause in [
        ("abc", "not-a-number"),
        ("2e9", "number-out-of-range"),
        ("1_0", "not-a-number"),
    ]:
        raw = {"amount": filterpolicy.MessageAttribute("String", value)}
        typed, problems = filterpolicy.type_plain(raw, ["amount"], ["amount"])
        assert [p.cause for p in problems] == [cause]
        assert typed["amount"].data_type == "String"


def test_every_filter_is_routed_by_headers_never_by_a_subject_token(tmp_path: Path) -> None:
    plan = estate(tmp_path, "2.11.0")
    subs = {
        r.source_arn.rsplit(":", 1)[1]: r for r in plan.resources if r.kind == "sns-subscription"
    }
    topic = next(r for r in plan.resources if r.kind == "sns-topic")
    # Still promoted, for NATS-native subscribers; no queue depends on them.
    assert topic.subject_tokens == ["amount", "kind"]
    routers = {r.target_stream for r in plan.candidate_routes if r.kind == "filter-router"}
    assert routers == {"sqs_fraud", "sqs_created", "sqs_large", "sqs_code150"}
    assert {
        tuple(r.number_attributes) for r in plan.candidate_routes if r.kind == "filter-router"
    } == {("amount",)}
    assert subs["created"].filter_subjects is None
    by_name = {s.name: s for s in plan.streams}
    assert by_name["sqs_created"].sources is None  # no token filter beside the router
    # The unfiltered queue sources the whole NATS-origin space, whatever tokens it has.
    (source,) = by_name["sqs_all"].sources or []
    assert [t.src for t in source.subject_transforms or []] == ["sns.orders", "sns.orders.>"]
    fraud = next(f for f in subs["fraud"].fidelity if f.attribute == "FilterPolicy")
    assert fraud.verdict == "emulated" and "amount are Numbers" in fraud.note
    # Its string entry never meets a plain amount header: the note says why.
    code = next(f for f in subs["code150"].fidelity if f.attribute == "FilterPolicy")
    assert "plain headers amount are Numbers" in code.note


# --- real server: the producer, the bridge, each queue's share ---------------------------------


async def test_nats_producer_gets_exactly_sns_share(nc: Any, js: Any, tmp_path: Path) -> None:
    version = nc.connected_server_version
    plan = estate(tmp_path, f"{version.major}.{version.minor}.{version.patch}")
    assert (await apply_plan(nc, plan, allow_destructive=False)).ok
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(plan.model_dump_json(), encoding="utf-8")

    # Exactly what the tool tells a producer: the subject on stdout, the header rule on stderr.
    result = CliRunner().invoke(main, ["subject", "orders", "--plan", str(plan_path)])
    assert result.exit_code == 0, result.output
    subject = result.stdout.strip()
    assert subject == publish_subject(plan, "orders", []) == "sns.orders.~absent.~absent"
    assert filterpolicy.PLAIN_HEADER_RULE in result.stderr
    assert "compared as numbers here: amount" in result.stderr

    expected: dict[str, list[str]] = {name: [] for name in POLICIES}
    n = 0
    for amount in ["150", "99.5", "100", "1e3", "-3"]:
        for kind in ["created", "deleted", None]:
            for size in ["large", "small"]:
                n += 1
                headers = {"amount": amount} | ({"kind": kind} if kind else {})
                body = json.dumps({"id": f"m{n}", "order": {"size": size}}).encode()
                await js.publish(subject, body, headers=headers)
                for queue in sns_share(amount, kind, size):
                    expected[queue].append(f"m{n}")
    # A token that disagrees with its header: the header decides (and it is counted).
    await js.publish(
        publish_subject(plan, "orders", ["kind=deleted"]),
        json.dumps({"id": "token", "order": {}}).encode(),
        headers={"amount": "5", "kind": "created"},
    )
    expected["created"].append("token")
    expected["all"].append("token")
    # Not a number where the policy compares numbers: never a silent skip.
    await js.publish(
        subject, json.dumps({"id": "nan", "order": {}}).encode(), headers={"amount": "abc"}
    )
    expected["all"].append("nan")

    ctx = BridgeContext(plan=plan, nc=nc, sqs=None, sns=None, timings=FAST)
    routes = [r for r in plan.routes if r.kind == "filter-router"]
    assert len(routes) == 4
    task = asyncio.create_task(run_bridge(ctx, routes, handle_signals=False))
    try:

        async def arrived() -> bool:
            counts = [len(await bodies(nc, f"sqs_{q}")) for q in POLICIES]
            return counts == [len(expected[q]) for q in POLICIES]

        await until(arrived, what="each queue's share")
        await until(
            lambda: all(
                m.messages + m.skipped + m.undeliverable_total == n + 2
                for m in ctx.metrics.values()
            ),
            what="every router settled every message",
        )
        for queue in POLICIES:
            assert sorted(await bodies(nc, f"sqs_{queue}")) == sorted(expected[queue]), queue

        fraud = next(m for m in ctx.metrics.values() if m.route.endswith("->fraud"))
        assert fraud.undeliverable_by == {"not-a-number": 1}
        code = next(m for m in ctx.metrics.values() if m.route.endswith("->code150"))
        assert code.undeliverable_by == {"not-a-number": 1}
        large = next(m for m in ctx.metrics.values() if m.route.endswith("->large"))
        assert large.undeliverable_by == {}  # it never reads amount
        created = next(m for m in ctx.metrics.values() if m.route.endswith("->created"))
        assert created.rerouted_by == {"subject-mismatch": 1}
        assert "undeliverable=1 undeliverable_by=not-a-number:1" in line(fraud, 0.0)
        exposition = render(ctx.metrics.values())
        assert (
            'snsq2nats_bridge_undeliverable_total{cause="not-a-number",kind="filter-router"'
            in exposition
        )
        assert 'snsq2nats_bridge_skipped_by_cause_total{cause="no-match"' in exposition

        statuses = {s.route: s for s in await collect(nc, lambda region: None, plan, routes)}
        stuck = statuses[fraud.route]
        assert not stuck.drained and stuck.undeliverable == {"not-a-number": 1}
        assert "1 undeliverable message(s)" in stuck.reason and "amount='abc'" in stuck.reason
        assert statuses[created.route].drained
    finally:
        ctx.stopping.set()
        await asyncio.wait_for(task, timeout=30)


def test_a_topic_switched_at_finish_runs_its_routers_only_once_finished(tmp_path: Path) -> None:
    """An envelope reader keeps the topic on SNS until `finish`: its filtered subscriptions'
    routers are planned from the start but run only once the topic is finished (skipping what
    the nats-to-sns relay handed SNS), so no filter keeps the topic from switching."""
    from snsq2nats.plan.routes import CutoverView, route_active
    from snsq2nats.plan.rules import Cutover

    inventory_with_reader = case_inventory(
        {
            "queues": [{"name": "fraud"}, {"name": "reader"}],
            "topics": [{"name": "orders"}],
            "subscriptions": [
                {
                    "arn": f"{TOPIC}:fraud",
                    "topic_arn": TOPIC,
                    "endpoint": "arn:aws:sqs:us-east-1:123456789012:fraud",
                    "raw_message_delivery": True,
                    "filter_policy": POLICIES["fraud"][1],
                },
                {
                    "arn": f"{TOPIC}:reader",
                    "topic_arn": TOPIC,
                    "endpoint": "arn:aws:sqs:us-east-1:123456789012:reader",
                },
            ],
        }
    )
    rules_path = tmp_path / "rules.yaml"
    rules_path.write_text(RULES, encoding="utf-8")
    plan = assemble_plan(
        inventory_with_reader,
        load_rules([rules_path]),
        None,
        server=ServerInfo(reachable=False, version="2.11.0"),
    )
    topic = next(r for r in plan.resources if r.kind == "sns-topic")
    fanout = next(f for f in topic.fidelity if f.attribute == "Fanout")
    assert fanout.target == "nats-to-sns relay until the topic is finished"
    router = next(r for r in plan.candidate_routes if r.kind == "filter-router")
    assert router.at_finish and router.number_attributes == ["amount"]
    assert router not in plan.routes  # producers on NATS, but the topic is not finished
    nats = Cutover(producers="nats", consumers="nats")
    finished = nats.model_copy(update={"finished": True})
    assert not route_active(router, CutoverView({TOPIC: nats}, {TOPIC}))
    assert route_active(router, CutoverView({TOPIC: finished}, {TOPIC}))


def test_relay_to_aws_types_only_plain_headers_of_numeric_attributes() -> None:
    from snsq2nats.bridge.codec import headers_to_aws

    plain = {"amount": "150", "note": "150", "bad": "abc", "Nats-Msg-Id": "x"}
    got = headers_to_aws(plain, ["amount", "bad"])
    assert got == {
        "amount": {"DataType": "Number", "StringValue": "150"},
        "note": {"DataType": "String", "StringValue": "150"},
        "bad": {"DataType": "String", "StringValue": "abc"},  # SNS evaluates it as a String
    }
    # A recorded String stays one; a plain header beside it is typed by the rule.
    mixed = attributes_to_headers({"amount": Attribute("String", "7")}) | {"limit": "9"}
    got = headers_to_aws(mixed, ["amount", "limit"])
    assert got["amount"] == {"DataType": "String", "StringValue": "7"}
    assert got["limit"] == {"DataType": "Number", "StringValue": "9"}
    assert headers_to_aws(plain) == headers_to_aws(plain, ())  # no numbers: all Strings
