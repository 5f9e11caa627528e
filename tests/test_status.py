"""`snsq2nats status`: backlog on both sides of each route and the drained verdict, for real."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from snsq2nats.apply import apply_plan
from snsq2nats.cli import main
from snsq2nats.demo.estate import seed_shop
from snsq2nats.plan.model import load_plan
from tests.fixtures.aws import AwsEndpoint

CUTOVER = """
overrides:
  - match: "orders-billing"
    cutover: {consumers: nats}
  - match: "orders-shipping"
    cutover: {producers: nats, consumers: aws}
"""


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture
def applied(aws: AwsEndpoint, nats_server: Any, tmp_path: Path) -> tuple[Path, str, Any]:
    shop = seed_shop(aws.client("sqs"), aws.client("sns"))
    rules = tmp_path / "cutover.yaml"
    rules.write_text(CUTOVER)
    plan_file = tmp_path / "plan.json"
    result = invoke("plan", "--mapping", str(rules), "-s", nats_server.url, "-o", str(plan_file))
    assert result.exit_code == 0, result.stderr
    plan = load_plan(plan_file)

    async def apply() -> None:
        import nats

        nc = await nats.connect(nats_server.url)
        try:
            outcome = await apply_plan(nc, plan, allow_destructive=False)
            assert outcome.ok, outcome
        finally:
            await nc.close()

    asyncio.run(apply())
    return plan_file, nats_server.url, shop


def status(plan_file: Path, url: str, *extra: str) -> Any:
    return invoke("status", "--plan", str(plan_file), "-s", url, *extra)


def test_all_routes_drained_on_an_idle_estate(applied: tuple[Path, str, Any]) -> None:
    plan_file, url, _ = applied
    result = status(plan_file, url, "--json")
    assert result.exit_code == 0, result.stdout + result.stderr
    doc = json.loads(result.stdout)
    assert doc["drained"] is True
    kinds = {r["kind"] for r in doc["routes"]}
    assert {"sqs-to-nats", "nats-to-sqs", "dlq-mover", "sns-to-nats"} <= kinds
    text = status(plan_file, url).stderr
    assert "all selected routes drained" in text
    assert "Bridge routes" in text


def test_sqs_backlog_is_not_drained_until_the_bridge_moves_it(
    applied: tuple[Path, str, Any], aws: AwsEndpoint
) -> None:
    plan_file, url, _ = applied
    sqs = aws.client("sqs")
    queue_url = sqs.get_queue_url(QueueName="orders-billing")["QueueUrl"]
    for i in range(3):
        sqs.send_message(QueueUrl=queue_url, MessageBody=f"order {i}")

    result = status(plan_file, url, "--json", "--route", "sqs:orders-billing")
    assert result.exit_code == 1
    (route,) = json.loads(result.stdout)["routes"]
    assert route["drained"] is False
    assert route["aws"]["visible"] == 3
    assert "3 message(s) still in SQS" in route["reason"]

    moved = invoke(
        "bridge",
        "--plan",
        str(plan_file),
        "-s",
        url,
        "--route",
        "sqs:orders-billing",
        "--max-messages",
        "3",
        "--duration",
        "30",
        "--poll-wait",
        "1",
    )
    assert moved.exit_code == 0, moved.stderr

    after = status(plan_file, url, "--json", "--route", "sqs:orders-billing")
    (route,) = json.loads(after.stdout)["routes"]
    assert route["aws"]["visible"] == 0
    assert route["nats"]["pending"] == 3, "the messages wait for NATS workers on the durable"
    assert after.exit_code == 0 and route["drained"] is True


def test_nats_backlog_is_not_drained_until_relayed_to_sqs(
    applied: tuple[Path, str, Any],
) -> None:
    plan_file, url, _ = applied

    async def publish() -> None:
        import nats

        nc = await nats.connect(url)
        try:
            await nc.jetstream().publish("sqs.orders-shipping", b"parcel")
        finally:
            await nc.close()

    asyncio.run(publish())
    result = status(plan_file, url, "--json", "--route", "to-sqs:*")
    assert result.exit_code == 1
    (route,) = json.loads(result.stdout)["routes"]
    assert route["nats"]["pending"] == 1
    assert "1 pending" in route["reason"]

    moved = invoke(
        "bridge",
        "--plan",
        str(plan_file),
        "-s",
        url,
        "--route",
        "to-sqs:orders-shipping",
        "--max-messages",
        "1",
        "--duration",
        "30",
    )
    assert moved.exit_code == 0, moved.stderr
    after = json.loads(status(plan_file, url, "--json", "--route", "to-sqs:*").stdout)
    (route,) = after["routes"]
    assert route["drained"] is True
    assert route["aws"]["visible"] == 1, "the parcel now waits in SQS for the AWS consumers"


def test_unknown_route_glob_is_a_clear_error(applied: tuple[Path, str, Any]) -> None:
    plan_file, url, _ = applied
    result = status(plan_file, url, "--route", "nope:*")
    assert result.exit_code == 1
    assert "no bridge routes selected" in result.stderr
