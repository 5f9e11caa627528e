"""SNS subscriptions → how a topic's messages reach a queue, and what NATS cannot deliver.

Fan-out uses **stream sources**: each SQS queue keeps its own work-queue stream and exactly one
durable pull consumer, and every sqs subscription becomes a source from the topic's stream into
the queue's stream, filtered by the compiled filter subjects. That mirrors SNS → SQS closely:
the queue stays its own buffer with its own retention and limits, messages sent straight to the
queue and messages fanned out by a topic meet in one consumer, and a queue subscribed to several
topics simply has several sources. (Consumers on the topic stream were the alternative; they
would give a queue one consumer per topic, so its workers could not bind to one durable.)

How NATS-published topic messages reach the queues during a migration (`fanout_of`) is
decided per topic, once, and never changes with the cutover state, so that every message has
exactly one copy per queue whichever side the queue's workers are on (or both, during a move):

- `sources`: every subscriber is a mapped SQS queue with raw delivery. The sources exist from
  the start; while a queue's consumers are on AWS the bridge relays its stream to SQS.
- `sns`: some subscriber NATS cannot serve (another protocol, an unmapped queue) or a queue
  expecting SNS's JSON envelope. NATS-published messages then go through SNS like everyone
  else's, and a queue whose consumers moved to NATS gets them through its SQS queue.

Every filter policy is evaluated by the bridge's filter router on the message's headers, never
by a subject filter on promoted tokens: a NATS producer sets each attribute as a header and need
not repeat it in the subject (a token left `~absent` would make a token filter drop a message
SNS delivers). Headers decide, tokens are only checked against them (`bridge.filter_router`).
A topic fanning out through SNS only for envelope readers gets its routers planned from the
start; they run once `cutover finish` switches it, from the sequence it sets (`Route.at_finish`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from snsq2nats import filterpolicy
from snsq2nats.errors import FilterPolicyError
from snsq2nats.inventory import Subscription
from snsq2nats.jetstream.spec import StreamSource, SubjectTransform
from snsq2nats.plan.fidelity import entry
from snsq2nats.plan.model import Fidelity, Resource
from snsq2nats.plan.queues import QueueNames
from snsq2nats.plan.routes import Fanout, SubscriptionInfo
from snsq2nats.plan.topics import TopicNames

MANUAL_STEPS = {
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
"""What to do instead, per protocol NATS cannot deliver to."""


@dataclass(frozen=True)
class Wiring:
    """What one subscription becomes, and what it decides about its topic and queue."""

    topic_arn: str
    info: SubscriptionInfo
    """What the routes need to know (also for subscriptions that are not migrated)."""
    resource: Resource | None = None
    queue_arn: str | None = None
    """The mapped queue it delivers into."""
    feeds_queue: bool = False
    """It delivers into the queue through a stream source, now or once its consumers move."""
    source: StreamSource | None = None
    """The stream source into the queue (none once `settle` finds the topic fans out via SNS)."""
    topic_needs_stream: bool = False
    blocks_sources: str | None = None
    """Why this subscription keeps the topic's NATS-published messages on SNS, if it does."""
    envelope_only: bool = False
    """It blocks sources only because its queue's AWS workers read SNS's envelope: once they
    are gone (the topic is finished), a stream source serves it."""


def wire(
    sub: Subscription, topic: TopicNames, queue: QueueNames | None, *, excluded: bool
) -> Wiring:
    """The subscription of a mapped topic; `queue` is the mapped queue it names, if any."""
    not_mapped = Wiring(
        topic_arn=sub.topic_arn,
        info=SubscriptionInfo(
            arn=sub.arn,
            protocol=sub.protocol,
            endpoint=sub.endpoint,
            delivers=not sub.pending_confirmation,
        ),
        blocks_sources=None
        if sub.pending_confirmation
        else f"{sub.protocol}:{sub.endpoint} is not served by NATS",
    )
    if excluded:
        # Not migrated, so SNS keeps delivering it: the routes must know it exists.
        return not_mapped
    pending = _pending_confirmation(sub)
    if sub.protocol != "sqs":
        resource = Resource(
            source_arn=sub.arn,
            kind="sns-subscription",
            name=f"{topic.topic.name} → {sub.protocol}:{sub.endpoint}",
            publish_subject=topic.template,
            fidelity=[*pending, _protocol(sub)],
        )
        return replace(not_mapped, resource=resource)
    if queue is None:
        resource = Resource(
            source_arn=sub.arn,
            kind="sns-subscription",
            name=f"{topic.topic.name} → {sub.endpoint}",
            fidelity=[*pending, _unmapped_endpoint(sub)],
        )
        return replace(not_mapped, resource=resource)
    return _into_queue(sub, topic, queue, pending)


