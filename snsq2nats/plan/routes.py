"""Bridge routes: every path a message may need during a migration, and which run in a state.

During a migration producers and consumers of a queue or topic live on AWS, on NATS, or (for
producers) on both. Every message must reach every consumer once, whichever side published it
and wherever the consumer's workers run — including both sides at once while a team moves.

The design that makes a move exact without a synchronised switch: **one copy per message per
queue, fixed when the plan is applied, and the bridge competes for it.** The JetStream objects
(sources, bridge consumers) do not depend on the cutover state; a move only starts and stops
relays, and a relay joins the workers on the side the copy waits on as one more competing
consumer (the SQS queue's receivers, or the queue's own durable), so each copy is taken once
by whoever gets it first — the old workers, or the bridge carrying it to the new side.

Candidate routes (one per possible path) and when each runs (`route_active`):

1. `sqs-to-nats` (queue consumers on NATS): the SQS queue relayed into the queue stream;
2. `nats-to-sqs` (queue consumers on AWS, and something on NATS may feed the stream): the queue's
   durable relayed to SQS, topic copies included;
3. `dlq-mover`: always, for a mapped dead-letter queue;
4. `sns-to-nats` (topic producers on AWS, or still draining): into the `aws.` relay space of the
   topic stream, for NATS-native topic subscribers; no queue source selects that space;
5. `nats-to-sns` (producers on NATS, topic fanning out through SNS — see `subscriptions`);
6. `filter-router` (producers on NATS, topic fanning out through sources): an emulated filter.

Everything here is pure: plain descriptions in, routes and the bridge-owned JetStream objects
out, so every cutover combination is a table test.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Literal

from snsq2nats.jetstream.spec import NS, ConsumerSpec, StreamSpec
from snsq2nats.plan.metadata import EVERY, for_route
from snsq2nats.plan.model import Route
from snsq2nats.plan.names import topic_subjects
from snsq2nats.plan.rules import Cutover, Defaults

RELAY_PREFIX = "aws."
"""Messages the bridge brought from SNS live under `aws.<topic subject>…` in the topic stream."""
ADVISORY_STREAM = "snsq2nats_advisories"
ADVISORY_ROUTES = "dlq:*"
"""The advisory stream's `snsq2nats.route`: every dlq-mover route (`dlq:<queue>`) reads it."""
MAX_DELIVERIES_ADVISORY = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES"
TO_SNS_CONSUMER = "snsq2nats-to-sns"
FILTER_CONSUMER_PREFIX = "snsq2nats-filter-"
DLQ_CONSUMER_PREFIX = "snsq2nats-dlq-"
BRIDGE_QUEUE_PREFIX = "snsq2nats-bridge-"
ADVISORY_MAX_AGE = 7 * 86400


Fanout = Literal["sources", "sns"]
"""How NATS-published topic messages reach the topic's queues (`subscriptions.fanout_of`)."""


@dataclass(frozen=True)
class QueueInfo:
    arn: str
    name: str
    fifo: bool
    stream: str
    durable: str
    subject: str
    """Where producers publish: `sqs.orders`, or the FIFO base `sqsfifo.jobs` (+ group token)."""
    own_subjects: list[str]
    """The queue stream's own subjects (not schedule holders, not sourced topic subjects)."""
    cutover: Cutover
    dlq_arn: str | None = None
    partitions: int = 1
    """A partitioned FIFO queue: `durable` is the base of its per-partition durables."""


@dataclass(frozen=True)
class SubscriptionInfo:
    arn: str
    protocol: str
    endpoint: str
    delivers: bool = True
    """False when SNS delivers nothing (pending confirmation, an invalid filter policy)."""
    mapped: bool = False
    """True when NATS delivers it too (a stream source or an emulated filter)."""
    emulated: bool = False
    filter_policy: str | None = None
    filter_policy_scope: str = "MessageAttributes"
    raw_delivery: bool = False


