"""SQS queues → a work-queue stream and the one durable pull consumer its workers bind to.

A queue is translated in two steps. `name_queue` runs for every queue before anything else:
it claims the stream name and subject (so collisions surface first) and fixes the names the
subscriptions need. `plan_queue` runs once the subscriptions are wired, with the facts other
resources decide about the queue (`QueueFacts`: is a topic feeding it, is its dead-letter queue
mapped), so each verdict below is decided once, by one function, with everything it depends on.
"""

from __future__ import annotations

from dataclasses import dataclass

from snsq2nats.errors import MappingError
from snsq2nats.inventory import Queue
from snsq2nats.jetstream.spec import (
    NS,
    PARTITION_KEY,
    PARTITIONS_KEY,
    ConsumerSpec,
    StreamSource,
    StreamSpec,
    SubjectTransform,
)
from snsq2nats.plan.access import Access, analyse
from snsq2nats.plan.context import Context
from snsq2nats.plan.fidelity import ENCRYPTION_SETTING, encryption, entry, resource_policy, tags
from snsq2nats.plan.metadata import for_source
from snsq2nats.plan.model import Fidelity, Resource
from snsq2nats.plan.names import (
    SCHEDULE_TOKEN,
    check_name,
    partition_durables,
    partition_subject,
    partition_transform_dest,
    render,
)
from snsq2nats.plan.routes import QueueInfo
from snsq2nats.plan.rules import Cutover, Defaults, Limits, Override

MAX_PAYLOAD_DEFAULT = 1_048_576
"""nats-server's default max_payload."""
ATTRIBUTE_EXPANSION = 3
"""How many bytes of headers one byte SQS counts can take through the header contract
(bridge/codec.py). SQS counts each attribute's name, type and value once; the contract writes a
name twice (its header and its key in `Snsq2nats-Attributes`), and a value it cannot put in a
header of its own goes into that JSON instead: base64 for Binary (4/3), escaped for text (a
2-byte character becomes a 6-byte `\\uXXXX`). So 3x, whatever the mix of body and attributes."""
HEADER_ALLOWANCE = 4096
"""Header bytes a stored message carries besides its attributes' own, at most: `NATS/1.0` and
the blank line, the ids (message, `Nats-Msg-Id`, group and deduplication, up to 128 each), the
bridge's origin and route, SNS's topic ARN, message id and subject, a schedule's time and target,
the JSON framing of up to 10 attributes (about 22 bytes each). About 2.5 KiB at the worst."""
JETSTREAM_MAX_HEADERS = 65_535
"""JetStream stores no message whose header block is larger (`header size exceeds maximum
allowed of 64k`): what headers can add to a stored message, however large its attributes."""
SQS_DEDUP_WINDOW = 300 * NS
"""SQS deduplicates FIFO messages for 5 minutes."""


@dataclass(frozen=True)
class QueueNames:
    queue: Queue
    override: Override
    stream: str
    consumer: str
    subject_base: str
    fifo: bool
    partitions: int = 1
    """FIFO queues: how many durables share the message groups (1: one durable, no transform)."""

    @property
    def durables(self) -> list[str]:
        """The worker durables: `consumer`, or `<consumer>-p<i>` for each partition i."""
        return partition_durables(self.consumer, self.partitions)

    @property
    def own_subject(self) -> str:
        """The stream's subject for the queue: a FIFO queue's last token is the group id."""
        return f"{self.subject_base}.*" if self.fifo else self.subject_base

    @property
    def producer_subject(self) -> str:
        """Where producers publish, as the plan shows it."""
        return f"{self.subject_base}.<MessageGroupId>" if self.fifo else self.subject_base

    @property
    def own_subjects(self) -> list[str]:
        """The subjects producers publish to (no schedule holders, no sourced topic subjects)."""
        return [self.own_subject, *(self.override.subjects or [])]

    @property
    def stored_subjects(self) -> list[str]:
        """The own subjects as the stream stores them: a partitioned queue's group messages
        under `<base>.<partition>.<group>` (what the bridge sees when it reads the durables)."""
        if self.partitions <= 1:
            return self.own_subjects
        return [
            *(partition_subject(self.subject_base, i) for i in range(self.partitions)),
            *(self.override.subjects or []),
        ]

    @property
    def cutover(self) -> Cutover:
        return self.override.cutover or Cutover()


