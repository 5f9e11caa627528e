"""The bridge and `status` act in each route's own AWS account: moto's server with two accounts
reached through STS AssumeRole from the base credentials (moto's keys from AssumeRole act in the
role's account), a plan spanning them (`accounts: prefix`: both have an `orders` queue), applied
on a real nats-server, and an in-process bridge relaying both ways in both accounts."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from snsq2nats import status as status_lib
from snsq2nats.apply import apply_plan
from snsq2nats.aws.accounts import (
    RouteAccounts,
    account_clients,
    account_sources,
    route_accounts,
    status_sqs,
)
from snsq2nats.aws.clients import sqs_by_region
from snsq2nats.aws.scan import scan_accounts
from snsq2nats.bridge.context import RelaySettings
from snsq2nats.bridge.session import bridge_session
from snsq2nats.demo.nats_server import NatsServer
from snsq2nats.errors import UsageError
from snsq2nats.files import document_json
from snsq2nats.jetstream.connect import NatsOptions, connect_nats
from snsq2nats.plan.model import Plan, Route
from snsq2nats.plan.pipeline import PlanRequest, make_plan
from tests.fixtures.aws import AwsEndpoint
from tests.fixtures.wait import until

BASE = "123456789012"  # moto's account for the base credentials
A, B = "111111111111", "222222222222"
ROLE = "arn:aws:iam::{account}:role/snsq2nats-bridge"
QUEUES = ("orders", "billing")


def _queue_url(session: Any, aws: AwsEndpoint, name: str) -> str:
    sqs = session.client("sqs", endpoint_url=aws.url, region_name=aws.region)
    return str(sqs.get_queue_url(QueueName=name)["QueueUrl"])


async def _planned(
    aws: AwsEndpoint, server: NatsServer, tmp_path: Path, accounts: tuple[str, ...]
) -> Plan:
    """`orders` and `billing` in every account, scanned, planned with `accounts: prefix`, and
    applied."""
    for account in accounts:
        sqs = aws.assumed(account).client("sqs", endpoint_url=aws.url)
        for name in QUEUES:
            sqs.create_queue(QueueName=name)
    sources = account_sources((), "arn:aws:iam::{account}:role/snsq2nats-scan", accounts)
    inventory = await asyncio.to_thread(
        scan_accounts, [account_clients(s, (aws.region,), aws.url) for s in sources]
    )
    path = tmp_path / "inventory.json"
    path.write_bytes(document_json(inventory))
    mapping = tmp_path / "accounts.yaml"
    mapping.write_text("accounts: prefix\n")
    plan = await asyncio.to_thread(
        make_plan,
        PlanRequest(inventory_path=path, mapping_paths=[mapping]),
        scan=lambda: inventory,
        nats=NatsOptions(servers=[server.url]),
    )
    nc = await connect_nats(NatsOptions(servers=[server.url]))
    try:
        assert (await apply_plan(nc, plan, allow_destructive=False)).ok
    finally:
        await nc.close()
    return plan


def _route(plan: Plan, kind: str, account: str, name: str) -> Route:
    return next(
        r
        for r in plan.candidate_routes
        if r.kind == kind and r.aws_arn.endswith(f":{account}:{name}")
    )


async def _stream_bodies(url: str, stream: str) -> list[str]:
    nc = await connect_nats(NatsOptions(servers=[url]))
    try:
        js = nc.jetstream()
        last = (await js.stream_info(stream)).state.last_seq
        bodies = []
        for seq in range(1, last + 1):
            message = await js.get_msg(stream, seq)
            bodies.append((message.data or b"").decode())
        return bodies
    finally:
        await nc.close()


def _start(
    server: NatsServer, aws: AwsEndpoint, plan: Plan, routes: list[Route], accounts: RouteAccounts
) -> tuple[asyncio.Event, asyncio.Task[None]]:
    stop = asyncio.Event()
    task = asyncio.create_task(
        bridge_session(
            NatsOptions(servers=[server.url]),
            plan,
            routes,
            regions=(),
            endpoint_url=aws.url,
            settings=RelaySettings(wait_time_seconds=1, visibility_timeout=5),
            duration=None,
            metrics_port=None,
            cleanup=False,
            stop=stop,
            lease_ttl=3.0,
            accounts=accounts,
        )
    )
    return stop, task


async def test_the_bridge_relays_each_account_with_its_own_credentials(
    aws: AwsEndpoint, nats_server: NatsServer, tmp_path: Path
) -> None:
    """Both accounts' `orders` reach their own streams (SQS → NATS) and NATS producers'
    messages reach both accounts' `billing` queues (NATS → SQS), each message once, through one
    bridge holding one client pair per account."""
    plan = await _planned(aws, nats_server, tmp_path, (A, B))
    inbound = {a: _route(plan, "sqs-to-nats", a, "orders") for a in (A, B)}
    outbound = {a: _route(plan, "nats-to-sqs", a, "billing") for a in (A, B)}
    subjects = {
        a: next(r.publish_subject for r in plan.resources if r.source_arn == outbound[a].aws_arn)
        for a in (A, B)
    }
    sessions = {a: aws.assumed(a) for a in (A, B)}
    for account in (A, B):
        sqs = sessions[account].client("sqs", endpoint_url=aws.url)
        url = _queue_url(sessions[account], aws, "orders")
        for i in range(5):
            sqs.send_message(QueueUrl=url, MessageBody=f"{account}-in-{i}")

    stop, task = _start(
        nats_server, aws, plan, [*inbound.values(), *outbound.values()], RouteAccounts(ROLE)
    )
    nc = await connect_nats(NatsOptions(servers=[nats_server.url]))
    try:
        js = nc.jetstream()
        for account in (A, B):
            subject = subjects[account]
            assert subject is not None
            for i in range(5):
                await js.publish(subject, f"{account}-out-{i}".encode())

        async def relayed_in() -> bool:
            counts = [
                len(await _stream_bodies(nats_server.url, str(inbound[a].stream))) for a in (A, B)
            ]
            return all(c >= 5 for c in counts)

        await until(relayed_in, what="both accounts' SQS messages in their streams", timeout=60)

        received: dict[str, list[str]] = {A: [], B: []}

        def drain_billing() -> bool:
            for account in (A, B):
                sqs = sessions[account].client("sqs", endpoint_url=aws.url)
                url = _queue_url(sessions[account], aws, "billing")
                got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
                for m in got:
                    received[account].append(m["Body"])
                    sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
            return all(len(received[a]) >= 5 for a in (A, B))

        await until(
            lambda: asyncio.to_thread(drain_billing),
            what="NATS messages in both accounts' billing queues",
            timeout=60,
        )
    finally:
        await nc.close()
        stop.set()
        await asyncio.wait_for(task, 60)

    for account in (A, B):
        bodies = await _stream_bodies(nats_server.url, str(inbound[account].stream))
        assert sorted(bodies) == [f"{account}-in-{i}" for i in range(5)]
        assert sorted(received[account]) == [f"{account}-out-{i}" for i in range(5)]
        # Nothing left behind, nothing sent twice: the queues are empty now.
        sqs = sessions[account].client("sqs", endpoint_url=aws.url)
        for name in QUEUES:
            url = _queue_url(sessions[account], aws, name)
            assert not sqs.receive_message(QueueUrl=url).get("Messages")


async def test_an_account_without_credentials_stops_only_its_routes(
    aws: AwsEndpoint,
    nats_server: NatsServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Without --assume-role, A's route cannot run and says so once, naming the account and the
    option; the base credentials' own account is relayed with them."""
    plan = await _planned(aws, nats_server, tmp_path, (BASE, A))
    routes = [_route(plan, "sqs-to-nats", a, "orders") for a in (BASE, A)]
    base = aws.client("sqs")
    base.send_message(QueueUrl=base.get_queue_url(QueueName="orders")["QueueUrl"], MessageBody="x")

    caplog.set_level(logging.INFO, logger="snsq2nats.bridge")
    stop, task = _start(nats_server, aws, plan, routes, RouteAccounts())
    try:

        async def relayed() -> bool:
            return len(await _stream_bodies(nats_server.url, str(routes[0].stream))) == 1

        await until(relayed, what="the base account's message in its stream", timeout=60)
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
    lines = [r.getMessage() for r in caplog.records if A in r.getMessage()]
    assert len(lines) == 1, lines
    assert "no credentials" in lines[0] and "--assume-role" in lines[0]
    assert f"--profile NAME={A}" in lines[0]
    assert await _stream_bodies(nats_server.url, str(routes[1].stream)) == []


