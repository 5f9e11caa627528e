"""Bridge routes from the cutover state: exactly one path from each producer side to each consumer.

During a migration producers and consumers of a queue or topic live on AWS, on NATS, or (for
producers) on both. Every message must reach every consumer once, whichever side published it,
and nothing may be relayed back where it came from. The rules (one per route kind):

1. queue consumers on NATS → `sqs-to-nats` (SQS messages that NATS published are dropped: they
   reached the queue stream through a topic stream source already);
2. queue consumers on AWS, producers on NATS → `nats-to-sqs`, relaying only the queue's own
   subjects (topic copies sourced into the queue stream reach SQS through SNS instead);
3. a mapped dead-letter queue → `dlq-mover`;
4. a topic stream with producers on AWS → `sns-to-nats` into the `aws.` relay space, which
   queue stream sources never select (the queues got their copies through SQS);
5. producers on NATS and subscribers still on AWS → `nats-to-sns` from the NATS-origin space;
6. an emulated filter policy → `filter-router` from the NATS-origin space.

Everything here is pure: plain descriptions in, routes and the bridge-owned JetStream objects
out, so every cutover combination is a table test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from snsq2nats.jetstream.spec import NS, ConsumerSpec, StreamSpec
from snsq2nats.plan.metadata import EVERY, for_route
from snsq2nats.plan.model import Route
from snsq2nats.plan.names import topic_pattern
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

    @property
    def nats_pattern(self) -> str:
        return topic_pattern(self.subject, self.promoted)

    @property
    def relay_pattern(self) -> str:
        return RELAY_PREFIX + self.nats_pattern


@dataclass
class Derived:
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


def _aws_side_subscribers(topic: TopicInfo, queues: dict[str, QueueInfo]) -> list[str]:
    """Subscriptions SNS must still serve: all but those NATS delivers to a NATS consumer."""
    out = []
    for sub in topic.subscriptions:
        if not sub.delivers:
            continue
        queue = queues.get(sub.endpoint) if sub.protocol == "sqs" else None
        nats_side = queue is not None and sub.mapped and queue.cutover.consumers == "nats"
        if not nats_side:
            out.append(sub.arn)
    return out


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
) -> Derived:
    """The routes, bridge consumers and advisory stream for one cutover state."""
    by_arn = {q.arn: q for q in queues}
    out = Derived()
    for queue in queues:
        _queue_routes(queue, by_arn, out)
    for topic in topics:
        _topic_routes(topic, by_arn, defaults, out)
    dlq_routes = [r for r in out.routes if r.kind == "dlq-mover"]
    if dlq_routes:
        out.streams.append(advisory_stream_spec(advisory_replicas))
        out.consumers.extend(advisory_consumer_spec(route, defaults) for route in dlq_routes)
    out.routes.sort(key=lambda r: (r.kind, r.name, r.source_arn))
    out.consumers.sort(key=lambda c: c.key)
    return out


def _queue_routes(queue: QueueInfo, queues: dict[str, QueueInfo], out: Derived) -> None:
    cutover = queue.cutover
    if cutover.consumers == "nats":
        out.routes.append(
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
    elif cutover.producers in ("nats", "both"):
        out.routes.append(
            Route(
                name=f"to-sqs:{queue.name}",
                kind="nats-to-sqs",
                source_arn=queue.arn,
                aws_arn=queue.arn,
                stream=queue.stream,
                consumer=queue.durable,
                subject=queue.subject,
                relay_subjects=list(queue.own_subjects),
                fifo=queue.fifo,
                partitions=queue.partitions,
            )
        )
    dlq = queues.get(queue.dlq_arn) if queue.dlq_arn else None
    if dlq is not None:
        out.routes.append(
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
    producers = topic.cutover.producers
    needs_stream = topic.needs_stream
    if producers in ("nats", "both") and _aws_side_subscribers(topic, queues):
        needs_stream = True
        to_sns = Route(
            name=f"to-sns:{topic.name}",
            kind="nats-to-sns",
            source_arn=topic.arn,
            aws_arn=topic.arn,
            stream=topic.stream,
            consumer=TO_SNS_CONSUMER,
            subject=topic.subject,
            subject_tokens=list(topic.promoted),
            relay_subjects=[topic.nats_pattern],
            fifo=topic.fifo,
        )
        out.routes.append(to_sns)
        out.consumers.append(
            _route_consumer(
                to_sns, f"bridge: NATS-published messages of {topic.name} to SNS", defaults
            )
        )
    for sub in topic.subscriptions:
        queue = queues.get(sub.endpoint)
        if not (sub.emulated and sub.delivers and queue is not None):
            continue
        if queue.cutover.consumers != "nats":
            continue  # SNS applies the policy itself while the queue's consumers are on AWS
        needs_stream = True
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
            relay_subjects=[topic.nats_pattern],
            raw_delivery=sub.raw_delivery,
            fifo=queue.fifo,
        )
        out.routes.append(router)
        out.consumers.append(
            _route_consumer(
                router,
                f"bridge: filter policy of {topic.name} → {queue.name}",
                defaults,
                # Created when the queue's consumers move to NATS: what the topic held before
                # went to the SQS queue through SNS, so the router starts at new messages.
                deliver_policy="new",
            )
        )
    if not needs_stream:
        return
    out.topic_streams.add(topic.arn)
    if producers in ("aws", "both"):
        out.routes.append(
            Route(
                name=f"sns:{topic.name}",
                kind="sns-to-nats",
                source_arn=topic.arn,
                aws_arn=topic.arn,
                stream=topic.stream,
                subject=relay_subject(topic.subject),
                subject_tokens=list(topic.promoted),
                relay_subjects=[topic.relay_pattern],
                fifo=topic.fifo,
                bridge_queue=bridge_queue_name(topic.name, topic.fifo),
            )
        )