def name_queue(queue: Queue, override: Override, ctx: Context) -> QueueNames:
    names = ctx.names(queue, override, "queue")
    ctx.streams.claim(names.stream, queue.arn)
    consumer = render(
        ctx.naming.queue_consumer,
        name=names.base,
        region=queue.region,
        account=queue.account,
        where="naming.queue_consumer",
    )
    partitions = _partitions(queue, override, ctx.defaults, fifo=names.fifo)
    for durable in partition_durables(consumer, partitions):
        check_name(durable, what="consumer", source=queue.arn)
    return QueueNames(
        queue=queue,
        override=override,
        stream=names.stream,
        consumer=check_name(consumer, what="consumer", source=queue.arn),
        subject_base=names.subject,
        fifo=names.fifo,
        partitions=partitions,
    )


def _partitions(queue: Queue, override: Override, defaults: Defaults, *, fifo: bool) -> int:
    """How many partitions a queue's message groups are split over.

    A standard queue has no groups to keep in order: its one durable already hands out
    max_ack_pending messages at once, so `partitions` there is a mistake in the mapping (an
    error, as any setting that would do nothing is), not something to note and ignore.
    """
    if override.partitions is not None and override.partitions > 1 and not fifo:
        raise MappingError(
            f"partitions: {override.partitions} set for standard queue {queue.name}: "
            "partitions split a FIFO queue's message groups, a standard queue has none",
            where=queue.arn,
            hint="match FIFO queues only (e.g. `match: '*.fifo'`); a standard queue's "
            "consumer already runs max_ack_pending messages in parallel",
        )
    if not fifo:
        return 1
    return override.partitions if override.partitions is not None else defaults.fifo_partitions


@dataclass(frozen=True)
class QueueFacts:
    """What other resources decide about a queue, known before its verdicts are."""

    fed_by_topic: bool = False
    """A topic delivers into it through a stream source, now or once the topic is finished."""
    sources: tuple[StreamSource, ...] = ()
    """The topic stream sources it has now (its consumers are on NATS)."""
    dlq_unmapped: str | None = None
    """Why its dead-letter queue has no stream to move messages to, when it has none."""
    dead_letter_for: int = 0
    """How many queues name it as their dead-letter queue."""


@dataclass(frozen=True)
class QueuePlan:
    names: QueueNames
    stream: StreamSpec
    consumers: list[ConsumerSpec]
    """The worker durables: one, or one per partition (partition i at index i)."""
    fidelity: list[Fidelity]
    access: Access | None = None

    @property
    def consumer(self) -> ConsumerSpec:
        """The first (for an unpartitioned queue, the only) worker durable."""
        return self.consumers[0]

    def info(self) -> QueueInfo:
        """What the routes need to know about the queue."""
        queue = self.names.queue
        return QueueInfo(
            arn=queue.arn,
            name=queue.name,
            fifo=queue.fifo,
            stream=self.stream.name,
            durable=self.names.consumer,
            partitions=self.names.partitions,
            subject=self.names.subject_base,
            own_subjects=self.names.stored_subjects,
            cutover=self.names.cutover,
            dlq_arn=queue.redrive_policy.dead_letter_target_arn if queue.redrive_policy else None,
        )

    def resource(self) -> Resource:
        return Resource(
            source_arn=self.names.queue.arn,
            kind="sqs-queue",
            name=self.names.queue.name,
            stream=self.stream.name,
            consumer=self.consumer.durable_name,
            publish_subject=self.names.producer_subject,
            fidelity=self.fidelity,
            producers=self.names.cutover.producers,
            consumers=self.names.cutover.consumers,
            access=self.access,
            partition_consumers=[c.durable_name for c in self.consumers]
            if self.names.partitions > 1
            else None,
        )


