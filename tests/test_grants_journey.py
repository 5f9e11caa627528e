"""The whole tool under the identities `snsq2nats auth` generates, on a real nats-server.

Every admin command (plan, apply, verify, status, runbook, cutover) runs with the generated
admin's natscli context and a fleet of two `snsq2nats bridge` processes with the bridge's; a
member restarts, so the survivor re-acquires released routes (a `create` over a delete marker:
the KV read issue 18's hand-written grants lacked) and the new member takes its share. The
server's log must then hold no permission violation at all. Password mode and JWT mode.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from snsq2nats.cli import main
from snsq2nats.demo.nats_server import NatsServer
from snsq2nats.errors import NatsConnectError
from snsq2nats.jetstream.connect import NatsOptions, connect_nats
from snsq2nats.plan.model import load_plan
from tests.fixtures.aws import AwsEndpoint
from tests.fixtures.bridge import Bridge, Bridges
from tests.fixtures.wait import until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

TTL = 3.0


def seed(aws: AwsEndpoint) -> None:
    """A topic fanning out to a filtered, an unfiltered and a numeric-filtered queue (the
    bridge's filter router), and a queue with a DLQ (the DLQ mover)."""
    sqs, sns = aws.client("sqs"), aws.client("sns")
    topic = sns.create_topic(Name="orders")["TopicArn"]

    def queue(name: str, **attributes: str) -> str:
        url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        return str(
            sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
                "QueueArn"
            ]
        )

    for name, policy in (
        ("billing", {"event_type": ["order_placed"]}),
        ("shipping", None),
        ("fraud", {"amount": [{"numeric": [">=", 100]}]}),
    ):
        attributes = {"RawMessageDelivery": "true"}
        if policy:
            attributes["FilterPolicy"] = json.dumps(policy)
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue(name), Attributes=attributes)
    dlq = queue("jobs-dlq")
    queue("jobs", RedrivePolicy=json.dumps({"deadLetterTargetArn": dlq, "maxReceiveCount": 2}))


def replan(aws: AwsEndpoint) -> None:
    sqs, sns = aws.client("sqs"), aws.client("sns")
    (topic,) = [t["TopicArn"] for t in sns.list_topics()["Topics"]]
    for sub in sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]:
        if sub["Endpoint"].endswith(":billing"):
            sns.set_subscription_attributes(
                SubscriptionArn=sub["SubscriptionArn"],
                AttributeName="FilterPolicy",
                AttributeValue=json.dumps({"amount": [{"numeric": [">", 0]}]}),
            )
    url = sqs.create_queue(QueueName="audit")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sns.subscribe(
        TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"}
    )


def cli(*args: str | Path, code: int = 0) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == code, (args, result.output)
    return " ".join(result.output.split())


def server_settings(directory: Path, jwt: bool) -> dict[str, Any]:
    """What the generated config tells nats-server, as NatsServer settings."""
    if jwt:
        text = (directory / "snsq2nats-jwt.conf").read_text()
        # `key: <json>` blocks, the JSON possibly spanning lines.
        parts = re.split(r"^(\w+): ", text, flags=re.MULTILINE)[1:]
        return {key: json.loads(value) for key, value in zip(parts[::2], parts[1::2], strict=True)}
    text = (directory / "snsq2nats-auth.conf").read_text()
    rows = [line.strip().rstrip(",") for line in text.splitlines()]
    users = [json.loads(row) for row in rows if row.startswith("{")]
    return {"authorization": {"users": [u for u in users if "permissions" in u]}}


def start_bridge(bridges: Bridges, plan: Path, context: Path) -> Bridge:
    return bridges.start(
        *("--plan", plan, "--context", context, "--pollers", "1", "--poll-wait", "1"),
        *("--lease-ttl", str(TTL)),
    )


async def live_members(options: NatsOptions) -> set[int]:
    """The pids of the fleet members with a fresh heartbeat (a member id is host-pid-random),
    read as the admin."""
    from snsq2nats.bridge.fleet import read_fleet

    try:
        nc = await connect_nats(options)
    except NatsConnectError:
        return set()  # a loaded machine's refused connect: asked again by `until`
    try:
        fleet = await read_fleet(nc)
    finally:
        await nc.close()
    if fleet is None:
        return set()
    now = datetime.now(UTC)
    return {
        int(m.split("-")[-2])
        for m, beat in fleet.members.items()
        if fleet.alive(m, now) and not beat.leaving and beat.ready
    }


