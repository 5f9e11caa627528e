"""Route derivation: every cutover combination gives each consumer exactly one copy.

The simulator follows a message along every path the derived routes open — SNS fan-out, stream
sources, each bridge route with its drop rules — and counts the copies each queue's consumers
receive on the side where they live. One copy, always, or the cutover loses or duplicates
orders.
"""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

import pytest

from snsq2nats.bridge.aws_to_nats import convert
from snsq2nats.bridge.codec import ORIGIN_ATTRIBUTE
from snsq2nats.plan.model import Route
from snsq2nats.plan.routes import (
    ADVISORY_STREAM,
    QueueInfo,
    SubscriptionInfo,
    TopicInfo,
    bridge_queue_name,
    derive,
)
from snsq2nats.plan.rules import Cutover, Defaults

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

TOPIC_STREAM = "sns_orders"


def has_source(q: QueueInfo, s: SubscriptionInfo) -> bool:
    """The mapping's rule (the tests/data/mapping cases pin it): a topic stream source only for
    a plain (not emulated) subscription of a queue whose consumers are on NATS."""
    return s.mapped and s.delivers and not s.emulated and q.cutover.consumers == "nats"


class Estate:
    """One topic and its queues, following every path a message can take under the routes of
    the current cutover state: SNS fan-out into SQS (with the origin attribute the nats-to-sns
    relay stamps), topic stream sources and filter routers into queue streams (each with the
    sequence it starts at), nats-to-sqs, and sqs-to-nats with its drop rule — the real
    `aws_to_nats.convert` decides what is dropped and under which `Nats-Msg-Id`, and a queue
    stream keeps one copy per id (its duplicate window). `delivered` counts the copies each
    queue's consumers get, on the side where they live when the copy reaches them.
    """

    def __init__(self, queues: list[QueueInfo], t: TopicInfo | None = None) -> None:
        self.seq = 0  # the topic stream's last sequence
        self.history: list[str] = []  # the topic stream's NATS-published messages, by seq - 1
        self.sqs: dict[str, list[dict[str, Any]]] = {q.name: [] for q in queues}
        self.stream_ids: dict[str, set[str]] = {q.name: set() for q in queues}
        self.delivered: dict[str, Counter[str]] = {q.name: Counter() for q in queues}
        self.source_start: dict[str, int] = {}
        self.router_start: dict[str, int] = {}
        self.message_ids = itertools.count()
        self.cut(queues, t)

    def cut(self, queues: list[QueueInfo], t: TopicInfo | None) -> None:
        """Move to a cutover state, as apply + the bridge would: derive the routes; a source or
        filter router that appears starts after the topic stream's last message
        (apply.anchor_new_sources, deliver policy "new"); one that stays keeps its start."""
        self.queues = {q.name: q for q in queues}
        self.topic = t
        derived = derive(queues, [t] if t else [], Defaults())
        self.routes = {r.name: r for r in derived.routes}
        by_arn = {q.arn: q for q in queues}
        previous_sources, previous_routers = set(self.source_start), set(self.router_start)
        sources: dict[str, int] = {}
        for s in t.subscriptions if t else []:
            q = by_arn.get(s.endpoint)
            if q is not None and has_source(q, s):
                sources[q.name] = self.source_start.get(q.name, self.seq + 1)
        self.source_start = sources
        for name, start in sources.items():
            if name not in previous_sources:
                self.replay(self.queues[name], start, None)
        routers: dict[str, int] = {}
        for c in derived.consumers:
            route = self.routes[c.metadata["snsq2nats.route"]]
            if route.kind == "filter-router":
                assert c.deliver_policy == "new", "a new router must not replay the topic"
                name = route.name.split("->", 1)[1]
                routers[name] = self.router_start.get(name, self.seq + 1)
        self.router_start = routers
        for name, start in routers.items():
            if name not in previous_routers:
                self.replay(self.queues[name], start, TOPIC_STREAM)

    def replay(self, q: QueueInfo, start: int, id_stream: str | None) -> None:
        """A new source or router copies what the topic stream holds from its start on."""
        for seq in range(start, self.seq + 1):
            msg_id = f"{id_stream}:{seq}" if id_stream else None
            self.to_stream(q, self.history[seq - 1], msg_id, own=False)

    def subscribed(self) -> list[QueueInfo]:
        assert self.topic is not None
        by_arn = {q.arn: q for q in self.queues.values()}
        return [
            by_arn[s.endpoint]
            for s in self.topic.subscriptions
            if s.delivers and s.protocol == "sqs" and s.endpoint in by_arn
        ]

    def to_sqs(self, q: QueueInfo, label: str, origin: str | None) -> None:
        attributes = {}
        if origin is not None:
            attributes[ORIGIN_ATTRIBUTE] = {"DataType": "String", "StringValue": origin}
        message_id = f"m-{next(self.message_ids)}"
        self.sqs[q.name].append(
            {"MessageId": message_id, "Body": label, "MessageAttributes": attributes}
        )

    def to_stream(self, q: QueueInfo, label: str, msg_id: str | None, *, own: bool) -> None:
        """A message lands in the queue stream (on its own subject, or a topic copy)."""
        if msg_id is not None:
            if msg_id in self.stream_ids[q.name]:
                return  # the duplicate window absorbs it
            self.stream_ids[q.name].add(msg_id)
        if q.cutover.consumers == "nats":
            self.delivered[q.name][label] += 1
        else:
            # nats-to-sqs would ack a topic copy without relaying it (SNS delivers those):
            # piling them up here is what sources only for NATS consumers avoid.
            assert own, f"a topic copy of {label} in {q.name}'s stream, consumers on AWS"
            if f"to-sqs:{q.name}" in self.routes:
                self.to_sqs(q, label, "nats")

    def publish_topic(self, side: str, label: str) -> None:
        if side == "aws":
            # SNS delivers into every subscribed queue; sns-to-nats writes the `aws.` space,
            # which no source selects and filter routers skip.
            for q in self.subscribed():
                self.to_sqs(q, label, None)
            return
        self.seq += 1
        self.history.append(label)
        for q in self.subscribed():
            if self.source_start.get(q.name, self.seq + 1) <= self.seq:
                self.to_stream(q, label, None, own=False)
            if self.router_start.get(q.name, self.seq + 1) <= self.seq:
                self.to_stream(q, label, f"{TOPIC_STREAM}:{self.seq}", own=False)
        if "to-sns:orders" in self.routes:
            for q in self.subscribed():
                self.to_sqs(q, label, f"nats:{TOPIC_STREAM}:{self.seq}")

    def publish_queue(self, side: str, q: QueueInfo, label: str) -> None:
        if side == "aws":
            self.to_sqs(q, label, None)
        else:
            self.to_stream(q, label, None, own=True)

    def drain(self, only: set[str] | None = None) -> None:
        """Whoever reads each SQS queue now takes what it holds (`only`: just these bodies)."""
        for name, messages in self.sqs.items():
            q = self.queues[name]
            keep = []
            for message in messages:
                if only is not None and message["Body"] not in only:
                    keep.append(message)
                elif q.cutover.consumers == "aws":
                    self.delivered[name][message["Body"]] += 1
                else:
                    route = self.routes[f"sqs:{name}"]
                    starts = (
                        {TOPIC_STREAM: self.source_start[name]} if name in self.source_start else {}
                    )
                    relayed = convert(route, message, starts)
                    if not relayed.drop:
                        self.to_stream(q, message["Body"], relayed.msg_id, own=True)
            self.sqs[name] = keep


