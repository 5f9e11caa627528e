"""Issue 21's whole chain on LocalStack: three AWS accounts, two regions, one estate.

moto cannot carry this: a subscription one account makes on another's topic never fires there
(tests/fixtures/localstack.py says why LocalStack does). The first test proves the emulator
does what the chain relies on; the chain test runs the commands as the README writes them.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.fixtures.localstack import BASE_ACCOUNT, LocalStack
from tests.fixtures.wait import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.localstack]

A, B, C = "111111111111", "222222222222", "333333333333"
R1, R2 = "us-east-1", "eu-west-1"


def _queue_arn(sqs: Any, url: str) -> str:
    reply = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return str(reply["Attributes"]["QueueArn"])


def test_a_topic_in_one_account_delivers_to_a_queue_in_another(localstack: LocalStack) -> None:
    """A's topic (R1) reaches B's queue (R2), subscribed by B under a queue policy letting the
    topic send, each account acting through keys STS AssumeRole gave for it."""
    for account in (A, B):
        sts = localstack.assumed(account).client("sts", endpoint_url=localstack.url)
        assert sts.get_caller_identity()["Account"] == account
    base = localstack.base().client("sts", endpoint_url=localstack.url)
    assert base.get_caller_identity()["Account"] == BASE_ACCOUNT

    sns = localstack.client("sns", A, R1)
    topic = sns.create_topic(Name="proof-orders")["TopicArn"]
    assert f":{A}:" in topic
    sqs = localstack.client("sqs", B, R2)
    url = sqs.create_queue(QueueName="proof-orders")["QueueUrl"]
    arn = _queue_arn(sqs, url)
    assert arn == f"arn:aws:sqs:{R2}:{B}:proof-orders"
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
    # A same-named queue in the topic's own account must not get B's messages (moto's defect).
    decoy = localstack.client("sqs", A, R2)
    decoy_url = decoy.create_queue(QueueName="proof-orders")["QueueUrl"]
    assert decoy_url != url

    # B subscribes its queue to A's topic (cross-region too): SNS lists it under the topic.
    subscribed = localstack.client("sns", B, R1).subscribe(
        TopicArn=topic, Protocol="sqs", Endpoint=arn, ReturnSubscriptionArn=True
    )
    assert subscribed["SubscriptionArn"].startswith(topic + ":")
    listed = sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
    assert [(s["Endpoint"], s["Owner"]) for s in listed] == [(arn, B)]

    for i in range(3):
        sns.publish(TopicArn=topic, Message=f"crossed-{i}")
    bodies: list[str] = []

    def received() -> bool:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for m in got.get("Messages", []):
            bodies.append(json.loads(m["Body"])["Message"])
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        return len(bodies) >= 3

    wait_until(received, what="A's messages in B's queue", timeout=60)
    assert sorted(bodies) == ["crossed-0", "crossed-1", "crossed-2"]
    assert not decoy.receive_message(QueueUrl=decoy_url).get("Messages")