@pytest.mark.parametrize("mode", ["password", "jwt"])
async def test_every_command_and_a_bridge_fleet_under_the_generated_identities(
    aws: AwsEndpoint, tmp_path: Path, bridges: Bridges, mode: str
) -> None:
    jwt = mode == "jwt"
    seed(aws)
    inventory, plan0, plan = (
        tmp_path / "inventory.json",
        tmp_path / "plan0.json",
        tmp_path / "p.json",
    )
    await asyncio.to_thread(cli, "scan", "-o", inventory)
    await asyncio.to_thread(cli, "plan", "--inventory", inventory, "--offline", "-o", plan0)
    server = NatsServer(name=f"grants-{mode}")
    auth = tmp_path / "auth"
    formats = ["--format", "jwt"] if jwt else []
    await asyncio.to_thread(cli, "auth", "--plan", plan0, "-o", auth, "--url", server.url, *formats)
    assert (auth / "grants.json").is_file()
    server.extra_config = server_settings(auth, jwt)
    server.start()
    admin = auth / "contexts" / "snsq2nats-admin.json"
    bridge = auth / "contexts" / "snsq2nats-bridge.json"
    as_admin = NatsOptions.resolve(None, str(admin))
    processes: list[Bridge] = []
    try:
        # The admin commands, each as a team runs it, with the admin's context.
        await asyncio.to_thread(
            cli, "plan", "--inventory", inventory, "--context", admin, "-o", plan
        )
        applied = await asyncio.to_thread(cli, "apply", plan, "--context", admin, "--auto-approve")
        assert "covers this plan" in applied, applied
        await asyncio.to_thread(cli, "verify", "--plan", plan, "--context", admin)
        await asyncio.to_thread(cli, "status", "--plan", plan, "--context", admin)
        await asyncio.to_thread(cli, "runbook", "--plan", plan, "--context", admin)

        processes = [start_bridge(bridges, plan, bridge) for _ in range(2)]

        async def fleet_of(pids: set[int]) -> bool:
            return pids <= await live_members(as_admin)

        await until(lambda: fleet_of({p.pid for p in processes}), 120, "two bridges to join")
        moved = await asyncio.to_thread(
            cli, "cutover", "consumers", "shipping", "--to", "nats", "--plan", plan,
            "--context", admin,
        )  # fmt: skip
        assert "confirmed by 2" in moved, moved
        # A rolling restart: the survivor re-acquires what the leaver released, then the new
        # member takes its share back (each lease a create over a delete marker).
        leaver = processes.pop(0)
        leaver.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(leaver.wait, 60) == 0, leaver.tail()
        processes.append(start_bridge(bridges, plan, bridge))
        await until(lambda: fleet_of({p.pid for p in processes}), 120, "the new member")

        def clean_status() -> bool:
            result = CliRunner().invoke(
                main, ["status", "--plan", str(plan), "--context", str(admin)]
            )
            return result.exit_code == 0

        async def every_route_owned() -> bool:
            return await asyncio.to_thread(clean_status)

        await until(every_route_owned, 120, "status: every route owned and drained")
        moved = await asyncio.to_thread(
            cli, "cutover", "producers", "orders", "--to", "both", "--plan", plan,
            "--context", admin,
        )  # fmt: skip
        assert "confirmed by 2" in moved, moved
        await until(every_route_owned, 120, "status after the second move")
        await asyncio.to_thread(cli, "cutover", "history", "orders", "--context", admin)

        # A re-plan: billing's filter turns numeric (a filter router: a new bridge consumer on
        # the topic stream, inside the bridge's grants) and a new queue (new identities and
        # streams: apply refuses before changing anything and prints the auth command).
        replan(aws)
        inventory2, plan2 = tmp_path / "inventory2.json", tmp_path / "p2.json"
        await asyncio.to_thread(cli, "scan", "-o", inventory2)
        await asyncio.to_thread(
            cli, "plan", "--inventory", inventory2, "--context", admin, "-o", plan2
        )
        routers = [
            r.consumer for r in load_plan(plan2).candidate_routes if r.kind == "filter-router"
        ]
        assert "snsq2nats-filter-billing" in routers, routers
        refused = await asyncio.to_thread(
            cli, "apply", plan2, "--context", admin, "--auto-approve", code=1
        )
        assert "sqs_audit-producer (new" in refused, refused
        command = refused.split("regenerate them: `")[1].split("`")[0]
        assert command.startswith(f"snsq2nats auth --plan {plan2} -o {auth}"), command
        await asyncio.to_thread(cli, *shlex.split(command)[1:])
        server.extra_config = server_settings(auth, jwt)
        await asyncio.to_thread(server.restart)
        applied = await asyncio.to_thread(cli, "apply", plan2, "--context", admin, "--auto-approve")
        assert "covers this plan" in applied, applied
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            assert await asyncio.to_thread(process.wait, 60) == 0, process.tail()
        processes = [start_bridge(bridges, plan2, bridge) for _ in range(2)]
        await until(lambda: fleet_of({p.pid for p in processes}), 120, "bridges on the re-plan")
        plan = plan2
        await until(every_route_owned, 120, "status of the re-plan")
        await asyncio.to_thread(cli, "verify", "--plan", plan, "--context", admin)
        await asyncio.to_thread(cli, "runbook", "--plan", plan, "--context", admin)
    finally:
        bridges.stop_all(timeout=60)
        log = server.log_file.read_text()
        server.close()
    refused = [line for line in log.splitlines() if "Violation" in line]
    assert not refused, refused[:5]
    bridge_log = bridges.text()
    assert "cannot acquire" not in bridge_log and "permission denied" not in bridge_log
