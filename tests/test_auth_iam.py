"""`auth --iam` on the AWS emulator, its identities proven on a real nats-server.

The account has queues `orders`, `payments` and `audit` and a topic `events`, and:

- role `orders-worker`: a customer managed policy to receive and delete from `orders`, an
  inline one to publish to `events`;
- role `checkout`: `sqs:Send*` on every queue and `sns:Publish` inline, an explicit Deny on
  `payments`, a permission boundary that allows SQS only; the queue policies of `audit` and
  `payments` let it send;
- user `ops` in group `operators`, whose managed policy allows everything but deleting messages
  (NotAction): it may send anywhere and receive nowhere;
- role `auditor`: receive and delete on `audit` under an IP condition (granted, reported);
- role `idle`: S3 only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from snsq2nats.auth.config import write_auth
from snsq2nats.auth.iam import IamReport, iam_grants
from snsq2nats.auth.identities import Identity, identities
from snsq2nats.aws import scan as aws_scan
from snsq2nats.aws.clients import make_clients
from snsq2nats.aws.iam import read_authorization
from snsq2nats.demo.nats_server import NatsServer
from snsq2nats.jetstream.spec import ServerInfo
from snsq2nats.plan.model import Plan
from snsq2nats.plan.pipeline import assemble_plan
from snsq2nats.plan.rules import load_rules
from tests.fixtures.aws import REGION, AwsEndpoint
from tests.test_auth import Client, Estate, apply_as_admin, probe_version

ACCOUNT = "123456789012"


def arn(service: str, name: str) -> str:
    return f"arn:aws:{service}:{REGION}:{ACCOUNT}:{name}"


def document(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def allow(action: Any, resource: Any, **extra: Any) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": action, "Resource": resource, **extra}


ASSUME = document(
    {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}
)


def build_account(aws: AwsEndpoint) -> None:
    sqs, sns, iam = aws.client("sqs"), aws.client("sns"), aws.client("iam")
    sqs.create_queue(QueueName="orders")
    checkout = f"arn:aws:iam::{ACCOUNT}:role/checkout"
    for name in ("audit", "payments"):
        sqs.create_queue(
            QueueName=name,
            Attributes={
                "Policy": document(
                    {
                        "Sid": f"checkout-writes-{name}",
                        "Effect": "Allow",
                        "Principal": {"AWS": checkout},
                        "Action": "sqs:SendMessage",
                        "Resource": arn("sqs", name),
                    }
                )
            },
        )
    sns.create_topic(Name="events")

    consume = iam.create_policy(
        PolicyName="orders-consume",
        PolicyDocument=document(
            allow(
                ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"],
                arn("sqs", "orders"),
            )
        ),
    )["Policy"]["Arn"]
    iam.create_role(RoleName="orders-worker", AssumeRolePolicyDocument=ASSUME)
    iam.attach_role_policy(RoleName="orders-worker", PolicyArn=consume)
    iam.put_role_policy(
        RoleName="orders-worker",
        PolicyName="announce",
        PolicyDocument=document(allow("sns:Publish", arn("sns", "events"))),
    )

    boundary = iam.create_policy(
        PolicyName="sqs-only", PolicyDocument=document(allow("sqs:*", "*"))
    )["Policy"]["Arn"]
    iam.create_role(
        RoleName="checkout",
        Path="/shop/",
        AssumeRolePolicyDocument=ASSUME,
        PermissionsBoundary=boundary,
    )
    iam.put_role_policy(
        RoleName="checkout",
        PolicyName="send-everything",
        PolicyDocument=document(
            allow("sqs:Send*", f"arn:aws:sqs:*:{ACCOUNT}:*"),
            allow("sns:Publish", "*"),
            {"Effect": "Deny", "Action": "sqs:*", "Resource": arn("sqs", "payments")},
        ),
    )

    everything_but_delete = iam.create_policy(
        PolicyName="operators",
        PolicyDocument=document(
            {"Effect": "Allow", "NotAction": ["sqs:Delete*", "sns:*"], "Resource": "*"}
        ),
    )["Policy"]["Arn"]
    iam.create_group(GroupName="operators")
    iam.attach_group_policy(GroupName="operators", PolicyArn=everything_but_delete)
    iam.create_user(UserName="ops")
    iam.add_user_to_group(GroupName="operators", UserName="ops")

    iam.create_role(RoleName="auditor", AssumeRolePolicyDocument=ASSUME)
    iam.put_role_policy(
        RoleName="auditor",
        PolicyName="read-audit",
        PolicyDocument=document(
            allow(
                ["sqs:ReceiveMessage", "sqs:DeleteMessage"],
                arn("sqs", "audit"),
                Condition={"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}},
            )
        ),
    )
    iam.create_role(RoleName="idle", AssumeRolePolicyDocument=ASSUME)
    iam.put_role_policy(
        RoleName="idle", PolicyName="s3", PolicyDocument=document(allow("s3:*", "*"))
    )


def report_doc(report: IamReport) -> Any:
    """The report as `--json` prints it."""
    return json.loads(json.dumps(report.to_dict()))


@dataclass
class Derived:
    plan: Plan
    generated: list[Identity]
    report: IamReport

    @property
    def by_name(self) -> dict[str, Identity]:
        return {i.name: i for i in self.generated}

    def principal(self, name: str) -> dict[str, Any]:
        (found,) = [p for p in report_doc(self.report)["principals"] if p["arn"].endswith(name)]
        return found  # type: ignore[no-any-return]


def scanned_plan(aws: AwsEndpoint) -> Plan:
    inventory = aws_scan.scan(make_clients(aws.session(), [REGION], aws.url))
    return assemble_plan(
        inventory,
        load_rules([]),
        None,
        server=ServerInfo(reachable=False, version=probe_version()),
    )


def derive(aws: AwsEndpoint) -> Derived:
    build_account(aws)
    plan = scanned_plan(aws)
    grants, report = iam_grants(plan, read_authorization(aws.client("iam")))
    return Derived(plan, identities(plan, grants), report)


def test_iam_rights_per_principal_with_merges_denies_and_approximations(
    aws: AwsEndpoint,
) -> None:
    derived = derive(aws)
    worker = derived.principal("role/orders-worker")
    assert worker["identity"] == "iam-role-orders-worker"
    assert {(r["name"], tuple(r["rights"])) for r in worker["resources"]} == {
        ("orders", ("receive",)),
        ("events", ("publish",)),
    }
    checkout = derived.principal("role/shop/checkout")
    assert checkout["identity"] == "iam-role-checkout"
    rights = {r["name"]: r["rights"] for r in checkout["resources"] if r["rights"]}
    # The Deny takes payments away; the boundary takes the topic away, and says so.
    assert rights == {"orders": ["send"], "audit": ["send"]}
    (events,) = [r for r in checkout["resources"] if r["name"] == "events"]
    assert events["notes"] == [
        "permission boundary managed policy sqs-only does not allow sns:Publish"
    ]
    # Both queue policies name it: merged into its identity, but IAM's Deny beats the one on
    # payments (an explicit Deny overrides a resource policy's Allow).
    assert checkout["merged"] == ["producer on audit"]
    assert checkout["withheld"] == ["producer on payments"]
    ops = derived.principal("user/ops")
    assert {r["name"]: r["rights"] for r in ops["resources"]} == {
        "orders": ["send"],
        "payments": ["send"],
        "audit": ["send"],
    }
    assert any("without sqs:DeleteMessage" in n for r in ops["resources"] for n in r["notes"])
    auditor = derived.principal("role/auditor")
    (audit,) = auditor["resources"]
    assert audit["rights"] == ["receive"] and "aws:SourceIp" in audit["notes"][0]
    assert not any(p["arn"].endswith("role/idle") for p in report_doc(derived.report)["principals"])
    assert derived.report.unused == 1
    # The resource policy's principal is one identity with the IAM principal, not two.
    assert "aws-role-checkout" not in derived.by_name
    assert set(derived.by_name) >= {
        "iam-role-orders-worker",
        "iam-role-checkout",
        "iam-user-ops",
        "iam-role-auditor",
    }
    assert "iam-role-idle" not in derived.by_name


async def test_iam_identities_on_a_real_server(aws: AwsEndpoint, tmp_path: Path) -> None:
    """Each IAM principal's identity may do on NATS what IAM lets it do on AWS, and no more:
    exactly the producer's, consumer's or publisher's grants of the same queue or topic."""
    derived = derive(aws)
    by_name = derived.by_name
    for iam_name, role_names in {
        "iam-role-orders-worker": ["sqs_orders-consumer", "sns_events-publisher"],
        "iam-role-checkout": ["sqs_audit-producer", "sqs_orders-producer"],
    }.items():
        expected = [s for n in role_names for s in by_name[n].publish]
        assert sorted(set(by_name[iam_name].publish)) == sorted(set(expected)), iam_name
    written = write_auth(derived.generated, tmp_path / "auth")
    with NatsServer(name="iam", users=written.users) as server:
        estate = Estate(server, derived.plan, written, by_name)
        await apply_as_admin(estate)
        async with Client(estate, "iam-role-checkout") as checkout:
            await checkout.send("sqs.orders", b"order-1", "sqs_orders")
            await checkout.send("sqs.audit", b"audit-1", "sqs_audit")
            await checkout.publish_refused("sqs.payments", b"denied by IAM")
            await checkout.publish_refused("sns.events", b"outside the boundary")
            await checkout.publish_refused("$JS.API.CONSUMER.MSG.NEXT.sqs_orders.orders", b"1")
        async with Client(estate, "iam-user-ops") as ops:
            await ops.send("sqs.payments", b"refund", "sqs_payments")
            await ops.publish_refused("$JS.API.CONSUMER.MSG.NEXT.sqs_payments.payments", b"1")
        async with Client(estate, "iam-role-orders-worker") as worker:
            msg = await worker.pull_one("orders", "sqs_orders")
            assert msg.data == b"order-1"
            await msg.ack_sync()
            info = await worker.nc.jetstream().consumer_info("sqs_orders", "orders")
            assert info.num_ack_pending == 0 and info.num_pending == 0
            await worker.publish_refused("sqs.orders", b"not a producer")
            await worker.publish_refused("$JS.API.CONSUMER.MSG.NEXT.sqs_audit.audit", b"1")
        async with Client(estate, "iam-role-auditor") as auditor:
            msg = await auditor.pull_one("audit", "sqs_audit")
            assert msg.data == b"audit-1"
            await msg.ack_sync()
            await auditor.publish_refused("sqs.audit", b"no")


