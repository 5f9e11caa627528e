"""The bridge in a per-account plan (`accounts: {nats: per-account}`): each route relayed over a
connection to its own NATS account with that account's bridge identity.

moto serves two AWS accounts through STS AssumeRole (shop and billing); a nats-server in
operator mode runs the JWTs `auth --format jwt` wrote for the plan, each account applied with
its own admin. Billing's `orders` queue has its consumers on NATS (an sqs-to-nats relay into
billing's NATS account); shop's `events` topic has its producers on NATS and fans out through
SNS (its `audit` queue reads SNS's envelope), so a nats-to-sns relay reads shop's NATS account.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from snsq2nats.apply import apply_plan
from snsq2nats.auth.bridge import BRIDGE, account_options, bridge_credentials
from snsq2nats.auth.identities import Identity, identities, inbox_prefix
from snsq2nats.auth.jwt import JwtWritten, write_jwt
from snsq2nats.auth.output import write_identities
from snsq2nats.aws.accounts import RouteAccounts, account_clients, account_sources
from snsq2nats.aws.arns import parse_arn
from snsq2nats.aws.scan import scan_accounts
from snsq2nats.bridge.context import RelaySettings
from snsq2nats.bridge.nats_accounts import route_account, route_accounts
from snsq2nats.bridge.session import bridge_session
from snsq2nats.demo.nats_server import NatsServer
from snsq2nats.errors import UsageError
from snsq2nats.jetstream.connect import NatsOptions, connect_nats
from snsq2nats.jetstream.spec import ServerInfo
from snsq2nats.plan.accounts import HOME, account_plan, admin_credentials, apply_order
from snsq2nats.plan.model import Plan, Route
from snsq2nats.plan.pipeline import assemble_plan
from snsq2nats.plan.rules import load_rules
from tests.fixtures.aws import AwsEndpoint
from tests.fixtures.wait import until

SHOP, BILLING = "111111111111", "222222222222"
ROLE = "arn:aws:iam::{account}:role/snsq2nats-bridge"
PER_ACCOUNT = (
    f"accounts:\n  naming: prefix\n  nats: per-account\n"
    f"  aliases: {{'{SHOP}': shop, '{BILLING}': billing}}\n"
)
COUNT = 5


@dataclass
class Estate:
    plan: Plan
    auth_dir: Path
    written: JwtWritten
    by_name: dict[str, Identity]


def _seed(aws: AwsEndpoint) -> None:
    """shop: topic `events`, its `audit` queue subscribed with the SNS envelope (so the topic
    keeps fanning out through SNS); billing: queue `orders`."""
    shop = aws.assumed(SHOP)
    sns = shop.client("sns", endpoint_url=aws.url)
    sqs = shop.client("sqs", endpoint_url=aws.url)
    topic = sns.create_topic(Name="events")["TopicArn"]
    audit = sqs.create_queue(QueueName="audit")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=audit, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
    aws.assumed(BILLING).client("sqs", endpoint_url=aws.url).create_queue(QueueName="orders")


def _estate(
    aws: AwsEndpoint,
    tmp_path: Path,
    url: str,
    mapping_text: str = PER_ACCOUNT,
    seed: Callable[[AwsEndpoint], None] = _seed,
) -> Estate:
    """Scanned through both accounts' roles, planned per account, and `auth --format jwt`."""
    seed(aws)
    sources = account_sources((), "arn:aws:iam::{account}:role/snsq2nats-scan", (SHOP, BILLING))
    inventory = scan_accounts([account_clients(s, (aws.region,), aws.url) for s in sources])
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(mapping_text)
    plan = assemble_plan(
        inventory, load_rules([mapping]), None, server=ServerInfo(reachable=False, note="offline")
    )
    return _authorised(plan, tmp_path, url)


def _authorised(plan: Plan, tmp_path: Path, url: str) -> Estate:
    """`auth --format jwt` of the plan into tmp_path/nats-auth."""
    generated = identities(plan)
    auth_dir = tmp_path / "nats-auth"
    write_identities(
        generated,
        auth_dir,
        fmt="jwt",
        credentials="password",
        tls_user="{name}",
        url=url,
        plan=plan,
    )
    # The same seeds again: the server's settings as data.
    written = write_jwt(generated, auth_dir, plan.nats_accounts, plan.crossings)
    return Estate(plan, auth_dir, written, {i.name: i for i in generated})


async def _connect(url: str, creds: Path, identity: Identity) -> Any:
    return await connect_nats(
        NatsOptions(servers=[url], creds=str(creds), inbox_prefix=identity.inbox_prefix)
    )


async def _apply(estate: Estate, url: str) -> None:
    """Each NATS account's part with its own admin, origins first (as `apply --grants`)."""
    admins = admin_credentials(estate.plan, estate.auth_dir)
    admin = estate.by_name["snsq2nats-admin"]
    for account in apply_order(estate.plan):
        nc = await _connect(url, admins[account], admin)
        try:
            result = await apply_plan(
                nc, account_plan(estate.plan, account), allow_destructive=False
            )
            assert result.ok, [o.detail for o in result.failed]
        finally:
            await nc.close()


def _route(plan: Plan, kind: str, account: str, name: str) -> Route:
    return next(
        r
        for r in plan.candidate_routes
        if r.kind == kind and r.aws_arn.endswith(f":{account}:{name}")
    )


def _home_options(estate: Estate, url: str) -> NatsOptions:
    """The bridge's own connection: the home account's bridge, as auth's context names it."""
    return NatsOptions(
        servers=[url],
        creds=str(bridge_credentials(estate.plan, estate.auth_dir)[HOME]),
        inbox_prefix=inbox_prefix(BRIDGE),
    )