def _into_queue(
    sub: Subscription, topic: TopicNames, queue: QueueNames, pending: list[Fidelity]
) -> Wiring:
    policy = _filter(sub, topic)
    delivers = not sub.pending_confirmation and policy.valid
    fidelity = [*pending, policy.verdict, *_delivery(sub)]
    # An emulated filter is carried by the filter router (routes.py), never a stream source.
    feeds_queue = delivers and not policy.emulated
    filters = policy.subjects or topic.subjects
    return Wiring(
        topic_arn=sub.topic_arn,
        info=SubscriptionInfo(
            arn=sub.arn,
            protocol=sub.protocol,
            endpoint=sub.endpoint,
            delivers=delivers,
            mapped=delivers,
            emulated=policy.emulated,
            filter_policy=sub.filter_policy,
            filter_policy_scope=sub.filter_policy_scope,
            raw_delivery=sub.raw_message_delivery,
        ),
        resource=Resource(
            source_arn=sub.arn,
            kind="sns-subscription",
            name=f"{topic.topic.name} → {queue.queue.name}",
            stream=queue.stream,
            # Topic copies carry no group token: a partitioned queue takes them in partition 0.
            consumer=queue.durables[0],
            publish_subject=topic.template,
            subject_tokens=topic.promoted,
            filter_subjects=policy.subjects,
            fidelity=fidelity,
        ),
        queue_arn=queue.queue.arn,
        feeds_queue=feeds_queue,
        source=stream_source(topic.stream, filters) if feeds_queue else None,
        topic_needs_stream=delivers,
        blocks_sources=None
        if not delivers or sub.raw_message_delivery
        else f"{queue.queue.name} expects the SNS envelope (raw delivery off)",
        envelope_only=delivers and not sub.raw_message_delivery,
    )


def fanout_of(wirings: list[Wiring], finished: bool = False) -> tuple[Fanout, list[str], bool]:
    """How a topic's NATS-published messages reach its subscribers, what keeps them on SNS, and
    whether `cutover finish` may switch the topic to sources.

    Stream sources only when NATS can serve every subscription SNS delivers to exactly as SNS
    does; one that it cannot (an HTTP endpoint, an unmapped queue, a queue reading SNS's JSON
    envelope) needs the nats-to-sns relay, and SNS then hands a copy to every subscribed queue:
    a source next to it would be a second copy. When the only reason is the envelope, finishing
    the topic (every consumer on NATS) switches it to sources at an exact stream sequence; a
    subscription whose policy the filter router evaluates switches with it (its router runs
    from that sequence on, see `routes.route_active`).
    """
    blocking = [w for w in wirings if w.blocks_sources]
    reasons = sorted({w.blocks_sources for w in blocking if w.blocks_sources})
    switchable = bool(blocking) and all(w.envelope_only for w in blocking)
    if not reasons or (finished and switchable):
        return "sources", [], switchable
    return "sns", reasons, switchable


def settle(wiring: Wiring, fanout: Fanout, reasons: list[str], _switchable: bool = False) -> Wiring:
    """The subscription once its topic's fan-out is known: its source, and the verdict."""
    if wiring.queue_arn is None or wiring.resource is None or not wiring.info.delivers:
        return wiring
    verdict = _cutover(fanout, reasons, routed=wiring.info.emulated)
    resource = wiring.resource.model_copy(update={"fidelity": [*wiring.resource.fidelity, verdict]})
    source = wiring.source if fanout == "sources" else None
    return replace(wiring, resource=resource, source=source)


def stream_source(stream: str, filters: list[str]) -> StreamSource:
    return StreamSource(
        name=stream,
        # An empty dest keeps the subject: the transforms act as several filters.
        subject_transforms=[SubjectTransform(src=f, dest="") for f in filters]
        if len(filters) > 1
        else None,
        filter_subject=filters[0] if len(filters) == 1 else None,
    )


# --- one decision each ------------------------------------------------------------------------


def _pending_confirmation(sub: Subscription) -> list[Fidelity]:
    if not sub.pending_confirmation:
        return []
    return [
        entry(
            "PendingConfirmation",
            "true",
            "unsupported",
            "the subscription was never confirmed, so SNS delivers nothing to it; nothing is "
            "wired up in NATS either",
            manual_step="confirm or delete it in AWS before migrating, then plan again",
        )
    ]


def _protocol(sub: Subscription) -> Fidelity:
    return entry(
        "Protocol",
        sub.protocol,
        "unsupported",
        f"NATS does not deliver to {sub.protocol} endpoints",
        manual_step=MANUAL_STEPS.get(sub.protocol, MANUAL_STEPS["http"]),
    )


def _unmapped_endpoint(sub: Subscription) -> Fidelity:
    return entry(
        "Endpoint",
        sub.endpoint,
        "unsupported",
        "the subscribed queue was not scanned or is excluded",
        manual_step="scan the queue's account/region, or remove the subscription",
    )