@dataclass(frozen=True)
class TopicInfo:
    arn: str
    name: str
    fifo: bool
    stream: str
    subject: str
    promoted: list[str]
    cutover: Cutover
    needs_stream: bool
    """True when the mapping already gives the topic a stream (sources, archive policy)."""
    subscriptions: list[SubscriptionInfo] = field(default_factory=list)
    fanout: Fanout = "sources"
    switchable: bool = False
    """Fanning out through SNS only for envelope readers: `cutover finish` switches it to
    sources (and starts its filter routers) at an exact sequence."""
    number_attributes: list[str] = field(default_factory=list)
    """Attributes a filter policy of the topic compares as numbers (`Route.number_attributes`)."""

    @property
    def nats_subjects(self) -> list[str]:
        """The topic's NATS-origin space (`names.topic_subjects`)."""
        return topic_subjects(self.subject)

    @property
    def relay_subjects(self) -> list[str]:
        """The `aws.` space: what the bridge relayed from SNS."""
        return [RELAY_PREFIX + s for s in self.nats_subjects]


@dataclass(frozen=True)
class CutoverView:
    """The cutover state routes run under: each resource's sides, by ARN, and which resources
    were ever moved by `snsq2nats cutover` (their streams may hold a backlog to drain)."""

    states: Mapping[str, Cutover] = field(default_factory=dict)
    moved: Collection[str] = frozenset()

    def of(self, arn: str) -> Cutover:
        return self.states.get(arn) or Cutover()

    def nats_fed(self, arn: str) -> bool:
        """Something on NATS may publish into the resource, or its stream may hold a backlog."""
        return self.of(arn).producers != "aws" or arn in self.moved


def route_active(route: Route, view: CutoverView) -> bool:
    """Whether the bridge runs `route` in the cutover state `view` (see the module docstring)."""
    if route.kind == "sqs-to-nats":
        state = view.of(route.source_arn)
        return state.consumers == "nats" and not state.finished
    if route.kind == "nats-to-sqs":
        if view.of(route.source_arn).consumers != "aws":
            return False
        return any(view.nats_fed(arn) for arn in [route.source_arn, *route.feeds])
    if route.kind == "dlq-mover":
        return True
    topic = view.of(route.aws_arn)
    if route.kind == "sns-to-nats":
        return not topic.finished and (topic.producers != "nats" or route.aws_arn in view.moved)
    if route.kind == "filter-router":
        if route.at_finish and not topic.finished:
            # Its topic fans out through SNS until `finish` switches it (cutover.switch).
            return False
        # It carries NATS producers' messages into the queue for good: finishing the topic
        # retires only the paths through AWS.
        return view.nats_fed(route.aws_arn)
    # nats-to-sns: NATS producers, or a backlog left by ones that moved back.
    return not topic.finished and view.nats_fed(route.aws_arn)


def active_routes(candidates: list[Route], view: CutoverView) -> list[Route]:
    return [route for route in candidates if route_active(route, view)]


@dataclass
class Derived:
    candidates: list[Route] = field(default_factory=list)
    """Every route some cutover state runs; `routes` are those the given state runs."""
    routes: list[Route] = field(default_factory=list)
    streams: list[StreamSpec] = field(default_factory=list)
    consumers: list[ConsumerSpec] = field(default_factory=list)
    topic_streams: set[str] = field(default_factory=set)
    """ARNs of topics that need a stream, including those only rule 5 needs."""


def advisory_stream_spec(replicas: int = 1) -> StreamSpec:
    """MAX_DELIVERIES advisories of every stream, kept so none is lost while the bridge is down."""
    return StreamSpec(
        name=ADVISORY_STREAM,
        description="MAX_DELIVERIES advisories kept for the bridge's DLQ mover",
        subjects=[f"{MAX_DELIVERIES_ADVISORY}.>"],
        retention="limits",
        storage="file",
        num_replicas=replicas,
        max_age=ADVISORY_MAX_AGE * NS,
        metadata=for_route(ADVISORY_ROUTES, EVERY),
    )


def advisory_consumer_spec(route: Route, defaults: Defaults | None = None) -> ConsumerSpec:
    """A dlq-mover route's durable on the advisory stream, filtered to its queue's consumer."""
    assert route.advisory_consumer is not None
    return _bridge_consumer(
        ADVISORY_STREAM,
        route.advisory_consumer,
        serves=route.source_arn,
        route=route.name,
        description=f"DLQ mover of {route.stream}/{route.consumer}",
        filters=[f"{MAX_DELIVERIES_ADVISORY}.{route.stream}.{d}" for d in route.durables],
        defaults=defaults or Defaults(),
    )


