"""Route derivation: every cutover journey gives each application every message exactly once.

The simulator follows each message along every path the routes of the current cutover state
open — SNS fan-out, stream sources, the filter router, each bridge relay with its drop rule (the
real `aws_to_nats.convert` decides drops and `Nats-Msg-Id`s, a queue stream keeps one copy per
id) — while the applications' workers run on AWS, on NATS, or on both during a move. Whoever
may take a copy (a worker or a relay competing with it) takes it, chosen at random: the
property is that each application gets each message once whatever the interleaving and
whenever the old workers stop.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest

from snsq2nats.bridge.aws_to_nats import convert
from snsq2nats.bridge.codec import ORIGIN_ATTRIBUTE
from snsq2nats.plan.model import Route
from snsq2nats.plan.routes import (
    ADVISORY_STREAM,
    CutoverView,
    Fanout,
    QueueInfo,
    SubscriptionInfo,
    TopicInfo,
    bridge_queue_name,
    derive,
    route_active,
)
from snsq2nats.plan.rules import Cutover, Defaults

ARN = "arn:aws:sqs:us-east-1:1:"
TOPIC = "arn:aws:sns:us-east-1:1:orders"
TOPIC_STREAM = "sns_orders"


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


def topic(producers: str, subs: list[SubscriptionInfo], fanout: Fanout = "sources") -> TopicInfo:
    return TopicInfo(
        arn=TOPIC,
        name="orders",
        fifo=False,
        stream=TOPIC_STREAM,
        subject="sns.orders",
        promoted=[],
        cutover=Cutover(producers=producers),  # type: ignore[arg-type]
        needs_stream=any(s.mapped for s in subs),
        subscriptions=subs,
        fanout=fanout,
    )


def sub(q: QueueInfo, *, emulated: bool = False) -> SubscriptionInfo:
    return SubscriptionInfo(
        arn=f"{TOPIC}:{q.name}",
        protocol="sqs",
        endpoint=q.arn,
        mapped=True,
        emulated=emulated,
        raw_delivery=True,
    )


HTTP = SubscriptionInfo(arn=f"{TOPIC}:web", protocol="https", endpoint="https://x")


def kinds(routes: list[Route]) -> set[tuple[str, str]]:
    return {(r.kind, r.name) for r in routes}


# -- the simulator ----------------------------------------------------------------------------


@dataclass
class Sim:
    """One topic (fan-out `fanout`) and its queues, moved through cutover states.

    Places a message copy can wait in: each queue's SQS queue, each queue's stream (its one
    durable), the nats-to-sns relay's and each filter router's consumer (fixed when the plan
    is applied: they exist from the start and fill whether or not their route runs).
    """

    names: list[str]
    fanout: Fanout
    emulated: set[str] = field(default_factory=set)
    seed: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.state: dict[str, Cutover] = {}
        self.moved: set[str] = set()
        self.workers: dict[str, set[str]] = {n: {"aws"} for n in self.names}
        self.sqs: dict[str, list[dict[str, Any]]] = {n: [] for n in self.names}
        self.stream: dict[str, list[str]] = {n: [] for n in self.names}
        self.stream_ids: dict[str, set[str]] = {n: set() for n in self.names}
        self.to_sns: list[tuple[int, str]] = []
        self.routers: dict[str, list[tuple[int, str]]] = {n: [] for n in self.emulated}
        self.delivered: dict[str, Counter[str]] = {n: Counter() for n in self.names}
        self.seq = 0
        self.ids = itertools.count()

    # the estate as the plan sees it
    def infos(self) -> tuple[list[QueueInfo], TopicInfo]:
        queues = [
            QueueInfo(**{**queue(n, "aws").__dict__, "cutover": self.state.get(ARN + n, Cutover())})
            for n in self.names
        ]
        subs = [sub(q, emulated=q.name in self.emulated) for q in queues]
        if self.fanout == "sns":
            subs.append(HTTP)
        t = topic("aws", subs, self.fanout)
        t = TopicInfo(**{**t.__dict__, "cutover": self.state.get(TOPIC, Cutover())})
        return queues, t

    def routes(self) -> dict[str, Route]:
        queues, t = self.infos()
        derived = derive(queues, [t], Defaults(), moved=self.moved)
        view = CutoverView({**{q.arn: q.cutover for q in queues}, TOPIC: t.cutover}, self.moved)
        assert all(route_active(r, view) for r in derived.routes)
        return {r.name: r for r in derived.routes}

    def move(self, arn: str, **sides: str) -> None:
        current = self.state.get(arn, Cutover())
        self.state[arn] = current.model_copy(update=sides)
        self.moved.add(arn)

    # publishing
    def publish_topic(self, side: str, label: str) -> None:
        if side == "aws":
            for n in self.names:  # SNS: every subscribed queue (filters pass everything here)
                self.to_sqs(n, label, None)
            return
        self.seq += 1
        for n in self.names:
            if n in self.emulated:
                self.routers[n].append((self.seq, label)) if self.fanout == "sources" else None
            elif self.fanout == "sources":
                self.to_stream(n, label, None)
        if self.fanout == "sns":
            self.to_sns.append((self.seq, label))

    def publish_queue(self, side: str, n: str, label: str) -> None:
        self.to_sqs(n, label, None) if side == "aws" else self.to_stream(n, label, None)

    def to_sqs(self, n: str, label: str, origin: str | None) -> None:
        attributes = {}
        if origin is not None:
            attributes[ORIGIN_ATTRIBUTE] = {"DataType": "String", "StringValue": origin}
        message_id = f"m-{next(self.ids)}"
        self.sqs[n].append(
            {"MessageId": message_id, "Body": label, "MessageAttributes": attributes}
        )

    def to_stream(self, n: str, label: str, msg_id: str | None) -> None:
        if msg_id is not None:
            if msg_id in self.stream_ids[n]:
                return  # the duplicate window absorbs it
            self.stream_ids[n].add(msg_id)
        self.stream[n].append(label)

    # everything that can move a copy, run in a random order until nothing can
    def actions(self) -> list[tuple[str, str]]:
        routes = self.routes()
        out = []
        for n in self.names:
            if self.sqs[n]:
                if "aws" in self.workers[n]:
                    out.append(("aws-worker", n))
                if f"sqs:{n}" in routes:
                    out.append(("sqs-to-nats", n))
            if self.stream[n]:
                if "nats" in self.workers[n]:
                    out.append(("nats-worker", n))
                if f"to-sqs:{n}" in routes:
                    out.append(("nats-to-sqs", n))
            if self.routers.get(n) and f"filter:orders->{n}" in routes:
                out.append(("filter-router", n))
        if self.to_sns and "to-sns:orders" in routes:
            out.append(("nats-to-sns", ""))
        return out

    def step(self) -> bool:
        possible = self.actions()
        if not possible:
            return False
        actor, n = self.rng.choice(possible)
        routes = self.routes()
        if actor == "aws-worker":
            message = self.sqs[n].pop(self.rng.randrange(len(self.sqs[n])))
            self.delivered[n][message["Body"]] += 1
        elif actor == "sqs-to-nats":
            message = self.sqs[n].pop(self.rng.randrange(len(self.sqs[n])))
            relayed = convert(routes[f"sqs:{n}"], message)
            if not relayed.drop:
                self.to_stream(n, message["Body"], relayed.msg_id)
        elif actor == "nats-worker":
            self.delivered[n][self.stream[n].pop(0)] += 1
        elif actor == "nats-to-sqs":
            self.to_sqs(n, self.stream[n].pop(0), "nats")
        elif actor == "filter-router":
            seq, label = self.routers[n].pop(0)
            self.to_stream(n, label, f"{TOPIC_STREAM}:{seq}")
        else:
            seq, label = self.to_sns.pop(0)
            for q in self.names:
                self.to_sqs(q, label, f"nats:{TOPIC_STREAM}:{seq}")
        return True

    def run(self, steps: int | None = None) -> None:
        for _ in itertools.count() if steps is None else range(steps):
            if not self.step():
                return


SIDES = {"aws": ["aws"], "nats": ["nats"], "both": ["aws", "nats"]}


def journey(fanout: Fanout, emulated: set[str], overlap: bool, seed: int, settle: bool) -> Sim:
    """The issue's journey: all on AWS → billing's consumers to NATS → topic producers to both →
    to NATS → shipping's consumers to NATS → finish. Traffic keeps flowing; with `overlap` the
    old workers keep running through the next phase (they stop only after it), else they stop
    right at the move. Each phase runs part of the way before the next move, or (`settle`) to
    the end: then nothing may be left waiting where no one reads it."""
    sim = Sim(["billing", "shipping"], fanout, emulated, seed)
    producers = "aws"
    labels: list[str] = []

    def traffic(phase: str) -> None:
        for side in SIDES[producers]:
            for i in range(4):
                labels.append(f"{phase}-{side}-{i}")
                sim.publish_topic(side, labels[-1])
        sim.run(sim.rng.randrange(0, 12))

    def consumers_to(n: str, side: str) -> None:
        sim.move(ARN + n, consumers=side)
        sim.workers[n].add(side)
        old = "aws" if side == "nats" else "nats"
        if not overlap:
            sim.workers[n].discard(old)
        traffic(f"{n}-{side}")
        sim.workers[n].discard(old)
        settled()

    def settled() -> None:
        if settle:
            sim.run()
            stranded = {
                f"{where}:{n}": v
                for where, places in (("sqs", sim.sqs), ("stream", sim.stream))
                for n, v in places.items()
                if v
            }
            assert not stranded and not sim.to_sns, (stranded, sorted(sim.routes()))

    traffic("start")
    consumers_to("billing", "nats")
    for producers in ("both", "nats"):
        sim.move(TOPIC, producers=producers)
        traffic(f"producers-{producers}")
        settled()
    consumers_to("shipping", "nats")
    consumers_to("billing", "aws")  # and back
    consumers_to("billing", "nats")
    sim.run()
    want = Counter(labels)
    assert sim.delivered == {"billing": want, "shipping": want}, sorted(sim.routes())
    assert not any(sim.sqs.values()) and not any(sim.stream.values())
    return sim


@pytest.mark.parametrize(
    ("fanout", "emulated", "overlap", "settle", "seed"),
    list(
        itertools.product(
            ["sources", "sns"],
            [frozenset(), frozenset({"shipping"})],
            [False, True],
            [False, True],
            range(6),
        )
    ),
)
def test_journey_delivers_each_message_once_whatever_the_workers_do(
    fanout: Fanout, emulated: frozenset[str], overlap: bool, settle: bool, seed: int
) -> None:
    journey(fanout, set(emulated), overlap, seed, settle)


@pytest.mark.parametrize(
    ("producers", "consumers"), list(itertools.product(["aws", "nats", "both"], ["aws", "nats"]))
)
def test_every_queue_state_delivers_once_and_never_runs_both_directions(
    producers: str, consumers: str
) -> None:
    sim = Sim(["jobs"], "sources")
    sim.move(ARN + "jobs", producers=producers, consumers=consumers)
    sim.workers["jobs"] = {consumers}
    for side in SIDES[producers]:
        sim.publish_queue(side, "jobs", side)
    sim.run()
    assert sim.delivered == {"jobs": Counter(SIDES[producers])}
    own = [r for r in sim.routes().values() if r.source_arn == ARN + "jobs"]
    assert len(own) <= 1  # never both directions for one queue: that would be a loop


@pytest.mark.parametrize("seed", range(6))
def test_queue_backlog_follows_its_consumers_back_and_forth(seed: int) -> None:
    """NATS producers; consumers move to NATS and back with workers overlapping: what one side
    holds when the consumers leave it is relayed to the other, never stranded or doubled."""
    sim = Sim(["jobs"], "sources", seed=seed)
    sim.move(ARN + "jobs", producers="both")
    labels = []
    for phase, side in enumerate(["nats", "aws", "nats", "aws"]):
        for i in range(5):
            labels.append(f"{phase}-{i}")
            sim.publish_queue(["aws", "nats"][i % 2], "jobs", labels[-1])
        sim.run(sim.rng.randrange(0, 8))
        sim.move(ARN + "jobs", consumers=side)
        sim.workers["jobs"].add(side)
        sim.run(sim.rng.randrange(0, 8))
        sim.workers["jobs"] = {side}
    sim.run()
    assert sim.delivered == {"jobs": Counter(labels)}


def test_objects_do_not_depend_on_the_cutover_state() -> None:
    """A move starts and stops relays only: the JetStream objects stay what apply created."""
    shapes = set()
    for producers, c1, c2 in itertools.product(["aws", "nats", "both"], *[["aws", "nats"]] * 2):
        billing, shipping = queue("billing", c1), queue("shipping", c2)
        t = topic(producers, [sub(billing), sub(shipping, emulated=True)])
        derived = derive([billing, shipping], [t], Defaults())
        shapes.add(
            (
                tuple(c.model_dump_json() for c in derived.consumers),
                tuple(s.model_dump_json() for s in derived.streams),
                tuple(r.name for r in derived.candidates),
            )
        )
    assert len(shapes) == 1


def test_finishing_a_topic_keeps_its_filter_routers() -> None:
    """After `finish`, NATS producers still publish: the router still carries what matches."""
    billing = queue("billing", "nats", producers="nats")
    t = topic("nats", [sub(billing, emulated=True)])
    finished = TopicInfo(**{**t.__dict__, "cutover": Cutover(producers="nats", finished=True)})
    derived = derive([billing], [finished], Defaults())
    assert ("filter-router", "filter:orders->billing") in kinds(derived.routes)
    assert ("sns-to-nats", "sns:orders") not in kinds(derived.routes)


def test_sns_fanout_has_no_filter_router_and_a_to_sns_relay() -> None:
    billing = queue("billing", "nats")
    t = topic("nats", [sub(billing, emulated=True), HTTP], fanout="sns")
    derived = derive([billing], [t], Defaults())
    assert kinds(derived.routes) == {
        ("nats-to-sns", "to-sns:orders"),
        ("sqs-to-nats", "sqs:billing"),
    }


def test_http_subscriber_keeps_topic_on_sns_and_gives_it_a_stream() -> None:
    t = topic(
        "nats",
        [SubscriptionInfo(arn=f"{TOPIC}:web", protocol="https", endpoint="https://x")],
        fanout="sns",
    )
    derived = derive([], [t], Defaults())
    assert kinds(derived.routes) == {("nats-to-sns", "to-sns:orders")}
    assert derived.topic_streams == {TOPIC}
    (consumer,) = derived.consumers
    assert (consumer.stream_name, consumer.durable_name) == ("sns_orders", "snsq2nats-to-sns")
    # Any token shape: a re-plan promoting an attribute leaves the relay's selection alone.
    assert consumer.filter_subjects == ["sns.orders", "sns.orders.>"]


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
