"""`status` and `cutover` of an estate in two AWS accounts: each route and move says its account
(JSON), and the tables have an account column with each account's rows together. A one-account
estate keeps the shape it always had (tests/test_status.py and test_cutover.py compare it)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from snsq2nats.apply import apply_plan
from snsq2nats.aws.arns import parse_arn
from snsq2nats.cli import main
from snsq2nats.plan.model import load_plan
from snsq2nats.report.status import status_table
from snsq2nats.status import RouteStatus
from tests.fixtures.aws import AwsEndpoint

A, B = "111111111111", "222222222222"
ROLE = "arn:aws:iam::{account}:role/snsq2nats-scan"


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture
def two_accounts(aws: AwsEndpoint, nats_server: Any, tmp_path: Path) -> tuple[Path, str]:
    """A's `events` topic fans out to A's `billing` and B's `shipping`; B also has `audit`.
    Scanned as one estate, planned, applied: the plan file and the NATS URL."""
    sessions = {a: aws.assumed(a) for a in (A, B)}
    arns = {}
    for account, name in ((A, "billing"), (B, "shipping"), (B, "audit")):
        sqs = sessions[account].client("sqs", endpoint_url=aws.url)
        url = sqs.create_queue(QueueName=name)["QueueUrl"]
        arns[name] = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
    sns = sessions[A].client("sns", endpoint_url=aws.url)
    topic = sns.create_topic(Name="events")["TopicArn"]
    for name in ("billing", "shipping"):
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arns[name])
    inventory, plan_file = tmp_path / "inventory.json", tmp_path / "plan.json"
    # B's `shipping` consumers move to NATS, so B has a route that runs as well as A's topic.
    rules = tmp_path / "cutover.yaml"
    rules.write_text('overrides:\n  - match: "shipping"\n    cutover: {consumers: nats}\n')
    scanned = invoke(
        "scan", "--assume-role", ROLE, "--account", A, "--account", B, "-o", str(inventory)
    )
    assert scanned.exit_code == 0, scanned.stderr
    planned = invoke(
        "plan",
        "--inventory",
        str(inventory),
        "--mapping",
        str(rules),
        "-s",
        nats_server.url,
        "-o",
        str(plan_file),
    )
    assert planned.exit_code == 0, planned.stderr
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
    return plan_file, nats_server.url


def test_status_says_each_routes_account(two_accounts: tuple[Path, str]) -> None:
    plan_file, url = two_accounts
    plan = load_plan(plan_file)
    expected = {r.name: parse_arn(r.aws_arn).account for r in plan.candidate_routes or plan.routes}
    assert set(expected.values()) == {A, B}

    result = invoke("status", "--plan", str(plan_file), "-s", url, "--json")
    doc = json.loads(result.stdout)
    shown = {r["route"]: r["account"] for r in doc["routes"]}
    assert shown.items() <= expected.items()
    assert set(shown.values()) == {A, B}

    text = invoke("status", "--plan", str(plan_file), "-s", url).stderr
    assert "AWS account" in text
    # Grouped: every A route is listed before the first B route.
    rows = [line for line in text.splitlines() if A in line or B in line]
    accounts = [A if A in row else B for row in rows]
    assert accounts == sorted(accounts) and set(accounts) == {A, B}


def test_a_one_account_table_has_no_account_column() -> None:
    statuses = [RouteStatus("orders", "sqs-to-nats", True, "SQS queue empty")]
    assert status_table(statuses).columns[0].header == "route"
    assert "account" not in statuses[0].to_dict()
    several = [
        RouteStatus("b", "sqs-to-nats", True, "SQS queue empty", account=B),
        RouteStatus("a", "sqs-to-nats", True, "SQS queue empty", account=A),
    ]
    table = status_table(several)
    assert table.columns[0].header == "AWS account"
    assert list(table.columns[0].cells) == [A, B]
    assert several[0].to_dict()["account"] == B


def test_cutover_says_the_account_of_a_move_in_a_several_account_estate(
    two_accounts: tuple[Path, str],
) -> None:
    """Even one move says its account when the estate has several: the operator sees which
    account's application is moving."""
    plan_file, url = two_accounts
    args = ("cutover", "consumers", "billing", "--to", "nats", "--dry-run")
    common = ("--plan", str(plan_file), "-s", url)
    dry = invoke(*args, "--json", *common)
    assert dry.exit_code == 0, dry.output
    (move,) = json.loads(dry.stdout)["moves"]
    assert move["account"] == A and parse_arn(move["arn"]).account == A
    assert list(move)[:4] == ["resource", "arn", "account", "kind"]

    human = CliRunner().invoke(main, [*args, *common], env={"COLUMNS": "300"})
    assert human.exit_code == 0, human.output
    header = next(line for line in human.output.splitlines() if "resource" in line)
    assert "AWS account" in header
    assert any(A in line and "billing" in line for line in human.output.splitlines())