def plan_queue(names: QueueNames, facts: QueueFacts, ctx: Context) -> QueuePlan:
    queue, override, defaults = names.queue, names.override, ctx.defaults
    access = analyse(queue.policy, service="sqs", account=queue.account)
    limits = override.limits
    max_age, retention = _retention(queue, limits)
    max_msg_size, size = _message_size(queue, limits)
    delay = _delay(names, facts, ctx)
    ack_wait, visibility = _visibility(queue, defaults.min_ack_wait)
    max_deliver, redrive = _redrive(queue, facts.dlq_unmapped)
    max_ack_pending = defaults.fifo_max_ack_pending if names.fifo else defaults.max_ack_pending
    partitions = names.partitions
    duplicate_window = _duplicate_window(names.fifo, defaults, max_age)
    fidelity = [
        retention,
        size,
        *delay.here,
        visibility,
        _long_polling(queue),
        *redrive,
        *_redrive_allow(queue),
        *_fifo(names, max_ack_pending, duplicate_window, facts),
        *encryption(queue.kms_master_key_id, queue.sqs_managed_sse_enabled),
        *_kms_data_key_reuse(queue),
        *resource_policy(queue.policy, access),
        tags(queue.tags),
        *delay.last,
    ]
    monitor = _monitor(names, facts, ctx)
    if monitor.fidelity is not None:
        fidelity.append(monitor.fidelity)
    subjects = names.own_subjects
    if delay.schedules:
        subjects = [*subjects, f"{names.subject_base}.{SCHEDULE_TOKEN}.*"]
    stream = StreamSpec(
        name=names.stream,
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
        allow_msg_schedules=True if delay.schedules else None,
        # The server requires roll-ups for schedules (a one-shot schedule purges itself).
        allow_rollup_hdrs=True if delay.schedules else None,
        sources=sorted(facts.sources, key=lambda s: s.name) or None,
        placement=ctx.placement(override),
        metadata=for_source(queue.arn, queue.tags) | monitor.stream,
        subject_transform=SubjectTransform(
            src=names.own_subject, dest=partition_transform_dest(names.subject_base, partitions)
        )
        if partitions > 1
        else None,
    )
    consumers = [
        ConsumerSpec(
            stream_name=names.stream,
            durable_name=durable,
            description=f"workers of SQS queue {queue.name}"
            + (f", partition {i} of {partitions}" if partitions > 1 else ""),
            ack_wait=int(ack_wait * NS),
            max_deliver=max_deliver,
            max_ack_pending=max_ack_pending,
            filter_subjects=_worker_filters(names, facts, i, schedules=delay.schedules),
            metadata=for_source(queue.arn)
            | ({PARTITION_KEY: str(i), PARTITIONS_KEY: str(partitions)} if partitions > 1 else {})
            | monitor.consumer,
        )
        for i, durable in enumerate(names.durables)
    ]
    return QueuePlan(
        names=names,
        stream=stream,
        consumers=consumers,
        fidelity=fidelity,
        access=access if queue.policy else None,
    )


def _worker_filters(
    names: QueueNames, facts: QueueFacts, partition: int, *, schedules: bool
) -> list[str] | None:
    """What one worker durable consumes.

    Unpartitioned: everything, except schedule holders when there are any (workers see only
    the messages schedules release). Partitioned: the partition's stored subjects; partition 0
    also takes what the transform leaves as it is (extra subjects, topic copies sourced into
    the stream), which carry no group token: they keep their order there, in one durable.
    """
    if names.partitions <= 1:
        # Workers must not see the schedule holders, only the messages they release.
        return names.own_subjects if schedules else None
    filters = [partition_subject(names.subject_base, partition)]
    if partition == 0:
        filters += list(names.override.subjects or [])
        filters += [subject for source in facts.sources for subject in _sourced_subjects(source)]
    return filters


