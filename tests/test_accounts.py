"""Several AWS accounts as one estate: `scan` over moto's server, three accounts reached through
STS AssumeRole (moto's keys from AssumeRole act in the role's account) and two regions.

moto does not deliver SNS messages across accounts, so these tests check what the scan reads,
never a delivery."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from snsq2nats.aws.accounts import account_clients, account_sources
from snsq2nats.aws.scan import AccountOutcome, scan_accounts
from snsq2nats.cli import main
from snsq2nats.errors import MappingError, ScanError, UsageError
from snsq2nats.files import document_json
from snsq2nats.inventory import Inventory, load_inventory
from snsq2nats.plan.rules import load_rules
from snsq2nats.plan.translate import translate
from tests.fixtures.aws import AwsEndpoint

A, B, C = "111111111111", "222222222222", "333333333333"
EAST, WEST = "us-east-1", "eu-west-1"
ROLE = "arn:aws:iam::{account}:role/snsq2nats-scan"


@dataclass
class Estate:
    sessions: dict[str, Any]
    url: str
    topic: str
    queues: dict[tuple[str, str, str], str]
    """(account, region, name) → ARN."""
    subscriptions: dict[str, str]

    def client(self, account: str, service: str, region: str = EAST) -> Any:
        return self.sessions[account].client(service, endpoint_url=self.url, region_name=region)


def _queue(estate: Estate, account: str, name: str, region: str = EAST, **attrs: str) -> str:
    sqs = estate.client(account, "sqs", region)
    url = sqs.create_queue(QueueName=name, Attributes=attrs)["QueueUrl"]
    arn = str(
        sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
    )
    estate.queues[(account, region, name)] = arn
    return arn


@pytest.fixture
def estate(aws: AwsEndpoint) -> Estate:
    """A's `events` topic fans out to B's `orders` (filtered, dead-lettering into C's `dead`;
    subscribed by A) and C's `shipping` (subscribed by C, as a queue owner does, its policy
    letting A's topic send); A and B each have an `orders` queue; B has a queue in a second
    region."""
    estate = Estate({a: aws.assumed(a) for a in (A, B, C)}, aws.url, "", {}, {})
    dead = _queue(estate, C, "dead")
    _queue(estate, A, "orders")
    b_orders = _queue(estate, B, "orders")
    shipping = _queue(estate, C, "shipping")
    _queue(estate, B, "audit", WEST)
    estate.topic = estate.client(A, "sns").create_topic(Name="events")["TopicArn"]
    estate.subscriptions["b-orders"] = estate.client(A, "sns").subscribe(
        TopicArn=estate.topic,
        Protocol="sqs",
        Endpoint=b_orders,
        Attributes={
            "FilterPolicy": json.dumps({"kind": ["order"]}),
            # SQS keeps a queue's DLQ in its own account; a subscription's may be elsewhere.
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dead}),
        },
        ReturnSubscriptionArn=True,
    )["SubscriptionArn"]
    # C's queue lets A's topic send, as a cross-account fan-out needs.
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "sns.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": shipping,
                "Condition": {"ArnEquals": {"aws:SourceArn": estate.topic}},
            }
        ],
    }
    sqs_c = estate.client(C, "sqs")
    sqs_c.set_queue_attributes(
        QueueUrl=sqs_c.get_queue_url(QueueName="shipping")["QueueUrl"],
        Attributes={"Policy": json.dumps(policy)},
    )
    estate.subscriptions["c-shipping"] = estate.client(C, "sns").subscribe(
        TopicArn=estate.topic, Protocol="sqs", Endpoint=shipping, ReturnSubscriptionArn=True
    )["SubscriptionArn"]
    return estate


def scan_three(aws: AwsEndpoint, accounts: tuple[str, ...] = (A, B, C), **kwargs: Any) -> Inventory:
    sources = account_sources((), ROLE, accounts)
    return scan_accounts(
        [account_clients(s, (EAST, WEST), aws.url) for s in sources], concurrency=4, **kwargs
    )


def test_three_accounts_two_regions_are_one_estate(aws: AwsEndpoint, estate: Estate) -> None:
    told: list[AccountOutcome] = []
    inv = scan_three(aws, on_account=told.append)

    assert sorted((q.account, q.region, q.name) for q in inv.queues) == sorted(estate.queues)
    assert {q.arn for q in inv.queues} == set(estate.queues.values())
    # Same-named queues in two accounts stay two resources.
    orders = [q for q in inv.queues if q.name == "orders"]
    assert sorted(q.account for q in orders) == [A, B]
    assert [(t.account, t.name) for t in inv.topics] == [(A, "events")]
    # Both cross-account subscriptions are read: the one A made and the one C made on A's topic.
    by_arn = {s.arn: s for s in inv.subscriptions}
    assert set(by_arn) == set(estate.subscriptions.values())
    b_sub = by_arn[estate.subscriptions["b-orders"]]
    assert b_sub.topic_arn == estate.topic and b_sub.account == A
    assert b_sub.endpoint == estate.queues[(B, EAST, "orders")]
    assert json.loads(b_sub.filter_policy or "") == {"kind": ["order"]}
    c_sub = by_arn[estate.subscriptions["c-shipping"]]
    assert c_sub.topic_arn == estate.topic
    assert c_sub.endpoint == estate.queues[(C, EAST, "shipping")]
    # The DLQ in a third account and the topic C's queue policy names resolve: nothing dangles.
    shipping = inv.queue(estate.queues[(C, EAST, "shipping")])
    assert shipping is not None and shipping.policy is not None
    assert b_sub.redrive_policy is not None
    assert b_sub.redrive_policy.dead_letter_target_arn == estate.queues[(C, EAST, "dead")]
    assert inv.warnings == []
    assert inv.accounts == [A, B, C]
    assert sorted(inv.regions) == [WEST, EAST]
    assert sorted((o.label, o.queues, o.failures) for o in told) == [
        (A, 1, ()),
        (B, 2, ()),
        (C, 2, ()),
    ]


def test_one_account_alone_leaves_the_others_dangling(aws: AwsEndpoint, estate: Estate) -> None:
    """The other side of resolving: scanned alone, A's references into B and C are warnings."""
    inv = scan_three(aws, accounts=(A,))
    assert sorted((w.code, w.resource) for w in inv.warnings) == sorted(
        [
            ("dangling-dlq", estate.subscriptions["b-orders"]),
            ("dangling-endpoint", estate.subscriptions["b-orders"]),
        ]
    )


