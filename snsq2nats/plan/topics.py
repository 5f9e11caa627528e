"""SNS topics → a subject namespace, captured by a `limits` stream when something needs one.

`name_topic` runs before the subscriptions are wired: it claims the topic's subject and
chooses the attributes promoted into subject tokens (the ones that let most of its sqs
subscriptions' filter policies compile to subject filters). Whether the topic gets a stream is
known only once the routes are derived (an archive policy, a delivering sqs subscription, or a
bridge relay needs one), so its stream and its verdicts are built after that, in one go.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from snsq2nats import filterpolicy
from snsq2nats.errors import FilterPolicyError
from snsq2nats.inventory import Subscription, Topic
from snsq2nats.jetstream.spec import NS, StreamSpec
from snsq2nats.plan.access import analyse
from snsq2nats.plan.context import Context
from snsq2nats.plan.fidelity import encryption, entry, resource_policy, tags
from snsq2nats.plan.metadata import for_source
from snsq2nats.plan.model import Fidelity, Resource
from snsq2nats.plan.names import topic_pattern, topic_subjects
from snsq2nats.plan.queues import stored_size
from snsq2nats.plan.routes import RELAY_PREFIX, Fanout, SubscriptionInfo, TopicInfo
from snsq2nats.plan.rules import Cutover, Override

SNS_MAX_MESSAGE = 262_144
SNS_DEDUP_WINDOW = 300.0
"""SNS deduplicates FIFO messages for 5 minutes (seconds)."""
DAY = 86400.0


@dataclass(frozen=True)
class TopicNames:
    topic: Topic
    override: Override
    stream: str
    subject: str
    fifo: bool
    """From the name's `.fifo` suffix, as the naming templates see it."""
    promoted: list[str]
    numbers: list[str] = field(default_factory=list)
    """Attributes a filter policy of the topic compares as numbers (`number_attributes`)."""

    @property
    def pattern(self) -> str:
        """The subjects NATS producers are told to publish to: one `*` per promoted attribute."""
        return topic_pattern(self.subject, self.promoted)

    @property
    def subjects(self) -> list[str]:
        """What the topic stream takes and its readers select (`names.topic_subjects`)."""
        return topic_subjects(self.subject)

    @property
    def template(self) -> str:
        """The publish subject as the plan shows it: `sns.orders.<event_type>`."""
        return ".".join([self.subject, *(f"<{name}>" for name in self.promoted)])

    @property
    def cutover(self) -> Cutover:
        return self.override.cutover or Cutover()

    def info(
        self,
        subscriptions: list[SubscriptionInfo],
        needs_stream: bool,
        fanout: Fanout,
        switchable: bool = False,
    ) -> TopicInfo:
        """What the routes need to know about the topic."""
        return TopicInfo(
            arn=self.topic.arn,
            name=self.topic.name,
            fifo=self.topic.fifo,
            stream=self.stream,
            subject=self.subject,
            promoted=list(self.promoted),
            cutover=self.cutover,
            needs_stream=needs_stream or self.topic.archive_policy is not None,
            fanout=fanout,
            switchable=switchable,
            subscriptions=sorted(subscriptions, key=lambda s: s.arn),
            number_attributes=list(self.numbers),
        )


def number_attributes(subscriptions: list[Subscription]) -> list[str]:
    """The attributes some delivering filter policy of the topic compares as numbers: one
    message has one type per attribute, as on SNS, whichever queue's policy reads it."""
    names: set[str] = set()
    for sub in subscriptions:
        if sub.pending_confirmation or not sub.filter_policy:
            continue
        try:
            policy = filterpolicy.parse_policy(
                sub.filter_policy, scope=sub.filter_policy_scope, source=sub.arn
            )
        except FilterPolicyError:
            continue  # SNS would reject it: it delivers nothing
        names |= filterpolicy.numeric_keys(policy)
    return sorted(names)


