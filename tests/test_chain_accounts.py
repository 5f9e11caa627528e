"""Issue 21's whole chain on LocalStack: three AWS accounts, two regions, one estate.

moto cannot carry this: a subscription one account makes on another's topic never fires there
(tests/fixtures/localstack.py says why LocalStack does). The first test proves the emulator
does what the chain relies on. The chain runs the commands as the README writes them: `scan`
through an assumed role per account, `plan` with prefixed names, `auth --format jwt`, `apply`
and `verify` in operator mode, a `bridge --assume-role` relaying every route, `cutover` of
billing's consumers (a filtered queue in another account and region than its topic) under
traffic, then ledger's unfed queues moved with `--wait` and `status`, each reading SQS in the
queue's own account and region. Each application gets each of its messages exactly once.

The chain runs twice, as two test items (another worker may take the second): with
`accounts: {nats: one}`, and with `nats: per-account`, where each AWS account is a NATS account
of its own and `apply`, `verify`, the bridge, `cutover` and `status` take `--grants DIR` to act
in each (shop's topics reach ledger's queues through cross-account stream sources). Each run has
AWS accounts of its own, so both can share one LocalStack.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from snsq2nats.demo.nats_server import NatsServer
from snsq2nats.jetstream.connect import NatsOptions, connect_nats
from tests.fixtures.bridge import Bridges
from tests.fixtures.localstack import BASE_ACCOUNT, LocalStack
from tests.fixtures.wait import until, wait_until
from tests.journey_apps import AwsWorker, Ledger, NatsWorker, Producer, Sent

# The first test may install LocalStack into its venv (a minute or two on a fresh machine).
pytestmark = [pytest.mark.slow, pytest.mark.localstack, pytest.mark.timeout(900)]

A, B, C = "111111111111", "222222222222", "333333333333"
"""The chain's accounts: shop (the topics), billing (a filtered queue), ledger (FIFO, a DLQ)."""
D, E = "444444444444", "555555555555"
"""The emulator proof's own accounts: the chain scans A, B and C whole."""
R1, R2 = "us-east-1", "eu-west-1"


def _queue_arn(sqs: Any, url: str) -> str:
    reply = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return str(reply["Attributes"]["QueueArn"])


def test_a_topic_in_one_account_delivers_to_a_queue_in_another(localstack: LocalStack) -> None:
    """D's topic (R1) reaches E's queue (R2), subscribed by E under a queue policy letting the
    topic send, each account acting through keys STS AssumeRole gave for it."""
    for account in (D, E):
        sts = localstack.assumed(account).client("sts", endpoint_url=localstack.url)
        assert sts.get_caller_identity()["Account"] == account
    base = localstack.base().client("sts", endpoint_url=localstack.url)
    assert base.get_caller_identity()["Account"] == BASE_ACCOUNT

    sns = localstack.client("sns", D, R1)
    topic = sns.create_topic(Name="proof-orders")["TopicArn"]
    assert f":{D}:" in topic
    sqs = localstack.client("sqs", E, R2)
    url = sqs.create_queue(QueueName="proof-orders")["QueueUrl"]
    arn = _queue_arn(sqs, url)
    assert arn == f"arn:aws:sqs:{R2}:{E}:proof-orders"
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "sns.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": topic}},
            }
        ],
    }
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(policy)})
    # A same-named queue in the topic's own account must not get E's messages (moto's defect).
    decoy = localstack.client("sqs", D, R2)
    decoy_url = decoy.create_queue(QueueName="proof-orders")["QueueUrl"]
    assert decoy_url != url

    # E subscribes its queue to D's topic (cross-region too): SNS lists it under the topic.
    subscribed = localstack.client("sns", E, R1).subscribe(
        TopicArn=topic, Protocol="sqs", Endpoint=arn, ReturnSubscriptionArn=True
    )
    assert subscribed["SubscriptionArn"].startswith(topic + ":")
    listed = sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
    assert [(s["Endpoint"], s["Owner"]) for s in listed] == [(arn, E)]

    for i in range(3):
        sns.publish(TopicArn=topic, Message=f"crossed-{i}")
    bodies: list[str] = []

    def received() -> bool:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for m in got.get("Messages", []):
            bodies.append(json.loads(m["Body"])["Message"])
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        return len(bodies) >= 3

    wait_until(received, what="D's messages in E's queue", timeout=60)
    assert sorted(bodies) == ["crossed-0", "crossed-1", "crossed-2"]
    assert not decoy.receive_message(QueueUrl=decoy_url).get("Messages")


