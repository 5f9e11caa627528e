"""One SQS backlog read, for `status` and `cutover --wait`, on moto's real HTTP server."""

from __future__ import annotations

import asyncio

import pytest
from botocore.exceptions import ClientError

from snsq2nats.aws.backlog import queue_backlog
from snsq2nats.aws.errors import is_missing
from snsq2nats.status import sqs_backlog
from tests.fixtures.aws import AwsEndpoint

ACCOUNT = "123456789012"


def test_counts_visible_in_flight_and_delayed(aws: AwsEndpoint) -> None:
    sqs = aws.client("sqs")
    url = sqs.create_queue(QueueName="orders")["QueueUrl"]
    for i in range(3):
        sqs.send_message(QueueUrl=url, MessageBody=f"m{i}")
    sqs.send_message(QueueUrl=url, MessageBody="later", DelaySeconds=900)
    sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, VisibilityTimeout=900)

    counts = queue_backlog(sqs, "orders", ACCOUNT)
    assert (counts.visible, counts.not_visible, counts.delayed) == (2, 1, 1)
    assert counts.total == 4
    assert queue_backlog(sqs, "orders", url=url) == counts


def test_a_missing_queue_is_an_aws_error_the_classifier_names(aws: AwsEndpoint) -> None:
    with pytest.raises(ClientError) as raised:
        queue_backlog(aws.client("sqs"), "nowhere", ACCOUNT)
    assert is_missing(raised.value)


def test_status_reads_a_missing_queue_as_nothing_to_drain(aws: AwsEndpoint) -> None:
    arn = f"arn:aws:sqs:{aws.region}:{ACCOUNT}:nowhere"
    backlog = asyncio.run(sqs_backlog(aws.client("sqs"), arn))
    assert backlog.exists is False and backlog.queue == "nowhere"