def _sourced_subjects(source: StreamSource) -> list[str]:
    if source.subject_transforms:
        return [t.src for t in source.subject_transforms]
    return [source.filter_subject] if source.filter_subject else []


# --- one decision each ------------------------------------------------------------------------


MONITOR_PREFIX = "io.nats.monitor."


@dataclass(frozen=True)
class _Monitoring:
    stream: dict[str, str]
    consumer: dict[str, str]
    fidelity: Fidelity | None


def _monitor(names: QueueNames, facts: QueueFacts, ctx: Context) -> _Monitoring:
    """SQS-alarm-like thresholds as `io.nats.monitor.*` metadata (`nats server check`, `nats
    audit`): a backlog alarm on the workers' consumer (any message at all on a dead-letter
    queue, like the usual DLQ alarm), a retry alarm, and a fan-out alarm on a topic-fed stream
    (a source missing or lagging)."""
    settings = ctx.defaults.monitor
    override = names.override.monitor
    if override is not None:
        settings = settings.model_copy(update=override.model_dump(exclude_unset=True))
    if not settings.enabled:
        return _Monitoring({}, {}, None)
    backlog = 1 if facts.dead_letter_for else settings.unprocessed_critical
    consumer = {
        f"{MONITOR_PREFIX}enabled": "true",
        f"{MONITOR_PREFIX}unprocessed-critical": str(backlog),
        f"{MONITOR_PREFIX}redelivery-critical": str(settings.redelivery_critical),
    }
    stream: dict[str, str] = {}
    checks = [
        f"{'dead letters' if facts.dead_letter_for else 'waiting messages'} >= {backlog}",
        f"messages being retried >= {settings.redelivery_critical}",
    ]
    if facts.sources:
        stream = {
            f"{MONITOR_PREFIX}enabled": "true",
            f"{MONITOR_PREFIX}min-sources": str(len(facts.sources)),
            f"{MONITOR_PREFIX}lag-critical": str(settings.source_lag_critical),
        }
        checks.append(
            f"stream sources < {len(facts.sources)} or lagging >= {settings.source_lag_critical}"
        )
    note = (
        "CloudWatch alarms are not read; these thresholds are written as io.nats.monitor.* "
        f"metadata for `nats server check` and `nats audit`: {'; '.join(checks)}"
    )
    return _Monitoring(
        stream, consumer, entry("Alarms", None, "approximate", note, target="io.nats.monitor.*")
    )


def _retention(queue: Queue, limits: Limits | None) -> tuple[int, Fidelity]:
    """Stream max_age (ns) from MessageRetentionPeriod, or from the mapping's limit."""
    period = queue.message_retention_period
    if limits and limits.max_age is not None:
        return int(limits.max_age * NS), entry(
            "MessageRetentionPeriod",
            str(period),
            "approximate",
            f"overridden: stream max_age {limits.max_age:g}s instead of the queue's {period}s",
            target="stream max_age",
        )
    return int(period * NS), entry(
        "MessageRetentionPeriod",
        str(period),
        "exact",
        "messages older than the retention period are discarded, as in SQS",
        target="stream max_age",
    )


def stored_size(sqs_size: int) -> int:
    """The most a message SQS accepts at `sqs_size` (body, attribute names, types and values)
    weighs in the stream, headers included, as JetStream counts max_msg_size."""
    return min(ATTRIBUTE_EXPANSION * sqs_size + HEADER_ALLOWANCE, sqs_size + JETSTREAM_MAX_HEADERS)