def state(
    producers: str, consumers: dict[str, str], emulated: set[str]
) -> tuple[list[QueueInfo], TopicInfo]:
    queues = [queue(name, c) for name, c in consumers.items()]
    return queues, topic(producers, [sub(q, emulated=q.name in emulated) for q in queues])


SIDES = {"aws": ["aws"], "nats": ["nats"], "both": ["aws", "nats"]}


@pytest.mark.parametrize(
    ("topic_producers", "c1", "c2", "emulated"),
    list(itertools.product(["aws", "nats", "both"], ["aws", "nats"], ["aws", "nats"], [0, 1])),
)
def test_every_topic_cutover_delivers_exactly_once(
    topic_producers: str, c1: str, c2: str, emulated: int
) -> None:
    queues, t = state(
        topic_producers, {"billing": c1, "shipping": c2}, {"shipping"} if emulated else set()
    )
    estate = Estate(queues, t)
    labels = []
    for side in SIDES[topic_producers]:
        for i in range(3):
            labels.append(f"{side}-{i}")
            estate.publish_topic(side, labels[-1])
    estate.drain()
    want = Counter(labels)
    assert estate.delivered == {"billing": want, "shipping": want}, sorted(estate.routes)


@pytest.mark.parametrize(
    ("producers", "moving", "other", "emulated"),
    list(itertools.product(["aws", "nats", "both"], ["aws", "nats"], ["aws", "nats"], [0, 1])),
)
def test_consumers_moving_to_nats_mid_stream_get_each_message_once(
    producers: str, moving: str, other: str, emulated: int
) -> None:
    """billing's consumers move to NATS while messages are in flight: some SNS delivered into
    SQS before the move (the AWS workers processed a few of those, the rest wait in SQS), more
    are published after it. The SQS backlog is relayed, SNS copies from the source's start on
    are dropped, and every consumer gets every message once. `moving` is where billing's
    consumers started (aws: a real move; nats: no move, the steady state)."""
    emulated_subs = {"billing"} if emulated else set()
    before = state(producers, {"billing": moving, "shipping": other}, emulated_subs)
    after = state(producers, {"billing": "nats", "shipping": other}, emulated_subs)
    estate = Estate(*before)
    labels = []
    for phase, current in (("before", before), ("after", after)):
        estate.cut(*current)
        for side in SIDES[producers]:
            for i in range(3):
                labels.append(f"{phase}-{side}-{i}")
                estate.publish_topic(side, labels[-1])
        if phase == "before":
            # The AWS workers get through part of the backlog before the move.
            estate.drain(only={f"before-{side}-0" for side in SIDES[producers]})
    estate.drain()
    want = Counter(labels)
    assert estate.delivered == {"billing": want, "shipping": want}, (
        sorted(estate.routes),
        estate.source_start,
        estate.router_start,
    )
    if moving == "aws" and not emulated and producers != "aws":
        # The source starts after the three NATS-published messages of before the move.
        assert estate.source_start["billing"] == 4


