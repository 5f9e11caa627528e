"""Sample estates to seed into an AWS endpoint: the demo's small shop, and synthetic big ones.

The shop is the story `make demo` tells and the fixture tests reuse: an `orders` topic fanning out
to filtered queues, a dead-letter queue, a FIFO payments queue, a delayed queue and an https
subscription that has no NATS equivalent.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mypy_boto3_sns import SNSClient
    from mypy_boto3_sqs import SQSClient


@dataclass
class Seeded:
    queues: dict[str, str] = field(default_factory=dict)  # name -> ARN
    topics: dict[str, str] = field(default_factory=dict)
    subscriptions: dict[str, str] = field(default_factory=dict)  # label -> ARN


def _queue(
    sqs: SQSClient, seeded: Seeded, name: str, attrs: dict[str, str], tags: dict[str, str]
) -> str:
    url = sqs.create_queue(QueueName=name, Attributes=attrs, tags=tags)["QueueUrl"]  # type: ignore[arg-type]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    seeded.queues[name] = arn
    return arn


def _subscribe(
    sns: SNSClient,
    seeded: Seeded,
    label: str,
    topic_arn: str,
    protocol: str,
    endpoint: str,
    attrs: dict[str, str],
) -> None:
    arn = sns.subscribe(
        TopicArn=topic_arn,
        Protocol=protocol,
        Endpoint=endpoint,
        Attributes=attrs,
        ReturnSubscriptionArn=True,
    )["SubscriptionArn"]
    seeded.subscriptions[label] = arn


WEBHOOK = "https://hooks.example.com/orders?token=s3cr3t-token"


def seed_shop(sqs: SQSClient, sns: SNSClient, *, webhook: str = WEBHOOK) -> Seeded:
    """The shop; `webhook` is the https subscriber (SNS posts to it when the topic publishes)."""
    seeded = Seeded()
    team = {"team": "shop", "cost-center": "cc-42"}
    orders_dlq = _queue(sqs, seeded, "orders-dlq", {"MessageRetentionPeriod": "1209600"}, team)
    _queue(
        sqs,
        seeded,
        "orders-billing",
        {
            "VisibilityTimeout": "60",
            "MessageRetentionPeriod": "604800",
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": orders_dlq, "maxReceiveCount": 5}),
        },
        {**team, "owner": "billing"},
    )
    _queue(sqs, seeded, "orders-shipping", {"VisibilityTimeout": "120"}, {"owner": "shipping"})
    _queue(sqs, seeded, "orders-analytics", {"MaximumMessageSize": "262144"}, {})
    _queue(sqs, seeded, "orders-fraud", {}, {"owner": "risk"})
    payments_dlq = _queue(sqs, seeded, "payments-dlq.fifo", {"FifoQueue": "true"}, team)
    _queue(
        sqs,
        seeded,
        "payments.fifo",
        {
            "FifoQueue": "true",
            "ContentBasedDeduplication": "true",
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": payments_dlq, "maxReceiveCount": 3}
            ),
        },
        {"owner": "payments"},
    )
    _queue(sqs, seeded, "notifications-delayed", {"DelaySeconds": "30"}, {"owner": "crm"})

    orders = sns.create_topic(
        Name="orders", Tags=[{"Key": "team", "Value": "shop"}], Attributes={"DisplayName": "Orders"}
    )["TopicArn"]
    seeded.topics["orders"] = orders
    q = seeded.queues
    _subscribe(
        sns,
        seeded,
        "billing",
        orders,
        "sqs",
        q["orders-billing"],
        {
            "RawMessageDelivery": "true",
            "FilterPolicy": json.dumps({"event_type": ["order_placed", "order_cancelled"]}),
        },
    )
    _subscribe(
        sns,
        seeded,
        "shipping",
        orders,
        "sqs",
        q["orders-shipping"],
        {
            "RawMessageDelivery": "true",
            "FilterPolicy": json.dumps({"event_type": ["order_placed"], "region": ["eu", "us"]}),
        },
    )
    _subscribe(sns, seeded, "analytics", orders, "sqs", q["orders-analytics"], {})
    _subscribe(
        sns,
        seeded,
        "fraud",
        orders,
        "sqs",
        q["orders-fraud"],
        {
            "RawMessageDelivery": "true",
            "FilterPolicy": json.dumps({"amount": [{"numeric": [">=", 1000]}]}),
        },
    )
    _subscribe(
        sns,
        seeded,
        "webhook",
        orders,
        "https",
        webhook,
        {},
    )
    return seeded


def seed_synthetic(
    sqs: SQSClient,
    sns: SNSClient,
    *,
    queues: int,
    topics: int,
    subscriptions: int,
    workers: int = 16,
    on_progress: Callable[[int], None] | None = None,
) -> Seeded:
    """A big estate for benchmarks: every subscription an sqs one, spread over the topics."""
    seeded = Seeded()
    tick = on_progress or (lambda n: None)

    def make_queue(i: int) -> None:
        attrs = {"VisibilityTimeout": str(30 + i % 90)}
        _queue(sqs, seeded, f"bench-q-{i:05d}", attrs, {"index": str(i)})
        tick(1)

    def make_topic(i: int) -> None:
        arn = sns.create_topic(Name=f"bench-t-{i:04d}")["TopicArn"]
        seeded.topics[f"bench-t-{i:04d}"] = arn
        tick(1)

    def make_sub(i: int) -> None:
        topic = seeded.topics[f"bench-t-{i % topics:04d}"]
        queue = seeded.queues[f"bench-q-{i % queues:05d}"]
        attrs: dict[str, Any] = {"RawMessageDelivery": "true"}
        if i % 3 == 0:
            attrs["FilterPolicy"] = json.dumps({"kind": [f"k{i % 7}"]})
        _subscribe(sns, seeded, f"s{i}", topic, "sqs", queue, attrs)
        tick(1)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(make_queue, range(queues)))
        list(pool.map(make_topic, range(topics)))
        list(pool.map(make_sub, range(subscriptions)))
    return seeded