def _message_size(queue: Queue, limits: Limits | None) -> tuple[int, Fidelity]:
    if limits and limits.max_msg_size is not None:
        # The operator's own limit on the stream, as written.
        size = limits.max_msg_size
        fits = size <= MAX_PAYLOAD_DEFAULT
        note = (
            "larger messages are rejected at publish, as SQS rejects them"
            if fits
            else "above nats-server's default max_payload (1 MiB): raise max_payload"
        )
    else:
        # JetStream counts the headers the attributes and ids travel in, SQS does not: the
        # stream takes the largest message SQS accepts; the gateway keeps SQS's own limit.
        size = stored_size(queue.maximum_message_size)
        fits = size <= MAX_PAYLOAD_DEFAULT
        note = (
            f"every message SQS accepts is stored (max_msg_size {size} leaves room for the "
            "headers its attributes travel in), unless its attributes take more than "
            "JetStream's 64 KiB of headers; the gateway refuses larger ones, as SQS does"
            if fits
            else f"with the headers its attributes travel in, a message SQS accepts can reach "
            f"{size} bytes, above nats-server's default max_payload (1 MiB): raise max_payload "
            f"to {size}"
        )
    return size, entry(
        "MaximumMessageSize",
        str(queue.maximum_message_size),
        "exact" if fits else "approximate",
        note,
        target="stream max_msg_size",
    )


@dataclass(frozen=True)
class _Delay:
    verdict: Fidelity
    schedules: bool
    """The stream takes message schedules."""
    refused_by_sources: bool = False

    # A delay refused because a topic feeds the queue is a consequence of the wiring, not of
    # the queue's own attributes: the plan lists it after them.
    @property
    def here(self) -> list[Fidelity]:
        return [] if self.refused_by_sources else [self.verdict]

    @property
    def last(self) -> list[Fidelity]:
        return [self.verdict] if self.refused_by_sources else []


def _delay(names: QueueNames, facts: QueueFacts, ctx: Context) -> _Delay:
    """DelaySeconds → message schedules (nats-server 2.12+), where the stream can take them."""
    seconds = names.queue.delay_seconds
    if not seconds:
        return _Delay(
            entry("DelaySeconds", "0", "exact", "no delay", target="immediate delivery"),
            schedules=False,
        )
    if ctx.schedules_supported() is False:
        return _Delay(
            entry(
                "DelaySeconds",
                str(seconds),
                "unsupported",
                f"nats-server {ctx.server_version} has no message schedules (2.12+)",
                manual_step="upgrade nats-server to 2.12 or later, or delay in the consumer "
                "(NAK with delay on first delivery)",
            ),
            schedules=False,
        )
    if facts.fed_by_topic:
        # Decided by the final shape, not the cutover stage: schedules cannot be turned off
        # in place, so a stream that will get a source never has them.
        return _Delay(
            entry(
                "DelaySeconds",
                str(seconds),
                "unsupported",
                "the queue is fed by a topic stream source (now, or once the topic's migration "
                "is finished) and JetStream refuses message schedules on streams with sources",
                manual_step="delay in the consumer (NAK with a delay on first delivery) or "
                "drop the delay",
            ),
            schedules=False,
            refused_by_sources=True,
        )
    base = names.subject_base
    target = f"{base}.<MessageGroupId>" if names.fifo else names.own_subject
    return _Delay(
        entry(
            "DelaySeconds",
            str(seconds),
            "approximate",
            f"SQS delays every message by itself; on NATS the producer must publish to "
            f"{base}.{SCHEDULE_TOKEN}.<id> with headers 'Nats-Schedule: @at "
            f"<now+{seconds}s>' and 'Nats-Schedule-Target: {target}' (needs nats-server "
            "2.12+); the bridge does this for relayed messages",
            target="stream allow_msg_schedules",
            manual_step="change producers to publish delayed messages as schedules",
        ),
        schedules=True,
    )


