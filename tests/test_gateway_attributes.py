"""GetQueueAttributes and GetTopicAttributes through the gateway, differentially: the same boto3
calls against moto's server and against the gateway serving the applied plan of the same estate
must name the same attributes with the same values, except where the gateway's source differs
by design (timestamps are the stream's; SNS's EffectiveDeliveryPolicy is SNS's own shape).
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from snsq2nats.demo.nats_server import NatsServer
from snsq2nats.plan.pipeline import PlanRequest
from tests.fixtures.gateway import applied_plan, running_gateway
from tests.fixtures.wait import until

REGION = "us-east-1"
PLAIN = "ga-plain"
DLQ = "ga-dlq"
SOURCE = "ga-source"
KMS = "ga-kms"
DELAYED = "ga-delay"
FIFO = "ga-order.fifo"
TOPIC = "ga-topic"
FIFO_TOPIC = "ga-topic.fifo"
SHARED_TOPIC = "ga-shared"
PARTNER = "210987654321"
STAMPS = ("CreatedTimestamp", "LastModifiedTimestamp")


@dataclass
class Sides:
    moto_sqs: Any
    moto_sns: Any
    sqs: Any
    sns: Any


def _moto(moto_server: str, service: str) -> Any:
    import boto3
    from botocore.config import Config

    session = boto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    )
    client: Any = session.client
    return client(service, endpoint_url=moto_server, config=Config(retries={"max_attempts": 1}))


def seed(sqs: Any, sns: Any) -> None:
    sqs.create_queue(QueueName=PLAIN)
    dlq = sqs.create_queue(QueueName=DLQ)["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]
    redrive = {"deadLetterTargetArn": dlq_arn["QueueArn"], "maxReceiveCount": 3}
    sqs.create_queue(QueueName=SOURCE, Attributes={"RedrivePolicy": json.dumps(redrive)})
    sqs.create_queue(
        QueueName=KMS,
        Attributes={"KmsMasterKeyId": "alias/aws/sqs", "KmsDataKeyReusePeriodSeconds": "600"},
    )
    sqs.create_queue(QueueName=DELAYED, Attributes={"DelaySeconds": "1"})
    sqs.create_queue(
        QueueName=FIFO, Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"}
    )
    sns.create_topic(Name=TOPIC, Attributes={"DisplayName": "Orders"})
    sns.create_topic(Name=FIFO_TOPIC, Attributes={"FifoTopic": "true"})
    shared = f"arn:aws:sns:{REGION}:123456789012:{SHARED_TOPIC}"
    grant = {
        "Effect": "Allow",
        "Principal": {"AWS": f"arn:aws:iam::{PARTNER}:root"},
        "Action": "SNS:Publish",
        "Resource": shared,
    }
    policy = {"Version": "2012-10-17", "Statement": [grant]}
    sns.create_topic(Name=SHARED_TOPIC, Attributes={"Policy": json.dumps(policy)})


@pytest.fixture(scope="module")
def sides(moto_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sides]:
    import boto3

    from snsq2nats.aws import scan as aws_scan
    from snsq2nats.aws.clients import make_clients
    from snsq2nats.files import document_json

    reset = urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST")
    urllib.request.urlopen(reset, timeout=10).close()
    moto_sqs, moto_sns = _moto(moto_server, "sqs"), _moto(moto_server, "sns")
    seed(moto_sqs, moto_sns)
    session = boto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    )
    inventory = aws_scan.scan(make_clients(session, [REGION], moto_server))
    path = tmp_path_factory.mktemp("attributes") / "inventory.json"
    path.write_bytes(document_json(inventory))
    with NatsServer(name="gateway-attributes") as server:
        plan = applied_plan(server.url, PlanRequest(inventory_path=path))
        with running_gateway(server.url, plan) as running:
            yield Sides(moto_sqs, moto_sns, running.client(), running.client("sns"))


def queue_attributes(sqs: Any, name: str) -> dict[str, str]:
    url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    answer: dict[str, str] = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])[
        "Attributes"
    ]
    return answer


def comparable(attributes: dict[str, str]) -> dict[str, Any]:
    """What must match: timestamps are each side's own clock, and a RedrivePolicy's count is a
    number in SQS's answer whatever type the creator sent."""
    out: dict[str, Any] = {k: v for k, v in attributes.items() if k not in STAMPS}
    if "RedrivePolicy" in out:
        policy = json.loads(out["RedrivePolicy"])
        policy["maxReceiveCount"] = int(policy["maxReceiveCount"])
        out["RedrivePolicy"] = policy
    return out