def test_a_policy_naming_an_unscanned_topic_dangles(aws: AwsEndpoint, estate: Estate) -> None:
    inv = scan_three(aws, accounts=(B, C))
    dangling = [(w.resource, w.message) for w in inv.warnings if w.code == "dangling-policy"]
    assert len(dangling) == 1
    assert dangling[0][0] == estate.queues[(C, EAST, "shipping")]
    assert estate.topic in dangling[0][1]


def _profiles(tmp_path: Path, aws: AwsEndpoint, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """`team-a` and `team-b` act in A and B; `broken`'s credential process fails. Returns the
    profiles' secrets, which nothing may print."""
    lines: list[str] = []
    secrets: list[str] = []
    for name, account in (("team-a", A), ("team-b", B)):
        creds = aws.assumed(account).get_credentials()
        secrets += [creds.secret_key, creds.token]
        lines += [
            f"[profile {name}]",
            f"aws_access_key_id = {creds.access_key}",
            f"aws_secret_access_key = {creds.secret_key}",
            f"aws_session_token = {creds.token}",
            "",
        ]
    lines += ["[profile broken]", "credential_process = false", ""]
    config = tmp_path / "aws-config"
    config.write_text("\n".join(lines))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    return secrets


def test_cli_reads_accounts_by_assumed_role(
    aws: AwsEndpoint, estate: Estate, tmp_path: Path
) -> None:
    out = tmp_path / "inventory.json"
    args = ["scan", "--assume-role", ROLE, "--region", EAST, "--region", WEST, "-o", str(out)]
    result = CliRunner().invoke(main, [*args, "--account", A, "--account", B, "--account", C])
    assert result.exit_code == 0, result.output
    inv = load_inventory(out)
    assert inv.accounts == [A, B, C] and len(inv.queues) == 5
    for account, queues in ((A, 1), (B, 2), (C, 2)):
        assert f"account {account}: {queues} queues" in result.stderr
    # Credentials are never printed or stored: the assumed role's keys are not in the output.
    assert "SecretAccessKey" not in result.output + out.read_text()
    # moto's session tokens start so (`moto.sts.utils.SESSION_TOKEN_PREFIX`).
    assert "FQoGZXIvYXdzEBYaD" not in result.output + out.read_text()


def test_an_account_that_fails_is_a_warning(
    aws: AwsEndpoint, estate: Estate, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = _profiles(tmp_path, aws, monkeypatch)
    out = tmp_path / "inventory.json"
    profiles = ["--profile", "team-a", "--profile", "broken", "--profile", "missing"]
    result = CliRunner().invoke(main, ["scan", *profiles, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert not [s for s in secrets if s in result.output + out.read_text()]
    inv = load_inventory(out)
    assert {q.account for q in inv.queues} == {A}
    assert inv.accounts == [A]
    failed = {w.resource: w.message for w in inv.warnings if w.code == "account-failed"}
    assert set(failed) == {"account broken", "account missing"}
    assert "not configured" in failed["account missing"]
    assert f"account team-a ({A}): 1 queues" in result.stderr
    assert "warning: account broken not read" in result.stderr
    assert "warning: account missing not read" in result.stderr
    # A's references into B and C, which were not read, dangle.
    assert {w.code for w in inv.warnings} >= {"dangling-dlq", "dangling-endpoint"}


def test_every_account_failing_is_an_error(
    aws: AwsEndpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _profiles(tmp_path, aws, monkeypatch)
    result = CliRunner().invoke(main, ["scan", "--profile", "broken", "--profile", "missing"])
    assert result.exit_code == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: no account could be read")
    assert "account broken" in last and "account missing" in last


@pytest.mark.parametrize(
    ("profiles", "template", "accounts", "message"),
    [
        ((), None, (A,), "--account needs --assume-role"),
        ((), ROLE, (), "--assume-role needs at least one --account"),
        ((), "arn:aws:iam::111111111111:role/x", (A,), "not a role ARN template"),
        ((), ROLE, ("1234",), "not an AWS account ID"),
    ],
)
def test_account_options_are_checked(
    profiles: tuple[str, ...], template: str | None, accounts: tuple[str, ...], message: str
) -> None:
    with pytest.raises(UsageError) as err:
        account_sources(profiles, template, accounts)
    assert message in err.value.one_line()


def test_no_account_readable_raises(aws: AwsEndpoint, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    sources = account_sources(("nobody",), None, ())
    with pytest.raises(ScanError, match="no account could be read"):
        scan_accounts([account_clients(s, (EAST,), aws.url) for s in sources])


def test_rescanning_one_account_replaces_only_its_part(
    aws: AwsEndpoint, estate: Estate, tmp_path: Path
) -> None:
    first = tmp_path / "inventory.json"
    args = ["scan", "--assume-role", ROLE, "--region", EAST, "--region", WEST]
    every = ["--account", A, "--account", B, "--account", C]
    result = CliRunner().invoke(main, [*args, *every, "-o", str(first)])
    assert result.exit_code == 0, result.output
    before = load_inventory(first)

    # B changes: a queue appears, one goes; A changes too, but A is not read again.
    _queue(estate, B, "returns")
    sqs_b = estate.client(B, "sqs", WEST)
    sqs_b.delete_queue(QueueUrl=sqs_b.get_queue_url(QueueName="audit")["QueueUrl"])
    _queue(estate, A, "unseen")

    second = tmp_path / "updated.json"
    result = CliRunner().invoke(
        main,
        [
            "scan",
            "--inventory",
            str(first),
            "--assume-role",
            ROLE,
            "--account",
            B,
            "-o",
            str(second),
        ],
    )
    assert result.exit_code == 0, result.output
    after = load_inventory(second)
    assert sorted(q.name for q in after.queues if q.account == B) == ["orders", "returns"]
    for account in (A, C):
        assert [q for q in after.queues if q.account == account] == [
            q for q in before.queues if q.account == account
        ]
    assert "unseen" not in {q.name for q in after.queues}
    assert after.topics == before.topics and after.subscriptions == before.subscriptions
    assert after.accounts == [A, B, C]
    # The regions came from the inventory: B's second region was read again (its queue is gone).
    assert sorted(after.regions) == [WEST, EAST]
    assert after.warnings == []


def test_inventory_without_accounts_is_refused(aws: AwsEndpoint, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["scan", "--inventory", str(tmp_path / "x.json")])
    assert result.exit_code == 1
    assert "--inventory needs the accounts to read again" in result.stderr


# -- the plan: names unique across accounts, cross-account edges shown ------------------------


def _mapping(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "accounts.yaml"
    path.write_text(text)
    return path


def test_same_named_queues_of_two_accounts_are_refused_under_merge(
    aws: AwsEndpoint, estate: Estate
) -> None:
    inv = scan_three(aws)
    with pytest.raises(MappingError) as err:
        translate(inv, load_rules([]))
    line = err.value.one_line()
    assert estate.queues[(A, EAST, "orders")] in line
    assert estate.queues[(B, EAST, "orders")] in line
    assert "accounts: prefix" in line


def test_prefix_keeps_every_name_apart(aws: AwsEndpoint, estate: Estate, tmp_path: Path) -> None:
    inv = scan_three(aws)
    rules = load_rules(
        [_mapping(tmp_path, f"accounts:\n  naming: prefix\n  aliases: {{'{A}': shop}}\n")]
    )
    desired = translate(inv, rules)

    by_arn = {r.source_arn: r for r in desired.resources}
    a_orders = by_arn[estate.queues[(A, EAST, "orders")]]
    b_orders = by_arn[estate.queues[(B, EAST, "orders")]]
    assert (a_orders.stream, a_orders.consumer, a_orders.publish_subject) == (
        "shop_sqs_orders",
        "shop_orders",
        "shop.sqs.orders",
    )
    assert (b_orders.stream, b_orders.consumer, b_orders.publish_subject) == (
        f"{B}_sqs_orders",
        f"{B}_orders",
        f"{B}.sqs.orders",
    )
    # Nothing shares a name: streams, consumers on one stream, routes.
    streams = [s.name for s in desired.streams]
    assert len(streams) == len(set(streams))
    consumers = [c.key for c in desired.consumers]
    assert len(consumers) == len(set(consumers))
    routes = [r.name for r in desired.candidate_routes]
    assert len(routes) == len(set(routes))
    assert {"sqs:shop-orders", f"sqs:{B}-orders"} <= set(routes)
    # A's topic feeds queues in B and C.
    topic = by_arn[estate.topic]
    assert topic.publish_subject is not None and topic.publish_subject.startswith("shop.sns.events")


def test_cross_account_edges_are_fidelity_lines(
    aws: AwsEndpoint, estate: Estate, tmp_path: Path
) -> None:
    inv = scan_three(aws)
    rules = load_rules([_mapping(tmp_path, "accounts: prefix\n")])
    by_arn = {r.source_arn: r for r in translate(inv, rules).resources}

    def edges(arn: str) -> list[tuple[str, str | None]]:
        return [
            (f.attribute, f.value) for f in by_arn[arn].fidelity if "cross-account" in f.attribute
        ]

    assert edges(estate.subscriptions["b-orders"]) == [
        ("Endpoint (cross-account)", f"{A} → {B}"),
        ("RedrivePolicy (cross-account)", f"{A} → {C}"),
    ]
    assert edges(estate.subscriptions["c-shipping"]) == [("Endpoint (cross-account)", f"{A} → {C}")]
    assert edges(estate.queues[(A, EAST, "orders")]) == []
    assert all(
        f.verdict == "approximate"
        for f in by_arn[estate.subscriptions["b-orders"]].fidelity
        if "cross-account" in f.attribute
    )


def test_plan_json_and_report_show_cross_account_edges(
    aws: AwsEndpoint, estate: Estate, tmp_path: Path
) -> None:
    inventory = tmp_path / "inventory.json"
    inventory.write_bytes(document_json(scan_three(aws)))
    mapping = _mapping(tmp_path, "accounts: prefix\n")
    report = tmp_path / "plan.md"
    result = CliRunner().invoke(
        main,
        [
            "plan",
            "--offline",
            "--inventory",
            str(inventory),
            "--mapping",
            str(mapping),
            "--report",
            str(report),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    notes = [
        f
        for r in doc["resources"]
        if r["source_arn"] == estate.subscriptions["c-shipping"]
        for f in r["fidelity"]
        if f["attribute"] == "Endpoint (cross-account)"
    ]
    assert len(notes) == 1 and notes[0]["value"] == f"{A} → {C}"
    assert f"AWS account {C}" in notes[0]["note"]
    text = report.read_text()
    assert "Endpoint (cross-account)" in text and "RedrivePolicy (cross-account)" in text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("accounts: split\n", "accounts.naming"),
        ("accounts: {aliases: {'12': x}}\n", "not an AWS account ID"),
        (f"accounts: {{aliases: {{'{A}': 'a.b'}}}}\n", "alias 'a.b'"),
        (f"accounts: {{aliases: {{'{A}': x, '{B}': x}}}}\n", "same alias"),
        ("accounts: {nameing: prefix}\n", "allowed keys here: aliases, naming, nats"),
    ],
)
def test_account_mapping_mistakes_are_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(MappingError) as err:
        load_rules([_mapping(tmp_path, text)])
    assert message in err.value.one_line()


def test_a_name_two_accounts_share_asks_for_the_arn(
    aws: AwsEndpoint, estate: Estate, tmp_path: Path
) -> None:
    inventory = tmp_path / "inventory.json"
    inventory.write_bytes(document_json(scan_three(aws)))
    mapping = _mapping(tmp_path, "accounts: prefix\n")
    common = ["--inventory", str(inventory), "--mapping", str(mapping)]
    result = CliRunner().invoke(main, ["subject", "orders", *common])
    assert result.exit_code == 1
    assert "'orders' names 2 queues" in result.stderr
    assert estate.queues[(B, EAST, "orders")] in result.stderr
    arn = estate.queues[(B, EAST, "orders")]
    result = CliRunner().invoke(main, ["subject", arn, *common])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"{B}.sqs.orders"


def test_an_account_failing_on_rescan_keeps_its_part(
    aws: AwsEndpoint, estate: Estate, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = tmp_path / "inventory.json"
    first.write_bytes(document_json(scan_three(aws)))
    before = load_inventory(first)
    _profiles(tmp_path, aws, monkeypatch)
    _queue(estate, B, "returns")

    second = tmp_path / "updated.json"
    args = ["scan", "--inventory", str(first), "--profile", "team-b", "--profile", "broken"]
    result = CliRunner().invoke(main, [*args, "-o", str(second)])
    assert result.exit_code == 0, result.output
    after = load_inventory(second)
    assert sorted(q.name for q in after.queues if q.account == B) == ["audit", "orders", "returns"]
    assert [q for q in after.queues if q.account != B] == [
        q for q in before.queues if q.account != B
    ]
    assert after.subscriptions == before.subscriptions
    assert [(w.code, w.resource) for w in after.warnings] == [("account-failed", "account broken")]


def test_merge_without_shared_names_plans_as_one_account(aws: AwsEndpoint, estate: Estate) -> None:
    """Accounts whose names never meet keep the one-account names under `merge`."""
    inv = scan_three(aws, accounts=(A, C))
    by_arn = {r.source_arn: r for r in translate(inv, load_rules([])).resources}
    shipping = by_arn[estate.queues[(C, EAST, "shipping")]]
    assert (shipping.stream, shipping.consumer, shipping.publish_subject) == (
        "sqs_shipping",
        "shipping",
        "sqs.shipping",
    )
    assert by_arn[estate.queues[(A, EAST, "orders")]].stream == "sqs_orders"


def test_account_templates_alone_leave_route_names_shared(
    aws: AwsEndpoint, estate: Estate, tmp_path: Path
) -> None:
    """`{account}` in the templates keeps streams and subjects apart, not the bridge's routes
    (named after AWS names): refused, pointing at `accounts: prefix`."""
    inv = scan_three(aws)
    naming = (
        "naming:\n"
        "  queue_stream: 'sqs_{account}_{name}'\n"
        "  queue_subject: 'sqs.{account}.{name}'\n"
        "  queue_consumer: '{account}_{name}'\n"
    )
    with pytest.raises(MappingError) as err:
        translate(inv, load_rules([_mapping(tmp_path, naming)]))
    line = err.value.one_line()
    assert "route name 'to-sqs:orders'" in line
    assert estate.queues[(A, EAST, "orders")] in line and estate.queues[(B, EAST, "orders")] in line
    assert "accounts: prefix" in line