def _visibility(queue: Queue, min_ack_wait: float) -> tuple[float, Fidelity]:
    """VisibilityTimeout → ack_wait (seconds), which JetStream needs to be positive."""
    visibility = queue.visibility_timeout
    ack_wait = max(float(visibility), min_ack_wait)
    exact = visibility >= min_ack_wait
    return ack_wait, entry(
        "VisibilityTimeout",
        str(visibility),
        "exact" if exact else "approximate",
        "an unacked message is redelivered after ack_wait; ChangeMessageVisibility becomes "
        "+WPI (reset to the full ack_wait) or NAK with a delay"
        if exact
        else f"JetStream needs a positive ack_wait: {ack_wait:g}s instead of 0",
        target="consumer ack_wait",
    )


def _long_polling(queue: Queue) -> Fidelity:
    return entry(
        "ReceiveMessageWaitTimeSeconds",
        str(queue.receive_message_wait_time_seconds),
        "approximate",
        "long polling is a client setting on NATS: fetch(batch, timeout) waits up to its timeout",
        target="client fetch timeout",
    )


def _redrive(queue: Queue, dlq_unmapped: str | None) -> tuple[int, list[Fidelity]]:
    """RedrivePolicy → consumer max_deliver, and the dead-letter target the bridge emulates."""
    if not queue.redrive_policy:
        return -1, [
            entry(
                "RedrivePolicy",
                None,
                "exact",
                "no dead-letter queue: unlimited redeliveries, as in SQS",
                target="consumer max_deliver -1",
            )
        ]
    max_deliver = queue.redrive_policy.max_receive_count
    max_receive = entry(
        "RedrivePolicy.maxReceiveCount",
        str(max_deliver),
        "exact",
        "after this many deliveries the message is no longer redelivered",
        target="consumer max_deliver",
    )
    return max_deliver, [
        max_receive,
        _dead_letter_target(queue, queue.redrive_policy.dead_letter_target_arn, dlq_unmapped),
    ]


def _dead_letter_target(queue: Queue, dlq_arn: str, unmapped: str | None) -> Fidelity:
    if unmapped is not None:
        # No stream to move to: the DLQ is not emulated, whatever the bridge does.
        return entry(
            "RedrivePolicy.deadLetterTargetArn",
            dlq_arn,
            "unsupported",
            f"{unmapped}: messages past max_deliver stay in the stream unacknowledged until "
            "max_age",
            manual_step=f"{unmapped}: include it (scan its account/region, drop the exclude) "
            "or create it",
        )
    return entry(
        "RedrivePolicy.deadLetterTargetArn",
        dlq_arn,
        "emulated",
        "JetStream has no dead-letter queue: the bridge's DLQ mover moves a message to the "
        "dead-letter queue's stream on the MAX_DELIVERIES advisory, with headers naming where "
        "it came from",
        target=f"bridge route dlq:{queue.name}",
    )


def _redrive_allow(queue: Queue) -> list[Fidelity]:
    if not queue.redrive_allow_policy:
        return []
    return [
        entry(
            "RedriveAllowPolicy",
            queue.redrive_allow_policy.redrive_permission,
            "approximate",
            "which queues may use this one as a DLQ is decided by the mapping, not enforced by "
            "NATS",
        )
    ]


def _duplicate_window(fifo: bool, defaults: Defaults, max_age: int) -> int:
    """The dedup window (ns): SQS's 5 minutes for FIFO queues, never longer than max_age."""
    window = int(defaults.duplicate_window * NS)
    if fifo:
        window = max(window, SQS_DEDUP_WINDOW)
    if max_age:
        # JetStream refuses a duplicate window longer than max_age.
        window = min(window, max_age)
    return window