# --- the chain ------------------------------------------------------------------------------------

ROLE = "arn:aws:iam::{account}:role/snsq2nats"
PLACED, SHIPPED = "order_placed", "order_shipped"
GROUPS = ("g0", "g1", "g2")
RECONCILED = ("reconcile-0", "reconcile-1", "reconcile-2")
UNFED = ("invoices-dlq", "reconcile")
"""Queues no topic feeds: no application reads them during the traffic."""


@dataclass(frozen=True)
class Chain:
    """One run of the chain: its three AWS accounts and how they become NATS accounts. Each
    run has accounts of its own, so both can share one LocalStack."""

    nats: str
    shop: str
    billing: str
    ledger: str

    @property
    def per_account(self) -> bool:
        return self.nats == "per-account"

    def mapping(self) -> str:
        return (
            f"accounts:\n  naming: prefix\n  nats: {self.nats}\n"
            f'  aliases: {{"{self.shop}": shop, "{self.billing}": billing, '
            f'"{self.ledger}": ledger}}\n'
        )


CHAINS = {
    "one": Chain("one", A, B, C),
    # Each AWS account its own NATS account, in operator mode.
    "per-account": Chain("per-account", "611111111111", "622222222222", "633333333333"),
}


@dataclass(frozen=True)
class Queue:
    """One SQS queue of the estate and the application reading it."""

    app: str
    account: str
    region: str
    name: str
    url: str
    arn: str


@dataclass
class Estate:
    orders: str
    payments: str
    queues: dict[str, Queue] = field(default_factory=dict)


def seed(stack: LocalStack, chain: Chain) -> Estate:
    """shop (A, R1): topics `orders` and `payments.fifo`, queue `audit` (raw, everything).
    billing (B, R2): `invoices`, order_placed only, its subscription's DLQ in ledger (C, R2).
    ledger (C, R1): `audit` (the same name as shop's), `payments.fifo` (FIFO, raw) and
    `reconcile`, which no topic feeds (RECONCILED waits in it)."""
    A, B, C = chain.shop, chain.billing, chain.ledger
    sns = stack.client("sns", A, R1)
    estate = Estate(
        orders=sns.create_topic(Name="orders")["TopicArn"],
        payments=sns.create_topic(
            Name="payments.fifo",
            Attributes={"FifoTopic": "true", "ContentBasedDeduplication": "false"},
        )["TopicArn"],
    )

    def queue(app: str, account: str, region: str, name: str, **attributes: str) -> Queue:
        sqs = stack.client("sqs", account, region)
        url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        made = Queue(app, account, region, name, url, _queue_arn(sqs, url))
        estate.queues[app] = made
        return made

    dlq = queue("invoices-dlq", C, R2, "invoices-dlq")
    reconcile = queue("reconcile", C, R1, "reconcile")
    sqs = stack.client("sqs", C, R1)
    for mid in RECONCILED:
        sqs.send_message(QueueUrl=reconcile.url, MessageBody=json.dumps({"id": mid}))
    subscriptions = [
        (estate.orders, queue("shop-audit", A, R1, "audit"), {}),
        (estate.orders, queue("ledger-audit", C, R1, "audit"), {}),
        (
            estate.orders,
            queue("invoices", B, R2, "invoices"),
            {
                "FilterPolicy": json.dumps({"event_type": [PLACED]}),
                "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq.arn}),
            },
        ),
        (
            estate.payments,
            queue("payments", C, R1, "payments.fifo", FifoQueue="true"),
            {},
        ),
    ]
    for topic, target, attributes in subscriptions:
        # The queue's owner subscribes it to shop's topic, as a team in its own account does.
        stack.client("sns", target.account, R1).subscribe(
            TopicArn=topic,
            Protocol="sqs",
            Endpoint=target.arn,
            Attributes={"RawMessageDelivery": "true", **attributes},
        )
    return estate


def cli(*args: str | Path) -> str:
    from click.testing import CliRunner

    from snsq2nats.cli import main

    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, f"snsq2nats {' '.join(map(str, args))}:\n{result.output}"
    return result.output


def cli_json(*args: str | Path) -> Any:
    """A command's `--json` document (stdout only: progress goes to stderr)."""
    from click.testing import CliRunner

    from snsq2nats.cli import main

    result = CliRunner().invoke(main, [*(str(a) for a in args), "--json"])
    assert result.exit_code == 0, f"snsq2nats {' '.join(map(str, args))}:\n{result.output}"
    return json.loads(result.stdout)