def name_topic(
    topic: Topic, override: Override, subscriptions: list[Subscription], ctx: Context
) -> TopicNames:
    names = ctx.names(topic, override, "topic")
    return TopicNames(
        topic=topic,
        override=override,
        stream=names.stream,
        subject=names.subject,
        fifo=names.fifo,
        promoted=_promoted(override, subscriptions, ctx.defaults.max_promoted_attributes),
        numbers=number_attributes(subscriptions),
    )


def _promoted(override: Override, subscriptions: list[Subscription], most: int) -> list[str]:
    """The mapping's `promote`, or the attributes that let most sqs filter policies compile."""
    if override.promote is not None:
        return list(override.promote)
    policies = []
    for sub in subscriptions:
        if sub.protocol != "sqs" or not sub.filter_policy:
            continue
        try:
            policies.append(
                filterpolicy.parse_policy(
                    sub.filter_policy, scope=sub.filter_policy_scope, source=sub.arn
                )
            )
        except FilterPolicyError:
            continue  # reported on the subscription itself
    return filterpolicy.choose_promoted(policies, most)


def topic_stream(names: TopicNames, ctx: Context) -> StreamSpec:
    """The topic's stream; its name is claimed here, as only now is it known to exist."""
    topic, override, defaults = names.topic, names.override, ctx.defaults
    limits = override.limits
    max_age = defaults.topic_retention
    if topic.archive_policy:
        max_age = topic.archive_policy.message_retention_days * DAY
    if limits and limits.max_age is not None:
        max_age = limits.max_age
    window = defaults.duplicate_window
    if topic.fifo:
        window = max(window, SNS_DEDUP_WINDOW)
    ctx.streams.claim(names.stream, topic.arn)
    return StreamSpec(
        name=names.stream,
        description=topic.display_name or f"SNS topic {topic.name}",
        # The `aws.` twin holds what the bridge relays from SNS: visible to topic-level
        # consumers, never selected by queue sources (those queues got it through SQS).
        subjects=[
            *names.subjects,
            *(RELAY_PREFIX + s for s in names.subjects),
            *(override.subjects or []),
        ],
        retention="limits",
        storage=override.storage or defaults.storage,
        num_replicas=override.replicas or defaults.replicas,
        max_age=int(max_age * NS),
        # SNS counts body and attributes; JetStream counts the headers they travel in.
        max_msg_size=limits.max_msg_size
        if limits and limits.max_msg_size is not None
        else stored_size(SNS_MAX_MESSAGE),
        max_bytes=limits.max_bytes if limits and limits.max_bytes is not None else -1,
        max_msgs=limits.max_msgs if limits and limits.max_msgs is not None else -1,
        duplicate_window=int(window * NS),
        placement=ctx.placement(override),
        metadata=for_source(topic.arn, topic.tags),
    )


def topic_resource(
    names: TopicNames,
    stream: StreamSpec | None,
    fanout: Fanout = "sources",
    reasons: list[str] | None = None,
    switchable: bool = False,
) -> Resource:
    topic = names.topic
    access = analyse(topic.policy, service="sns", account=topic.account)
    fidelity = [
        *_promotion(names),
        entry(
            "MessageAttributes",
            None,
            "exact",
            "message attributes travel as NATS headers named after the attribute; "
            + filterpolicy.PLAIN_HEADER_RULE,
            target="headers",
        ),
        *_fifo(names),
        *_archive(topic),
        *_delivery_policy(topic),
        *_tracing(topic),
        *_display_name(topic),
        *encryption(topic.kms_master_key_id, False),
        *resource_policy(topic.policy, access),
        tags(topic.tags),
        *_storage(stream),
        *_fanout(fanout, reasons or [], switchable),
    ]
    return Resource(
        source_arn=topic.arn,
        kind="sns-topic",
        name=topic.name,
        stream=stream.name if stream else None,
        publish_subject=names.template,
        subject_tokens=names.promoted,
        fidelity=fidelity,
        producers=names.cutover.producers,
        access=access if topic.policy else None,
    )


# --- one decision each ------------------------------------------------------------------------


FANOUT_UNTIL_FINISHED = "nats-to-sns relay until the topic is finished"
"""The Fanout target of a topic `cutover finish` switches to stream sources."""


