"""Cutover moves as data: which resource, from where to where, which relays start and stop, and
what the application team does around it.

A move changes no JetStream object (see `routes`): it starts and stops bridge relays, and a
relay that starts competes with the old side's workers for the one copy of each message, so
the handover is exact whenever the old workers stop. `plan_moves` and `plan_finish` validate
a request against the plan and the live state and say exactly what will happen; the engine
(`cutover.engine`) then records it and waits for the bridges.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Literal

from snsq2nats.aws.arns import subscription_topic
from snsq2nats.errors import UsageError
from snsq2nats.plan.identities import resource_identity
from snsq2nats.plan.model import Plan, Resource, Route
from snsq2nats.plan.routes import CutoverView, active_routes
from snsq2nats.plan.rules import Cutover
from snsq2nats.plan.states import QUEUE, TOPIC, CutoverRecord, current_view
from snsq2nats.plan.topics import FANOUT_UNTIL_FINISHED

Switch = Literal["consumers", "producers"]
"""The half of an application a move switches between AWS and NATS."""
Side = Literal[Switch, "finish"]
"""What a cutover command acts on: a half to switch, or `finish` (retire the bridge's paths)."""


class TeamKind(StrEnum):
    """What the application team does around a move; `TeamStep`'s facts complete it."""

    FINISHED_ALREADY = "finished-already"
    ALREADY_THERE = "already-there"
    """Nothing to do: the `side` is already on `where`."""
    START_NATS_WORKERS = "start-nats-workers"
    """Bind the workers to `durable` on `stream`."""
    WORKERS_NOTE = "workers-note"
    """A fidelity note's manual step the workers apply."""
    AWS_WORKERS_MAY_RUN = "aws-workers-may-run"
    """Until the SQS queue drained (`fifo`: each group keeps its order)."""
    STOP_NATS_WORKERS_FIRST = "stop-nats-workers-first"
    START_AWS_WORKERS_AFTER_RELAY = "start-aws-workers-after-relay"
    START_AWS_WORKERS = "start-aws-workers"
    NATS_WORKERS_MAY_RUN = "nats-workers-may-run"
    PRODUCERS_MAY_PUBLISH = "producers-may-publish"
    """Publish on `where` (nats, both or aws)."""
    PUBLISH_TO = "publish-to"
    """Publish to `subject` (None: see `snsq2nats subject`)."""
    PRODUCERS_NOTE = "producers-note"
    STOP_PUBLISHING_ON_AWS = "stop-publishing-on-aws"
    STOP_PUBLISHING_ON_NATS = "stop-publishing-on-nats"
    NOTHING_ON_AWS = "nothing-on-aws"
    GATEWAY_WORKERS = "gateway-workers"
    """Or the workers change only their SQS endpoint (`env`) to the gateway, with the key of
    `identity`: they read `durable` as NATS workers do (`fifo`: what order a group keeps)."""
    GATEWAY_PRODUCERS = "gateway-producers"
    """Or the producers change only their endpoint (`env`: SQS for a queue, SNS for a topic)
    to the gateway, with the key of `identity`: what they send is published to `subject` as
    NATS producers publish it (`where` they may publish, `consumers` the queue's consumers'
    side, `fifo`: no mixed fleet for a group)."""
    GATEWAY_WORKERS_BACK = "gateway-workers-back"
    """Workers reading through the gateway are NATS workers: back to SQS with them (`env`)."""
    GATEWAY_PRODUCERS_BACK = "gateway-producers-back"
    """Producers sending through the gateway publish on NATS: back to AWS with them (`env`)."""


@dataclass(frozen=True)
class TeamStep:
    kind: TeamKind
    name: str
    """The resource moved."""
    side: str = ""
    where: str = ""
    durable: str = ""
    stream: str = ""
    subject: str | None = None
    attribute: str = ""
    note: str = ""
    """A fidelity note's manual step (of `attribute`), in the plan's words."""
    fifo: bool = False
    identity: str = ""
    """The identity whose gateway access key the application uses (`gateway_identity`)."""
    env: str = ""
    """The SDK's endpoint variable that points the application at the gateway."""
    consumers: str = ""
    """A queue's producers move: where the queue's consumers are after it."""
    before: str = ""
    """A gateway step: where the side was before the move."""
    durables: tuple[str, ...] = ()
    """A gateway step of workers: every durable the gateway reads (one per partition)."""


@dataclass(frozen=True)
class Move:
    resource: Resource
    side: Side
    before: Cutover
    after: Cutover
    starts: list[Route] = field(default_factory=list)
    stops: list[Route] = field(default_factory=list)
    steps: list[TeamStep] = field(default_factory=list)
    """What the application team does, in order (`report.cutover` words it)."""
    unused: list[str] = field(default_factory=list)
    """finish: the AWS resources (ARNs) nothing uses any more once it is done."""

    @property
    def changed(self) -> bool:
        return self.before != self.after

    @property
    def kind(self) -> Literal["queue", "topic"]:
        return "queue" if self.resource.kind == QUEUE else "topic"

    def describe(self) -> str:
        if self.side == "finish":
            return f"finish {self.resource.name}"
        old = getattr(self.before, self.side)
        new = getattr(self.after, self.side)
        return f"{self.resource.name}: {self.side} {old} → {new}"


def resolve(
    plan: Plan, names: list[str], kinds: tuple[str, ...] = (QUEUE, TOPIC)
) -> list[Resource]:
    """The plan's queues/topics named by `names` (name or ARN), in order, each once."""
    candidates = [r for r in plan.resources if r.kind in (QUEUE, TOPIC)]
    found: list[Resource] = []
    for name in names:
        matches = [r for r in candidates if name in (r.name, r.source_arn)]
        if not matches:
            close = difflib.get_close_matches(name, [r.name for r in candidates], n=3)
            raise UsageError(
                f"no queue or topic named {name!r} in the plan",
                hint=f"did you mean {', '.join(close)}?"
                if close
                else "pass a queue or topic name (or ARN) from `snsq2nats plan`",
            )
        if len(matches) > 1:
            raise UsageError(
                f"{name!r} names {len(matches)} resources",
                hint="pass the ARN instead: " + " or ".join(r.source_arn for r in matches),
            )
        (resource,) = matches
        if resource.kind not in kinds:
            raise UsageError(
                f"{resource.name} is a topic: topics have no consumers of their own",
                hint="move the consumers of the queues subscribed to it (`snsq2nats cutover "
                "consumers QUEUE`), or its producers (`cutover producers "
                f"{resource.name} --to nats`)",
            )
        if resource not in found:
            found.append(resource)
    return found


def plan_moves(
    plan: Plan,
    records: Mapping[str, CutoverRecord],
    side: Switch,
    names: list[str],
    to: str,
) -> list[Move]:
    """The moves `cutover consumers|producers NAMES --to TO` makes, applied one after another
    (so moving several queues at once shows each one's relays)."""
    targets = resolve(plan, names, (QUEUE,) if side == "consumers" else (QUEUE, TOPIC))
    view = current_view(plan, records)
    moves = []
    for resource in targets:
        before = view.of(resource.source_arn)
        if before.finished:
            raise UsageError(
                f"{resource.name} is finished: both sides are on NATS and the bridge's paths "
                "for it are retired",
                hint="moving it back is not supported once finished",
            )
        after = before.model_copy(update={side: to})
        new_view = CutoverView(
            {**view.states, resource.source_arn: after}, {*view.moved, resource.source_arn}
        )
        moves.append(_move(plan, resource, side, before, after, view, new_view))
        view = new_view
    return moves


def plan_finish(plan: Plan, records: Mapping[str, CutoverRecord], names: list[str]) -> list[Move]:
    """`cutover finish`: a queue or topic whose sides are all on NATS stops being bridged.

    A queue: its SQS queue must get nothing new (no AWS producers, no topic delivering into it
    through SNS); the bridge stops relaying it once it is empty. A topic: its producers are on
    NATS and every subscriber it has reads on NATS; the bridge stops its sns-to-nats relay and
    its bridge queue goes.
    """
    targets = resolve(plan, names)
    view = current_view(plan, records)
    moves = []
    for resource in targets:
        before = view.of(resource.source_arn)
        blockers = finish_blockers(plan, resource, view)
        if blockers:
            raise UsageError(
                f"{resource.name} cannot be finished yet: "
                + "; ".join(blocker_text(b) for b in blockers),
                hint="move those first (`snsq2nats runbook` lists the order)",
            )
        after = before.model_copy(update={"finished": True})
        new_view = CutoverView(
            {**view.states, resource.source_arn: after}, {*view.moved, resource.source_arn}
        )
        move = _move(plan, resource, "finish", before, after, view, new_view)
        moves.append(replace(move, unused=_unused_after_finish(plan, resource)))
        view = new_view
    return moves


# --- one move -----------------------------------------------------------------------------------


def _move(
    plan: Plan,
    resource: Resource,
    side: Side,
    before: Cutover,
    after: Cutover,
    old: CutoverView,
    new: CutoverView,
) -> Move:
    was = {r.name: r for r in active_routes(plan.candidate_routes, old)}
    now = {r.name: r for r in active_routes(plan.candidate_routes, new)}
    return Move(
        resource=resource,
        side=side,
        before=before,
        after=after,
        starts=[r for n, r in sorted(now.items()) if n not in was],
        stops=[r for n, r in sorted(was.items()) if n not in now],
        steps=_steps(resource, side, before, after),
    )


def _steps(resource: Resource, side: Side, before: Cutover, after: Cutover) -> list[TeamStep]:
    name = resource.name
    if before == after:
        if side == "finish":
            return [TeamStep(TeamKind.FINISHED_ALREADY, name)]
        return [TeamStep(TeamKind.ALREADY_THERE, name, side=side, where=getattr(after, side))]
    manual = [(f.attribute, f.manual_step) for f in resource.fidelity if f.manual_step is not None]
    fifo = any(f.attribute == "FifoQueue" for f in resource.fidelity)
    gateway = gateway_steps(resource, side, before, after)
    if side == "consumers" and after.consumers == "nats":
        return [
            TeamStep(
                TeamKind.START_NATS_WORKERS,
                name,
                durable=resource.consumer or "",
                stream=resource.stream or "",
            ),
            *(TeamStep(TeamKind.WORKERS_NOTE, name, attribute=a, note=m) for a, m in manual),
            TeamStep(TeamKind.AWS_WORKERS_MAY_RUN, name, fifo=fifo),
            *gateway,
        ]
    if side == "consumers":
        if fifo:
            return [
                TeamStep(TeamKind.STOP_NATS_WORKERS_FIRST, name),
                TeamStep(TeamKind.START_AWS_WORKERS_AFTER_RELAY, name),
                *gateway,
            ]
        return [
            TeamStep(TeamKind.START_AWS_WORKERS, name),
            TeamStep(TeamKind.NATS_WORKERS_MAY_RUN, name),
            *gateway,
        ]
    if side == "producers":
        steps = [TeamStep(TeamKind.PRODUCERS_MAY_PUBLISH, name, where=after.producers)]
        if after.producers in ("nats", "both") and before.producers == "aws":
            steps.append(TeamStep(TeamKind.PUBLISH_TO, name, subject=resource.publish_subject))
            steps += [
                TeamStep(TeamKind.PRODUCERS_NOTE, name, attribute=a, note=m) for a, m in manual
            ]
        if after.producers == "nats":
            steps.append(TeamStep(TeamKind.STOP_PUBLISHING_ON_AWS, name))
        if after.producers == "aws":
            steps.append(TeamStep(TeamKind.STOP_PUBLISHING_ON_NATS, name))
        return steps + gateway
    return [TeamStep(TeamKind.NOTHING_ON_AWS, name)]


# --- the third way: the same application, its endpoint changed ---------------------------------

SQS_ENDPOINT_ENV = "AWS_ENDPOINT_URL_SQS"
SNS_ENDPOINT_ENV = "AWS_ENDPOINT_URL_SNS"

GatewayRole = Literal["consumer", "producer", "publisher"]
GATEWAY_KINDS = frozenset(
    {
        TeamKind.GATEWAY_WORKERS,
        TeamKind.GATEWAY_PRODUCERS,
        TeamKind.GATEWAY_WORKERS_BACK,
        TeamKind.GATEWAY_PRODUCERS_BACK,
    }
)
"""The team steps about applications that move by changing their endpoint."""


def gateway_identity(resource: Resource, role: GatewayRole) -> str | None:
    """The identity `snsq2nats auth` generates for `role` of a queue or topic, whose access key
    in `gateway-keys.json` the application uses through the gateway (None: it has none)."""
    return resource_identity(resource, role)


def gateway_steps(
    resource: Resource, side: Side, before: Cutover, after: Cutover
) -> list[TeamStep]:
    """What a move means for applications that change only their endpoint: a worker reading
    through the gateway reads the queue's durable and a producer sending through it publishes
    on NATS, so each is one more NATS worker or producer and may be there exactly when the
    native ones may."""
    name = resource.name
    fifo = any(f.attribute in ("FifoQueue", "FifoTopic") for f in resource.fidelity)
    if side == "consumers":
        identity = gateway_identity(resource, "consumer")
        if identity is None:
            return []
        if after.consumers == "nats":
            return [
                TeamStep(
                    TeamKind.GATEWAY_WORKERS,
                    name,
                    durable=resource.consumer or "",
                    durables=tuple(resource.durables),
                    identity=identity,
                    env=SQS_ENDPOINT_ENV,
                    fifo=fifo,
                    before=before.consumers,
                )
            ]
        if before.consumers == "nats":
            return [TeamStep(TeamKind.GATEWAY_WORKERS_BACK, name, env=SQS_ENDPOINT_ENV, fifo=fifo)]
        return []
    if side != "producers":
        return []
    role: GatewayRole = "producer" if resource.kind == QUEUE else "publisher"
    identity = gateway_identity(resource, role)
    env = SQS_ENDPOINT_ENV if resource.kind == QUEUE else SNS_ENDPOINT_ENV
    if identity is None:
        return []
    if after.producers in ("nats", "both"):
        return [
            TeamStep(
                TeamKind.GATEWAY_PRODUCERS,
                name,
                where=after.producers,
                subject=resource.publish_subject,
                identity=identity,
                env=env,
                consumers=after.consumers if resource.kind == QUEUE else "",
                fifo=fifo,
                before=before.producers,
            )
        ]
    if before.producers != "aws":
        return [TeamStep(TeamKind.GATEWAY_PRODUCERS_BACK, name, env=env)]
    return []


# --- finish -------------------------------------------------------------------------------------


def _subscriptions_into(plan: Plan, queue: Resource) -> list[Resource]:
    return [
        r
        for r in plan.resources
        if r.kind == "sns-subscription" and r.stream == queue.stream and r.stream is not None
    ]


def _topic_of(plan: Plan, subscription: Resource) -> Resource | None:
    arn = subscription_topic(subscription.source_arn)
    return next((r for r in plan.resources if r.source_arn == arn and r.kind == TOPIC), None)


class BlockerKind(StrEnum):
    """Why a finish cannot be made yet (`Blocker.name` and `.side` are the facts)."""

    PRODUCERS_ON = "producers-on"
    CONSUMERS_ON_AWS = "consumers-on-aws"
    TOPIC_PRODUCERS_ON = "topic-producers-on"
    TOPIC_NOT_FINISHED = "topic-not-finished"
    TOPIC_FANS_OUT = "topic-fans-out"
    SNS_ONLY_SUBSCRIPTION = "sns-only-subscription"
    QUEUE_CONSUMERS_ON_AWS = "queue-consumers-on-aws"
    FANS_OUT_THROUGH_SNS = "fans-out-through-sns"
    SOURCE_NOT_FINISHED = "source-not-finished"
    """A dead-letter queue whose source queue is not finished (the runbook's order)."""


@dataclass(frozen=True)
class Blocker:
    kind: BlockerKind
    name: str = ""
    """The topic, subscription or queue in the way (the resource itself: empty)."""
    side: str = ""
    """Where its producers are, for the kinds that say so."""


def blocker_text(blocker: Blocker) -> str:
    """The blocker in words: the one wording, for the refusal (a `UsageError` says what and
    why where it is raised) and for the runbook's blocked steps alike."""
    name, side = blocker.name, blocker.side
    match blocker.kind:
        case BlockerKind.PRODUCERS_ON:
            return f"its producers are on {side}"
        case BlockerKind.CONSUMERS_ON_AWS:
            return "its consumers are on AWS"
        case BlockerKind.TOPIC_PRODUCERS_ON:
            return f"topic {name} still has producers on {side}"
        case BlockerKind.TOPIC_NOT_FINISHED:
            return (
                f"topic {name} delivers into it through SNS until it is finished "
                f"(`snsq2nats cutover finish {name}` first)"
            )
        case BlockerKind.TOPIC_FANS_OUT:
            return f"topic {name} delivers into it through SNS"
        case BlockerKind.SNS_ONLY_SUBSCRIPTION:
            return f"subscription {name} is served by SNS only"
        case BlockerKind.QUEUE_CONSUMERS_ON_AWS:
            return f"{name}'s consumers are on AWS"
        case BlockerKind.FANS_OUT_THROUGH_SNS:
            return (
                "it fans out through SNS for a subscriber NATS cannot serve (see its Fanout "
                "note), so the bridge keeps relaying it"
            )
        case BlockerKind.SOURCE_NOT_FINISHED:
            return f"its source queue {name} is not finished: SQS can still dead-letter into it"


def finish_blockers(plan: Plan, resource: Resource, view: CutoverView) -> list[Blocker]:
    """What stands between `resource` and its finish in state `view` (empty: nothing)."""
    state = view.of(resource.source_arn)
    blockers = []
    if state.producers != "nats":
        blockers.append(Blocker(BlockerKind.PRODUCERS_ON, side=state.producers))
    if resource.kind == QUEUE:
        if state.consumers != "nats":
            blockers.append(Blocker(BlockerKind.CONSUMERS_ON_AWS))
        for sub in _subscriptions_into(plan, resource):
            topic = _topic_of(plan, sub)
            if topic is None:
                continue
            fed = view.of(topic.source_arn)
            if fed.producers != "nats":
                blockers.append(
                    Blocker(BlockerKind.TOPIC_PRODUCERS_ON, topic.name, side=fed.producers)
                )
            elif switches_at_finish(topic):
                if not fed.finished:
                    blockers.append(Blocker(BlockerKind.TOPIC_NOT_FINISHED, topic.name))
            elif _fans_out_through_sns(topic):
                blockers.append(Blocker(BlockerKind.TOPIC_FANS_OUT, topic.name))
        return blockers
    for sub in plan.resources:
        if sub.kind != "sns-subscription" or not sub.source_arn.startswith(
            resource.source_arn + ":"
        ):
            continue
        queue = next(
            (q for q in plan.resources if q.kind == QUEUE and q.stream == sub.stream and q.stream),
            None,
        )
        if queue is None:
            if any(
                f.verdict == "unsupported" and f.attribute in ("Protocol", "Endpoint")
                for f in sub.fidelity
            ):
                blockers.append(Blocker(BlockerKind.SNS_ONLY_SUBSCRIPTION, sub.name))
            continue
        if view.of(queue.source_arn).consumers != "nats":
            blockers.append(Blocker(BlockerKind.QUEUE_CONSUMERS_ON_AWS, queue.name))
    if _fans_out_through_sns(resource) and not switches_at_finish(resource) and not blockers:
        blockers.append(Blocker(BlockerKind.FANS_OUT_THROUGH_SNS))
    return blockers


def aws_feeds(plan: Plan, queue: Resource, view: CutoverView) -> list[str]:
    """What still puts messages into the queue's SQS queue in state `view` (empty: nothing)."""
    feeds = []
    producers = view.of(queue.source_arn).producers
    if producers != "nats":
        feeds.append(f"its producers on {producers}")
    for sub in _subscriptions_into(plan, queue):
        topic = _topic_of(plan, sub)
        if topic is None:
            continue
        state = view.of(topic.source_arn)
        if state.producers != "nats":
            feeds.append(f"topic {topic.name}'s producers on {state.producers} (through SNS)")
        elif _fans_out_through_sns(topic) and not state.finished:
            feeds.append(f"topic {topic.name}'s NATS producers (through SNS)")
    return feeds


def _fans_out_through_sns(topic: Resource) -> bool:
    return any(f.attribute == "Fanout" for f in topic.fidelity)


def switches_at_finish(topic: Resource) -> bool:
    """A topic fanning out through SNS only for its queues' envelope: `finish` switches it."""
    return any(
        f.attribute == "Fanout" and f.target == FANOUT_UNTIL_FINISHED for f in topic.fidelity
    )


def _unused_after_finish(plan: Plan, resource: Resource) -> list[str]:
    """AWS resources nothing reads or writes through snsq2nats once `resource` is finished."""
    if resource.kind == QUEUE:
        return [resource.source_arn]
    unused = [resource.source_arn]
    for sub in plan.resources:
        if sub.kind == "sns-subscription" and sub.source_arn.startswith(resource.source_arn + ":"):
            unused.append(sub.source_arn)
    return unused