@dataclass(frozen=True)
class _Filter:
    verdict: Fidelity
    subjects: list[str] | None = None
    """Exact filter subjects, when the policy compiles to them."""
    emulated: bool = False
    valid: bool = True
    """SNS accepts the policy (one it would reject delivers nothing)."""


def _filter(sub: Subscription, topic: TopicNames) -> _Filter:
    """FilterPolicy → source subject filters when exact, else the bridge's filter router."""
    if not sub.filter_policy:
        return _Filter(
            entry("FilterPolicy", None, "exact", "no filter: every message is delivered")
        )
    try:
        policy = filterpolicy.parse_policy(
            sub.filter_policy, scope=sub.filter_policy_scope, source=sub.arn
        )
    except FilterPolicyError as err:
        return _Filter(
            entry(
                "FilterPolicy",
                sub.filter_policy,
                "unsupported",
                f"SNS would reject this policy: {err.what}; nothing is delivered to the queue "
                "rather than everything",
                manual_step="fix the filter policy in AWS, then plan again",
            ),
            valid=False,
        )
    compiled = filterpolicy.compile_to_subjects(policy, topic.promoted, topic.subject)
    why = (
        "a subject filter on promoted tokens would miss a producer that sets the attribute "
        "only as a header"
        if compiled.exact
        else f"it cannot be a subject filter: {compiled.reason}"
    )
    # Typed for the whole topic: a string entry here never matches a plain header another
    # policy of the topic compares as a number (SNS would see that attribute as a Number).
    read = set(policy.keys) if policy.scope == "MessageAttributes" else set()
    numbers = sorted(read & set(topic.numbers))
    typing = (
        f"; plain headers {', '.join(numbers)} are Numbers when they parse as one (a filter "
        "policy of the topic compares them as numbers)"
        if numbers
        else ""
    )
    return _Filter(
        entry(
            "FilterPolicy",
            sub.filter_policy,
            "emulated",
            "the bridge's filter router evaluates it with SNS semantics on the headers of "
            f"each NATS-published message ({why}){typing}; what it cannot evaluate is "
            "counted as undeliverable, never skipped silently",
            target="bridge filter-router",
        ),
        emulated=True,
    )


def _delivery(sub: Subscription) -> list[Fidelity]:
    """RawMessageDelivery, the subscription's own DLQ and replay policy."""
    out = []
    if sub.raw_message_delivery:
        out.append(
            entry(
                "RawMessageDelivery",
                "true",
                "exact",
                "the message body and attributes (as headers) arrive unchanged",
            )
        )
    else:
        out.append(
            entry(
                "RawMessageDelivery",
                "false",
                "approximate",
                "SQS consumers receive the SNS JSON envelope; NATS consumers receive the raw "
                "body with attributes as headers (the bridge builds the envelope when relaying "
                "to SQS)",
                manual_step="make NATS consumers read the raw body instead of the envelope",
            )
        )
    if sub.redrive_policy:
        out.append(
            entry(
                "RedrivePolicy",
                sub.redrive_policy.dead_letter_target_arn,
                "approximate",
                "delivery from topic to queue happens inside JetStream and does not fail per "
                "message, so the subscription DLQ is not used",
            )
        )
    if sub.replay_policy:
        out.append(
            entry(
                "ReplayPolicy",
                sub.replay_policy,
                "approximate",
                "replay is a consumer on the topic stream with a start time",
            )
        )
    return out


def _cutover(fanout: Fanout, reasons: list[str], *, routed: bool = False) -> Fidelity:
    """How the topic reaches the queue on either side of its cutover: one copy either way."""
    if fanout == "sources" and routed:
        return entry(
            "Cutover",
            "filter router",
            "exact",
            "NATS-published messages reach the queue stream through the bridge's filter router "
            "(the bridge relays the stream to SQS while the queue's consumers are on AWS); "
            "SNS-published ones reach the SQS queue (relayed to the stream while its consumers "
            "are on NATS). One copy per message, so workers on either side, or both during a "
            "move, get it once",
            target="bridge filter-router",
        )
    if fanout == "sources":
        return entry(
            "Cutover",
            "stream source",
            "exact",
            "NATS-published messages reach the queue stream through its source (the bridge "
            "relays the stream to SQS while the queue's consumers are on AWS); SNS-published "
            "ones reach the SQS queue (relayed to the stream while its consumers are on NATS). "
            "One copy per message, so workers on either side, or both during a move, get it once",
            target="stream source",
        )
    return entry(
        "Cutover",
        "through SNS",
        "exact",
        "NATS-published messages reach this queue through SNS like any other ("
        + "; ".join(reasons)
        + "): the bridge relays them to SNS, and from the SQS queue to the stream once the "
        "queue's consumers are on NATS. One copy per message, one AWS round trip more",
        target="SNS subscription",
    )