def test_cli_auth_iam_writes_the_identities_and_reports_each_principal(
    aws: AwsEndpoint, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from snsq2nats.auth.record import Merged, gaps, load_record, regenerate_command
    from snsq2nats.cli import main

    build_account(aws)
    out = tmp_path / "auth"
    listed = CliRunner().invoke(main, ["auth", "--iam", "-o", str(out), "--json"])
    assert listed.exit_code == 0, listed.output
    doc = json.loads(listed.stdout)
    names = {i["name"] for i in doc["identities"]}
    assert {"iam-role-checkout", "iam-user-ops", "iam-role-orders-worker"} <= names
    principals = {p["arn"]: p for p in doc["iam"]["principals"]}
    assert principals[f"arn:aws:iam::{ACCOUNT}:user/ops"]["identity"] == "iam-user-ops"
    assert doc["iam"]["principals_without_rights"] == 1
    # Every format's output carries them, the grants record included.
    record = load_record(out)
    assert record is not None and record.publish["iam-role-checkout"] == [
        "sqs.audit",
        "sqs.orders",
    ]
    # apply checks the plan's identities against the record: the policy's principal now lives
    # in its IAM identity, and what IAM denies it is withheld on purpose, not outgrown.
    assert record.merged == {"aws-role-checkout": Merged("iam-role-checkout", ["sqs.payments"])}
    plan = scanned_plan(aws)
    assert gaps(record, identities(plan)) == []
    assert "--iam" in regenerate_command(record, ["--plan", "plan.json"])
    outgrown = replace(record, publish={**record.publish, "iam-role-checkout": ["sqs.orders"]})
    (gap,) = gaps(outgrown, identities(plan))
    assert gap.identity == "aws-role-checkout (in iam-role-checkout)"
    assert gap.missing == ["sqs.audit"]
    jwt = CliRunner().invoke(
        main,
        ["auth", "--iam", "--format", "jwt", "-o", str(tmp_path / "jwt")],
        env={"COLUMNS": "300"},
    )
    assert jwt.exit_code == 0, jwt.output
    assert (tmp_path / "jwt" / "creds" / "iam-role-checkout.creds").is_file()
    # The human report: a row per principal with its rights and what is approximate.
    assert "iam-role-checkout" in jwt.output and "aws:SourceIp" in jwt.output
    assert "4 principal(s) with rights on the estate" in jwt.output
    # Without --iam, auth is what it was: the policy's principal under its own name.
    plain = CliRunner().invoke(main, ["auth", "-o", str(tmp_path / "plain"), "--json"])
    plain_names = {i["name"] for i in json.loads(plain.stdout)["identities"]}
    assert "aws-role-checkout" in plain_names and not any(n.startswith("iam-") for n in plain_names)
    assert "iam" not in json.loads(plain.stdout)


async def test_a_cross_account_right_needs_the_other_accounts_queue_policy(
    tmp_path: Path,
) -> None:
    """A role of account 123456789012 may send to every queue of account 222222222222 by its
    own policy; AWS needs the queue's policy too, so only the queue that lets the account in is
    granted, and the other is reported."""
    from snsq2nats.aws.iam import authorization_from_pages
    from tests.test_mapping import case_inventory

    other = "222222222222"
    inventory = case_inventory(
        {
            "queues": [
                {
                    "name": "ledger-in",
                    "account": other,
                    "policy": {
                        "Statement": [
                            {
                                "Effect": "Allow",
                                "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
                                "Action": "sqs:SendMessage",
                                "Resource": "*",
                            }
                        ]
                    },
                },
                {"name": "ledger-closed", "account": other},
            ]
        }
    )
    plan = assemble_plan(
        inventory,
        load_rules([]),
        None,
        server=ServerInfo(reachable=False, version=probe_version()),
    )
    pages: list[dict[str, Any]] = [
        {
            "RoleDetailList": [
                {
                    "RoleName": "biller",
                    "Arn": f"arn:aws:iam::{ACCOUNT}:role/biller",
                    "RolePolicyList": [
                        {
                            "PolicyName": "ledgers",
                            "PolicyDocument": document(
                                allow("sqs:SendMessage", f"arn:aws:sqs:*:{other}:ledger-*")
                            ),
                        }
                    ],
                }
            ]
        }
    ]
    grants, report = iam_grants(plan, authorization_from_pages(pages))
    (biller,) = report_doc(report)["principals"]
    rights = {r["name"]: r for r in biller["resources"]}
    assert rights["ledger-in"]["rights"] == ["send"]
    assert rights["ledger-closed"]["rights"] == []
    assert f"in account {other}" in rights["ledger-closed"]["notes"][0]
    generated = identities(plan, grants)
    by_name = {i.name: i for i in generated}
    assert by_name["iam-role-biller"].publish == by_name["sqs_ledger-in-producer"].publish
    written = write_auth(generated, tmp_path / "auth")
    with NatsServer(name="iam-cross", users=written.users) as server:
        estate = Estate(server, plan, written, by_name)
        await apply_as_admin(estate)
        async with Client(estate, "iam-role-biller") as biller_client:
            await biller_client.send("sqs.ledger-in", b"entry", "sqs_ledger-in")
            await biller_client.publish_refused("sqs.ledger-closed", b"not let in")


def test_cli_auth_iam_without_credentials_says_so_in_one_line(
    aws: AwsEndpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from snsq2nats.cli import main
    from snsq2nats.files import document_json

    build_account(aws)
    plan_path = tmp_path / "plan.json"
    plan_path.write_bytes(document_json(scanned_plan(aws)))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    run = CliRunner().invoke(
        main, ["auth", "--iam", "--plan", str(plan_path), "-o", str(tmp_path / "out")]
    )
    assert run.exit_code != 0
    assert "no AWS credentials found" in run.output and "Traceback" not in run.output
    assert not (tmp_path / "out").exists()  # nothing written from a half-read estate


def test_a_deny_on_delete_leaves_a_policy_consumer_a_receiver() -> None:
    """A queue policy lets `reporter` receive and delete; its own policy denies deleting: the
    merged identity may pull, and may not acknowledge (the message comes back, as on AWS)."""
    from snsq2nats.aws.iam import authorization_from_pages
    from tests.test_mapping import case_inventory

    reporter = f"arn:aws:iam::{ACCOUNT}:role/reporter"
    inventory = case_inventory(
        {
            "queues": [
                {
                    "name": "reports",
                    "policy": {
                        "Statement": [
                            {
                                "Effect": "Allow",
                                "Principal": {"AWS": reporter},
                                "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage"],
                                "Resource": "*",
                            }
                        ]
                    },
                }
            ]
        }
    )
    plan = assemble_plan(
        inventory, load_rules([]), None, server=ServerInfo(reachable=False, version="2.12.0")
    )
    no_delete = document({"Effect": "Deny", "Action": "sqs:DeleteMessage", "Resource": "*"})
    pages: list[dict[str, Any]] = [
        {
            "RoleDetailList": [
                {
                    "RoleName": "reporter",
                    "Arn": reporter,
                    "RolePolicyList": [{"PolicyName": "no-delete", "PolicyDocument": no_delete}],
                }
            ]
        }
    ]
    grants, report = iam_grants(plan, authorization_from_pages(pages))
    (entry,) = report_doc(report)["principals"]
    assert entry["merged"] == ["receiver on reports"]
    assert entry["withheld"] == ["consumer (sqs:DeleteMessage denied: receiver only) on reports"]
    assert report.aliases == {"aws-role-reporter": "iam-role-reporter"}
    by_name = {i.name: i for i in identities(plan, grants)}
    assert by_name["iam-role-reporter"].publish == (
        "$JS.API.CONSUMER.MSG.NEXT.sqs_reports.reports",
        "$JS.API.CONSUMER.INFO.sqs_reports.reports",
    )
