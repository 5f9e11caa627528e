"""Route derivation: every cutover combination gives each consumer exactly one copy.

The simulator follows a message along every path the derived routes open — SNS fan-out, stream
sources, each bridge route with its drop rules — and counts the copies each queue's consumers
receive on the side where they live. One copy, always, or the cutover loses or duplicates
orders.
"""

from __future__ import annotations

import itertools

import pytest

from snsq2nats.plan import Route
from snsq2nats.routes import (
    ADVISORY_STREAM,
    QueueInfo,
    SubscriptionInfo,
    TopicInfo,
    bridge_queue_name,
    derive,
)
from snsq2nats.rules import Cutover, Defaults

ARN = "arn:aws:sqs:us-east-1:1:"
TOPIC = "arn:aws:sns:us-east-1:1:orders"


def queue(name: str, consumers: str, producers: str = "aws") -> QueueInfo:
    return QueueInfo(
        arn=ARN + name,
        name=name,
        fifo=False,
        stream=f"sqs_{name}",
        durable=name,
        subject=f"sqs.{name}",
        own_subjects=[f"sqs.{name}"],
        cutover=Cutover(producers=producers, consumers=consumers),  # type: ignore[arg-type]
    )


def topic(producers: str, subs: list[SubscriptionInfo]) -> TopicInfo:
    return TopicInfo(
        arn=TOPIC,
        name="orders",
        fifo=False,
        stream="sns_orders",
        subject="sns.orders",
        promoted=[],
        cutover=Cutover(producers=producers),  # type: ignore[arg-type]
        needs_stream=any(s.mapped for s in subs),
        subscriptions=subs,
    )


def sub(q: QueueInfo, *, emulated: bool = False) -> SubscriptionInfo:
    return SubscriptionInfo(
        arn=f"{TOPIC}:{q.name}", protocol="sqs", endpoint=q.arn, mapped=True, emulated=emulated
    )


def kinds(routes: list[Route]) -> set[tuple[str, str]]:
    return {(r.kind, r.name) for r in routes}


# -- the simulator ----------------------------------------------------------------------------


def copies_from_topic(
    side: str, t: TopicInfo, queues: list[QueueInfo], routes: list[Route]
) -> dict[str, int]:
    """Copies each queue's consumers get of one message published to the topic on `side`."""
    by_kind = kinds(routes)
    got = {q.name: 0 for q in queues}
    subscribed = {s.endpoint for s in t.subscriptions}
    # SQS copies: (queue, origin attribute).
    sqs: list[tuple[QueueInfo, str]] = []
    nats_stream: list[QueueInfo] = []  # copies in queue streams, on topic subjects
    if side == "aws":
        sqs += [(q, "aws") for q in queues if q.arn in subscribed]
        # sns-to-nats lands on aws.* which no queue source selects: nothing to add.
    else:
        nats_stream += [q for q in queues if q.arn in subscribed]  # sources / filter router
        if ("nats-to-sns", "to-sns:orders") in by_kind:
            sqs += [(q, "nats") for q in queues if q.arn in subscribed]
    for q, origin in sqs:
        relayed = ("sqs-to-nats", f"sqs:{q.name}") in by_kind and origin != "nats"
        if q.cutover.consumers == "aws" or relayed:
            got[q.name] += 1
    for q in nats_stream:
        if q.cutover.consumers == "nats":
            got[q.name] += 1
        # nats-to-sqs relays only the queue's own subjects: topic copies are acked, not sent.
    return got


def copies_from_queue(side: str, q: QueueInfo, routes: list[Route]) -> int:
    by_kind = kinds(routes)
    if side == "aws":
        if q.cutover.consumers == "aws":
            return 1
        return int(("sqs-to-nats", f"sqs:{q.name}") in by_kind)
    if q.cutover.consumers == "nats":
        return 1
    return int(("nats-to-sqs", f"to-sqs:{q.name}") in by_kind)


SIDES = {"aws": ["aws"], "nats": ["nats"], "both": ["aws", "nats"]}


@pytest.mark.parametrize(
    ("topic_producers", "c1", "c2", "emulated"),
    list(itertools.product(["aws", "nats", "both"], ["aws", "nats"], ["aws", "nats"], [0, 1])),
)
def test_every_topic_cutover_delivers_exactly_once(
    topic_producers: str, c1: str, c2: str, emulated: int
) -> None:
    queues = [queue("billing", c1), queue("shipping", c2)]
    t = topic(topic_producers, [sub(queues[0]), sub(queues[1], emulated=bool(emulated))])
    derived = derive(queues, [t], Defaults())
    for side in SIDES[topic_producers]:
        assert copies_from_topic(side, t, queues, derived.routes) == {
            "billing": 1,
            "shipping": 1,
        }, (side, sorted(kinds(derived.routes)))


@pytest.mark.parametrize(
    ("producers", "consumers"), list(itertools.product(["aws", "nats", "both"], ["aws", "nats"]))
)
def test_every_queue_cutover_delivers_exactly_once(producers: str, consumers: str) -> None:
    q = queue("jobs", consumers, producers)
    derived = derive([q], [], Defaults())
    for side in SIDES[producers]:
        assert copies_from_queue(side, q, derived.routes) == 1, (side, derived.routes)
    # Never both directions for one queue: that would be a loop.
    assert len([r for r in derived.routes if r.source_arn == q.arn]) <= 1


def test_http_subscriber_keeps_topic_on_sns_and_gives_it_a_stream() -> None:
    t = topic(
        "nats",
        [SubscriptionInfo(arn=f"{TOPIC}:web", protocol="https", endpoint="https://x")],
    )
    derived = derive([], [t], Defaults())
    assert kinds(derived.routes) == {("nats-to-sns", "to-sns:orders")}
    assert derived.topic_streams == {TOPIC}
    (consumer,) = derived.consumers
    assert (consumer.stream_name, consumer.durable_name) == ("sns_orders", "snsq2nats-to-sns")
    assert consumer.filter_subjects == ["sns.orders"]


def test_unconfirmed_subscriber_needs_no_relay() -> None:
    t = topic(
        "nats",
        [
            SubscriptionInfo(
                arn=f"{TOPIC}:web", protocol="https", endpoint="https://x", delivers=False
            )
        ],
    )
    assert derive([], [t], Defaults()).routes == []


def test_dlq_route_gets_an_advisory_consumer() -> None:
    dlq = queue("dlq", "aws")
    q = QueueInfo(**{**queue("orders", "aws").__dict__, "dlq_arn": dlq.arn})
    derived = derive([q, dlq], [], Defaults(), advisory_replicas=3)
    (route,) = derived.routes
    assert route.kind == "dlq-mover" and route.advisory_stream == ADVISORY_STREAM
    (stream,) = derived.streams
    assert stream.num_replicas == 3 and stream.subjects[0].endswith("MAX_DELIVERIES.>")
    (consumer,) = derived.consumers
    assert consumer.filter_subjects == [
        "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.sqs_orders.orders"
    ]
    assert consumer.metadata["snsq2nats.route"] == "dlq:orders"


def test_bridge_queue_names_fit_sqs() -> None:
    assert bridge_queue_name("payments.fifo", True) == "snsq2nats-bridge-payments.fifo"
    long = bridge_queue_name("x" * 80 + ".fifo", True)
    assert len(long) == 80 and long.endswith(".fifo")
    assert len(bridge_queue_name("y" * 80, False)) == 80