async def test_status_reads_each_accounts_backlog(
    aws: AwsEndpoint, nats_server: NatsServer, tmp_path: Path
) -> None:
    plan = await _planned(aws, nats_server, tmp_path, (A, B))
    routes = [_route(plan, "sqs-to-nats", a, "orders") for a in (A, B)]
    for count, account in enumerate((A, B), start=2):
        session = aws.assumed(account)
        sqs = session.client("sqs", endpoint_url=aws.url)
        for i in range(count):
            sqs.send_message(QueueUrl=_queue_url(session, aws, "orders"), MessageBody=str(i))

    nc = await connect_nats(NatsOptions(servers=[nats_server.url]))
    try:
        sqs_for = status_sqs(aws.url, 4, route_accounts((), ROLE))
        statuses = await status_lib.collect(nc, sqs_for, plan, routes)
        # The base credentials alone see neither account's queue.
        blind = await status_lib.collect(nc, sqs_by_region(aws.url, 4), plan, routes)
    finally:
        await nc.close()
    assert [(s.account, s.aws and s.aws.total) for s in statuses] == [(A, 2), (B, 3)]
    assert [s.aws and s.aws.exists for s in blind] == [False, False]


@pytest.mark.parametrize(
    ("profiles", "message"),
    [
        (("ops",), "does not say which account"),
        (("ops=12",), "does not say which account"),
        ((f"ops={A}", f"dev={A}"), "two profiles"),
    ],
)
def test_profile_options_name_their_account(profiles: tuple[str, ...], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        route_accounts(profiles, None)


def test_a_profile_comes_before_the_role() -> None:
    accounts = route_accounts((f"ops={A}",), ROLE)
    first, second = accounts.source(A), accounts.source(B)
    assert first is not None and first.profile == "ops"
    assert second is not None and second.role_arn == ROLE.replace("{account}", B)
    assert route_accounts((), None).source(A) is None


async def test_one_client_pair_per_account_and_one_role_per_account(
    aws: AwsEndpoint, nats_server: NatsServer, tmp_path: Path
) -> None:
    """Routes of one account share its clients; the role is assumed on the first call, once for
    the account, into credentials botocore refreshes before they expire."""
    import contextlib

    from aiobotocore.credentials import AioDeferredRefreshableCredentials

    from snsq2nats.bridge.session import AccountPool

    plan = await _planned(aws, nats_server, tmp_path, (A, B))
    routes = [
        _route(plan, kind, a, n)
        for a in (A, B)
        for kind, n in (
            ("sqs-to-nats", "orders"),
            ("nats-to-sqs", "billing"),
        )
    ]
    async with contextlib.AsyncExitStack() as stack:
        pool = AccountPool(stack, aws.url, RouteAccounts(ROLE), BASE, None)
        await pool.open(routes, pollers=2)
        pairs = [pool.clients(r) for r in routes]
        assert pairs[0] == pairs[1] and pairs[2] == pairs[3] and pairs[0] != pairs[2]
        assert len({id(sqs) for sqs, _ in pairs}) == 2
        for account, (sqs, _) in zip((A, B), pairs[::2], strict=True):
            reply = await sqs.get_queue_url(QueueName="orders")
            assert f"/{account}/orders" in reply["QueueUrl"]
        credentials = await pool._sessions[A].get_credentials()
        assert isinstance(credentials, AioDeferredRefreshableCredentials)
        assert credentials.method == "assume-role"
        assert (await credentials.get_frozen_credentials()).token


async def test_one_accounts_plan_is_bridged_with_the_base_credentials(
    aws: AwsEndpoint, nats_server: NatsServer, tmp_path: Path
) -> None:
    """No account option and one account: the base clients serve every route, as before."""
    plan = await _planned(aws, nats_server, tmp_path, (BASE,))
    route = _route(plan, "sqs-to-nats", BASE, "orders")
    base = aws.client("sqs")
    base.send_message(QueueUrl=base.get_queue_url(QueueName="orders")["QueueUrl"], MessageBody="y")
    stop, task = _start(nats_server, aws, plan, [route], RouteAccounts())
    try:

        async def relayed() -> bool:
            return await _stream_bodies(nats_server.url, str(route.stream)) == ["y"]

        await until(relayed, what="the message in its stream", timeout=60)
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


@pytest.mark.parametrize("command", ["bridge", "status"])
def test_cli_refuses_a_profile_without_its_account(command: str) -> None:
    from click.testing import CliRunner

    from snsq2nats.cli import main

    result = CliRunner().invoke(main, [command, "--profile", "ops", "-s", "nats://127.0.0.1:1"])
    assert result.exit_code == 1
    assert "--profile 'ops' does not say which account" in result.output
    assert "NAME=ACCOUNT_ID" in result.output