async def test_status_reads_each_routes_stream_in_its_own_nats_account(
    aws: AwsEndpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A per-account plan in operator mode: `status --grants DIR` reads billing's queue stream
    in billing's NATS account and shop's topic stream (two NATS-published messages waiting
    for its SNS relay) in shop's, each with that account's admin, while the cutover state
    comes from the home account the NATS options name."""
    from snsq2nats.demo.nats_server import NatsServer
    from snsq2nats.files import document_json
    from snsq2nats.jetstream.connect import NatsOptions, connect_nats
    from tests.test_bridge_nats_accounts import BILLING, PER_ACCOUNT, SHOP, _apply, _estate, _route

    on_nats = (
        f"overrides:\n  - match: 'arn:aws:sqs:*:{BILLING}:orders'\n"
        "    cutover: {producers: aws, consumers: nats}\n"
        f"  - match: 'arn:aws:sns:*:{SHOP}:events'\n"
        "    cutover: {producers: nats}\n"
    )
    server = NatsServer(name="status-accounts")
    estate = await asyncio.to_thread(_estate, aws, tmp_path, server.url, PER_ACCOUNT + on_nats)
    server.extra_config = estate.written.settings
    inbound = _route(estate.plan, "sqs-to-nats", BILLING, "orders")
    outbound = _route(estate.plan, "nats-to-sns", SHOP, "events")
    plan_file = tmp_path / "plan.json"
    plan_file.write_bytes(document_json(estate.plan))
    topic = next(r for r in estate.plan.resources if r.source_arn == outbound.aws_arn)
    assert topic.publish_subject is not None
    publisher = next(
        i for i in estate.by_name.values() if i.role == "publisher" and i.serves == topic.source_arn
    )
    admin = estate.auth_dir / "contexts" / "snsq2nats-admin.json"
    words = ["status", "--plan", str(plan_file), "--context", str(admin), "--json"]
    words += ["--assume-role", ROLE, f"--route={inbound.name}", f"--route={outbound.name}"]
    with server:
        await _apply(estate, server.url)
        pub = await connect_nats(
            NatsOptions(
                servers=[server.url],
                creds=str(estate.written.creds[publisher.name]),
                inbox_prefix=publisher.inbox_prefix,
            )
        )
        try:
            for i in range(2):
                await pub.jetstream().publish(topic.publish_subject, f"out-{i}".encode())
        finally:
            await pub.close()
        said = await asyncio.to_thread(invoke, *words, "--grants", str(estate.auth_dir))
        # Without the auth output (none given, none beside a context, no ./nats-auth), the
        # other accounts cannot be read: one line says so.
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        monkeypatch.chdir(elsewhere)
        bare = ["status", "--plan", str(plan_file), "-s", server.url, "--route", inbound.name]
        unset: dict[str, str | None] = {"SNSQ2NATS_GRANTS": None, "NATS_CONTEXT": None}
        refused = await asyncio.to_thread(lambda: CliRunner().invoke(main, bare, env=unset))
    routes = {r["route"]: r for r in json.loads(said.stdout)["routes"]}
    assert set(routes) == {inbound.name, outbound.name}, said.output
    assert routes[outbound.name]["nats"]["exists"] is True, routes[outbound.name]
    assert routes[outbound.name]["nats"]["pending"] == 2
    assert routes[outbound.name]["drained"] is False
    assert routes[outbound.name]["account"] == SHOP
    assert routes[inbound.name]["nats"]["exists"] is True, routes[inbound.name]
    assert routes[inbound.name]["account"] == BILLING
    assert refused.exit_code != 0
    assert "admin credentials" in refused.output and "--grants DIR" in refused.output, (
        refused.output
    )
