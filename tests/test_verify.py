"""verify against a real nats-server: the shop estate applied, canaries through every path.

The inventory is scanned from moto once per module; every test gets a fresh JetStream server,
applies the shop plan to it and then verifies (or breaks something first).
"""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from snsq2nats.cli import main
from snsq2nats.demo.nats_server import NatsServer
from snsq2nats.files import document_json
from snsq2nats.jetstream.api import api, create_consumer, create_stream, pedantic_supported
from snsq2nats.jetstream.connect import NatsOptions, connect_nats
from snsq2nats.plan.model import Plan
from snsq2nats.plan.pipeline import PlanRequest, make_plan
from snsq2nats.verify import CANARY_HEADER, CheckResult, verify_plan
from tests.fixtures.wait import until

REGION = "us-east-1"
SHOP_CUTOVER = Path(__file__).parent / "data" / "mapping" / "shop_cutover.yaml"


@pytest.fixture(scope="module")
def inventory_file(moto_server: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shop, seeded into moto and scanned once: the tests only need its inventory. Its
    orders subscriptions are made raw and its https one dropped, so the topic fans out through
    stream sources and a filter router (the checks verify makes of those)."""
    import boto3

    from snsq2nats.aws import scan as aws_scan
    from snsq2nats.aws.clients import make_clients
    from snsq2nats.demo.estate import seed_shop

    reset = urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST")
    urllib.request.urlopen(reset, timeout=10).close()
    session = boto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    )
    seed_shop(
        session.client("sqs", endpoint_url=moto_server),
        session.client("sns", endpoint_url=moto_server),
    )
    inventory = aws_scan.scan(make_clients(session, [REGION], moto_server))
    inventory = inventory.model_copy(
        update={
            "subscriptions": [
                sub.model_copy(update={"raw_message_delivery": True})
                for sub in inventory.subscriptions
                if sub.protocol == "sqs"
            ]
        }
    )
    path = tmp_path_factory.mktemp("verify") / "inventory.json"
    path.write_bytes(document_json(inventory))
    return path


def with_nc(url: str, fn: Callable[[Any], Awaitable[Any]]) -> Any:
    async def go() -> Any:
        nc = await connect_nats(NatsOptions(servers=[url]), name="pytest verify")
        try:
            return await fn(nc)
        finally:
            await nc.close()

    return asyncio.run(go())


async def _apply(nc: Any, plan: Plan) -> None:
    try:
        from snsq2nats.apply import apply_plan
    except ImportError:
        # Streams first (in plan order, topic streams before the queues that source them),
        # then consumers: the order apply uses.
        pedantic = pedantic_supported(plan.server)
        for stream in plan.streams:
            await create_stream(nc, stream, pedantic=pedantic)
        for consumer in plan.consumers:
            await create_consumer(nc, consumer, pedantic=pedantic)
        return
    result = await apply_plan(nc, plan, allow_destructive=False)
    assert result.ok, result


def apply_shop(url: str, inventory_file: Path, mapping: list[Path]) -> Plan:
    plan = make_plan(
        PlanRequest(inventory_path=inventory_file, mapping_paths=mapping),
        scan=lambda: pytest.fail("must not scan"),
        nats=NatsOptions(servers=[url]),
    )
    with_nc(url, lambda nc: _apply(nc, plan))
    return plan


@pytest.fixture
def applied(nats_server: NatsServer, inventory_file: Path) -> tuple[str, Plan]:
    """The shop with the orders-* queues' consumers on NATS: the orders topic fans out on NATS
    (stream sources, the fraud filter router), so every routing check has something to do."""
    url = nats_server.url
    return url, apply_shop(url, inventory_file, [SHOP_CUTOVER])


async def counts(nc: Any, plan: Plan) -> dict[str, int]:
    out = {}
    for stream in plan.streams:
        info = await api(nc, f"$JS.API.STREAM.INFO.{stream.name}")
        out[stream.name] = info["state"]["messages"]
    return out


async def canaries_left(nc: Any, plan: Plan) -> list[str]:
    """Every message carrying the canary header, in any stream of the plan."""
    found = []
    for stream in plan.streams:
        seq = 1
        while True:
            try:
                resp = await api(
                    nc, f"$JS.API.STREAM.MSG.GET.{stream.name}", {"seq": seq, "next_by_subj": ">"}
                )
            except Exception:
                break
            msg = resp["message"]
            if CANARY_HEADER.encode() in base64.b64decode(msg.get("hdrs") or ""):
                found.append(f"{stream.name}#{msg['seq']} {msg['subject']}")
            seq = msg["seq"] + 1
    return found


def run_verify(url: str, plan: Plan, timeout: float = 3.0) -> tuple[list[CheckResult], Any]:
    async def go(nc: Any) -> tuple[list[CheckResult], dict[str, int], dict[str, int], list[str]]:
        before = await counts(nc, plan)
        results = await verify_plan(nc, plan, timeout=timeout)
        return results, before, await counts(nc, plan), await canaries_left(nc, plan)

    results, before, after, left = with_nc(url, go)
    return results, (before, after, left)


def row(results: list[CheckResult], resource: str, check: str) -> CheckResult:
    matches = [r for r in results if r.resource == resource and r.check == check]
    assert len(matches) == 1, (resource, check, [(r.resource, r.check) for r in results])
    return matches[0]


def test_verify_passes_checks_filters_both_ways_and_leaves_nothing(
    applied: tuple[str, Plan],
) -> None:
    url, plan = applied
    results, (before, after, left) = run_verify(url, plan)

    failed = [r for r in results if r.result == "failed"]
    assert not failed, failed
    queues = [r.name for r in plan.resources if r.kind == "sqs-queue"]
    round_trips = [r for r in results if r.check.startswith("round trip")]
    assert sorted(r.resource for r in round_trips) == sorted(queues)
    assert all(r.result == "ok" and r.latency_ms is not None for r in round_trips)
    fifo = row(results, "payments.fifo", "round trip via sqsfifo.payments.snsq2nats-canary")
    assert fifo.result == "ok"
    delayed = row(results, "notifications-delayed", "delayed delivery (1s schedule)")
    assert delayed.result == "ok" and delayed.latency_ms is not None
    assert delayed.latency_ms >= 900

    # Every filter policy is evaluated by the bridge's filter router on headers (issue 18,
    # section 3): no queue has a subject-filtered source for a canary to test; the unfiltered
    # source still carries everything.
    assert (
        row(results, "orders → orders-analytics", "receives sns.orders.~canary.~canary").result
        == "ok"
    )
    for queue in ("fraud", "shipping", "billing"):
        routed = row(results, f"orders → orders-{queue}", "filter routing")
        assert routed.result == "skipped"
        assert routed.detail == "skipped: evaluated by the bridge's filter router"
    assert row(results, "(verify)", "no canary left behind").result == "ok"

    assert after == before
    assert left == []

    async def router_backlog(nc: Any) -> list[int]:
        # Consumers on the topic stream (the bridge's filter router) see no canary later:
        # deleting them by sequence removes them from every consumer's backlog too.
        consumers = [c for c in plan.consumers if c.stream_name == "sns_orders"]
        infos = [
            await api(nc, f"$JS.API.CONSUMER.INFO.sns_orders.{c.durable_name}") for c in consumers
        ]
        return [i["num_pending"] + i["num_ack_pending"] for i in infos]

    assert set(with_nc(url, router_backlog)) <= {0}


def test_the_cutover_state_changes_no_check(
    nats_server: NatsServer, inventory_file: Path, applied: tuple[str, Plan]
) -> None:
    """The default plan (every consumer on AWS) has the same sources and filter router as the
    cutover plan (the objects never depend on the cutover state), so verify checks the same
    routing, with the same outcome."""
    url, cutover_plan = applied
    plan = apply_shop(url, inventory_file, [])
    assert plan.streams == cutover_plan.streams
    results, (before, after, left) = run_verify(url, plan, timeout=1.0)
    assert not [r for r in results if r.result == "failed"], results
    cutover_results, _ = run_verify(url, cutover_plan, timeout=1.0)

    def checks(rows: list[Any]) -> set[tuple[str, str, str]]:
        return {(r.resource, r.check, r.result) for r in rows}

    assert checks(results) == checks(cutover_results)
    assert row(results, "orders → orders-fraud", "filter routing").result == "skipped"
    assert after == before
    assert left == []


def test_missing_source_is_a_failure_and_cleaned_up(applied: tuple[str, Plan]) -> None:
    url, plan = applied

    async def drop_source(nc: Any) -> None:
        info = await api(nc, "$JS.API.STREAM.INFO.sqs_orders-analytics")
        config = info["config"]
        config.pop("sources")
        await api(nc, "$JS.API.STREAM.UPDATE.sqs_orders-analytics", config)

    with_nc(url, drop_source)
    results, (before, after, left) = run_verify(url, plan, timeout=1.0)

    failed = {(r.resource, r.check) for r in results if r.result == "failed"}
    check = "receives sns.orders.~canary.~canary"
    assert failed == {("orders → orders-analytics", check)}
    detail = row(results, "orders → orders-analytics", check).detail
    assert "did not arrive in sqs_orders-analytics/orders-analytics" in detail
    assert after == before
    assert left == []


def test_pending_real_message_is_left_alone(applied: tuple[str, Plan]) -> None:
    url, plan = applied

    async def send_real(nc: Any) -> dict[str, Any]:
        await nc.jetstream().publish("sqs.orders-analytics", b"a real order")
        subject = "$JS.API.CONSUMER.INFO.sqs_orders-analytics.orders-analytics"

        async def counted() -> bool:
            # The server counts a consumer's pending messages a moment after the PubAck.
            return bool((await api(nc, subject))["num_pending"])

        await until(counted, what="the real order to count as pending")
        info: dict[str, Any] = await api(nc, subject)
        return info

    info_before = with_nc(url, send_real)
    assert info_before["num_pending"] == 1
    results, (before, after, left) = run_verify(url, plan)

    assert not [r for r in results if r.result == "failed"]
    skipped = row(results, "orders-analytics", "round trip")
    assert skipped.result == "skipped"
    assert skipped.detail == "queue has 1 pending messages: not verified (would disturb traffic)"
    # The canary analytics would receive is not even published (every other queue of the
    # topic is filtered by the bridge's router, which canaries never pass).
    not_published = [
        r.check for r in results if r.resource == "orders" and r.check.startswith("publish sns")
    ]
    assert sorted(not_published) == ["publish sns.orders.~canary.~canary"]
    assert after == before
    assert left == []

    async def inspect(nc: Any) -> tuple[dict[str, Any], Any]:
        info = await api(nc, "$JS.API.CONSUMER.INFO.sqs_orders-analytics.orders-analytics")
        sub = await nc.jetstream().pull_subscribe_bind(
            "orders-analytics", stream="sqs_orders-analytics"
        )
        msgs = await sub.fetch(1, timeout=2)
        await msgs[0].ack_sync()
        return info, msgs[0]

    info_after, msg = with_nc(url, inspect)
    assert info_after["num_pending"] == 1
    assert info_after["num_ack_pending"] == 0
    assert info_after["num_redelivered"] == 0
    assert info_after["delivered"] == info_before["delivered"]
    assert msg.data == b"a real order"
    assert msg.metadata.num_delivered == 1


def _cli(*args: str) -> Any:
    return CliRunner().invoke(main, ["verify", *args], catch_exceptions=False)


def test_cli_table_json_and_exit_code(applied: tuple[str, Plan], tmp_path: Path) -> None:
    url, plan = applied
    plan_file = tmp_path / "plan.json"
    plan_file.write_bytes(document_json(plan))

    ok = _cli("--plan", str(plan_file), "-s", url, "--timeout", "3")
    assert ok.exit_code == 0, ok.output
    text = ok.stderr
    assert "\x1b[" not in text  # NO_COLOR
    for heading in ("resource", "check", "result", "detail", "ms"):
        assert heading in text
    assert "payments.fifo" in text and "orders-fraud" in text and "filter router" in text
    assert "verify: " in text and " 0 failed, " in text
    assert ok.stdout == ""

    as_json = _cli("--plan", str(plan_file), "-s", url, "--json", "--timeout", "3")
    assert as_json.exit_code == 0, as_json.output
    doc = json.loads(as_json.stdout)
    assert doc["ok"] is True and doc["counts"]["failed"] == 0
    first = doc["results"][0]
    assert set(first) == {"resource", "check", "result", "detail", "latency_ms"}

    async def break_consumer(nc: Any) -> None:
        await api(nc, "$JS.API.CONSUMER.DELETE.sqs_orders-analytics.orders-analytics")

    with_nc(url, break_consumer)
    broken = _cli("--plan", str(plan_file), "-s", url, "--json", "--timeout", "1")
    assert broken.exit_code == 1
    doc = json.loads(broken.stdout)
    assert doc["ok"] is False
    analytics = [r for r in doc["results"] if r["resource"] == "orders-analytics"]
    assert analytics[0]["result"] == "failed"
    assert "sqs_orders-analytics/orders-analytics does not exist" in analytics[0]["detail"]
    # The canary fanned out to the consumer-less queue was swept away again.
    cleanup = next(r for r in doc["results"] if r["resource"] == "(verify)")
    assert cleanup["result"] == "ok" and "removed 1 canary" in cleanup["detail"]
    assert with_nc(url, lambda nc: canaries_left(nc, plan)) == []
