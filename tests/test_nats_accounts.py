"""`accounts: {nats: per-account}`: each AWS account becomes a NATS account, and a topic fanning
out to another account's queue crosses by an export in one and an import in the other."""

from __future__ import annotations

from pathlib import Path

from snsq2nats.inventory import Inventory, Queue, Subscription, Topic
from snsq2nats.jetstream.spec import ServerInfo
from snsq2nats.plan.model import Plan
from snsq2nats.plan.pipeline import assemble_plan
from snsq2nats.plan.rules import load_rules

SHOP, BILLING = "111111111111", "222222222222"
EAST = "us-east-1"
PER_ACCOUNT = (
    f"accounts:\n  naming: prefix\n  nats: per-account\n"
    f"  aliases: {{'{SHOP}': shop, '{BILLING}': billing}}\n"
)


def _queue(account: str, name: str) -> Queue:
    return Queue(
        arn=f"arn:aws:sqs:{EAST}:{account}:{name}",
        name=name,
        url=f"https://sqs.{EAST}.amazonaws.com/{account}/{name}",
        region=EAST,
        account=account,
    )


def _sub(topic: Topic, queue: Queue, n: int, filter_policy: str | None = None) -> Subscription:
    return Subscription(
        arn=f"{topic.arn}:sub-{n}",
        topic_arn=topic.arn,
        protocol="sqs",
        endpoint=queue.arn,
        region=EAST,
        account=topic.account,
        raw_message_delivery=True,
        filter_policy=filter_policy,
    )


def estate() -> Inventory:
    """A topic in shop fanning out to its own queue, to billing's `orders` and, filtered, to
    billing's `picky`; both accounts have an `orders` queue."""
    topic = Topic(arn=f"arn:aws:sns:{EAST}:{SHOP}:events", name="events", region=EAST, account=SHOP)
    audit, shop_orders = _queue(SHOP, "audit"), _queue(SHOP, "orders")
    orders, picky = _queue(BILLING, "orders"), _queue(BILLING, "picky")
    return Inventory(
        generated_at="2026-12-06T00:00:00+00:00",
        regions=[EAST],
        accounts=[SHOP, BILLING],
        queues=[audit, shop_orders, orders, picky],
        topics=[topic],
        subscriptions=[
            _sub(topic, audit, 1),
            _sub(topic, orders, 2),
            _sub(topic, picky, 3, '{"kind": ["big"]}'),
        ],
    )


def plan_of(tmp_path: Path, mapping: str | None) -> Plan:
    paths = []
    if mapping is not None:
        (tmp_path / "mapping.yaml").write_text(mapping)
        paths.append(tmp_path / "mapping.yaml")
    return assemble_plan(
        estate(), load_rules(paths), None, server=ServerInfo(reachable=False, note="offline")
    )


def test_default_plan_has_no_nats_accounts(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, "accounts: prefix\n")
    doc = plan.to_json()
    assert "nats_accounts" not in doc and "crossings" not in doc
    assert all("external" not in src for s in doc["streams"] for src in s.get("sources") or [])


def test_per_account_places_streams_and_shows_each_crossing(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, PER_ACCOUNT)
    accounts = {a.name: a for a in plan.nats_accounts}
    assert set(accounts) >= {"shop", "billing"}
    assert accounts["shop"].aws_account == SHOP and accounts["billing"].aws_account == BILLING
    assert "shop_sns_events" in accounts["shop"].streams
    assert {"shop_sqs_audit", "shop_sqs_orders"} <= set(accounts["shop"].streams)
    assert "billing_sqs_orders" in accounts["billing"].streams
    assert not set(accounts["shop"].streams) & set(accounts["billing"].streams)
    # Every planned stream is in exactly one account; every consumer where its stream is.
    held = [s for a in plan.nats_accounts for s in a.streams]
    assert sorted(held) == sorted(s.name for s in plan.streams)
    for consumer in plan.consumers:
        assert f"{consumer.stream_name}/{consumer.durable_name}" in (
            accounts[plan.account_of(consumer.stream_name) or ""].consumers
        )
    # The unfiltered fan-out into billing crosses as a stream source with the exact grants.
    sourced = [c for c in plan.crossings if c.how == "stream-source"]
    assert [(c.from_account, c.to_account, c.target_stream) for c in sourced] == [
        ("shop", "billing", "billing_sqs_orders")
    ]
    edge = sourced[0]
    assert edge.source_arn.endswith(f"{SHOP}:events")
    assert edge.target_arn.endswith(f"{BILLING}:orders")
    create = "$JS.API.CONSUMER.CREATE.shop_sns_events.>"
    deliver = "snsq2nats.deliver.billing.shop_sns_events.>"
    assert [(g.type, g.subject) for g in edge.exports] == [
        ("service", create),
        ("service", create[:-2]),
        ("stream", deliver),
        ("service", "$JS.FC.>"),
    ]
    assert [(g.type, g.subject, g.local_subject) for g in edge.imports] == [
        ("service", create, "$JS.shop.API.CONSUMER.CREATE.shop_sns_events.>"),
        ("service", create[:-2], "$JS.shop.API.CONSUMER.CREATE.shop_sns_events"),
        ("stream", deliver, None),
        ("service", "$JS.FC.>", None),
    ]
    queue = next(s for s in plan.streams if s.name == "billing_sqs_orders")
    sources = queue.sources or []
    assert [(s.name, s.external and s.external.api) for s in sources] == [
        ("shop_sns_events", "$JS.shop.API")
    ]
    # Within one account a source stays as it was.
    audit = next(s for s in plan.streams if s.name == "shop_sqs_audit")
    assert all(s.external is None for s in audit.sources or [])
    # The filtered fan-out into billing goes through the bridge: shown, not crossed on NATS.
    assert [
        (c.target_arn.rsplit(":", 1)[1], c.how) for c in plan.crossings if c.how == "bridge"
    ] == [("picky", "bridge")]
    # JetStream limits sized from the estate: its streams, consumers plus sources, storage.
    billing = accounts["billing"]
    assert billing.max_streams == len(billing.streams)
    assert billing.max_consumers >= len(billing.consumers)
    assert billing.max_consumers > accounts["shop"].max_consumers - 100  # sized, not unlimited
    # Unbounded streams (no max_bytes, the default) leave the account's storage unbounded.
    assert billing.disk_storage == -1 and billing.memory_storage == 0
    # The plan document round-trips with its accounts.
    assert Plan.model_validate(plan.to_json()) == plan


def test_cross_account_fidelity_names_the_crossing(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, PER_ACCOUNT)
    notes = [
        f for r in plan.resources for f in r.fidelity if f.attribute == "Endpoint (cross-account)"
    ]
    assert len(notes) == 2 and all("crossings" in f.note for f in notes)
    assert all(f.target == "NATS account per AWS account" for f in notes)


def test_bounded_streams_size_the_account_storage(tmp_path: Path) -> None:
    plan = plan_of(
        tmp_path, PER_ACCOUNT + "overrides:\n  - {match: '*', limits: {max_bytes: 1MiB}}\n"
    )
    shop = next(a for a in plan.nats_accounts if a.name == "shop")
    held = [s for s in plan.streams if s.name in shop.streams]
    assert all(s.max_bytes == 1024 * 1024 for s in held)
    assert shop.disk_storage == sum(s.max_bytes for s in held)
