"""The translation as data: each `tests/data/mapping/*.yaml` case is an inventory fragment in,
and the relevant subset of streams, consumers, resources, verdicts and routes out.

Case file shape (every key under `expect` is optional; only what is listed is asserted):

    inventory:          # Inventory JSON shape; region/account/url/arn/fifo are filled in
      queues: [{name: orders, visibility_timeout: 45}]
      topics: [{name: events}]
      subscriptions: [{arn: ..., topic_arn: ..., protocol: sqs, endpoint: <queue arn>}]
    rules: {...}        # a mapping-file body, loaded on top of mappings/default.yaml
    replicas: 3         # load_rules(..., replicas=3)
    server_version: "2.12.0"
    expect:
      error: [substring, ...]          # translate raises MappingError whose one_line() has them
      stream_names: [...]              # exactly these streams
      consumer_keys: [...]             # exactly these "stream/durable" consumers
      streams: {name: {to_api subset}} # nested dicts are subsets; "<absent>" = key left out
      consumers: {"stream/durable": {to_api subset}}
      resources: {source_arn: {stream, consumer, publish_subject, filter_subjects,
                               verdicts: {attribute: verdict}, notes: {attribute: substring},
                               manual_steps: {attribute: substring}, absent: [attribute],
                               worst_verdict}}
      resource_arns: [...]             # exactly these resources
      routes: [[kind, name], ...]      # exactly these routes run in the case's cutover state
      route_details: {name: {field subset}}   # of any candidate route
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import yaml

from snsq2nats.errors import MappingError
from snsq2nats.inventory import Inventory, load_inventory
from snsq2nats.jetstream.spec import (
    FOR_KEY,
    PARTITION_KEY,
    PARTITIONS_KEY,
    ROUTE_KEY,
    SOURCE_KEY,
)
from snsq2nats.plan.model import Desired, Resource
from snsq2nats.plan.rules import Rules, load_rules
from snsq2nats.plan.translate import translate

DATA = Path(__file__).parent / "data" / "mapping"
# shop_* files are the shop estate and mapping files for it, not cases.
CASES = sorted(p for p in DATA.glob("*.yaml") if not p.name.startswith("shop_"))
SHOP = DATA / "shop_inventory.json"
SHOP_CUTOVER = DATA / "shop_cutover.yaml"
REGION = "us-east-1"
ACCOUNT = "123456789012"
ABSENT = "<absent>"


def _queue(raw: dict[str, Any]) -> dict[str, Any]:
    queue = dict(raw)
    name = queue["name"]
    queue.setdefault("region", REGION)
    queue.setdefault("account", ACCOUNT)
    queue.setdefault("arn", f"arn:aws:sqs:{queue['region']}:{queue['account']}:{name}")
    queue.setdefault(
        "url", f"https://sqs.{queue['region']}.amazonaws.com/{queue['account']}/{name}"
    )
    queue.setdefault("fifo", name.endswith(".fifo"))
    return queue


def _topic(raw: dict[str, Any]) -> dict[str, Any]:
    topic = dict(raw)
    topic.setdefault("region", REGION)
    topic.setdefault("account", ACCOUNT)
    topic.setdefault("arn", f"arn:aws:sns:{topic['region']}:{topic['account']}:{topic['name']}")
    topic.setdefault("fifo", topic["name"].endswith(".fifo"))
    return topic


def _subscription(raw: dict[str, Any]) -> dict[str, Any]:
    sub = dict(raw)
    sub.setdefault("region", REGION)
    sub.setdefault("account", ACCOUNT)
    sub.setdefault("protocol", "sqs")
    return sub


def case_inventory(fragment: dict[str, Any]) -> Inventory:
    return Inventory.model_validate(
        {
            "generated_at": "2025-01-01T00:00:00Z",
            "regions": [REGION],
            "queues": [_queue(q) for q in fragment.get("queues", [])],
            "topics": [_topic(t) for t in fragment.get("topics", [])],
            "subscriptions": [_subscription(s) for s in fragment.get("subscriptions", [])],
        }
    )


def case_rules(case: dict[str, Any], tmp_path: Path) -> Rules:
    paths = []
    if case.get("rules") is not None:
        path = tmp_path / "rules.yaml"
        path.write_text(yaml.safe_dump(case["rules"]), encoding="utf-8")
        paths.append(path)
    return load_rules(paths, replicas=case.get("replicas"))


def assert_subset(actual: Any, expected: Any, where: str) -> None:
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{where}: expected a mapping, got {actual!r}"
        for key, value in expected.items():
            if value == ABSENT:
                assert key not in actual, f"{where}.{key}: expected absent, got {actual[key]!r}"
                continue
            assert key in actual, f"{where}.{key}: missing (have {sorted(actual)})"
            assert_subset(actual[key], value, f"{where}.{key}")
    elif isinstance(expected, list) and any(isinstance(e, dict) for e in expected):
        assert isinstance(actual, list) and len(actual) == len(expected), (
            f"{where}: expected {len(expected)} items, got {actual!r}"
        )
        for i, (got, want) in enumerate(zip(actual, expected, strict=True)):
            assert_subset(got, want, f"{where}[{i}]")
    else:
        assert actual == expected, f"{where}: expected {expected!r}, got {actual!r}"


def assert_resource(resource: Resource, expected: dict[str, Any]) -> None:
    where = resource.source_arn
    for key in (
        "stream",
        "consumer",
        "publish_subject",
        "filter_subjects",
        "subject_tokens",
        "partition_consumers",
        "worst_verdict",
    ):
        if key in expected:
            assert getattr(resource, key) == expected[key], f"{where}: {key}"
    by_attribute: dict[str, list[Any]] = {}
    for entry in resource.fidelity:
        by_attribute.setdefault(entry.attribute, []).append(entry)
    shown = {a: [f.verdict for f in fs] for a, fs in by_attribute.items()}
    for attribute, verdict in expected.get("verdicts", {}).items():
        assert attribute in by_attribute, f"{where}: no verdict for {attribute} (have {shown})"
        got = [f.verdict for f in by_attribute[attribute]]
        assert verdict in got, f"{where}: {attribute} is {got}, expected {verdict}"
    for attribute, text in expected.get("notes", {}).items():
        notes = [f.note for f in by_attribute.get(attribute, [])]
        assert any(text in n for n in notes), f"{where}: {attribute} notes {notes} lack {text!r}"
    for attribute, text in expected.get("manual_steps", {}).items():
        steps = [f.manual_step or "" for f in by_attribute.get(attribute, [])]
        assert any(s and text in s for s in steps), f"{where}: {attribute} steps {steps}"
    for attribute in expected.get("absent", []):
        assert attribute not in by_attribute, f"{where}: unexpected {attribute} {shown}"


def check_expectations(desired: Desired, expect: dict[str, Any]) -> None:
    streams = {s.name: s.to_api() for s in desired.streams}
    consumers = {c.key: c.to_api() for c in desired.consumers}
    resources = {r.source_arn: r for r in desired.resources}
    if "stream_names" in expect:
        assert sorted(streams) == sorted(expect["stream_names"])
    if "consumer_keys" in expect:
        assert sorted(consumers) == sorted(expect["consumer_keys"])
    if "resource_arns" in expect:
        assert sorted(resources) == sorted(expect["resource_arns"])
    for name, subset in expect.get("streams", {}).items():
        assert name in streams, f"stream {name} missing (have {sorted(streams)})"
        assert_subset(streams[name], subset, f"stream {name}")
    for key, subset in expect.get("consumers", {}).items():
        assert key in consumers, f"consumer {key} missing (have {sorted(consumers)})"
        assert_subset(consumers[key], subset, f"consumer {key}")
    for arn, subset in expect.get("resources", {}).items():
        assert arn in resources, f"resource {arn} missing (have {sorted(resources)})"
        assert_resource(resources[arn], subset)
    if "routes" in expect:
        got = [[r.kind, r.name] for r in desired.routes]
        assert got == [list(r) for r in expect["routes"]]
    # A route's shape does not depend on whether the case's cutover state runs it.
    routes = {r.name: r.model_dump(mode="json") for r in desired.candidate_routes}
    for name, subset in expect.get("route_details", {}).items():
        assert name in routes, f"route {name} missing (have {sorted(routes)})"
        assert_subset(routes[name], subset, f"route {name}")


def check_invariants(inventory: Inventory, desired: Desired) -> None:
    """What holds for every translation, whatever the case asserts."""
    routes = {r.name: r for r in desired.routes}
    objects = [(f"stream {s.name}", s.metadata) for s in desired.streams]
    objects += [(f"consumer {c.key}", c.metadata) for c in desired.consumers]
    for what, metadata in objects:
        if ROUTE_KEY in metadata:
            # Bridge-owned: its route and what that route serves, never a source (DESIGN §2).
            assert SOURCE_KEY not in metadata, f"bridge-owned {what} carries {SOURCE_KEY}"
            assert metadata.get(FOR_KEY), f"bridge-owned {what} lacks {FOR_KEY}"
            route = routes.get(metadata[ROUTE_KEY])
            if route is not None:
                assert metadata[FOR_KEY] == route.source_arn, what
        else:
            assert metadata.get(SOURCE_KEY), f"{what} lacks {SOURCE_KEY} and {ROUTE_KEY}"
    for resource in desired.resources:
        if resource.kind != "sqs-queue":
            continue
        # A script looking up "the consumer of this queue" by metadata finds exactly one per
        # partition (one, unpartitioned): the durables its workers bind to, partition-labelled.
        owners = [c for c in desired.consumers if c.metadata.get(SOURCE_KEY) == resource.source_arn]
        owners.sort(key=lambda c: int(c.metadata.get(PARTITION_KEY, 0)))
        assert [c.durable_name for c in owners] == resource.durables, resource.source_arn
        assert all(c.stream_name == resource.stream for c in owners)
        assert owners[0].durable_name == resource.consumer
        if len(owners) > 1:
            labels = [(c.metadata[PARTITION_KEY], c.metadata[PARTITIONS_KEY]) for c in owners]
            assert labels == [(str(i), str(len(owners))) for i in range(len(owners))]
        else:
            assert PARTITION_KEY not in owners[0].metadata


def _load(path: Path) -> dict[str, Any]:
    case = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(case, dict) and "inventory" in case and "expect" in case, path.name
    unknown = set(case) - {"inventory", "rules", "replicas", "server_version", "expect"}
    assert not unknown, f"{path.name}: unknown case keys {unknown}"
    return case


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_mapping_case(path: Path, tmp_path: Path) -> None:
    case = _load(path)
    inventory = case_inventory(case["inventory"])
    rules = case_rules(case, tmp_path)
    server_version = case.get("server_version")
    expect = case["expect"]
    if "error" in expect:
        with pytest.raises(MappingError) as caught:
            translate(inventory, rules, server_version=server_version)
        line = caught.value.one_line()
        for text in expect["error"]:
            assert text in line, f"{text!r} not in {line!r}"
        return
    desired = translate(inventory, rules, server_version=server_version)
    check_invariants(inventory, desired)
    check_expectations(desired, expect)
    # Same input, same output; the order the scan listed things in does not matter.
    again = translate(inventory, rules, server_version=server_version)
    assert again.model_dump_json() == desired.model_dump_json()
    shuffled = _shuffled(inventory, seed=len(path.stem))
    assert (
        translate(shuffled, rules, server_version=server_version).model_dump_json()
        == desired.model_dump_json()
    )


def _shuffled(inventory: Inventory, seed: int) -> Inventory:
    rng = random.Random(seed)
    queues, topics, subs = list(inventory.queues), list(inventory.topics), inventory.subscriptions
    subs = list(subs)
    for items in (queues, topics, subs):
        rng.shuffle(items)
    return inventory.model_copy(update={"queues": queues, "topics": topics, "subscriptions": subs})


# -- the real demo estate --------------------------------------------------------------------

# Attributes AWS reports that are identity, counters or timestamps: nothing to translate.
READ_ONLY = {
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesDelayed",
    "ApproximateNumberOfMessagesNotVisible",
    "CreatedTimestamp",
    "LastModifiedTimestamp",
    "QueueArn",
    "TopicArn",
    "Owner",
    "SubscriptionArn",
    "Endpoint",
    "ConfirmationWasAuthenticated",
    "EffectiveDeliveryPolicy",
    "SubscriptionsPending",
    "SubscriptionsConfirmed",
    "SubscriptionsDeleted",
}
# Where an AWS attribute's verdict is filed under another name.
COVERED_BY = {
    "FilterPolicyScope": "FilterPolicy",
    "Protocol": "Protocol",
    "PendingConfirmation": "PendingConfirmation",
    "KmsDataKeyReusePeriodSeconds": "KmsDataKeyReusePeriodSeconds",
}


@pytest.fixture(scope="module")
def shop() -> Inventory:
    return load_inventory(SHOP)


@pytest.fixture(scope="module")
def shop_desired(shop: Inventory) -> Desired:
    return translate(shop, load_rules([]), server_version="2.12.0")


def _attributes(resource: Resource) -> set[str]:
    return {f.attribute.split(".")[0] for f in resource.fidelity}


def test_every_configurable_queue_attribute_gets_a_verdict(
    shop: Inventory, shop_desired: Desired
) -> None:
    resources = {r.source_arn: r for r in shop_desired.resources}
    for queue in shop.queues:
        got = _attributes(resources[queue.arn])
        expected = set(queue.attributes) - READ_ONLY
        if queue.tags:
            expected.add("Tags")
        if queue.policy:
            expected.add("Policy")
        if queue.kms_master_key_id:
            expected |= {"KmsMasterKeyId", "KmsDataKeyReusePeriodSeconds"}
        if queue.fifo:
            assert {"FifoQueue", "ContentBasedDeduplication"} <= expected
        if queue.redrive_policy:
            assert "RedrivePolicy" in expected
        expected = {COVERED_BY.get(a, a) for a in expected}
        # The scan fills these from defaults even when AWS leaves them out.
        expected |= {
            "VisibilityTimeout",
            "MessageRetentionPeriod",
            "MaximumMessageSize",
            "DelaySeconds",
            "ReceiveMessageWaitTimeSeconds",
            "RedrivePolicy",
        }
        missing = expected - got
        assert not missing, f"{queue.name}: no verdict for {sorted(missing)}"


def test_every_topic_and_subscription_attribute_gets_a_verdict(
    shop: Inventory, shop_desired: Desired
) -> None:
    resources = {r.source_arn: r for r in shop_desired.resources}
    for topic in shop.topics:
        got = _attributes(resources[topic.arn])
        expected = {a for a, v in topic.attributes.items() if v} - READ_ONLY
        expected = {COVERED_BY.get(a, a) for a in expected}
        if topic.tags:
            expected.add("Tags")
        assert not expected - got, f"{topic.name}: no verdict for {sorted(expected - got)}"
    for sub in shop.subscriptions:
        got = _attributes(resources[sub.arn])
        expected = {a for a, v in sub.attributes.items() if v} - READ_ONLY
        if sub.protocol == "sqs":
            expected.discard("Protocol")
        if sub.attributes.get("PendingConfirmation") == "false":
            expected.discard("PendingConfirmation")
        if sub.protocol != "sqs":
            expected = {"Protocol"}  # nothing else matters when NATS cannot deliver at all
        expected = {COVERED_BY.get(a, a) for a in expected}
        assert not expected - got, f"{sub.arn}: no verdict for {sorted(expected - got)}"


def test_shop_estate_translates_deterministically(shop: Inventory, shop_desired: Desired) -> None:
    check_invariants(shop, shop_desired)
    rules = load_rules([])
    for seed in range(5):
        again = translate(_shuffled(shop, seed), rules, server_version="2.12.0")
        assert again.model_dump_json() == shop_desired.model_dump_json()


SHOP_STREAMS = {
    "KV_snsq2nats_cutover",
    "KV_snsq2nats_fleet",
    "KV_snsq2nats_revision",
    "sns_orders",
    "sqs_notifications-delayed",
    "sqs_orders-analytics",
    "sqs_orders-billing",
    "sqs_orders-dlq",
    "sqs_orders-fraud",
    "sqs_orders-shipping",
    "sqsfifo_payments",
    "sqsfifo_payments-dlq",
    "snsq2nats_advisories",
    "snsq2nats_sent",
}


@pytest.fixture(scope="module")
def shop_cutover(shop: Inventory) -> Desired:
    """The shop with the orders-* queues' consumers on NATS (tests/data/mapping/shop_cutover)."""
    return translate(shop, load_rules([SHOP_CUTOVER]), server_version="2.12.0")