def relay_subject(topic_subject: str) -> str:
    return RELAY_PREFIX + topic_subject


def bridge_queue_name(topic_name: str, fifo: bool) -> str:
    """The SQS queue the bridge owns for a topic; SQS names stop at 80 characters."""
    base = topic_name[: -len(".fifo")] if fifo and topic_name.endswith(".fifo") else topic_name
    suffix = ".fifo" if fifo else ""
    return (BRIDGE_QUEUE_PREFIX + base)[: 80 - len(suffix)] + suffix


def _bridge_consumer(
    stream: str,
    durable: str,
    *,
    serves: str,
    route: str,
    description: str,
    filters: list[str],
    defaults: Defaults,
    ordered: bool = False,
    deliver_policy: Literal["all", "new"] = "all",
) -> ConsumerSpec:
    return ConsumerSpec(
        stream_name=stream,
        durable_name=durable,
        description=description,
        deliver_policy=deliver_policy,
        ack_wait=30 * NS,
        max_deliver=-1,
        # A FIFO relay keeps publish order only with one message outstanding at a time.
        max_ack_pending=defaults.fifo_max_ack_pending if ordered else defaults.max_ack_pending,
        filter_subjects=filters,
        # Bridge-owned: never `snsq2nats.source`, which marks the queue's own worker consumer.
        metadata=for_route(route, serves),
    )


def _route_consumer(
    route: Route,
    description: str,
    defaults: Defaults,
    deliver_policy: Literal["all", "new"] = "all",
) -> ConsumerSpec:
    """The durable a relay route reads its stream through: named and filtered by the route."""
    assert route.stream is not None and route.consumer is not None
    return _bridge_consumer(
        route.stream,
        route.consumer,
        serves=route.source_arn,
        route=route.name,
        description=description,
        filters=list(route.relay_subjects),
        defaults=defaults,
        ordered=route.fifo,
        deliver_policy=deliver_policy,
    )


def derive(
    queues: list[QueueInfo],
    topics: list[TopicInfo],
    defaults: Defaults,
    *,
    advisory_replicas: int = 1,
    moved: Collection[str] = frozenset(),
) -> Derived:
    """Every candidate route with its bridge consumers and the advisory stream, and the routes
    the cutover state the queues and topics carry runs (`moved`: see `CutoverView`)."""
    by_arn = {q.arn: q for q in queues}
    feeds = _nats_feeds(topics, by_arn)
    out = Derived()
    for queue in queues:
        _queue_routes(queue, by_arn, feeds.get(queue.arn, []), out)
    for topic in topics:
        _topic_routes(topic, by_arn, defaults, out)
    dlq_routes = [r for r in out.candidates if r.kind == "dlq-mover"]
    if dlq_routes:
        out.streams.append(advisory_stream_spec(advisory_replicas))
        out.consumers.extend(advisory_consumer_spec(route, defaults) for route in dlq_routes)
    out.candidates.sort(key=lambda r: (r.kind, r.name, r.source_arn))
    out.consumers.sort(key=lambda c: c.key)
    states = {q.arn: q.cutover for q in queues} | {t.arn: t.cutover for t in topics}
    out.routes = active_routes(out.candidates, CutoverView(states, frozenset(moved)))
    return out


def _nats_feeds(topics: list[TopicInfo], queues: dict[str, QueueInfo]) -> dict[str, list[str]]:
    """For each queue, the topics whose NATS-published messages reach its stream directly
    (a source or a filter router): the bridge relays those to SQS while its consumers are on
    AWS."""
    feeds: dict[str, list[str]] = {}
    for topic in topics:
        if topic.fanout != "sources":
            continue
        for sub in topic.subscriptions:
            if sub.delivers and sub.mapped and sub.endpoint in queues:
                feeds.setdefault(sub.endpoint, []).append(topic.arn)
    return feeds