@pytest.mark.parametrize(
    ("producers", "consumers"), list(itertools.product(["aws", "nats", "both"], ["aws", "nats"]))
)
def test_every_queue_cutover_delivers_exactly_once(producers: str, consumers: str) -> None:
    q = queue("jobs", consumers, producers)
    estate = Estate([q])
    for side in SIDES[producers]:
        estate.publish_queue(side, q, side)
    estate.drain()
    assert estate.delivered == {"jobs": Counter(SIDES[producers])}, sorted(estate.routes)
    # Never both directions for one queue: that would be a loop.
    assert len([r for r in estate.routes.values() if r.source_arn == q.arn]) <= 1


@pytest.mark.parametrize("producers", ["nats", "both"])
def test_queue_messages_nats_handed_to_sqs_come_back_when_consumers_move_to_nats(
    producers: str,
) -> None:
    """While the consumers are on AWS, nats-to-sqs hands NATS producers' messages to SQS
    (origin plain `nats`); those still waiting when the consumers move to NATS are relayed
    back, not dropped: nothing else carries them."""
    before = queue("jobs", "aws", producers)
    estate = Estate([before])
    estate.publish_queue("nats", before, "early-0")
    estate.publish_queue("nats", before, "early-1")
    estate.drain(only={"early-0"})  # one processed on AWS, one still queued
    after = queue("jobs", "nats", producers)
    estate.cut([after], None)
    estate.publish_queue("nats", after, "late")
    estate.drain()
    assert estate.delivered == {"jobs": Counter(["early-0", "early-1", "late"])}


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
    # Bridge-owned: the queue's ARN is what the route serves, never its snsq2nats.source (the
    # queue's worker consumer alone carries that).
    assert consumer.metadata == {"snsq2nats.route": "dlq:orders", "snsq2nats.for": q.arn}
    assert stream.metadata == {"snsq2nats.route": "dlq:*", "snsq2nats.for": "*"}


def test_bridge_queue_names_fit_sqs() -> None:
    assert bridge_queue_name("payments.fifo", True) == "snsq2nats-bridge-payments.fifo"
    long = bridge_queue_name("x" * 80 + ".fifo", True)
    assert len(long) == 80 and long.endswith(".fifo")
    assert len(bridge_queue_name("y" * 80, False)) == 80