def test_shop_estate_shape(shop_desired: Desired) -> None:
    """Every consumer still on AWS (the default). The orders topic has an https subscriber and a
    queue reading SNS's envelope, so it fans out through SNS: no queue stream sources it, no
    filter router exists, the nats-to-sns relay's consumer waits for producers on NATS, and
    the topic keeps its stream for the sns-to-nats relay too."""
    assert {s.name for s in shop_desired.streams} == SHOP_STREAMS
    kinds = sorted((r.kind, r.name) for r in shop_desired.routes)
    assert kinds == [
        ("dlq-mover", "dlq:orders-billing"),
        ("dlq-mover", "dlq:payments.fifo"),
        ("sns-to-nats", "sns:orders"),
    ]
    assert [s.name for s in shop_desired.streams if s.sources] == []
    (relay,) = [c for c in shop_desired.consumers if c.stream_name == "sns_orders"]
    assert relay.durable_name == "snsq2nats-to-sns" and relay.deliver_policy == "new"
    cutover = {
        r.name: [f.note for f in r.fidelity if f.attribute == "Cutover"]
        for r in shop_desired.resources
        if r.kind == "sns-subscription" and r.stream is not None
    }
    assert sorted(cutover) == [
        f"orders → orders-{q}" for q in ("analytics", "billing", "fraud", "shipping")
    ]
    assert all(len(n) == 1 and "through SNS like any other" in n[0] for n in cutover.values())
    (topic,) = [r for r in shop_desired.resources if r.name == "orders"]
    (fanout,) = [f for f in topic.fidelity if f.attribute == "Fanout"]
    assert "orders-analytics expects the SNS envelope" in fanout.note
    assert "is not served by NATS" in fanout.note