@dataclass(eq=False)
class ChainServer(NatsServer):
    """A nats-server whose config includes what `snsq2nats auth --format jwt` wrote."""

    include: Path | None = None

    def write_config(self) -> Path:
        path = super().write_config()
        if self.include is not None:
            with path.open("a", encoding="utf-8") as config:
                config.write(f'include "{os.path.relpath(self.include, self.dir)}"\n')
        return path


@pytest.fixture
def chain_server() -> Iterator[ChainServer]:
    server = ChainServer(name="chain")
    try:
        yield server
    finally:
        server.close()


def _orders(n: int, side: str) -> Sent:
    event = PLACED if n % 2 == 0 else SHIPPED
    mid = f"order-{n:04d}"
    return Sent(mid, "orders", side, {"event_type": ("String", event)}, {"id": mid})


def _payments(n: int, side: str) -> Sent:
    group, seq = GROUPS[n % len(GROUPS)], n // len(GROUPS)
    mid = f"payment-{n:04d}"
    return Sent(mid, "payments.fifo", side, {}, {"id": mid, "group": group, "seq": seq}, group, seq)


def _publisher(sns: Any, topic: str) -> Any:
    async def publish(message: Sent) -> None:
        extra: dict[str, Any] = {}
        if message.group is not None:
            extra = {"MessageGroupId": message.group, "MessageDeduplicationId": message.id}
        attributes = {
            name: {"DataType": kind, "StringValue": value}
            for name, (kind, value) in message.attributes.items()
        }
        await asyncio.to_thread(
            sns.publish,
            TopicArn=topic,
            Message=json.dumps(message.body),
            MessageAttributes=attributes,
            **extra,
        )

    return publish


async def _fleet_members(url: str, context: Path) -> set[int]:
    """The pids of the bridge processes beating in the fleet bucket."""
    from snsq2nats.jetstream.state import read_bucket
    from snsq2nats.plan.buckets import FLEET_BUCKET
    from snsq2nats.plan.fleet import MEMBERS, Heartbeat

    nc = await connect_nats(NatsOptions.resolve(server=url, context=str(context), env={}))
    try:
        values = await read_bucket(nc, FLEET_BUCKET, MEMBERS + ">") or {}
    finally:
        await nc.close()
    beats = [Heartbeat.model_validate_json(v.value) for v in values.values()]
    return {int(b.member.split("-")[-2]) for b in beats if not b.leaving}


def _reader(url: str, auth: Path, plan: Any, stream: str) -> NatsOptions:
    """The admin of the NATS account holding `stream` (the one account's without per-account)."""
    from snsq2nats.auth.identities import inbox_prefix
    from snsq2nats.plan.accounts import HOME, admin_credentials

    held = [a.name for a in plan.nats_accounts if stream in a.streams]
    if not held or held == [HOME]:
        context = auth / "contexts" / "snsq2nats-admin.json"
        return NatsOptions.resolve(server=url, context=str(context), env={})
    creds = admin_credentials(plan, auth)[held[0]]
    return NatsOptions(
        servers=[url], creds=str(creds), inbox_prefix=inbox_prefix("snsq2nats-admin")
    )


async def _stream_ids(options: NatsOptions, stream: str) -> list[str]:
    """The message ids a stream holds, one per stored message."""
    from tests.journey_apps import message_id

    nc = await connect_nats(options)
    try:
        js = nc.jetstream()
        state = (await js.stream_info(stream)).state
        ids = []
        for seq in range(state.first_seq, state.last_seq + 1):
            ids.append(message_id((await js.get_msg(stream, seq)).data or b"")[0])
        return ids
    finally:
        await nc.close()


