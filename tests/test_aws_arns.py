"""ARNs are read in one place."""

from __future__ import annotations

import pytest

from snsq2nats.aws.arns import Arn, arn_name, parse_arn, subscription_topic


def test_queue_topic_and_subscription_arns() -> None:
    assert parse_arn("arn:aws:sqs:eu-west-1:123456789012:orders.fifo") == Arn(
        "aws", "sqs", "eu-west-1", "123456789012", "orders.fifo"
    )
    sub = parse_arn("arn:aws-cn:sns:cn-north-1:1:news:3f1c")
    assert (sub.partition, sub.service, sub.resource) == ("aws-cn", "sns", "news:3f1c")


@pytest.mark.parametrize("text", ["", "orders", "arn:aws:sqs:eu-west-1:1", "urn:a:b:c:d:e"])
def test_not_an_arn(text: str) -> None:
    with pytest.raises(ValueError, match="not an ARN"):
        parse_arn(text)


def test_a_subscription_belongs_to_its_topic_and_a_name_ends_an_arn() -> None:
    sub = "arn:aws:sns:eu-west-1:1:news:3f1c"
    assert subscription_topic(sub) == "arn:aws:sns:eu-west-1:1:news"
    assert arn_name("arn:aws:sqs:eu-west-1:1:orders.fifo") == "orders.fifo"
    assert arn_name(sub) == "3f1c"
    assert arn_name("orders") == "orders", "an endpoint that is no ARN is read, not refused"