def test_shop_estate_shape_with_orders_consumers_on_nats(
    shop_desired: Desired, shop_cutover: Desired
) -> None:
    """The orders queues' consumers on NATS: only relays change (sqs-to-nats for each), never
    the JetStream objects."""
    assert {s.name for s in shop_cutover.streams} == SHOP_STREAMS
    kinds = sorted((r.kind, r.name) for r in shop_cutover.routes)
    assert kinds == [
        ("dlq-mover", "dlq:orders-billing"),
        ("dlq-mover", "dlq:payments.fifo"),
        ("sns-to-nats", "sns:orders"),
        *(
            ("sqs-to-nats", f"sqs:orders-{q}")
            for q in ("analytics", "billing", "dlq", "fraud", "shipping")
        ),
    ]
    assert shop_cutover.streams == shop_desired.streams
    assert shop_cutover.consumers == shop_desired.consumers
    assert shop_cutover.candidate_routes == shop_desired.candidate_routes
    check_invariants(load_inventory(SHOP), shop_cutover)


def test_translate_output_is_plain_json(shop_desired: Desired) -> None:
    text = shop_desired.model_dump_json()
    assert "sns_orders" in [s["name"] for s in json.loads(text)["streams"]]


def test_desired_json_round_trip(shop_desired: Desired) -> None:
    assert Desired.model_validate_json(shop_desired.model_dump_json()) == shop_desired