@pytest.mark.parametrize("name", [PLAIN, DLQ, SOURCE, DELAYED, FIFO])
def test_all_queue_attributes_match_moto(sides: Sides, name: str) -> None:
    before = int(time.time())
    moto = queue_attributes(sides.moto_sqs, name)
    gateway = queue_attributes(sides.sqs, name)
    assert sorted(gateway) == sorted(moto)
    assert comparable(gateway) == comparable(moto)
    for stamp in STAMPS:
        # The stream was created after moto's queue (the scan, then apply), before this call.
        # (moto answers fractions of a second, SQS and the gateway whole seconds)
        assert int(float(moto[stamp])) <= int(gateway[stamp]) <= before + 1


def test_redrive_policy_in_sqs_form(sides: Sides) -> None:
    redrive = queue_attributes(sides.sqs, SOURCE)["RedrivePolicy"]
    dlq = queue_attributes(sides.sqs, DLQ)["QueueArn"]
    assert redrive == json.dumps(
        {"deadLetterTargetArn": dlq, "maxReceiveCount": 3}, separators=(",", ":")
    )


def test_kms_queue_answers_its_key(sides: Sides) -> None:
    """SQS reports SqsManagedSseEnabled false for a queue encrypted with KMS (moto keeps its
    default true): the key and its reuse period are what both agree on."""
    moto = queue_attributes(sides.moto_sqs, KMS)
    gateway = queue_attributes(sides.sqs, KMS)
    for name in ("KmsMasterKeyId", "KmsDataKeyReusePeriodSeconds"):
        assert gateway[name] == moto[name]
    assert gateway["SqsManagedSseEnabled"] == "false"
    assert sorted(gateway) == sorted(moto)


def test_delayed_messages_are_counted(sides: Sides) -> None:
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesDelayed"]
    seen = {}
    for side, sqs in (("moto", sides.moto_sqs), ("gateway", sides.sqs)):
        url = sqs.get_queue_url(QueueName=DELAYED)["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody="later", DelaySeconds=900)

        def counted(sqs: Any = sqs, url: str = url) -> dict[str, str] | None:
            got: dict[str, str] = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)[
                "Attributes"
            ]
            return got if got["ApproximateNumberOfMessagesDelayed"] == "1" else None

        asyncio.run(until(counted, what=f"{side}: the delayed message counted"))
        seen[side] = counted()
    assert (
        seen["gateway"]
        == seen["moto"]
        == {
            "ApproximateNumberOfMessages": "0",
            "ApproximateNumberOfMessagesDelayed": "1",
        }
    )


@pytest.mark.parametrize("name", [TOPIC, FIFO_TOPIC])
def test_topic_attributes_match_moto(sides: Sides, name: str) -> None:
    arn = f"arn:aws:sns:{REGION}:123456789012:{name}"
    moto = sides.moto_sns.get_topic_attributes(TopicArn=arn)["Attributes"]
    gateway = sides.sns.get_topic_attributes(TopicArn=arn)["Attributes"]
    # moto names an unset DeliveryPolicy with an empty value; SNS leaves it out, as the gateway.
    assert moto.pop("DeliveryPolicy", "") == ""
    assert sorted(gateway) == sorted(moto)
    assert json.loads(gateway.pop("Policy")) == json.loads(moto.pop("Policy"))
    # SNS's own default, which moto gives in another shape: both are JSON retry policies.
    effective = json.loads(gateway.pop("EffectiveDeliveryPolicy"))
    assert effective["http"]["defaultHealthyRetryPolicy"]["numRetries"] == 3
    assert json.loads(moto.pop("EffectiveDeliveryPolicy"))
    assert gateway == moto


def test_a_policy_the_plan_keeps_no_document_of_is_left_out(sides: Sides) -> None:
    """A policy that lets another account in is served on NATS as that account's permissions;
    answering SNS's default would hide it, so the gateway leaves Policy out."""
    arn = f"arn:aws:sns:{REGION}:123456789012:{SHARED_TOPIC}"
    moto = sides.moto_sns.get_topic_attributes(TopicArn=arn)["Attributes"]
    gateway = sides.sns.get_topic_attributes(TopicArn=arn)["Attributes"]
    assert PARTNER in moto["Policy"]
    assert "Policy" not in gateway
    assert gateway["TopicArn"] == arn


@pytest.mark.parametrize(
    ("recorded", "answered"),
    [
        ({"RedriveAllowPolicy": "denyAll"}, '{"redrivePermission":"denyAll"}'),
        ({"RedriveAllowPolicy": "allowAll"}, '{"redrivePermission":"allowAll"}'),
        # byQueue names source queues the plan does not keep: absent, never a wrong list.
        ({"RedriveAllowPolicy": "byQueue"}, None),
        ({}, None),
    ],
)
def test_redrive_allow_policy_as_sqs_writes_it(
    recorded: dict[str, str | None], answered: str | None
) -> None:
    """moto does not answer RedriveAllowPolicy, so its scan records none: the plan's fidelity
    stands in for what a scan of SQS records."""
    from snsq2nats.gateway.estate import recorded_attributes

    assert recorded_attributes(recorded, fifo=False).get("RedriveAllowPolicy") == answered