def _bridge_connections(server: NatsServer) -> dict[str, str]:
    """The bridge's connections open on the server now: connection name → account name."""
    accounts = {}
    for key, token in server.extra_config["resolver_preload"].items():  # type: ignore[index]
        body = token.split(".")[1]
        accounts[key] = json.loads(_b64(body))["name"]
    with urllib.request.urlopen(f"{server.monitor_url}/connz?auth=true&limit=1024") as reply:
        connz = json.loads(reply.read())
    return {
        c["name"]: accounts.get(c.get("account", ""), c.get("account", ""))
        for c in connz.get("connections") or []
        if str(c.get("name", "")).startswith("snsq2nats bridge")
    }


def _b64(text: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _start(
    estate: Estate, url: str, aws: AwsEndpoint, routes: list[Route]
) -> tuple[asyncio.Event, asyncio.Task[None]]:
    """An in-process bridge of `routes`, its own connection the home account's bridge."""
    stop = asyncio.Event()
    home = _home_options(estate, url)
    task = asyncio.create_task(
        bridge_session(
            home,
            estate.plan,
            routes,
            regions=(),
            endpoint_url=aws.url,
            settings=RelaySettings(wait_time_seconds=1, visibility_timeout=5),
            duration=None,
            metrics_port=None,
            cleanup=False,
            stop=stop,
            lease_ttl=3.0,
            accounts=RouteAccounts(ROLE),
            nats_accounts=account_options(estate.plan, routes, home, estate.auth_dir),
        )
    )
    return stop, task


async def _stream_bodies(url: str, creds: Path, identity: Identity, stream: str) -> list[str]:
    nc = await _connect(url, creds, identity)
    try:
        js = nc.jetstream()
        last = (await js.stream_info(stream)).state.last_seq
        return [
            ((await js.get_msg(stream, seq)).data or b"").decode() for seq in range(1, last + 1)
        ]
    finally:
        await nc.close()


async def test_each_route_relays_in_its_own_nats_account(aws: AwsEndpoint, tmp_path: Path) -> None:
    server = NatsServer(name="bridgeacct")
    estate = await asyncio.to_thread(_estate, aws, tmp_path, server.url)
    server.extra_config = estate.written.settings
    plan = estate.plan
    inbound = _route(plan, "sqs-to-nats", BILLING, "orders")
    outbound = _route(plan, "nats-to-sns", SHOP, "events")
    assert route_account(plan, inbound) == "billing"
    assert route_account(plan, outbound) == "shop"
    topic = next(r for r in plan.resources if r.source_arn == outbound.aws_arn)
    assert topic.publish_subject is not None
    publisher = next(
        i for i in estate.by_name.values() if i.role == "publisher" and i.serves == topic.source_arn
    )
    admin = estate.by_name["snsq2nats-admin"]
    admins = admin_credentials(plan, estate.auth_dir)
    billing_sqs = aws.assumed(BILLING).client("sqs", endpoint_url=aws.url)
    shop_sqs = aws.assumed(SHOP).client("sqs", endpoint_url=aws.url)
    orders = billing_sqs.get_queue_url(QueueName="orders")["QueueUrl"]
    audit = shop_sqs.get_queue_url(QueueName="audit")["QueueUrl"]

    with server:
        await _apply(estate, server.url)
        for i in range(COUNT):
            billing_sqs.send_message(QueueUrl=orders, MessageBody=f"in-{i}")
        stop, task = _start(estate, server.url, aws, [inbound, outbound])
        try:
            await until(
                lambda: {"shop", "billing"} <= set(_bridge_connections(server).values()),
                what="the bridge connected to shop's and billing's NATS accounts",
                timeout=60,
            )
            connections = _bridge_connections(server)
            # The fleet's own connection is the home account's; one more per route account.
            assert connections["snsq2nats bridge"] == HOME
            assert connections["snsq2nats bridge shop"] == "shop"
            assert connections["snsq2nats bridge billing"] == "billing"

            pub = await _connect(server.url, estate.written.creds[publisher.name], publisher)
            try:
                for i in range(COUNT):
                    ack = await pub.jetstream().publish(topic.publish_subject, f"out-{i}".encode())
                    assert ack.stream == outbound.stream
            finally:
                await pub.close()

            async def relayed_in() -> bool:
                bodies = await _stream_bodies(
                    server.url, admins["billing"], admin, str(inbound.stream)
                )
                return len(bodies) >= COUNT

            await until(relayed_in, what="billing's SQS messages in its stream", timeout=60)

            received: list[str] = []

            def drain_audit() -> bool:
                got = shop_sqs.receive_message(QueueUrl=audit, MaxNumberOfMessages=10)
                for m in got.get("Messages", []):
                    received.append(json.loads(m["Body"])["Message"])
                    shop_sqs.delete_message(QueueUrl=audit, ReceiptHandle=m["ReceiptHandle"])
                return len(received) >= COUNT

            await until(
                lambda: asyncio.to_thread(drain_audit),
                what="shop's NATS producers' messages through SNS in shop's audit queue",
                timeout=60,
            )
        finally:
            stop.set()
            await asyncio.wait_for(task, 60)

        # Each message once: nothing doubled, nothing left behind.
        bodies = await _stream_bodies(server.url, admins["billing"], admin, str(inbound.stream))
        assert sorted(bodies) == [f"in-{i}" for i in range(COUNT)]
        assert sorted(received) == [f"out-{i}" for i in range(COUNT)]
        assert not billing_sqs.receive_message(QueueUrl=orders).get("Messages")
        assert not shop_sqs.receive_message(QueueUrl=audit).get("Messages")
        # The bridge closed every account's connection on its way out.
        assert _bridge_connections(server) == {}
        await _ledger_is_homes(estate, server.url, str(outbound.stream))

        # Billing's bridge identity cannot reach shop's streams: they are not in its account,
        # and shop's imported API is not among its grants.
        bridge = estate.by_name[BRIDGE]
        creds = bridge_credentials(plan, estate.auth_dir)
        nc = await _connect(server.url, creds["billing"], bridge)
        try:
            reply = await nc.request(f"$JS.API.STREAM.INFO.{outbound.stream}", b"", timeout=10)
            assert json.loads(reply.data)["error"]["err_code"] == 10059  # stream not found
            reply = await nc.request(f"$JS.API.STREAM.INFO.{inbound.stream}", b"", timeout=10)
            assert "error" not in json.loads(reply.data)
        finally:
            await nc.close()
        shop_bridge = await _connect(server.url, creds["shop"], bridge)
        try:
            reply = await shop_bridge.request(
                f"$JS.API.STREAM.INFO.{outbound.stream}", b"", timeout=10
            )
            assert "error" not in json.loads(reply.data)
        finally:
            await shop_bridge.close()


async def _ledger_is_homes(estate: Estate, url: str, topic_stream: str) -> None:
    """shop's SNS relay recorded each message SNS accepted in the home account's ledger (shop's
    account has none), and a handover over shop's connection reads it there: a cut whose
    every message is in doubt copies none."""
    from snsq2nats.bridge.fanout_handover import CopyTarget, RelayCut, carry_in_doubt, read_sent
    from snsq2nats.plan.buckets import SENT_LEDGER

    admin = estate.by_name["snsq2nats-admin"]
    admins = admin_credentials(estate.plan, estate.auth_dir)
    home = await _connect(url, admins[HOME], admin)
    shop = await _connect(url, admins["shop"], admin)
    try:
        assert await read_sent(home, topic_stream, None) == set(range(1, COUNT + 1))
        assert await read_sent(shop, topic_stream, None) is None  # no ledger in shop's account
        reply = await shop.request(f"$JS.API.STREAM.INFO.{SENT_LEDGER}", b"", timeout=10)
        assert json.loads(reply.data)["error"]["err_code"] == 10059
        nowhere = CopyTarget("nowhere", "nowhere", False, (">",))
        cut = RelayCut(topic_stream, 0, COUNT)
        carried = await carry_in_doubt(shop, cut, [], [nowhere], route="test", ledger=home)
        assert (carried.recorded, carried.copied, carried.ledger) == (COUNT, 0, True)
    finally:
        await shop.close()
        await home.close()


async def test_a_member_connects_only_to_the_accounts_of_its_routes(
    aws: AwsEndpoint, tmp_path: Path
) -> None:
    """Given billing's route alone, the bridge opens no connection to shop's account."""
    server = NatsServer(name="bridgeacct-lazy")
    estate = await asyncio.to_thread(_estate, aws, tmp_path, server.url)
    server.extra_config = estate.written.settings
    inbound = _route(estate.plan, "sqs-to-nats", BILLING, "orders")
    admins = admin_credentials(estate.plan, estate.auth_dir)
    admin = estate.by_name["snsq2nats-admin"]
    sqs = aws.assumed(BILLING).client("sqs", endpoint_url=aws.url)
    sqs.send_message(QueueUrl=sqs.get_queue_url(QueueName="orders")["QueueUrl"], MessageBody="x")
    with server:
        await _apply(estate, server.url)
        stop, task = _start(estate, server.url, aws, [inbound])
        try:

            async def relayed() -> bool:
                bodies = await _stream_bodies(
                    server.url, admins["billing"], admin, str(inbound.stream)
                )
                return bodies == ["x"]

            await until(relayed, what="billing's message in its stream", timeout=60)
            assert sorted(_bridge_connections(server).values()) == sorted([HOME, "billing"])
        finally:
            stop.set()
            await asyncio.wait_for(task, 60)


def test_a_missing_creds_file_names_the_account_and_the_option(tmp_path: Path) -> None:
    from tests.test_nats_accounts import PER_ACCOUNT as MAPPING
    from tests.test_nats_accounts import plan_of

    plan = plan_of(tmp_path, MAPPING)
    auth_dir = tmp_path / "nats-auth"
    write_identities(
        identities(plan),
        auth_dir,
        fmt="jwt",
        credentials="password",
        tls_user="{name}",
        url="nats://127.0.0.1:4222",
        plan=plan,
    )
    routes = plan.candidate_routes
    base = NatsOptions(servers=["nats://127.0.0.1:4222"], creds=str(auth_dir / "x.creds"))
    found = account_options(plan, routes, base, auth_dir)
    assert sorted(found) == ["billing", "shop"]
    assert found["billing"].creds == str(auth_dir / "creds" / "billing" / f"{BRIDGE}.creds")
    assert found["billing"].inbox_prefix == inbox_prefix(BRIDGE)
    assert found["billing"].servers == base.servers
    (auth_dir / "creds" / "billing" / f"{BRIDGE}.creds").unlink()
    with pytest.raises(UsageError) as refused:
        account_options(plan, routes, base, auth_dir)
    assert "NATS account(s) billing" in str(refused.value) and "shop" not in str(refused.value)
    assert "--grants" in (refused.value.hint or "")
    # Only the accounts the selected routes relay in are asked for (the filter router from
    # shop's topic into billing's queue needs both).
    shop_only = [r for r in routes if route_accounts(plan, r) == {"shop"}]
    assert shop_only
    assert sorted(account_options(plan, shop_only, base, auth_dir)) == ["shop"]


async def test_a_per_account_plan_without_account_credentials_is_refused(tmp_path: Path) -> None:
    from tests.test_nats_accounts import PER_ACCOUNT as MAPPING
    from tests.test_nats_accounts import plan_of

    plan = plan_of(tmp_path, MAPPING)
    with pytest.raises(UsageError) as refused:
        await bridge_session(
            NatsOptions(servers=["nats://127.0.0.1:1"]),
            plan,
            plan.candidate_routes,
            regions=(),
            endpoint_url=None,
            settings=RelaySettings(),
            duration=None,
            metrics_port=None,
            cleanup=False,
        )
    assert "billing, shop" in str(refused.value) and "--grants" in (refused.value.hint or "")


def test_bridge_cli_of_a_per_account_plan_needs_the_auth_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No --grants and no ./nats-auth: one error naming the option, before any relay."""
    from click.testing import CliRunner

    from snsq2nats.cli import main
    from snsq2nats.files import document_json
    from tests.test_nats_accounts import PER_ACCOUNT as MAPPING
    from tests.test_nats_accounts import plan_of

    plan_file = tmp_path / "plan.json"
    plan_file.write_bytes(document_json(plan_of(tmp_path, MAPPING)))
    monkeypatch.chdir(tmp_path)
    with NatsServer(name="bridgeacct-cli") as server:
        run = CliRunner().invoke(
            main, ["bridge", "--plan", str(plan_file), "--server", server.url, "--duration", "1"]
        )
    assert run.exit_code != 0
    assert "own NATS account" in run.output and "--grants DIR" in run.output


async def test_a_filtered_subscription_crosses_accounts_through_the_filter_router(
    aws: AwsEndpoint, tmp_path: Path
) -> None:
    """shop's topic, billing's filtered `picky` queue: the plan lists the edge as the bridge's
    (`how: bridge`); the filter router reads the topic in shop's NATS account and publishes
    each match into billing's, each once, the rest nowhere."""
    from snsq2nats.bridge.codec import Attribute, attributes_to_headers
    from snsq2nats.bridge.nats_accounts import target_account
    from tests.test_nats_accounts import PER_ACCOUNT as MAPPING
    from tests.test_nats_accounts import plan_of

    plan = plan_of(tmp_path, MAPPING)
    router = next(r for r in plan.candidate_routes if r.kind == "filter-router")
    assert (route_account(plan, router), target_account(plan, router)) == ("shop", "billing")
    assert [(c.how, c.from_account, c.to_account) for c in plan.crossings if c.how == "bridge"] == [
        ("bridge", "shop", "billing")
    ]
    server = NatsServer(name="bridgeacct-filter")
    estate = _authorised(plan, tmp_path, server.url)
    server.extra_config = estate.written.settings
    topic = next(r for r in plan.resources if r.source_arn == router.aws_arn)
    assert topic.publish_subject is not None
    publisher = next(
        i for i in estate.by_name.values() if i.role == "publisher" and i.serves == topic.source_arn
    )
    admin = estate.by_name["snsq2nats-admin"]
    admins = admin_credentials(plan, estate.auth_dir)
    kinds = [("one", "big"), ("two", "small"), ("three", "big")]
    with server:
        await _apply(estate, server.url)
        stop, task = _start(estate, server.url, aws, [router])
        try:
            await until(
                lambda: {"shop", "billing"} <= set(_bridge_connections(server).values()),
                what="the router connected to the topic's and the queue's NATS accounts",
                timeout=60,
            )
            pub = await _connect(server.url, estate.written.creds[publisher.name], publisher)
            try:
                for body, kind in kinds:
                    headers = attributes_to_headers({"kind": Attribute("String", kind)})
                    await pub.jetstream().publish(
                        topic.publish_subject, body.encode(), headers=headers
                    )
            finally:
                await pub.close()

            async def routed() -> bool:
                bodies = await _stream_bodies(
                    server.url, admins["billing"], admin, str(router.target_stream)
                )
                return len(bodies) >= 2

            await until(routed, what="the matches in billing's picky stream", timeout=60)
        finally:
            stop.set()
            await asyncio.wait_for(task, 60)
        bodies = await _stream_bodies(
            server.url, admins["billing"], admin, str(router.target_stream)
        )
        assert bodies == ["one", "three"]
        assert _bridge_connections(server) == {}


def test_the_bridge_command_takes_each_accounts_creds_from_the_auth_output(
    aws: AwsEndpoint, tmp_path: Path
) -> None:
    """`snsq2nats bridge --context DIR/contexts/snsq2nats-bridge.json`: the home account's
    bridge runs the revision apply recorded there, and finds billing's creds beside the context
    (the default --grants) to relay billing's queue, whose consumers the mapping puts on NATS."""
    from click.testing import CliRunner

    from snsq2nats.cli import main
    from snsq2nats.files import document_json

    on_nats = (
        f"overrides:\n  - match: 'arn:aws:sqs:*:{BILLING}:orders'\n"
        "    cutover: {producers: aws, consumers: nats}\n"
    )
    server = NatsServer(name="bridgeacct-command")
    estate = _estate(aws, tmp_path, server.url, PER_ACCOUNT + on_nats)
    server.extra_config = estate.written.settings
    inbound = _route(estate.plan, "sqs-to-nats", BILLING, "orders")
    assert inbound in estate.plan.routes  # run in the plan's cutover state
    plan_file = tmp_path / "plan.json"
    plan_file.write_bytes(document_json(estate.plan))
    sqs = aws.assumed(BILLING).client("sqs", endpoint_url=aws.url)
    sqs.send_message(QueueUrl=sqs.get_queue_url(QueueName="orders")["QueueUrl"], MessageBody="c")
    context = estate.auth_dir / "contexts" / f"{BRIDGE}.json"
    with server:
        asyncio.run(_apply(estate, server.url))
        run = CliRunner().invoke(
            main,
            [
                "bridge",
                "--plan",
                str(plan_file),
                "--context",
                str(context),
                "--assume-role",
                ROLE,
                "--route",
                inbound.name,
                "--max-messages",
                "1",
                # Only a guard against a hang: the run ends at its first message.
                "--duration",
                "600",
            ],
        )
        assert run.exit_code == 0, run.output
        admins = admin_credentials(estate.plan, estate.auth_dir)
        admin = estate.by_name["snsq2nats-admin"]
        bodies = asyncio.run(
            _stream_bodies(server.url, admins["billing"], admin, str(inbound.stream))
        )
    assert bodies == ["c"]


async def test_an_accounts_connection_lives_while_one_of_its_routes_runs(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """Opened by the account's first route, shared by the next, closed after the last; the
    home account's routes use the bridge's own connection and open nothing."""
    from snsq2nats.bridge.nats_accounts import AccountConnections
    from tests.test_nats_accounts import PER_ACCOUNT as MAPPING
    from tests.test_nats_accounts import plan_of

    plan = plan_of(tmp_path, MAPPING)
    billing = [r for r in plan.candidate_routes if route_accounts(plan, r) == {"billing"}]
    assert len(billing) >= 2
    home_route = billing[0].model_copy(update={"stream": "KV_snsq2nats_fleet"})
    opened: list[str] = []

    async def connect(options: NatsOptions, name: str) -> Any:
        opened.append(name)
        return await connect_nats(options, name=name)

    home = await connect_nats(NatsOptions(servers=[nats_server.url]))
    pool = AccountConnections(
        lambda: plan, home, {"billing": NatsOptions(servers=[nats_server.url])}, connect
    )
    try:
        first, nc = await pool.acquire(billing[0])
        second, again = await pool.acquire(billing[1])
        assert (first, second) == ("billing", "billing") and again is nc and nc is not home
        assert await pool.acquire(home_route) == (HOME, home)
        await pool.release(HOME)
        await pool.release(first)
        assert nc.is_connected  # billing[1] still runs
        await pool.release(second)
        await until(lambda: nc.is_closed, what="billing's connection closed after its last route")
        assert opened == ["snsq2nats bridge billing"]
        assert home.is_connected
    finally:
        await pool.close()
        await home.close()


def test_verify_sends_each_canary_in_its_own_nats_account(aws: AwsEndpoint, tmp_path: Path) -> None:
    """`verify --grants DIR` of a per-account plan: each queue's canary is published and
    received in its own NATS account (billing's `orders`, shop's `audit`), and shop's topic's
    reaches its queue; none is left behind. Without the other accounts' creds those streams
    cannot even be seen from the home account."""
    from click.testing import CliRunner

    from snsq2nats.cli import main
    from snsq2nats.files import document_json

    server = NatsServer(name="bridgeacct-verify")
    estate = _estate(aws, tmp_path, server.url)
    server.extra_config = estate.written.settings
    plan_file = tmp_path / "plan.json"
    plan_file.write_bytes(document_json(estate.plan))
    context = estate.auth_dir / "contexts" / "snsq2nats-admin.json"
    words = ["verify", "--plan", str(plan_file), "--context", str(context), "--json"]
    with server:
        asyncio.run(_apply(estate, server.url))
        run = CliRunner().invoke(main, [*words, "--grants", str(estate.auth_dir)])
    assert run.exit_code == 0, run.output
    doc = json.loads(run.stdout)
    assert doc["ok"] and not doc["counts"]["failed"], doc
    checked = {r["resource"] for r in doc["results"] if r["result"] == "ok"}
    queues = [r for r in estate.plan.resources if r.kind == "sqs-queue"]
    assert {r.name for r in queues} <= checked, doc["results"]
    assert {SHOP, BILLING} == {parse_arn(r.source_arn).account for r in queues}


def test_cutover_finish_switches_a_topic_in_its_own_nats_account(
    aws: AwsEndpoint, tmp_path: Path
) -> None:
    """`cutover finish TOPIC --grants DIR` of a per-account plan: shop's `events` fans out through
    SNS for its envelope reader `audit`; once both sides are on NATS, the finish switches the
    topic to stream sources in shop's NATS account (the home connection cannot see its stream)
    and reads the SNS relay's ledger in the home account. No bridge runs: the moves are recorded
    ahead of one, and a second finish completes the switch of a finish no bridge confirmed. What
    NATS producers published before the switch, which no relay sent to SNS, reaches `audit`'s
    stream once."""
    from click.testing import CliRunner

    from snsq2nats.cli import main
    from snsq2nats.files import document_json

    server = NatsServer(name="bridgeacct-finish")
    estate = _estate(aws, tmp_path, server.url)
    server.extra_config = estate.written.settings
    plan = estate.plan
    plan_file = tmp_path / "plan.json"
    plan_file.write_bytes(document_json(plan))
    context = estate.auth_dir / "contexts" / "snsq2nats-admin.json"
    outbound = _route(plan, "nats-to-sns", SHOP, "events")
    topic = next(r for r in plan.resources if r.source_arn == outbound.aws_arn)
    audit = next(
        r for r in plan.resources if r.kind == "sqs-queue" and r.source_arn.endswith(":audit")
    )
    assert topic.publish_subject and audit.stream and outbound.stream
    publisher = next(
        i for i in estate.by_name.values() if i.role == "publisher" and i.serves == topic.source_arn
    )
    admin = estate.by_name["snsq2nats-admin"]
    admins = admin_credentials(plan, estate.auth_dir)
    common = ["--plan", str(plan_file), "--context", str(context), "--grants", str(estate.auth_dir)]

    def cutover(*words: str) -> Any:
        run = CliRunner().invoke(main, ["cutover", *words, *common, "--record-only", "--json"])
        assert run.exit_code == 0, run.output
        return json.loads(run.stdout)

    async def publish() -> None:
        pub = await _connect(server.url, estate.written.creds[publisher.name], publisher)
        try:
            for i in range(COUNT):
                await pub.jetstream().publish(str(topic.publish_subject), f"out-{i}".encode())
        finally:
            await pub.close()

    async def sources() -> list[tuple[str, int | None]]:
        nc = await _connect(server.url, admins["shop"], admin)
        try:
            live = (await nc.jetstream().stream_info(str(audit.stream))).config.sources or []
            return [(s.name, s.opt_start_seq) for s in live]
        finally:
            await nc.close()

    with server:
        asyncio.run(_apply(estate, server.url))
        asyncio.run(publish())
        cutover("consumers", audit.source_arn, "--to", "nats")
        cutover("producers", topic.source_arn, "--to", "nats")
        pending = cutover("finish", topic.source_arn)
        assert not pending["switched_to_sources"], (
            pending
        )  # no bridge confirmed it: nothing switched
        done = cutover("finish", topic.source_arn)
        assert asyncio.run(sources()) == [(outbound.stream, 1)]

        async def arrived() -> bool:
            bodies = await _stream_bodies(server.url, admins["shop"], admin, str(audit.stream))
            return len(bodies) >= COUNT

        asyncio.run(until(arrived, what="the topic's messages in audit's stream", timeout=60))
        bodies = asyncio.run(_stream_bodies(server.url, admins["shop"], admin, str(audit.stream)))
        # A third finish changes nothing: the source is there once.
        cutover("finish", topic.source_arn)
        assert asyncio.run(sources()) == [(outbound.stream, 1)]
    assert sorted(bodies) == [f"out-{i}" for i in range(COUNT)]
    # No relay ran: nothing was in doubt, the sources start at the topic's first message.
    (cut,) = done["switched_to_sources"].values()
    assert (cut["acked"], cut["delivered"], cut["copied"]) == (0, 0, 0), done


@pytest.mark.slow
@pytest.mark.timeout(420)
async def test_a_per_account_replan_hands_a_held_relay_over_once(
    aws: AwsEndpoint, tmp_path: Path
) -> None:
    """`apply --grants` of a per-account re-plan that moves shop's `events` from SNS to stream
    sources, under a running bridge and continuous traffic, while a relay member holds a message
    it never acknowledged. Shop's part records its interim revision in the home account, where
    the bridges follow it, and reads the relay's floors only once they stopped it: the sources
    start after the last message the relay was handed, the held one is copied, and `audit`'s
    stream gets each message once. The home account's part goes last and records the plan."""
    from snsq2nats.bridge.runtime import select_routes
    from snsq2nats.cutover import CutoverRequest, read_records, run_cutover
    from snsq2nats.cutover.engine import wait_for_bridges
    from snsq2nats.jetstream.state import read_live
    from snsq2nats.plan.pipeline import merge_live
    from snsq2nats.plan.routes import TO_SNS_CONSUMER
    from tests.test_cutover import _hold

    server = NatsServer(name="bridgeacct-handover")
    estate = await asyncio.to_thread(_estate, aws, tmp_path, server.url)
    server.extra_config = estate.written.settings
    first = estate.plan
    outbound = _route(first, "nats-to-sns", SHOP, "events")
    topic = next(r for r in first.resources if r.source_arn == outbound.aws_arn)
    audit = next(
        r for r in first.resources if r.kind == "sqs-queue" and r.source_arn.endswith(":audit")
    )
    events, audit_stream = str(outbound.stream), str(audit.stream)
    publisher = next(
        i for i in estate.by_name.values() if i.role == "publisher" and i.serves == topic.source_arn
    )
    admin = estate.by_name["snsq2nats-admin"]
    admins = admin_credentials(first, estate.auth_dir)
    shop_sns = aws.assumed(SHOP).client("sns", endpoint_url=aws.url)
    shop_sqs = aws.assumed(SHOP).client("sqs", endpoint_url=aws.url)
    audit_url = shop_sqs.get_queue_url(QueueName="audit")["QueueUrl"]
    (subscription,) = shop_sns.list_subscriptions()["Subscriptions"]
    assert apply_order(first)[-1] == HOME

    sent: list[str] = []
    publishing = asyncio.Event()

    async def produce() -> None:
        pub = await _connect(server.url, estate.written.creds[publisher.name], publisher)
        try:
            while publishing.is_set():
                body = f"m-{len(sent):04d}"
                await pub.jetstream().publish(str(topic.publish_subject), body.encode())
                sent.append(body)
                await asyncio.sleep(0.02)  # a steady stream; nothing waits on it
        finally:
            await pub.close()

    with server:
        await _apply(estate, server.url)
        conns = {a: await _connect(server.url, admins[a], admin) for a in admins}
        home, shop = conns[HOME], conns["shop"]
        others = {a: c for a, c in conns.items() if a != HOME}
        home_options = _home_options(estate, server.url)
        stop = asyncio.Event()
        bridge = asyncio.create_task(
            bridge_session(
                home_options,
                first,
                first.candidate_routes,
                regions=(),
                endpoint_url=aws.url,
                settings=RelaySettings(wait_time_seconds=1, visibility_timeout=5),
                duration=None,
                metrics_port=None,
                cleanup=False,
                stop=stop,
                lease_ttl=3.0,
                select=lambda routes: select_routes(routes, "both"),
                accounts=RouteAccounts(ROLE),
                nats_accounts=account_options(
                    first, first.candidate_routes, home_options, estate.auth_dir
                ),
            )
        )
        producer: asyncio.Task[None] | None = None
        holding: asyncio.Task[None] | None = None
        try:

            async def in_fleet() -> bool:
                return bool(await wait_for_bridges(home, 0, 1.0, lambda _line: None))

            await until(in_fleet, what="the bridge in the fleet", timeout=60)
            for request in (
                CutoverRequest("consumers", [audit.source_arn], "nats", by="tester", command="t"),
                CutoverRequest("producers", [topic.source_arn], "nats", by="tester", command="t"),
            ):
                moved = await run_cutover(home, first, request, accounts=others)
                assert moved.confirmed, request.side
            publishing.set()
            producer = asyncio.create_task(produce())
            await until(lambda: len(sent) >= 40, what="traffic through SNS", timeout=60)
            sub = await shop.jetstream().pull_subscribe_bind(TO_SNS_CONSUMER, events)
            (held,) = await sub.fetch(1, timeout=30)
            held_seq = held.metadata.sequence.stream
            holding = asyncio.create_task(_hold(held))
            mark = len(sent)
            await until(lambda: len(sent) >= mark + 20, what="traffic past the held one")

            # On AWS, midway: the envelope reader turns raw. The re-plan fans out through
            # sources; planned against every account's live state, as apply reconciles each.
            shop_sns.set_subscription_attributes(
                SubscriptionArn=subscription["SubscriptionArn"],
                AttributeName="RawMessageDelivery",
                AttributeValue="true",
            )
            sources = account_sources(
                (), "arn:aws:iam::{account}:role/snsq2nats-scan", (SHOP, BILLING)
            )
            inventory = await asyncio.to_thread(
                scan_accounts, [account_clients(s, (aws.region,), aws.url) for s in sources]
            )
            live = merge_live(await read_live(home), [await read_live(c) for c in others.values()])
            second = assemble_plan(
                inventory,
                load_rules([tmp_path / "mapping.yaml"]),
                live,
                server=live.server,
                records=await read_records(home),
            )
            assert not any(r.kind == "nats-to-sns" for r in second.candidate_routes)
            results = {}
            for account in apply_order(second):
                result = await apply_plan(
                    conns[account],
                    account_plan(second, account),
                    allow_destructive=False,
                    home=home if account != HOME else None,
                )
                assert result.ok, (account, result.error)
                results[account] = result
            holding.cancel()
            cut = results["shop"].handovers[events]
            relay = await shop.jetstream().consumer_info(events, TO_SNS_CONSUMER)
            # Read once the bridges stopped the relay: its floors did not move since.
            assert (cut.acked, cut.delivered) == (
                relay.ack_floor.stream_seq,
                relay.delivered.stream_seq,
            )
            assert cut.acked < held_seq < cut.delivered, (cut, held_seq)
            assert cut.ledger and cut.recorded > 0 and cut.copied >= 1, cut
            info = await shop.jetstream().stream_info(audit_stream)
            assert [(s.name, s.opt_start_seq) for s in info.config.sources or []] == [
                (events, cut.delivered + 1)
            ]
            assert results[HOME].revision is not None  # the plan, recorded after the handover

            mark = len(sent)
            await until(lambda: len(sent) >= mark + 40, what="traffic after the switch")
            publishing.clear()
            await producer

            async def arrived() -> bool:
                bodies = await _stream_bodies(server.url, admins["shop"], admin, audit_stream)
                return set(sent) <= set(bodies)

            await until(arrived, what="every message in audit's stream", timeout=180)

            def sqs_empty() -> bool:
                attributes = shop_sqs.get_queue_attributes(
                    QueueUrl=audit_url,
                    AttributeNames=[
                        "ApproximateNumberOfMessages",
                        "ApproximateNumberOfMessagesNotVisible",
                    ],
                )["Attributes"]
                return not any(int(v) for v in attributes.values())

            await until(sqs_empty, what="nothing left in SQS to relay", timeout=120)
            bodies = await _stream_bodies(server.url, admins["shop"], admin, audit_stream)
            doubled = sorted(b for b in set(bodies) if bodies.count(b) > 1)
            assert not doubled, (len(doubled), doubled[:5])
            assert sorted(bodies) == sorted(sent)
        finally:
            publishing.clear()
            if producer is not None:
                await producer
            if holding is not None:
                holding.cancel()
            stop.set()
            await asyncio.wait_for(bridge, 60)
            for c in conns.values():
                await c.close()


def _seed_with_dlq(aws: AwsEndpoint) -> None:
    """The estate of `_seed`, and billing's `orders` dead-letters into billing's `orders-dlq`
    after two receives."""
    _seed(aws)
    sqs = aws.assumed(BILLING).client("sqs", endpoint_url=aws.url)
    dlq = sqs.create_queue(QueueName="orders-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    policy = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "2"})
    orders = sqs.get_queue_url(QueueName="orders")["QueueUrl"]
    sqs.set_queue_attributes(QueueUrl=orders, Attributes={"RedrivePolicy": policy})


async def test_a_message_that_exhausts_its_deliveries_lands_in_its_accounts_dlq_once(
    aws: AwsEndpoint, tmp_path: Path
) -> None:
    """A per-account plan captures MAX_DELIVERIES advisories in the account of the queue with a
    dead-letter queue (the server raises them in the consumer's account; the home account's
    stream would never see them): billing's worker refuses a message until its deliveries are
    exhausted, and the bridge's DLQ mover, working in billing's account, moves it into
    billing's `orders-dlq` stream once."""
    from nats.js.errors import NotFoundError

    from snsq2nats.plan.accounts import advisory_stream_of
    from snsq2nats.plan.routes import ADVISORY_STREAM

    server = NatsServer(name="bridgeacct-dlq")
    estate = await asyncio.to_thread(
        _estate, aws, tmp_path, server.url, PER_ACCOUNT, _seed_with_dlq
    )
    server.extra_config = estate.written.settings
    plan = estate.plan
    mover = _route(plan, "dlq-mover", BILLING, "orders-dlq")
    advisories = advisory_stream_of("billing")
    assert mover.advisory_stream == advisories != ADVISORY_STREAM
    held = {a.name: a.streams for a in plan.nats_accounts}
    assert advisories in held["billing"]
    assert not any(ADVISORY_STREAM in streams for streams in held.values())
    assert mover.stream and mover.consumer and mover.target_stream
    admin = estate.by_name["snsq2nats-admin"]
    admins = admin_credentials(plan, estate.auth_dir)

    with server:
        await _apply(estate, server.url)
        billing = await _connect(server.url, admins["billing"], admin)
        stop, task = _start(estate, server.url, aws, [mover])
        try:
            js = billing.jetstream()
            subject = next(
                r.subject
                for r in plan.candidate_routes
                if r.kind == "sqs-to-nats" and r.stream == mover.stream
            )
            assert subject
            await js.publish(subject, b"poison")
            await js.publish(subject, b"good")
            sub = await js.pull_subscribe_bind(mover.consumer, mover.stream)

            async def work() -> bool:
                try:
                    msgs = await sub.fetch(10, timeout=0.5)
                except TimeoutError:
                    msgs = []
                for msg in msgs:
                    await (msg.nak() if msg.data == b"poison" else msg.ack())
                state = (await js.stream_info(str(mover.target_stream))).state
                return bool(state.messages >= 1)

            await until(work, what="the refused message in billing's DLQ stream", timeout=60)

            # Moved, not copied: gone from the queue's stream (it was its first message), once
            # in the DLQ's.
            async def moved() -> bool:
                try:
                    await js.get_msg(str(mover.stream), 1)
                except NotFoundError:
                    return True
                return False

            await until(moved, what="the refused message deleted from orders' stream")
            assert await _stream_bodies(
                server.url, admins["billing"], admin, str(mover.target_stream)
            ) == ["poison"]
            info = await js.stream_info(advisories)
            assert info.state.messages == 1  # the advisory, captured in billing's account
            await sub.unsubscribe()
        finally:
            stop.set()
            await asyncio.wait_for(task, 60)
            await billing.close()


def _seed_cross_account_envelope(aws: AwsEndpoint) -> None:
    """shop's topic `events` delivers to billing's queue `ledger`, which reads SNS's envelope:
    the fan-out stays on SNS, and the crossing is the bridge's."""
    shop_sns = aws.assumed(SHOP).client("sns", endpoint_url=aws.url)
    billing_sqs = aws.assumed(BILLING).client("sqs", endpoint_url=aws.url)
    topic = shop_sns.create_topic(Name="events")["TopicArn"]
    url = billing_sqs.create_queue(QueueName="ledger")["QueueUrl"]
    arn = billing_sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    shop_sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)


def test_cutover_finish_refuses_a_switch_across_accounts_before_recording(
    aws: AwsEndpoint, tmp_path: Path
) -> None:
    """Finishing shop's `events`, whose only queue is billing's `ledger`, would make billing's
    stream source shop's topic stream, an edge this plan carries through the bridge with no
    export or import: the finish is refused, naming both accounts, and nothing is recorded."""
    from click.testing import CliRunner

    from snsq2nats.cli import main
    from snsq2nats.files import document_json

    server = NatsServer(name="bridgeacct-finish-cross")
    estate = _estate(aws, tmp_path, server.url, PER_ACCOUNT, _seed_cross_account_envelope)
    server.extra_config = estate.written.settings
    plan = estate.plan
    (crossing,) = plan.crossings
    assert (crossing.how, crossing.from_account, crossing.to_account) == (
        "bridge",
        "shop",
        "billing",
    )
    plan_file = tmp_path / "plan.json"
    plan_file.write_bytes(document_json(plan))
    context = estate.auth_dir / "contexts" / "snsq2nats-admin.json"
    common = ["--plan", str(plan_file), "--context", str(context), "--grants", str(estate.auth_dir)]

    def cutover(*words: str) -> Any:
        return CliRunner().invoke(main, ["cutover", *words, *common, "--record-only", "--json"])

    with server:
        asyncio.run(_apply(estate, server.url))
        for words in (
            ("consumers", crossing.target_arn, "--to", "nats"),
            ("producers", crossing.source_arn, "--to", "nats"),
        ):
            run = cutover(*words)
            assert run.exit_code == 0, run.output
        refused = cutover("finish", crossing.source_arn)
        reading = ["--plan", str(plan_file), "--context", str(context), "--json"]
        history = CliRunner().invoke(main, ["cutover", "history", crossing.source_arn, *reading])
    assert refused.exit_code != 0
    assert "account billing" in refused.output and "account shop" in refused.output
    assert "nothing was recorded" in refused.output
    assert history.exit_code == 0, history.output
    assert [r["state"]["producers"] for r in json.loads(history.stdout)] == ["nats"]