def _queue_routes(
    queue: QueueInfo, queues: dict[str, QueueInfo], feeds: list[str], out: Derived
) -> None:
    out.candidates.append(
        Route(
            name=f"sqs:{queue.name}",
            kind="sqs-to-nats",
            source_arn=queue.arn,
            aws_arn=queue.arn,
            stream=queue.stream,
            subject=queue.subject,
            fifo=queue.fifo,
        )
    )
    out.candidates.append(
        Route(
            name=f"to-sqs:{queue.name}",
            kind="nats-to-sqs",
            source_arn=queue.arn,
            aws_arn=queue.arn,
            stream=queue.stream,
            consumer=queue.durable,
            subject=queue.subject,
            fifo=queue.fifo,
            feeds=sorted(set(feeds)),
            partitions=queue.partitions,
        )
    )
    dlq = queues.get(queue.dlq_arn) if queue.dlq_arn else None
    if dlq is not None:
        out.candidates.append(
            Route(
                name=f"dlq:{queue.name}",
                kind="dlq-mover",
                source_arn=queue.arn,
                aws_arn=dlq.arn,
                stream=queue.stream,
                consumer=queue.durable,
                target_stream=dlq.stream,
                subject=dlq.subject,
                fifo=queue.fifo,
                advisory_stream=ADVISORY_STREAM,
                advisory_consumer=DLQ_CONSUMER_PREFIX + queue.stream,
                partitions=queue.partitions,
            )
        )


def _topic_routes(
    topic: TopicInfo, queues: dict[str, QueueInfo], defaults: Defaults, out: Derived
) -> None:
    delivering = [sub for sub in topic.subscriptions if sub.delivers]
    relay_to_sns = topic.fanout == "sns" and bool(delivering)
    if relay_to_sns:
        to_sns = Route(
            name=f"to-sns:{topic.name}",
            kind="nats-to-sns",
            source_arn=topic.arn,
            aws_arn=topic.arn,
            stream=topic.stream,
            consumer=TO_SNS_CONSUMER,
            subject=topic.subject,
            subject_tokens=list(topic.promoted),
            relay_subjects=topic.nats_subjects,
            fifo=topic.fifo,
            number_attributes=list(topic.number_attributes),
        )
        out.candidates.append(to_sns)
        out.consumers.append(
            _route_consumer(
                to_sns,
                f"bridge: NATS-published messages of {topic.name} to SNS",
                defaults,
                # Created with the plan, before any producer publishes on NATS: "new" is
                # anchored at creation by apply, so nothing is missed and nothing replayed.
                deliver_policy="new",
            )
        )
    # A topic fanning out through SNS until finished gets its routers now, idle until then: a
    # running bridge must know them when `finish` switches the topic.
    routed = topic.fanout == "sources" or topic.switchable
    for sub in delivering if routed else []:
        queue = queues.get(sub.endpoint)
        if not (sub.emulated and queue is not None):
            continue
        router = Route(
            name=f"filter:{topic.name}->{queue.name}",
            kind="filter-router",
            source_arn=sub.arn,
            aws_arn=topic.arn,
            stream=topic.stream,
            consumer=FILTER_CONSUMER_PREFIX + queue.durable,
            subject=queue.subject,
            target_stream=queue.stream,
            filter_policy=sub.filter_policy,
            filter_policy_scope=sub.filter_policy_scope,
            subject_tokens=list(topic.promoted),
            relay_subjects=topic.nats_subjects,
            raw_delivery=sub.raw_delivery,
            fifo=queue.fifo,
            at_finish=topic.fanout != "sources",
            number_attributes=list(topic.number_attributes),
        )
        out.candidates.append(router)
        out.consumers.append(
            _route_consumer(
                router,
                f"bridge: filter policy of {topic.name} → {queue.name}",
                defaults,
                # Like a new SNS subscription: messages published from its creation on.
                deliver_policy="new",
            )
        )
    if relay_to_sns or topic.needs_stream:
        out.topic_streams.add(topic.arn)
    if not topic.needs_stream:
        return  # no queue reads the topic: nothing on NATS wants what AWS producers publish
    out.candidates.append(
        Route(
            name=f"sns:{topic.name}",
            kind="sns-to-nats",
            source_arn=topic.arn,
            aws_arn=topic.arn,
            stream=topic.stream,
            subject=relay_subject(topic.subject),
            subject_tokens=list(topic.promoted),
            relay_subjects=topic.relay_subjects,
            fifo=topic.fifo,
            bridge_queue=bridge_queue_name(topic.name, topic.fifo),
        )
    )