def _fifo(
    names: QueueNames, max_ack_pending: int, duplicate_window: int, facts: QueueFacts
) -> list[Fidelity]:
    """FIFO ordering and deduplication: what guarantee the mapping gives, exactly."""
    if not names.fifo:
        return []
    queue = names.queue
    out = [
        _ordering(names, max_ack_pending, facts),
        entry(
            "ContentBasedDeduplication",
            str(queue.content_based_deduplication).lower(),
            "approximate",
            f"dedup window {duplicate_window // NS}s on Nats-Msg-Id; producers set "
            "Nats-Msg-Id = MessageDeduplicationId"
            + (" or sha256(body)" if queue.content_based_deduplication else "")
            + (
                " (shorter than SQS's 5 minutes because the retention is)"
                if duplicate_window < SQS_DEDUP_WINDOW
                else ""
            ),
            target="stream duplicate_window",
            manual_step="set the Nats-Msg-Id header in producers",
        ),
    ]
    if queue.deduplication_scope == "queue":
        out.append(
            entry(
                "DeduplicationScope",
                "queue",
                "exact",
                "JetStream deduplicates per stream, which is per queue",
                target="stream duplicate_window",
            )
        )
    elif queue.deduplication_scope == "messageGroup":
        out.append(
            entry(
                "DeduplicationScope",
                "messageGroup",
                "approximate",
                "JetStream deduplicates per stream: prefix Nats-Msg-Id with the group id to "
                "keep per-group scope",
                manual_step="prefix Nats-Msg-Id with the MessageGroupId",
            )
        )
    if queue.fifo_throughput_limit:
        out.append(
            entry(
                "FifoThroughputLimit",
                queue.fifo_throughput_limit,
                "approximate",
                "throughput is bounded by the server, not a quota",
            )
        )
    return out


def _ordering(names: QueueNames, max_ack_pending: int, facts: QueueFacts) -> Fidelity:
    """Message-group order: one durable for every group, or one per partition of the groups."""
    base, n = names.subject_base, names.partitions
    per_group = (
        "order within a group is kept"
        if max_ack_pending == 1
        else "order per group is not guaranteed (max_ack_pending above 1)"
    )
    if n <= 1:
        return entry(
            "FifoQueue",
            "true",
            "approximate",
            f"the MessageGroupId is the last subject token ({base}.<group>); the "
            f"stream keeps publish order and the consumer allows {max_ack_pending} unacked "
            "message(s): with 1 the order is strict across all groups (stronger than SQS, less "
            "parallel); above 1 order per group is not guaranteed",
            target="subject token + consumer max_ack_pending",
        )
    durables = names.durables
    unkeyed = [*(names.override.subjects or [])]
    if facts.fed_by_topic:
        unkeyed.append("copies sourced from topics")
    rest = (
        f"; messages without a group token ({', '.join(unkeyed)}) all go to partition 0, in order"
        if unkeyed
        else ""
    )
    return entry(
        "FifoQueue",
        "true",
        "approximate",
        f"the MessageGroupId is the last subject token ({base}.<group>); the stream's subject "
        f"transform stores it as {base}.<partition>.<group>, partition = "
        f"partition({n}) of the group (FNV-1a hash mod {n}), and each of the {n} partition "
        f"durables ({durables[0]} … {durables[-1]}) allows {max_ack_pending} unacked "
        f"message(s): {per_group}, groups in different partitions run in parallel (at most {n} "
        "at once; SQS runs every group in parallel, here groups sharing a partition wait for "
        f"each other){rest}. Changing partitions on a live queue replaces the stream: stored "
        "messages keep their old partition, so drain the queue first",
        target="stream subject_transform + one durable per partition",
        manual_step=f"bind workers to every partition durable ({durables[0]} … {durables[-1]}): "
        "one worker per durable, or a pool pulling from all of them",
    )


def _kms_data_key_reuse(queue: Queue) -> list[Fidelity]:
    if not queue.kms_master_key_id or queue.kms_data_key_reuse_period_seconds is None:
        return []
    return [
        entry(
            "KmsDataKeyReusePeriodSeconds",
            str(queue.kms_data_key_reuse_period_seconds),
            "approximate",
            "data-key reuse is a KMS setting with no counterpart: JetStream encrypts at rest "
            "with one key per server",
            target=f"server {ENCRYPTION_SETTING}",
            manual_step=f"enable JetStream encryption at rest ({ENCRYPTION_SETTING}) on every "
            "server",
        )
    ]