def _fanout(fanout: Fanout, reasons: list[str], switchable: bool) -> list[Fidelity]:
    """Say when NATS-published messages must take the SNS road to the topic's queues."""
    if fanout == "sources":
        return []
    until = (
        "; once every subscribed queue's consumers and the producers are on NATS, `snsq2nats "
        "cutover finish` switches the topic to stream sources at an exact stream sequence"
        if switchable
        else ""
    )
    return [
        entry(
            "Fanout",
            "through SNS",
            "approximate",
            "while the topic has a subscriber NATS cannot serve ("
            + "; ".join(reasons)
            + "), what producers publish on NATS is relayed to SNS and reaches every subscribed "
            "queue through SQS (the bridge relays it on for queues whose consumers moved): "
            "exactly once, one AWS round trip slower than a stream source" + until,
            target=FANOUT_UNTIL_FINISHED if switchable else "nats-to-sns relay",
            manual_step="move or remove those subscriptions (or turn raw delivery on) to let "
            "NATS fan out through stream sources",
        )
    ]


def _promotion(names: TopicNames) -> list[Fidelity]:
    if not names.promoted:
        return []
    return [
        entry(
            "MessageAttributes",
            ",".join(names.promoted),
            "exact",
            "these attributes are also subject tokens, for NATS subscribers of the topic that "
            "filter on subjects; producers publish to " + names.template + " and may leave a "
            "token ~absent: queues are filtered on the headers, which decide when a token "
            "disagrees",
            target="subject tokens",
        )
    ]


def _fifo(names: TopicNames) -> list[Fidelity]:
    if not names.fifo:
        return []
    topic = names.topic
    out = [
        entry(
            "FifoTopic",
            "true",
            "approximate",
            "the topic stream keeps publish order; the dedup window covers SNS's 5 minutes; "
            "producers set Nats-Msg-Id = MessageDeduplicationId",
            target="stream duplicate_window",
            manual_step="set the Nats-Msg-Id header in producers",
        )
    ]
    if topic.content_based_deduplication:
        out.append(
            entry(
                "ContentBasedDeduplication",
                "true",
                "approximate",
                "producers set Nats-Msg-Id = sha256(body)",
                manual_step="set the Nats-Msg-Id header in producers",
            )
        )
    if topic.fifo_throughput_scope:
        out.append(
            entry(
                "FifoThroughputScope",
                topic.fifo_throughput_scope,
                "approximate",
                "throughput is bounded by the server, not a quota",
            )
        )
    return out


def _archive(topic: Topic) -> list[Fidelity]:
    if not topic.archive_policy:
        return []
    return [
        entry(
            "ArchivePolicy",
            f"{topic.archive_policy.message_retention_days} days",
            "exact",
            "the topic stream keeps messages this long; replay = a consumer with a start time",
            target="stream max_age",
        )
    ]


def _delivery_policy(topic: Topic) -> list[Fidelity]:
    if not topic.delivery_policy:
        return []
    return [
        entry(
            "DeliveryPolicy",
            topic.delivery_policy,
            "unsupported",
            "HTTP/S retry policy has no NATS counterpart",
            manual_step="configure retries in the process that calls the HTTP endpoint",
        )
    ]


def _tracing(topic: Topic) -> list[Fidelity]:
    if topic.tracing_config != "Active":
        return []
    return [
        entry(
            "TracingConfig",
            "Active",
            "unsupported",
            "X-Ray tracing is not propagated",
            manual_step="propagate trace context in a message header",
        )
    ]


def _display_name(topic: Topic) -> list[Fidelity]:
    if not topic.display_name:
        return []
    return [
        entry(
            "DisplayName",
            topic.display_name,
            "exact",
            "kept as the stream description",
            target="stream description",
        )
    ]


def _storage(stream: StreamSpec | None) -> list[Fidelity]:
    """Without a stream a topic stores nothing: say so."""
    if stream is not None:
        return []
    return [
        entry(
            "Subscriptions",
            None,
            "approximate",
            "no sqs subscription delivers from it: the topic is a subject namespace without a "
            "stream (core NATS subscribers only; nothing is stored)",
        )
    ]
