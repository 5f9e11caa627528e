"""A synthetic inventory built in memory: for benchmarks that need no AWS endpoint at all."""

from __future__ import annotations

import json

from snsq2nats.inventory import Inventory, Queue, Subscription, Topic

ACCOUNT = "123456789012"
REGION = "us-east-1"


def synthetic_inventory(queues: int, topics: int, subscriptions: int) -> Inventory:
    queue_list = [
        Queue(
            arn=f"arn:aws:sqs:{REGION}:{ACCOUNT}:bench-q-{i:05d}",
            name=f"bench-q-{i:05d}",
            url=f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/bench-q-{i:05d}",
            region=REGION,
            account=ACCOUNT,
            visibility_timeout=30 + i % 90,
            tags={"index": str(i)},
        )
        for i in range(queues)
    ]
    topic_list = [
        Topic(
            arn=f"arn:aws:sns:{REGION}:{ACCOUNT}:bench-t-{i:04d}",
            name=f"bench-t-{i:04d}",
            region=REGION,
            account=ACCOUNT,
        )
        for i in range(topics)
    ]
    subs = []
    for i in range(subscriptions):
        topic = topic_list[i % topics]
        queue = queue_list[i % queues]
        subs.append(
            Subscription(
                arn=f"{topic.arn}:sub-{i:05d}",
                topic_arn=topic.arn,
                protocol="sqs",
                endpoint=queue.arn,
                region=REGION,
                account=ACCOUNT,
                raw_message_delivery=True,
                filter_policy=json.dumps({"kind": [f"k{i % 7}"]}) if i % 3 == 0 else None,
            )
        )
    return Inventory(
        generated_at="2026-01-01T00:00:00+00:00",
        regions=[REGION],
        queues=queue_list,
        topics=topic_list,
        subscriptions=subs,
    )
