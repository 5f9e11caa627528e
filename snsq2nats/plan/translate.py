"""Translate an inventory into JetStream: the semantic table of DESIGN.md as one pure function.

Fan-out uses **stream sources**: each SQS queue keeps its own work-queue stream and exactly one
durable pull consumer, and every sqs subscription becomes a source from the topic's stream into
the queue's stream, filtered by the compiled filter subjects. That mirrors SNS → SQS closely:
the queue stays its own buffer with its own retention and limits, messages sent straight to the
queue and messages fanned out by a topic meet in one consumer, and a queue subscribed to several
topics simply has several sources. (Consumers on the topic stream were the alternative; they
would give a queue one consumer per topic, so its workers could not bind to one durable.)

Every attribute gets a fidelity verdict; nothing is dropped silently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal

from snsq2nats import filterpolicy
from snsq2nats.errors import FilterPolicyError
from snsq2nats.inventory import Inventory, Queue, Subscription, Topic
from snsq2nats.jetstream.spec import (
    NS,
    SOURCE_KEY,
    ConsumerSpec,
    Placement,
    StreamSource,
    StreamSpec,
    SubjectTransform,
    version_tuple,
)
from snsq2nats.plan.model import Desired, Fidelity, Resource, Verdict
from snsq2nats.plan.names import (
    SCHEDULE_TOKEN,
    NameRegistry,
    base_name,
    check_name,
    check_subject,
    render,
)
from snsq2nats.plan.routes import RELAY_PREFIX, QueueInfo, SubscriptionInfo, TopicInfo, derive
from snsq2nats.plan.rules import Cutover, Override, Rules

MAX_PAYLOAD_DEFAULT = 1_048_576
SNS_MAX_MESSAGE = 262_144


def _fid(
    attribute: str,
    value: object,
    verdict: Verdict,
    note: str,
    *,
    target: str | None = None,
    manual_step: str | None = None,
) -> Fidelity:
    shown = None if value is None else (value if isinstance(value, str) else json.dumps(value))
    return Fidelity(
        attribute=attribute,
        value=shown,
        verdict=verdict,
        target=target,
        note=note,
        manual_step=manual_step,
    )


@dataclass
class _QueuePlan:
    queue: Queue
    override: Override
    stream: StreamSpec
    consumer: ConsumerSpec
    subject: str
    fidelity: list[Fidelity]
    sources: list[StreamSource] = field(default_factory=list)
    source_subjects: list[str] = field(default_factory=list)
    fed_by_topic: bool = False
    """A topic delivers into it through a stream source now or once its consumers move."""


@dataclass
class _TopicPlan:
    topic: Topic
    override: Override
    stream_name: str
    subject: str
    promoted: list[str]
    fidelity: list[Fidelity]
    needs_stream: bool = False


class Translator:
    def __init__(self, inventory: Inventory, rules: Rules, server_version: str | None) -> None:
        self.inventory = inventory
        self.rules = rules
        self.server_version = server_version
        self.streams = NameRegistry("stream")
        self.subjects = NameRegistry("subject")
        self.queues: dict[str, _QueuePlan] = {}
        self.topics: dict[str, _TopicPlan] = {}
        self.subscription_infos: dict[str, list[SubscriptionInfo]] = {}
        self.resources: list[Resource] = []
        self.topic_retention: dict[str, float] = {}

    # -- helpers --------------------------------------------------------------------------

    def _names(
        self, resource: Queue | Topic, override: Override, kind: Literal["queue", "topic"]
    ) -> tuple[str, str, str, bool]:
        """(stream name, subject base, name without .fifo, fifo) for a queue or topic.

        The subject is claimed here (two sources never share one); the stream name is claimed
        by the caller when the stream is really created (a topic may need none).
        """
        naming = self.rules.naming
        base, fifo = base_name(resource.name)
        fill = {"name": base, "region": resource.region, "account": resource.account}
        stream_key = f"{'fifo_' if fifo else ''}{kind}_stream"
        subject_key = f"{'fifo_' if fifo else ''}{kind}_subject"
        stream = render(getattr(naming, stream_key), where=f"naming.{stream_key}", **fill)
        stream = check_name(override.rename or stream, what="stream", source=resource.arn)
        subject = render(getattr(naming, subject_key), where=f"naming.{subject_key}", **fill)
        check_subject(subject, source=resource.arn)
        self.subjects.claim(subject, resource.arn)
        return stream, subject, base, fifo

    def _schedules_supported(self) -> bool | None:
        parsed = version_tuple(self.server_version)
        return None if parsed is None else parsed[:2] >= (2, 12)

    def _placement(self, override: Override) -> Placement | None:
        chosen = override.placement or self.rules.defaults.placement
        if chosen is None:
            return None
        return Placement(cluster=chosen.cluster, tags=chosen.tags)

    # -- queues ---------------------------------------------------------------------------

    def queue(self, queue: Queue) -> None:
        override = self.rules.resolve(queue.name, queue.arn)
        if override.exclude:
            return
        naming = self.rules.naming
        defaults = self.rules.defaults
        stream_name, subject_base, base, fifo = self._names(queue, override, "queue")
        self.streams.claim(stream_name, queue.arn)
        consumer_name = check_name(
            render(
                naming.queue_consumer,
                name=base,
                region=queue.region,
                account=queue.account,
                where="naming.queue_consumer",
            ),
            what="consumer",
            source=queue.arn,
        )
        publish_subject = f"{subject_base}.*" if fifo else subject_base
        subjects = [publish_subject, *(override.subjects or [])]
        fidelity: list[Fidelity] = []
        limits = override.limits

        max_age = int(queue.message_retention_period * NS)
        if limits and limits.max_age is not None:
            max_age = int(limits.max_age * NS)
            fidelity.append(
                _fid(
                    "MessageRetentionPeriod",
                    str(queue.message_retention_period),
                    "approximate",
                    f"overridden: stream max_age {limits.max_age:g}s instead of the queue's "
                    f"{queue.message_retention_period}s",
                    target="stream max_age",
                )
            )
        else:
            fidelity.append(
                _fid(
                    "MessageRetentionPeriod",
                    str(queue.message_retention_period),
                    "exact",
                    "messages older than the retention period are discarded, as in SQS",
                    target="stream max_age",
                )
            )
        max_msg_size = queue.maximum_message_size
        if limits and limits.max_msg_size is not None:
            max_msg_size = limits.max_msg_size
        size_note = "larger messages are rejected at publish, as SQS rejects them"
        fidelity.append(
            _fid(
                "MaximumMessageSize",
                str(queue.maximum_message_size),
                "exact" if max_msg_size <= MAX_PAYLOAD_DEFAULT else "approximate",
                size_note
                if max_msg_size <= MAX_PAYLOAD_DEFAULT
                else "above nats-server's default max_payload (1 MiB): raise max_payload",
                target="stream max_msg_size",
            )
        )

        allow_schedules: bool | None = None
        if queue.delay_seconds:
            supported = self._schedules_supported()
            if supported is False:
                fidelity.append(
                    _fid(
                        "DelaySeconds",
                        str(queue.delay_seconds),
                        "unsupported",
                        f"nats-server {self.server_version} has no message schedules (2.12+)",
                        manual_step="upgrade nats-server to 2.12 or later, or delay in the "
                        "consumer (NAK with delay on first delivery)",
                    )
                )
            else:
                allow_schedules = True
                subjects.append(f"{subject_base}.{SCHEDULE_TOKEN}.*")
                target = f"{subject_base}.<MessageGroupId>" if fifo else publish_subject
                fidelity.append(
                    _fid(
                        "DelaySeconds",
                        str(queue.delay_seconds),
                        "approximate",
                        f"SQS delays every message by itself; on NATS the producer must publish "
                        f"to {subject_base}.{SCHEDULE_TOKEN}.<id> with headers 'Nats-Schedule: "
                        f"@at <now+{queue.delay_seconds}s>' and 'Nats-Schedule-Target: "
                        f"{target}' (needs nats-server 2.12+); the bridge does this "
                        "for relayed messages",
                        target="stream allow_msg_schedules",
                        manual_step="change producers to publish delayed messages as schedules",
                    )
                )
        else:
            fidelity.append(
                _fid("DelaySeconds", "0", "exact", "no delay", target="immediate delivery")
            )

        visibility = queue.visibility_timeout
        ack_wait = max(float(visibility), defaults.min_ack_wait)
        fidelity.append(
            _fid(
                "VisibilityTimeout",
                str(visibility),
                "exact" if visibility >= defaults.min_ack_wait else "approximate",
                "an unacked message is redelivered after ack_wait; ChangeMessageVisibility "
                "becomes +WPI (reset to the full ack_wait) or NAK with a delay"
                if visibility >= defaults.min_ack_wait
                else f"JetStream needs a positive ack_wait: {ack_wait:g}s instead of 0",
                target="consumer ack_wait",
            )
        )
        fidelity.append(
            _fid(
                "ReceiveMessageWaitTimeSeconds",
                str(queue.receive_message_wait_time_seconds),
                "approximate",
                "long polling is a client setting on NATS: fetch(batch, timeout) waits up to "
                "its timeout",
                target="client fetch timeout",
            )
        )

        max_deliver = -1
        if queue.redrive_policy:
            max_deliver = queue.redrive_policy.max_receive_count
            fidelity.append(
                _fid(
                    "RedrivePolicy.maxReceiveCount",
                    str(max_deliver),
                    "exact",
                    "after this many deliveries the message is no longer redelivered",
                    target="consumer max_deliver",
                )
            )
            dlq = queue.redrive_policy.dead_letter_target_arn
            fidelity.append(
                _fid(
                    "RedrivePolicy.deadLetterTargetArn",
                    dlq,
                    "emulated",
                    "JetStream has no dead-letter queue: the bridge's DLQ mover moves a message "
                    "to the dead-letter queue's stream on the MAX_DELIVERIES advisory, with "
                    "headers naming where it came from",
                    target="bridge dlq-mover",
                )
            )
        else:
            fidelity.append(
                _fid(
                    "RedrivePolicy",
                    None,
                    "exact",
                    "no dead-letter queue: unlimited redeliveries, as in SQS",
                    target="consumer max_deliver -1",
                )
            )
        if queue.redrive_allow_policy:
            fidelity.append(
                _fid(
                    "RedriveAllowPolicy",
                    queue.redrive_allow_policy.redrive_permission,
                    "approximate",
                    "which queues may use this one as a DLQ is decided by the mapping, not "
                    "enforced by NATS",
                )
            )

        max_ack_pending = defaults.max_ack_pending
        duplicate_window = int(defaults.duplicate_window * NS)
        if fifo:
            max_ack_pending = defaults.fifo_max_ack_pending
            duplicate_window = max(duplicate_window, 300 * NS)
        if max_age:
            # JetStream refuses a duplicate window longer than max_age.
            duplicate_window = min(duplicate_window, max_age)
        if fifo:
            fidelity.append(
                _fid(
                    "FifoQueue",
                    "true",
                    "approximate",
                    f"the MessageGroupId is the last subject token ({subject_base}.<group>); "
                    f"the stream keeps publish order and the consumer allows "
                    f"{max_ack_pending} unacked message(s): with 1 the order is strict across "
                    "all groups (stronger than SQS, less parallel); above 1 order per group is "
                    "not guaranteed",
                    target="subject token + consumer max_ack_pending",
                )
            )
            fidelity.append(
                _fid(
                    "ContentBasedDeduplication",
                    str(queue.content_based_deduplication).lower(),
                    "approximate",
                    f"dedup window {duplicate_window // NS}s on Nats-Msg-Id; producers set "
                    "Nats-Msg-Id = MessageDeduplicationId"
                    + (" or sha256(body)" if queue.content_based_deduplication else "")
                    + (
                        " (shorter than SQS's 5 minutes because the retention is)"
                        if duplicate_window < 300 * NS
                        else ""
                    ),
                    target="stream duplicate_window",
                    manual_step="set the Nats-Msg-Id header in producers",
                )
            )
            if queue.deduplication_scope == "queue":
                fidelity.append(
                    _fid(
                        "DeduplicationScope",
                        "queue",
                        "exact",
                        "JetStream deduplicates per stream, which is per queue",
                        target="stream duplicate_window",
                    )
                )
            elif queue.deduplication_scope == "messageGroup":
                fidelity.append(
                    _fid(
                        "DeduplicationScope",
                        "messageGroup",
                        "approximate",
                        "JetStream deduplicates per stream: prefix Nats-Msg-Id with the group "
                        "id to keep per-group scope",
                        manual_step="prefix Nats-Msg-Id with the MessageGroupId",
                    )
                )
            if queue.fifo_throughput_limit:
                fidelity.append(
                    _fid(
                        "FifoThroughputLimit",
                        queue.fifo_throughput_limit,
                        "approximate",
                        "throughput is bounded by the server, not a quota",
                    )
                )
        _encryption(fidelity, queue.kms_master_key_id, queue.sqs_managed_sse_enabled)
        if queue.kms_master_key_id and queue.kms_data_key_reuse_period_seconds is not None:
            fidelity.append(
                _fid(
                    "KmsDataKeyReusePeriodSeconds",
                    str(queue.kms_data_key_reuse_period_seconds),
                    "unsupported",
                    "data-key reuse is a KMS setting; JetStream encryption uses the server's key",
                    manual_step="enable JetStream encryption at rest on every server",
                )
            )
        _policy(fidelity, queue.policy)
        metadata = {SOURCE_KEY: queue.arn}
        metadata.update({f"aws.tag.{k}": v for k, v in sorted(queue.tags.items())})
        fidelity.append(
            _fid(
                "Tags",
                queue.tags or None,
                "exact",
                "kept as stream metadata aws.tag.<key>",
                target="stream metadata",
            )
        )

        stream = StreamSpec(
            name=stream_name,
            description=f"SQS queue {queue.name}",
            subjects=subjects,
            retention="workqueue",
            storage=override.storage or defaults.storage,
            num_replicas=override.replicas or defaults.replicas,
            max_age=max_age,
            max_msg_size=max_msg_size,
            max_bytes=limits.max_bytes if limits and limits.max_bytes is not None else -1,
            max_msgs=limits.max_msgs if limits and limits.max_msgs is not None else -1,
            duplicate_window=duplicate_window,
            allow_msg_schedules=allow_schedules,
            # The server requires roll-ups for schedules (a one-shot schedule purges itself).
            allow_rollup_hdrs=allow_schedules,
            placement=self._placement(override),
            metadata=metadata,
        )
        consumer = ConsumerSpec(
            stream_name=stream_name,
            durable_name=consumer_name,
            description=f"workers of SQS queue {queue.name}",
            ack_wait=int(ack_wait * NS),
            max_deliver=max_deliver,
            max_ack_pending=max_ack_pending,
            metadata={SOURCE_KEY: queue.arn},
        )
        self.queues[queue.arn] = _QueuePlan(
            queue=queue,
            override=override,
            stream=stream,
            consumer=consumer,
            subject=publish_subject if not fifo else f"{subject_base}.<MessageGroupId>",
            fidelity=fidelity,
        )

    # -- topics ---------------------------------------------------------------------------

    def topic(self, topic: Topic, subscriptions: list[Subscription]) -> None:
        override = self.rules.resolve(topic.name, topic.arn)
        if override.exclude:
            return
        stream_name, subject, _, fifo = self._names(topic, override, "topic")
        if override.promote is not None:
            promoted = list(override.promote)
        else:
            policies = []
            for sub in subscriptions:
                if sub.protocol == "sqs" and sub.filter_policy:
                    try:
                        policies.append(
                            filterpolicy.parse_policy(
                                sub.filter_policy, scope=sub.filter_policy_scope, source=sub.arn
                            )
                        )
                    except FilterPolicyError:
                        continue  # reported on the subscription itself
            promoted = filterpolicy.choose_promoted(
                policies, self.rules.defaults.max_promoted_attributes
            )
        fidelity: list[Fidelity] = []
        if promoted:
            fidelity.append(
                _fid(
                    "MessageAttributes",
                    ",".join(promoted),
                    "exact",
                    "these attributes are also subject tokens so subscriptions can filter on "
                    "subjects; producers publish to " + _template(subject, promoted),
                    target="subject tokens",
                )
            )
        fidelity.append(
            _fid(
                "MessageAttributes",
                None,
                "exact",
                "message attributes travel as NATS headers named after the attribute",
                target="headers",
            )
        )
        if fifo:
            fidelity.append(
                _fid(
                    "FifoTopic",
                    "true",
                    "approximate",
                    "the topic stream keeps publish order; the dedup window covers SNS's 5 "
                    "minutes; producers set Nats-Msg-Id = MessageDeduplicationId",
                    target="stream duplicate_window",
                    manual_step="set the Nats-Msg-Id header in producers",
                )
            )
            if topic.content_based_deduplication:
                fidelity.append(
                    _fid(
                        "ContentBasedDeduplication",
                        "true",
                        "approximate",
                        "producers set Nats-Msg-Id = sha256(body)",
                        manual_step="set the Nats-Msg-Id header in producers",
                    )
                )
            if topic.fifo_throughput_scope:
                fidelity.append(
                    _fid(
                        "FifoThroughputScope",
                        topic.fifo_throughput_scope,
                        "approximate",
                        "throughput is bounded by the server, not a quota",
                    )
                )
        retention = self.rules.defaults.topic_retention
        if topic.archive_policy:
            retention = topic.archive_policy.message_retention_days * 86400.0
            fidelity.append(
                _fid(
                    "ArchivePolicy",
                    f"{topic.archive_policy.message_retention_days} days",
                    "exact",
                    "the topic stream keeps messages this long; replay = a consumer with a "
                    "start time",
                    target="stream max_age",
                )
            )
        if topic.delivery_policy:
            fidelity.append(
                _fid(
                    "DeliveryPolicy",
                    topic.delivery_policy,
                    "unsupported",
                    "HTTP/S retry policy has no NATS counterpart",
                    manual_step="configure retries in the process that calls the HTTP endpoint",
                )
            )
        if topic.tracing_config == "Active":
            fidelity.append(
                _fid(
                    "TracingConfig",
                    "Active",
                    "unsupported",
                    "X-Ray tracing is not propagated",
                    manual_step="propagate trace context in a message header",
                )
            )
        if topic.display_name:
            fidelity.append(
                _fid(
                    "DisplayName",
                    topic.display_name,
                    "exact",
                    "kept as the stream description",
                    target="stream description",
                )
            )
        _encryption(fidelity, topic.kms_master_key_id, False)
        _policy(fidelity, topic.policy)
        fidelity.append(
            _fid(
                "Tags",
                topic.tags or None,
                "exact",
                "kept as stream metadata aws.tag.<key>",
                target="stream metadata",
            )
        )
        self.topics[topic.arn] = _TopicPlan(
            topic=topic,
            override=override,
            stream_name=stream_name,
            subject=subject,
            promoted=promoted,
            fidelity=fidelity,
            needs_stream=topic.archive_policy is not None,
        )
        self.topic_retention[topic.arn] = retention

    def topic_stream(self, plan: _TopicPlan) -> StreamSpec:
        topic = plan.topic
        defaults = self.rules.defaults
        pattern = ".".join([plan.subject, *("*" for _ in plan.promoted)])
        limits = plan.override.limits
        max_age = self.topic_retention[topic.arn]
        if limits and limits.max_age is not None:
            max_age = limits.max_age
        metadata = {SOURCE_KEY: topic.arn}
        metadata.update({f"aws.tag.{k}": v for k, v in sorted(topic.tags.items())})
        self.streams.claim(plan.stream_name, topic.arn)
        return StreamSpec(
            name=plan.stream_name,
            description=topic.display_name or f"SNS topic {topic.name}",
            # The `aws.` twin holds what the bridge relays from SNS: visible to topic-level
            # consumers, never selected by queue sources (those queues got it through SQS).
            subjects=[pattern, RELAY_PREFIX + pattern, *(plan.override.subjects or [])],
            retention="limits",
            storage=plan.override.storage or defaults.storage,
            num_replicas=plan.override.replicas or defaults.replicas,
            max_age=int(max_age * NS),
            max_msg_size=limits.max_msg_size
            if limits and limits.max_msg_size is not None
            else SNS_MAX_MESSAGE,
            max_bytes=limits.max_bytes if limits and limits.max_bytes is not None else -1,
            max_msgs=limits.max_msgs if limits and limits.max_msgs is not None else -1,
            duplicate_window=int(max(defaults.duplicate_window, 300) * NS)
            if topic.fifo
            else int(defaults.duplicate_window * NS),
            placement=self._placement(plan.override),
            metadata=metadata,
        )

    # -- subscriptions --------------------------------------------------------------------

    def subscription(self, sub: Subscription) -> None:
        topic_plan = self.topics.get(sub.topic_arn)
        if topic_plan is None:
            return  # topic excluded or not scanned: reported by the scan
        infos = self.subscription_infos.setdefault(sub.topic_arn, [])
        if self.rules.resolve(sub.arn, sub.arn).exclude:
            # Not migrated, so SNS keeps delivering it: the routes must know it exists.
            infos.append(
                SubscriptionInfo(
                    arn=sub.arn,
                    protocol=sub.protocol,
                    endpoint=sub.endpoint,
                    delivers=not sub.pending_confirmation,
                )
            )
            return
        if sub.protocol != "sqs" or sub.endpoint not in self.queues:
            infos.append(
                SubscriptionInfo(
                    arn=sub.arn,
                    protocol=sub.protocol,
                    endpoint=sub.endpoint,
                    delivers=not sub.pending_confirmation,
                )
            )
        fidelity: list[Fidelity] = []
        if sub.pending_confirmation:
            fidelity.append(
                _fid(
                    "PendingConfirmation",
                    "true",
                    "unsupported",
                    "the subscription was never confirmed, so SNS delivers nothing to it; "
                    "nothing is wired up in NATS either",
                    manual_step="confirm or delete it in AWS before migrating, then plan again",
                )
            )
        if sub.protocol != "sqs":
            fidelity.append(
                _fid(
                    "Protocol",
                    sub.protocol,
                    "unsupported",
                    f"NATS does not deliver to {sub.protocol} endpoints",
                    manual_step=_MANUAL_STEPS.get(sub.protocol, _MANUAL_STEPS["http"]),
                )
            )
            self.resources.append(
                Resource(
                    source_arn=sub.arn,
                    kind="sns-subscription",
                    name=f"{topic_plan.topic.name} → {sub.protocol}:{sub.endpoint}",
                    publish_subject=_template(topic_plan.subject, topic_plan.promoted),
                    fidelity=fidelity,
                )
            )
            return
        queue_plan = self.queues.get(sub.endpoint)
        if queue_plan is None:
            fidelity.append(
                _fid(
                    "Endpoint",
                    sub.endpoint,
                    "unsupported",
                    "the subscribed queue was not scanned or is excluded",
                    manual_step="scan the queue's account/region, or remove the subscription",
                )
            )
            self.resources.append(
                Resource(
                    source_arn=sub.arn,
                    kind="sns-subscription",
                    name=f"{topic_plan.topic.name} → {sub.endpoint}",
                    fidelity=fidelity,
                )
            )
            return
        filter_subjects: list[str] | None = None
        prefix = topic_plan.subject
        all_subjects = ".".join([prefix, *("*" for _ in topic_plan.promoted)])
        emulated = False
        deliver = not sub.pending_confirmation
        if sub.filter_policy:
            try:
                policy = filterpolicy.parse_policy(
                    sub.filter_policy, scope=sub.filter_policy_scope, source=sub.arn
                )
            except FilterPolicyError as err:
                fidelity.append(
                    _fid(
                        "FilterPolicy",
                        sub.filter_policy,
                        "unsupported",
                        f"SNS would reject this policy: {err.what}; nothing is delivered to the "
                        "queue rather than everything",
                        manual_step="fix the filter policy in AWS, then plan again",
                    )
                )
                policy = None
                deliver = False
            if policy is not None:
                compiled = filterpolicy.compile_to_subjects(policy, topic_plan.promoted, prefix)
                if compiled.exact:
                    filter_subjects = compiled.subjects
                    fidelity.append(
                        _fid(
                            "FilterPolicy",
                            sub.filter_policy,
                            "exact",
                            f"compiled to {len(compiled.subjects)} filter subject(s) on "
                            "promoted attributes",
                            target="source subject filters",
                        )
                    )
                else:
                    emulated = True
                    fidelity.append(
                        _fid(
                            "FilterPolicy",
                            sub.filter_policy,
                            "emulated",
                            f"cannot be a subject filter ({compiled.reason}); the bridge's "
                            "filter router evaluates it with SNS semantics",
                            target="bridge filter-router",
                        )
                    )
        else:
            fidelity.append(
                _fid("FilterPolicy", None, "exact", "no filter: every message is delivered")
            )
        if sub.raw_message_delivery:
            fidelity.append(
                _fid(
                    "RawMessageDelivery",
                    "true",
                    "exact",
                    "the message body and attributes (as headers) arrive unchanged",
                )
            )
        else:
            fidelity.append(
                _fid(
                    "RawMessageDelivery",
                    "false",
                    "approximate",
                    "SQS consumers receive the SNS JSON envelope; NATS consumers receive the "
                    "raw body with attributes as headers (the bridge builds the envelope when "
                    "relaying to SQS)",
                    manual_step="make NATS consumers read the raw body instead of the envelope",
                )
            )
        if sub.redrive_policy:
            fidelity.append(
                _fid(
                    "RedrivePolicy",
                    sub.redrive_policy.dead_letter_target_arn,
                    "approximate",
                    "delivery from topic to queue happens inside JetStream and does not fail "
                    "per message, so the subscription DLQ is not used",
                )
            )
        if sub.replay_policy:
            fidelity.append(
                _fid(
                    "ReplayPolicy",
                    sub.replay_policy,
                    "approximate",
                    "replay is a consumer on the topic stream with a start time",
                )
            )
        infos.append(
            SubscriptionInfo(
                arn=sub.arn,
                protocol=sub.protocol,
                endpoint=sub.endpoint,
                delivers=deliver,
                mapped=deliver,
                emulated=emulated,
                filter_policy=sub.filter_policy,
                filter_policy_scope=sub.filter_policy_scope,
                raw_delivery=sub.raw_message_delivery,
            )
        )
        cutover = queue_plan.override.cutover
        consumers_on_nats = cutover is not None and cutover.consumers == "nats"
        if deliver:
            fidelity.append(
                _fid(
                    "Cutover",
                    "consumers on NATS" if consumers_on_nats else "consumers on AWS",
                    "exact",
                    "NATS delivers topic messages into the queue stream"
                    if consumers_on_nats
                    else "SNS delivers into the SQS queue, also what NATS producers publish "
                    "(through the bridge); the stream source is added when the queue's "
                    "consumers move to NATS, so no message reaches both sides",
                    target="stream source" if consumers_on_nats else "SNS subscription",
                )
            )
        if not deliver:
            pass
        elif emulated:
            # The filter router (routes.py) carries it: no stream source.
            topic_plan.needs_stream = True
        elif not consumers_on_nats:
            # A source now would pile up copies that the AWS consumers also get, and NATS
            # workers would process them again at cutover.
            topic_plan.needs_stream = True
            queue_plan.fed_by_topic = True
        else:
            queue_plan.fed_by_topic = True
            topic_plan.needs_stream = True
            filters = filter_subjects or [all_subjects]
            source = StreamSource(
                name=topic_plan.stream_name,
                # An empty dest keeps the subject: the transforms act as several filters.
                subject_transforms=[SubjectTransform(src=f, dest="") for f in filters]
                if len(filters) > 1
                else None,
                filter_subject=filters[0] if len(filters) == 1 else None,
            )
            queue_plan.sources.append(source)
            queue_plan.source_subjects.extend(filters)
        self.resources.append(
            Resource(
                source_arn=sub.arn,
                kind="sns-subscription",
                name=f"{topic_plan.topic.name} → {queue_plan.queue.name}",
                stream=queue_plan.stream.name,
                consumer=queue_plan.consumer.durable_name,
                publish_subject=_template(topic_plan.subject, topic_plan.promoted),
                subject_tokens=topic_plan.promoted,
                filter_subjects=filter_subjects,
                fidelity=fidelity,
            )
        )

    # -- assembly -------------------------------------------------------------------------

    def desired(self) -> Desired:
        inv = self.inventory
        for queue in inv.queues:
            self.queue(queue)
        for topic in inv.topics:
            self.topic(topic, inv.subscriptions_of(topic.arn))
        for sub in inv.subscriptions:
            self.subscription(sub)

        derived = derive(
            [self._queue_info(q) for q in self.queues.values()],
            [self._topic_info(t) for t in self.topics.values()],
            self.rules.defaults,
            advisory_replicas=self.rules.defaults.replicas,
        )
        streams: list[StreamSpec] = list(derived.streams)
        consumers: list[ConsumerSpec] = list(derived.consumers)
        resources: list[Resource] = []
        for topic_plan in self.topics.values():
            stream = None
            if topic_plan.topic.arn in derived.topic_streams:
                stream = self.topic_stream(topic_plan)
                streams.append(stream)
            else:
                topic_plan.fidelity.append(
                    _fid(
                        "Subscriptions",
                        None,
                        "approximate",
                        "no sqs subscription delivers from it: the topic is a subject namespace "
                        "without a stream "
                        "(core NATS subscribers only; nothing is stored)",
                    )
                )
            resources.append(
                Resource(
                    source_arn=topic_plan.topic.arn,
                    kind="sns-topic",
                    name=topic_plan.topic.name,
                    stream=stream.name if stream else None,
                    publish_subject=_template(topic_plan.subject, topic_plan.promoted),
                    subject_tokens=topic_plan.promoted,
                    fidelity=topic_plan.fidelity,
                )
            )
        for queue_plan in self.queues.values():
            queue = queue_plan.queue
            stream = queue_plan.stream
            consumer = queue_plan.consumer
            dlq_arn = queue.redrive_policy.dead_letter_target_arn if queue.redrive_policy else None
            if dlq_arn is not None and dlq_arn not in self.queues:
                # No stream to move to: the DLQ is not emulated, whatever the bridge does.
                why = (
                    "the dead-letter queue is excluded by the mapping rules"
                    if self.inventory.queue(dlq_arn)
                    else "the dead-letter queue was not scanned"
                )
                queue_plan.fidelity[:] = [
                    _fid(
                        f.attribute,
                        f.value,
                        "unsupported",
                        f"{why}: messages past max_deliver stay in the stream unacknowledged "
                        "until max_age",
                        target=f.target,
                        manual_step=f"{why}: include it (scan its account/region, drop the "
                        "exclude) or create it",
                    )
                    if f.attribute == "RedrivePolicy.deadLetterTargetArn"
                    else f
                    for f in queue_plan.fidelity
                ]
            if queue_plan.fed_by_topic:
                sources = sorted(queue_plan.sources, key=lambda s: s.name)
                update: dict[str, object] = {"sources": sources or None}
                # Decided by the final shape, not the cutover stage: schedules cannot be
                # turned off in place, so a stream that will get a source never has them.
                if stream.allow_msg_schedules:
                    # Schedules are refused on streams with sources: say so, keep sources.
                    update["allow_msg_schedules"] = None
                    update["allow_rollup_hdrs"] = None
                    update["subjects"] = [
                        s for s in stream.subjects if f".{SCHEDULE_TOKEN}." not in s
                    ]
                    queue_plan.fidelity = [
                        f for f in queue_plan.fidelity if f.attribute != "DelaySeconds"
                    ] + [
                        _fid(
                            "DelaySeconds",
                            str(queue.delay_seconds),
                            "unsupported",
                            "the queue is fed by a topic stream source (now, or once its "
                            "consumers move to NATS) and JetStream refuses message schedules "
                            "on streams with sources",
                            manual_step="delay in the consumer (NAK with a delay on first "
                            "delivery) or drop the delay",
                        )
                    ]
                stream = stream.model_copy(update=update)
            if stream.allow_msg_schedules or queue_plan.sources:
                own = [s for s in stream.subjects if f".{SCHEDULE_TOKEN}." not in s]
                if stream.allow_msg_schedules:
                    consumer = consumer.model_copy(
                        update={"filter_subjects": own + sorted(set(queue_plan.source_subjects))}
                    )
            streams.append(stream)
            consumers.append(consumer)
            resources.append(
                Resource(
                    source_arn=queue.arn,
                    kind="sqs-queue",
                    name=queue.name,
                    stream=stream.name,
                    consumer=consumer.durable_name,
                    publish_subject=queue_plan.subject,
                    fidelity=queue_plan.fidelity,
                )
            )
        resources.extend(self.resources)
        order = {"sqs-queue": 0, "sns-topic": 1, "sns-subscription": 2}
        return Desired(
            streams=sorted(streams, key=lambda s: s.name),
            consumers=sorted(consumers, key=lambda c: c.key),
            resources=sorted(resources, key=lambda r: (order[r.kind], r.source_arn)),
            routes=derived.routes,
        )

    def _queue_info(self, plan: _QueuePlan) -> QueueInfo:
        queue = plan.queue
        return QueueInfo(
            arn=queue.arn,
            name=queue.name,
            fifo=queue.fifo,
            stream=plan.stream.name,
            durable=plan.consumer.durable_name,
            subject=plan.subject.replace(".<MessageGroupId>", ""),
            own_subjects=[s for s in plan.stream.subjects if f".{SCHEDULE_TOKEN}." not in s],
            cutover=plan.override.cutover or Cutover(),
            dlq_arn=queue.redrive_policy.dead_letter_target_arn if queue.redrive_policy else None,
        )

    def _topic_info(self, plan: _TopicPlan) -> TopicInfo:
        topic = plan.topic
        return TopicInfo(
            arn=topic.arn,
            name=topic.name,
            fifo=topic.fifo,
            stream=plan.stream_name,
            subject=plan.subject,
            promoted=list(plan.promoted),
            cutover=plan.override.cutover or Cutover(),
            needs_stream=plan.needs_stream,
            subscriptions=sorted(self.subscription_infos.get(topic.arn, []), key=lambda s: s.arn),
        )


_MANUAL_STEPS = {
    "http": "run a NATS consumer that POSTs each message to the endpoint, or keep the SNS "
    "subscription fed by a nats-to-sns bridge route",
    "https": "run a NATS consumer that POSTs each message to the endpoint, or keep the SNS "
    "subscription fed by a nats-to-sns bridge route",
    "lambda": "invoke the function from a NATS consumer, or keep SNS for it via a nats-to-sns "
    "route",
    "email": "send email from a NATS consumer, or keep SNS for it via a nats-to-sns route",
    "email-json": "send email from a NATS consumer, or keep SNS for it via a nats-to-sns route",
    "sms": "send SMS from a NATS consumer, or keep SNS for it via a nats-to-sns route",
    "firehose": "write to Firehose from a NATS consumer, or keep SNS for it via a nats-to-sns "
    "route",
    "application": "push to devices from a NATS consumer, or keep SNS for it via a nats-to-sns "
    "route",
}


def _template(subject: str, promoted: list[str]) -> str:
    return ".".join([subject, *(f"<{name}>" for name in promoted)])


def _encryption(fidelity: list[Fidelity], kms_key: str | None, sse: bool) -> None:
    if kms_key or sse:
        fidelity.append(
            _fid(
                "KmsMasterKeyId" if kms_key else "SqsManagedSseEnabled",
                kms_key or "true",
                "unsupported",
                "encryption at rest is a server setting in NATS, not per stream",
                manual_step="enable JetStream encryption at rest (jetstream { cipher, key }) on "
                "every server",
            )
        )


def _policy(fidelity: list[Fidelity], policy: dict[str, object] | None) -> None:
    if policy:
        fidelity.append(
            _fid(
                "Policy",
                f"{len(policy.get('Statement', []) or [])} statement(s)",  # type: ignore[arg-type]
                "unsupported",
                "IAM resource policies do not carry over",
                manual_step="grant the same producers and consumers NATS permissions on the "
                "stream's subjects and consumer",
            )
        )


def translate(inventory: Inventory, rules: Rules, *, server_version: str | None = None) -> Desired:
    """The desired JetStream state for an inventory: pure, deterministic."""
    return Translator(inventory, rules, server_version).desired()