@pytest.mark.parametrize("chain", list(CHAINS.values()), ids=list(CHAINS))
async def test_the_chain_across_three_accounts_and_two_regions(
    chain: Chain,
    localstack: LocalStack,
    chain_server: ChainServer,
    bridges: Bridges,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """scan (assumed roles, 3 accounts × 2 regions) → plan (prefix names) → auth (JWTs) → apply
    (operator mode) → verify → bridge (assumed roles) relaying every route → billing's consumers
    cut over to NATS under traffic: every application gets each of its messages once. Run
    twice: all in one NATS account, and each AWS account in its own (`apply`, `verify`, the
    bridge and `status` then act in each account with the admin or bridge `auth` wrote there)."""
    from snsq2nats.auth.identities import identities
    from snsq2nats.plan.accounts import HOME
    from snsq2nats.plan.model import load_plan

    A, B, C = chain.shop, chain.billing, chain.ledger
    localstack.environment(monkeypatch)
    estate = await asyncio.to_thread(seed, localstack, chain)
    inventory, plan_path, auth = (
        tmp_path / "inventory.json",
        tmp_path / "plan.json",
        tmp_path / "auth",
    )

    # --- scan, as one estate -------------------------------------------------------------------
    accounts = ("--account", A, "--account", B, "--account", C)
    await asyncio.to_thread(
        cli,
        "scan",
        "--assume-role",
        ROLE,
        *accounts,
        "--region",
        R1,
        "--region",
        R2,
        "-o",
        inventory,
    )
    scanned = json.loads(inventory.read_text())
    assert sorted(scanned["accounts"]) == [A, B, C]
    arns = {q["arn"] for q in scanned["queues"]}
    assert arns == {q.arn for q in estate.queues.values()}, arns
    endpoints = {s["endpoint"]: s for s in scanned["subscriptions"]}
    assert set(endpoints) == {q.arn for q in estate.queues.values() if q.app not in UNFED}
    assert not [w for w in scanned.get("warnings", []) if "dangling" in json.dumps(w)], scanned[
        "warnings"
    ]

    # --- plan: same-named queues kept apart, every cross-account edge said ---------------------
    mapping = tmp_path / "accounts.yaml"
    mapping.write_text(chain.mapping())
    await asyncio.to_thread(
        cli, "plan", "--inventory", inventory, "--mapping", mapping, "--offline", "-o", plan_path
    )
    plan = load_plan(plan_path)
    queues = {
        q.app: next(r for r in plan.resources if r.source_arn == q.arn)
        for q in estate.queues.values()
    }
    assert queues["shop-audit"].stream != queues["ledger-audit"].stream
    assert {queues["shop-audit"].stream, queues["ledger-audit"].stream} == {
        "shop_sqs_audit",
        "ledger_sqs_audit",
    }
    crossing = [f for r in plan.resources for f in r.fidelity if "cross-account" in f.attribute]
    assert len(crossing) >= 3, crossing
    if chain.per_account:
        assert {a.name for a in plan.nats_accounts} == {HOME, "shop", "billing", "ledger"}
        # shop's topics reach ledger's queues through stream sources across the accounts;
        # billing's filtered subscription goes through the bridge's filter router.
        edges = {(c.from_account, c.to_account, c.how) for c in plan.crossings}
        assert ("shop", "ledger", "stream-source") in edges, edges
        assert ("shop", "billing", "bridge") in edges, edges
    else:
        assert not plan.nats_accounts and not plan.crossings
    # `apply`, `verify`, the bridge and `status` find each account's creds in auth's output.
    grants = ("--grants", auth) if chain.per_account else ()

    # --- auth (operator mode), apply, verify -----------------------------------------------------
    await asyncio.to_thread(
        cli, "auth", "--plan", plan_path, "--format", "jwt", "--url", chain_server.url, "-o", auth
    )
    chain_server.include = auth / "snsq2nats-jwt.conf"
    await asyncio.to_thread(chain_server.start)
    contexts = auth / "contexts"
    monkeypatch.setenv("NATS_CONTEXT", str(contexts / "snsq2nats-admin.json"))
    await asyncio.to_thread(cli, "apply", plan_path, "--auto-approve", *grants)
    verified = await asyncio.to_thread(cli_json, "verify", "--plan", plan_path, *grants)
    assert verified["ok"] and not verified["counts"]["failed"], verified["counts"]
    # A canary through each of the six queues and both topics.
    assert verified["counts"]["ok"] >= len(estate.queues) + 2, verified["counts"]

    # --- the bridge, each route in its own account ----------------------------------------------
    monkeypatch.setenv("NATS_CONTEXT", str(contexts / "snsq2nats-bridge.json"))
    bridge = bridges.start(
        *("--plan", plan_path, "--assume-role", ROLE, *grants),
        *("--pollers", "1", "--poll-wait", "1", "--visibility-timeout", "5", "--lease-ttl", "3"),
    )
    monkeypatch.setenv("NATS_CONTEXT", str(contexts / "snsq2nats-admin.json"))
    admin = contexts / "snsq2nats-admin.json"
    await until(
        lambda: _fleet_members(chain_server.url, admin),
        what="the bridge to join the fleet",
        timeout=120,
    )
    # Its relays of the topics into NATS start with their bridge queues subscribed (in shop's
    # account, with shop's role): only then is every message published on AWS relayed.
    await until(
        lambda: all(
            f"subscribed bridge queue snsq2nats-bridge-{name} to the topic" in bridge.text()
            for name in ("shop-orders", "shop-payments.fifo")
        ),
        what="the topics' bridge queues",
        timeout=120,
    )

    # --- the applications and their traffic -----------------------------------------------------
    ledger = Ledger()
    workers = {
        app: AwsWorker(ledger, app, localstack.client("sqs", q.account, q.region), q.url)
        for app, q in estate.queues.items()
        if app != "reconcile"
    }
    producers = [
        Producer(
            ledger,
            "orders",
            _orders,
            {"aws": _publisher(localstack.client("sns", A, R1), estate.orders)},
            0.1,
        ),
        Producer(
            ledger,
            "payments.fifo",
            _payments,
            {"aws": _publisher(localstack.client("sns", A, R1), estate.payments)},
            0.2,
        ),
    ]
    invoices = queues["invoices"]
    assert invoices.stream and invoices.consumer
    (consumer,) = [
        i.name for i in identities(plan) if i.role == "consumer" and i.serves == invoices.source_arn
    ]
    nats_workers: list[NatsWorker] = []
    try:
        await until(
            lambda: ledger.count("invoices") >= 5, what="billing's first invoices", timeout=120
        )
        # billing's team: NATS workers under its own identity, then the move; the old workers
        # stop right away (the bridge carries what SQS still holds).
        nats_workers.append(
            NatsWorker(
                ledger,
                "invoices",
                lambda: connect_nats(
                    NatsOptions.resolve(
                        server=chain_server.url, context=str(contexts / f"{consumer}.json"), env={}
                    )
                ),
                invoices.stream,
                invoices.consumer,
            )
        )
        await asyncio.to_thread(workers.pop("invoices").halt)
        moved = await asyncio.to_thread(
            cli_json,
            *("cutover", "consumers", invoices.source_arn, "--to", "nats", "--wait"),
            *("--plan", plan_path, "--assume-role", ROLE, *grants),
        )
        assert moved["confirmed_by"] and [m["account"] for m in moved["moves"]] == [B], moved
        # shop's producers still publish on AWS: the queue stays fed, the bridge relays it.
        assert [d["fed"] for d in moved["drained"]] == [
            ["its producers on aws", "topic orders's producers on aws (through SNS)"]
        ], moved["drained"]
        mark = ledger.count("invoices")
        await until(
            lambda: ledger.count("invoices") >= mark + 10,
            what="billing's invoices on NATS after the move",
            timeout=120,
        )
    finally:
        for producer in producers:
            await producer.halt()

    sent = list(ledger.sent)
    want = {
        "shop-audit": {m.id for m in sent if m.target == "orders"},
        "ledger-audit": {m.id for m in sent if m.target == "orders"},
        "invoices": {
            m.id for m in sent if m.target == "orders" and m.attributes["event_type"][1] == PLACED
        },
        "payments": {m.id for m in sent if m.target == "payments.fifo"},
        "invoices-dlq": set(),
    }
    try:
        await until(
            lambda: all(want[app] <= ledger.ids(app) for app in want),
            what="every application to receive each of its messages",
            timeout=180,
        )
    finally:
        for worker in workers.values():
            await asyncio.to_thread(worker.halt)
        for nats_worker in nats_workers:
            await nats_worker.halt()
    reports = [ledger.report(app, ids) for app, ids in want.items()]
    print("chain:", "; ".join(r.line() for r in reports))
    assert all(r.clean for r in reports), "\n".join(r.line() for r in reports)
    assert not ledger.errors, ledger.errors[:5]
    # Every route the bridge ran relayed each message once: both topics' streams (from their
    # bridge queues in shop's account) hold exactly what was published on AWS.
    topics = {r.source_arn: r for r in plan.resources if r.kind == "sns-topic"}
    for arn, target in ((estate.orders, "orders"), (estate.payments, "payments.fifo")):
        stream = topics[arn].stream
        assert stream is not None
        published = sorted(m.id for m in sent if m.target == target)

        reader = _reader(chain_server.url, auth, plan, stream)

        async def relayed(
            reader: NatsOptions = reader, stream: str = stream, count: int = len(published)
        ) -> bool:
            return len(await _stream_ids(reader, stream)) >= count

        await until(relayed, what=f"the topic relay into {stream}", timeout=120)
        assert sorted(await _stream_ids(reader, stream)) == published, stream
    ran = bridge.text()
    for route in ("sns:shop-orders", "sns:shop-payments.fifo", "sqs:billing-invoices"):
        assert f"fleet: {route} runs here" in ran, bridge.tail()
    # ledger's unfed queues, one in each region, moved whole: the waits read each SQS queue in
    # its own region, with ledger's role (`cutover --assume-role`); reconcile's messages reach
    # its stream through the bridge's relay, with that role too.
    move = ("--plan", plan_path, "--assume-role", ROLE, *grants)
    for name in UNFED:
        queue = queues[name]
        await asyncio.to_thread(
            cli, "cutover", "consumers", queue.source_arn, "--to", "nats", *move
        )
        drained = await asyncio.to_thread(
            cli_json, "cutover", "producers", queue.source_arn, "--to", "nats", "--wait", *move
        )
        assert [(d["where"], d["fed"]) for d in drained["drained"]] == [
            (f"SQS queue {queue.name}", [])
        ], drained
        assert drained["drained"][0]["seconds"] is not None
    finished = await asyncio.to_thread(
        cli_json, "cutover", "finish", queues["invoices-dlq"].source_arn, "--wait", *move
    )
    assert finished["confirmed_by"] and finished["moves"][0]["after"]["finished"], finished
    reconcile = queues["reconcile"]
    assert reconcile.stream is not None
    reader = _reader(chain_server.url, auth, plan, reconcile.stream)
    assert sorted(await _stream_ids(reader, reconcile.stream)) == list(RECONCILED)

    # `status` reads the queues in their own accounts and regions too: both moved queues exist
    # there and are drained (SQS's counts are approximate: asked until they say so).
    routes = ("sqs:billing-invoices", "sqs:ledger-reconcile")
    said: list[Any] = []

    def drained_status() -> bool:
        from click.testing import CliRunner

        from snsq2nats.cli import main

        words = ["status", "--plan", str(plan_path), "--assume-role", ROLE, "--json"]
        words += [str(g) for g in grants]
        said[:] = [CliRunner().invoke(main, [*words, *(f"--route={r}" for r in routes)])]
        return bool(said[0].exit_code == 0)

    await asyncio.to_thread(wait_until, drained_status, 120, "the moved queues' status")
    status = json.loads(said[0].stdout)["routes"]
    # ... and their streams in the NATS accounts holding them (per-account: billing's, ledger's).
    assert [
        (r["route"], r["account"], r["aws"]["exists"], r["nats"]["exists"]) for r in status
    ] == [
        ("sqs:billing-invoices", B, True, True),
        ("sqs:ledger-reconcile", C, True, True),
    ], status
    by_side = ledger.report("invoices", want["invoices"]).by_side
    assert by_side.get("aws") and by_side.get("nats"), by_side
    assert bridge.exited() is False, bridge.tail()


def test_cutovers_clients_act_in_each_arns_own_account_and_region(
    localstack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`cutover --assume-role`'s clients: an ARN's account through its role, in the ARN's
    region, one pair per account × region; without an account option the base credentials."""
    from botocore.exceptions import ClientError

    from snsq2nats.aws.accounts import clients_by_arn, route_accounts

    localstack.environment(monkeypatch)
    where = ((D, R2), (E, R1))
    for account, region in where:
        localstack.client("sqs", account, region).create_queue(QueueName="pool-probe")
    clients = clients_by_arn(localstack.url, route_accounts((), ROLE))
    for account, region in where:
        pair = clients(f"arn:aws:sqs:{region}:{account}:pool-probe")
        assert pair.region == region
        # Without an owner, SQS looks a name up in the caller's own account.
        url = pair.sqs.get_queue_url(QueueName="pool-probe")["QueueUrl"]
        assert url.endswith(f"/{account}/pool-probe")
    assert clients(f"arn:aws:sqs:{R2}:{D}:a") is clients(f"arn:aws:sns:{R2}:{D}:b")
    assert clients(f"arn:aws:sqs:{R1}:{D}:a") is not clients(f"arn:aws:sqs:{R2}:{D}:a")

    plain = clients_by_arn(localstack.url, route_accounts((), None))
    base = plain(f"arn:aws:sqs:{R2}:{D}:pool-probe")
    assert base.region == R2
    with pytest.raises(ClientError):
        base.sqs.get_queue_url(QueueName="pool-probe")
