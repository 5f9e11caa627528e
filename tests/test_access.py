"""Resource policies read as NATS roles per principal (pure): what maps, what is plumbing, and
what is reported because NATS permissions cannot say it."""

from __future__ import annotations

from typing import Any

import pytest

from snsq2nats.auth.identities import principal_name
from snsq2nats.plan.access import Grant, analyse

ACCOUNT = "123456789012"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/checkout"


def policy(*statements: dict[str, Any]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def allow(principal: Any, *actions: str, **extra: Any) -> dict[str, Any]:
    return {"Effect": "Allow", "Principal": principal, "Action": list(actions), **extra}


@pytest.mark.parametrize(
    ("actions", "roles"),
    [
        (["sqs:SendMessage"], ["producer"]),
        (["sqs:SendMessageBatch"], ["producer"]),
        (["sqs:ReceiveMessage"], ["receiver"]),
        (["sqs:ReceiveMessage", "sqs:DeleteMessage"], ["consumer"]),
        (["sqs:ReceiveMessage", "sqs:ChangeMessageVisibilityBatch"], ["consumer"]),
        (["sqs:GetQueueAttributes", "sqs:GetQueueUrl"], ["reader"]),
        (["sqs:PurgeQueue"], ["purger"]),
        (["sqs:*"], ["producer", "consumer", "reader", "purger"]),
        (["*"], ["producer", "consumer", "reader", "purger"]),
    ],
)
def test_sqs_actions_become_roles(actions: list[str], roles: list[str]) -> None:
    access = analyse(policy(allow({"AWS": ROLE}, *actions)), service="sqs", account=ACCOUNT)
    assert access.grants == [Grant(principal=ROLE, roles=roles)]  # type: ignore[arg-type]


def test_deleting_without_receiving_is_reported_not_granted() -> None:
    access = analyse(
        policy(allow({"AWS": ROLE}, "sqs:DeleteMessage")), service="sqs", account=ACCOUNT
    )
    assert access.grants == []
    assert any("without ReceiveMessage" in u for u in access.unmapped)


def test_sns_delivery_into_a_queue_is_plumbing() -> None:
    topic = f"arn:aws:sns:us-east-1:{ACCOUNT}:orders"
    statement = allow(
        {"Service": "sns.amazonaws.com"},
        "sqs:SendMessage",
        Condition={"ArnEquals": {"aws:SourceArn": topic}},
    )
    access = analyse(policy(statement), service="sqs", account=ACCOUNT)
    assert access.grants == [] and access.plumbing == [topic] and access.unmapped == []


def test_the_default_topic_policy_means_the_owner_account() -> None:
    statement = allow(
        {"AWS": "*"},
        "SNS:Publish",
        "SNS:Subscribe",
        Condition={"StringEquals": {"AWS:SourceOwner": ACCOUNT}},
    )
    access = analyse(policy(statement), service="sns", account=ACCOUNT)
    assert access.grants == [Grant(principal="owner-account", roles=["publisher"])]
    assert any("SNS:Subscribe" in u for u in access.unmapped)


def test_anyone_and_unenforceable_conditions_are_reported() -> None:
    anyone = allow("*", "sqs:SendMessage")
    from_vpc = allow(
        {"AWS": ROLE}, "sqs:ReceiveMessage", Condition={"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}
    )
    service = allow({"Service": "events.amazonaws.com"}, "sqs:SendMessage")
    deny = {
        "Effect": "Deny",
        "Principal": "*",
        "Action": "sqs:SendMessage",
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }
    access = analyse(policy(anyone, from_vpc, service, deny), service="sqs", account=ACCOUNT)
    assert Grant(principal="*", roles=["producer"]) in access.grants
    assert Grant(principal=ROLE, roles=["receiver"], conditions=["aws:sourceip"]) in access.grants
    assert any("events.amazonaws.com" in u for u in access.unmapped)
    assert any("conditional, review it" in u for u in access.unmapped)


def test_account_principals_and_a_single_statement_object() -> None:
    single = {"Version": "2012-10-17", "Statement": allow({"AWS": ACCOUNT}, "sqs:SendMessage")}
    assert analyse(single, service="sqs", account=ACCOUNT).grants == [
        Grant(principal="owner-account", roles=["producer"])
    ]
    other = analyse(
        policy(allow({"AWS": "arn:aws:iam::999999999999:root"}, "sqs:SendMessage")),
        service="sqs",
        account=ACCOUNT,
    )
    assert other.grants[0].principal == "arn:aws:iam::999999999999:root"


@pytest.mark.parametrize(
    ("principal", "name"),
    [
        (ROLE, "aws-role-checkout"),
        (f"arn:aws:iam::{ACCOUNT}:role/service-role/path/billing", "aws-role-billing"),
        (f"arn:aws:iam::{ACCOUNT}:user/ops", "aws-user-ops"),
        (f"arn:aws:sts::{ACCOUNT}:assumed-role/worker/session-1", "aws-role-worker"),
        ("arn:aws:iam::999999999999:root", "aws-account-999999999999"),
        ("999999999999", "aws-account-999999999999"),
        ("owner-account", "aws-owner-account"),
    ],
)
def test_principal_names(principal: str, name: str) -> None:
    assert principal_name(principal) == name
