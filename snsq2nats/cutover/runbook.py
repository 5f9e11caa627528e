"""The migration runbook: every `snsq2nats cutover` move of the estate, in the order to make them.

Moves are grouped by what is wired together: a topic (or several topics sharing a queue) with
the queues subscribed to it, then each queue no topic feeds. Within a group the order keeps the
bridge's work small and each handover exact:

1. each queue's consumers to NATS (`--wait`: then its old AWS workers may stop), its
   dead-letter queue right after it — the DLQ mover starts filling the DLQ's stream as soon as
   the queue's workers fail on NATS, so the DLQ's readers move with it;
2. each topic's producers to both sides (new publishers roll out), then to NATS only;
3. each queue's own producers (those that publish to the queue directly) to NATS;
4. finish: each queue (`--wait`: once its SQS queue is empty), then each topic; a topic that
   fans out through SNS until finished goes first (its finish switches it to stream sources).

The order is checked by playing it through `cutover.moves` from the plan's own state, so every
step is a move `snsq2nats cutover` accepts at that point, and a finish `moves` would refuse (a
topic fanning out through SNS, a subscriber only SNS serves) becomes a blocked step with the
same blockers (`moves.finish_blockers`).
Progress marks come from the live cutover state (`plan.states` records): a step is done when
the live state already has its resource where the step puts it.

Each consumers and producers step also carries the third way to make its move (`gateway`): the
unchanged application pointed at `snsq2nats gateway`, which makes it a NATS worker or producer,
with the step from which that is safe and whether the live state allows it yet.

Pure: a plan and records in, a `Runbook` out. A step's gate, changes, caveats and blockers are
data (a kind and its facts); `report.runbook` words them.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Literal

from snsq2nats.aws.arns import subscription_topic
from snsq2nats.cutover.moves import (
    GATEWAY_KINDS,
    Blocker,
    BlockerKind,
    Move,
    Side,
    Switch,
    TeamStep,
    finish_blockers,
    gateway_steps,
    plan_finish,
    plan_moves,
    switches_at_finish,
)
from snsq2nats.plan.model import Fidelity, Plan, Resource
from snsq2nats.plan.routes import BRIDGE_QUEUE_PREFIX
from snsq2nats.plan.rules import Cutover
from snsq2nats.plan.states import QUEUE, TOPIC, CutoverRecord, current_view

Status = Literal["done", "todo", "blocked"]

RUNBOOK_FORMAT = 1
_PRODUCER_WORDS = ("producer", "publish")


class GateKind(StrEnum):
    """What must hold before a step is run; `Gate`'s facts complete it."""

    APPLIED = "applied"
    """The plan is applied, a bridge runs, the queue's new workers are deployed (`name`)."""
    SOURCE_CONSUMERS = "source-consumers"
    """A DLQ's consumers: after its source queue's (`steps`, `name` the source)."""
    NO_QUEUE_ON_NATS = "no-queue-on-nats"
    """A topic's producers to both sides while none of its queues reads on NATS."""
    TOPIC_QUEUES_ON_NATS = "topic-queues-on-nats"
    """A topic's producers to both sides once its queues read on NATS (`steps`, `name`)."""
    QUEUE_ON_NATS = "queue-on-nats"
    """A queue's producers once the queue reads on NATS (`steps`, `name`)."""
    TOPIC_PUBLISHES_ON_NATS = "topic-publishes-on-nats"
    """A topic's producers to NATS only: after both sides, once every producer publishes on
    NATS (`steps`, `name`)."""
    DLQ_REDRIVE_ON_NATS = "dlq-redrive-on-nats"
    """A DLQ's producers: its source's redrive runs on NATS (`steps`, `name` the source)."""
    TOPICS_PUBLISH_ON_NATS = "topics-publish-on-nats"
    """A queue's producers once the topics feeding it publish on NATS (`steps`)."""
    QUEUE_QUIET = "queue-quiet"
    """A queue's finish: nothing publishes to its SQS queue (`name`, `fed_by_topics`, `route`;
    `steps`: its source queue's finish, for a DLQ)."""
    TOPIC_QUIET = "topic-quiet"
    """A topic's finish: its relay drained (`route`) or nothing publishes on AWS (`steps`: its
    queues' finishes)."""


@dataclass(frozen=True)
class Gate:
    kind: GateKind
    name: str = ""
    steps: list[int] = field(default_factory=list)
    route: str | None = None
    fed_by_topics: bool = False


class ChangeKind(StrEnum):
    """What the application team does around a step; `Change`'s facts complete it."""

    NO_STREAM = "no-stream"
    BIND = "bind"
    """Bind the workers to the durable `items[0]` on stream `other`."""
    BIND_PARTITIONS = "bind-partitions"
    """Bind the workers to every partition durable (`items`) on stream `other` of `name`."""
    PLAN_NOTE = "plan-note"
    """A fidelity note's manual step (`note`) of `attribute`, owned by `other` when that is
    not the resource itself."""
    KEEP_AWS_WORKERS = "keep-aws-workers"
    PUBLISH = "publish"
    """Publish to the subject `other` (empty: none), filling the tokens `items`."""
    HEADERS = "headers"
    GROUP_TOKEN = "group-token"
    ROLL_OUT = "roll-out"
    STOP_TOPIC_ON_AWS = "stop-topic-on-aws"
    STOP_QUEUE_DIRECT = "stop-queue-direct"
    STOP_QUEUE = "stop-queue"
    DLQ_MOVER_FILLS = "dlq-mover-fills"
    """Nothing to change: the DLQ mover fills `name`'s stream from `other`'s NATS workers."""
    QUEUE_RETIRED = "queue-retired"
    RELAY_STOPS = "relay-stops"
    TOPIC_RETIRED = "topic-retired"
    UNUSED_AWS = "unused-aws"
    """The AWS resources (`items`, ARNs) nothing uses any more once finished."""
    UNBLOCK = "unblock"
    """A manual step (`note`, of subscription `other` when given) that would unblock it."""


@dataclass(frozen=True)
class Change:
    kind: ChangeKind
    name: str = ""
    """The resource the step moves, as commands name it."""
    other: str = ""
    items: list[str] = field(default_factory=list)
    note: str = ""
    attribute: str = ""


class CaveatKind(StrEnum):
    FIFO_PRODUCERS = "fifo-producers"
    FIFO_CONSUMERS = "fifo-consumers"
    PARTITIONED = "partitioned"
    """Partitioned into `count` durables."""


@dataclass(frozen=True)
class Caveat:
    kind: CaveatKind
    count: int = 0


@dataclass(frozen=True)
class GatewayOption:
    """The third way to make a step's move: the application changes only its endpoint."""

    step: TeamStep
    """The move's own team step about it (`cutover` says the same; `report.cutover` words it)."""
    since: int = 0
    """The step that makes it safe: this one, or an earlier move of the same side."""
    ready: bool = False
    """The live state already allows it (step `since` is made)."""


@dataclass(frozen=True)
class Step:
    number: int
    resource: str
    arn: str
    kind: Literal["queue", "topic"]
    action: Side
    to: str | None
    """consumers/producers: the side the step moves them to; finish: None."""
    command: str | None
    """The exact command; None when the step cannot be made (see `blocked`)."""
    gate: Gate
    """What must hold before the step is run."""
    changes: list[Change] = field(default_factory=list)
    """What the application team does around the step, in order."""
    caveats: list[Caveat] = field(default_factory=list)
    dead_letter_of: str | None = None
    """The queue that dead-letters into this one, when that is why it is in this group."""
    blocked: list[Blocker] = field(default_factory=list)
    """Why the step cannot be made yet (empty: it can)."""
    status: Status = "todo"
    gateway: GatewayOption | None = None
    """consumers/producers: the same move made by pointing the application at the gateway."""

    @property
    def title(self) -> str:
        if self.action == "finish":
            return f"finish {self.resource}"
        side = {"nats": "NATS", "aws": "AWS", "both": "both sides"}[self.to or "nats"]
        return f"{self.resource}: {self.action} → {side}"


@dataclass(frozen=True)
class Group:
    title: str
    topics: list[str]
    queues: list[str]
    steps: list[Step]


@dataclass(frozen=True)
class Runbook:
    plan_generated_at: str
    groups: list[Group]
    progress_source: str
    """Where the progress marks come from: the live cutover state, or only the plan's."""
    notes: list[str] = field(default_factory=list)

    @property
    def steps(self) -> list[Step]:
        return [step for group in self.groups for step in group.steps]

    def counts(self) -> dict[str, int]:
        counts = {"done": 0, "todo": 0, "blocked": 0}
        for step in self.steps:
            counts[step.status] += 1
        return counts


# --- the estate's shape -----------------------------------------------------------------------


@dataclass
class _Estate:
    plan: Plan
    queues: dict[str, Resource]
    topics: dict[str, Resource]
    topic_queues: dict[str, list[str]]
    """Topic ARN → the ARNs of the mapped queues subscribed to it (a stream behind them)."""
    queue_topics: dict[str, list[str]]
    dlqs: dict[str, list[str]]
    """Queue ARN → its dead-letter queues' ARNs (mapped queues only)."""
    label: dict[str, str]
    """ARN → how commands name it: the name, or the ARN when the name is ambiguous."""

    @classmethod
    def of(cls, plan: Plan) -> _Estate:
        # The bridge's own queue for a topic is not an application's: a scan made while a
        # bridge runs finds it, but nothing moves it.
        queues = {
            r.source_arn: r
            for r in plan.resources
            if r.kind == QUEUE and not r.name.startswith(BRIDGE_QUEUE_PREFIX)
        }
        topics = {r.source_arn: r for r in plan.resources if r.kind == TOPIC}
        by_stream = {q.stream: arn for arn, q in queues.items() if q.stream}
        topic_queues: dict[str, list[str]] = {arn: [] for arn in topics}
        queue_topics: dict[str, list[str]] = {}
        for sub in plan.resources:
            if sub.kind != "sns-subscription" or sub.stream not in by_stream:
                continue
            topic_arn = subscription_topic(sub.source_arn)
            queue_arn = by_stream[sub.stream]
            if topic_arn in topics and queue_arn not in topic_queues[topic_arn]:
                topic_queues[topic_arn].append(queue_arn)
                queue_topics.setdefault(queue_arn, []).append(topic_arn)
        names: dict[str, int] = {}
        for r in [*queues.values(), *topics.values()]:
            names[r.name] = names.get(r.name, 0) + 1
        label = {
            arn: r.name if names[r.name] == 1 else arn for arn, r in {**queues, **topics}.items()
        }
        return cls(plan, queues, topics, topic_queues, queue_topics, _dead_letters(plan), label)

    def name(self, arn: str) -> str:
        return (self.queues.get(arn) or self.topics[arn]).name

    def resource(self, arn: str) -> Resource:
        return self.queues.get(arn) or self.topics[arn]


def _dead_letters(plan: Plan) -> dict[str, list[str]]:
    """Each queue's DLQ, from the dlq-mover routes and the RedrivePolicy fidelity (a plan made
    before candidate routes existed has only the latter)."""
    queues = {r.source_arn for r in plan.resources if r.kind == QUEUE}
    dlqs: dict[str, list[str]] = {}

    def add(queue: str, dlq: str | None) -> None:
        if dlq and dlq in queues and dlq != queue and dlq not in dlqs.get(queue, []):
            dlqs.setdefault(queue, []).append(dlq)

    for route in [*plan.candidate_routes, *plan.routes]:
        if route.kind == "dlq-mover":
            add(route.source_arn, route.aws_arn)
    for resource in plan.resources:
        for f in resource.fidelity:
            if f.attribute == "RedrivePolicy.deadLetterTargetArn" and f.verdict != "unsupported":
                add(resource.source_arn, f.value)
    return dlqs


def _groups(estate: _Estate) -> list[tuple[list[str], list[str], dict[str, list[str]]]]:
    """(topics, queues, DLQs attached after each queue) per group, in runbook order.

    Topics sharing a queue form one group (the queue's finish waits for all of them); a DLQ no
    topic feeds joins the group of the first queue that dead-letters into it.
    """
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            x = parent[x]
        return x

    for topic, queues in estate.topic_queues.items():
        find(topic)
        for queue in queues:
            parent[find(queue)] = find(topic)
    members: dict[str, list[str]] = {}
    for topic in estate.topics:
        members.setdefault(find(topic), []).append(topic)
    for queue in estate.queue_topics:
        members.setdefault(find(queue), []).append(queue)

    def by_name(arns: list[str]) -> list[str]:
        return sorted(arns, key=lambda a: (estate.name(a), a))

    topic_groups = []
    for arns in members.values():
        topics = by_name([a for a in arns if a in estate.topics])
        queues = by_name([a for a in arns if a in estate.queues])
        topic_groups.append((topics, queues))
    topic_groups.sort(key=lambda g: (estate.name(g[0][0]), g[0][0]))

    fed = set(estate.queue_topics)
    dead = {d for ds in estate.dlqs.values() for d in ds if d not in fed}
    lone = by_name([a for a in estate.queues if a not in fed and a not in dead])
    ordered = [*topic_groups, *(([], [q]) for q in lone)]

    placed: set[str] = set()
    out = []
    for topics, queues in ordered:
        attached: dict[str, list[str]] = {}
        for queue in queues:
            for dlq in by_name(estate.dlqs.get(queue, [])):
                if dlq in dead and dlq not in placed:
                    attached.setdefault(queue, []).append(dlq)
                    placed.add(dlq)
        out.append((topics, queues, attached))
    # A DLQ whose only sources are themselves DLQs (a chain) still gets its steps.
    for dlq in by_name([d for d in dead if d not in placed]):
        out.append(([], [dlq], {}))
    return out


# --- the runbook --------------------------------------------------------------------------------


def make_runbook(
    plan: Plan,
    records: Mapping[str, CutoverRecord] | None = None,
    *,
    progress_source: str | None = None,
    notes: list[str] | None = None,
) -> Runbook:
    """The ordered moves of the whole estate, marked with the progress `records` record.

    `records`: the live cutover state by ARN (`cutover.engine.read_records`); None when no
    server was read, and the marks then follow the plan's own state (its mapping's `cutover:`
    keys).
    """
    estate = _Estate.of(plan)
    live = current_view(plan, records or {})
    writer = _Writer(estate)
    groups = []
    for topics, queues, attached in _groups(estate):
        steps = writer.group_steps(topics, queues, attached)
        steps = [_with_status(step, live.of(step.arn)) for step in steps]
        names = [estate.label[a] for a in topics]
        title = (
            f"topic{'s' if len(topics) > 1 else ''} {', '.join(names)}"
            if topics
            else f"queue {estate.label[queues[0]]}"
        )
        groups.append(Group(title, names, [estate.label[q] for q in queues], steps))
    return Runbook(
        plan_generated_at=plan.generated_at,
        groups=groups,
        progress_source=progress_source
        or ("the live cutover state" if records is not None else "the plan's own cutover state"),
        notes=list(notes or []),
    )


def _with_status(step: Step, state: Cutover) -> Step:
    if step.gateway is not None:
        if step.action == "consumers":
            ready = state.finished or state.consumers == "nats"
        else:
            ready = state.finished or state.producers in ("both", "nats")
        step = _replace(step, gateway=replace(step.gateway, ready=ready))
    if step.action == "consumers":
        done = state.finished or state.consumers == step.to
    elif step.action == "producers" and step.to == "both":
        done = state.finished or state.producers in ("both", "nats")
    elif step.action == "producers":
        done = state.finished or state.producers == step.to
    else:
        done = state.finished
    if done:
        return _replace(step, status="done")
    return _replace(step, status="blocked" if step.blocked else "todo")


def _replace(step: Step, **changes: Any) -> Step:
    return replace(step, **changes)


class _Writer:
    """Plays the moves through `cutover.moves` from the plan's state, numbering the steps."""

    def __init__(self, estate: _Estate) -> None:
        self.estate = estate
        self.records: dict[str, CutoverRecord] = {}
        self.number = 0
        self.finished: set[str] = set()
        self.done_at: dict[tuple[str, str], int] = {}
        """(ARN, action[:to]) → the step number that makes it."""

    def group_steps(
        self, topics: list[str], queues: list[str], attached: dict[str, list[str]]
    ) -> list[Step]:
        flat = [a for q in queues for a in [q, *attached.get(q, [])]]
        dlq_of = {d: q for q, ds in attached.items() for d in ds}
        steps = [self._consumers(q, dlq_of.get(q)) for q in flat]
        for topic in topics:
            steps.append(self._producers(topic, "both", dlq_of.get(topic)))
            steps.append(self._producers(topic, "nats", dlq_of.get(topic)))
        steps += [self._producers(q, "nats", dlq_of.get(q)) for q in flat]
        # A topic that fans out through SNS until finished goes first: its finish is the switch
        # to stream sources, after which nothing reaches its queues' SQS queues.
        switching = [t for t in topics if switches_at_finish(self.estate.topics[t])]
        steps += [self._finish(t, None) for t in switching]
        steps += [self._finish(q, dlq_of.get(q)) for q in flat]
        steps += [self._finish(t, None) for t in topics if t not in switching]
        return steps

    # --- one step each ---

    def _next(self, arn: str, key: str) -> int:
        self.number += 1
        self.done_at[(arn, key)] = self.number
        return self.number

    def _record(self, arn: str, state: Cutover) -> None:
        resource = self.estate.resource(arn)
        self.records[arn] = CutoverRecord(
            arn=arn,
            kind="queue" if resource.kind == QUEUE else "topic",
            name=resource.name,
            state=state,
        )

    def _command(self, *words: str) -> str:
        return "snsq2nats cutover " + " ".join(shlex.quote(w) if w else w for w in words)

    def _consumers(self, arn: str, dlq_of: str | None) -> Step:
        estate, resource = self.estate, self.estate.queues[arn]
        (move,) = plan_moves(estate.plan, self.records, "consumers", [arn], "nats")
        self._record(arn, move.after)
        number = self._next(arn, "consumers")
        label = estate.label[arn]
        if dlq_of is not None:
            gate = Gate(
                GateKind.SOURCE_CONSUMERS,
                estate.label[dlq_of],
                [self.done_at[(dlq_of, "consumers")]],
            )
        else:
            gate = Gate(GateKind.APPLIED, label)
        changes = [
            *_bind(resource),
            *_manual(estate, arn, producers=False),
            Change(ChangeKind.KEEP_AWS_WORKERS, label),
        ]
        return Step(
            number=number,
            resource=label,
            arn=arn,
            kind="queue",
            action="consumers",
            to="nats",
            command=self._command("consumers", label, "--to", "nats", "--wait"),
            gate=gate,
            changes=changes,
            caveats=_fifo_caveats(resource, "consumers"),
            dead_letter_of=_source_label(estate, dlq_of),
            gateway=_gateway(move, number),
        )

    def _producers(self, arn: str, to: str, dlq_of: str | None) -> Step:
        estate, resource = self.estate, self.estate.resource(arn)
        (move,) = plan_moves(estate.plan, self.records, "producers", [arn], to)
        before = move.before.producers
        self._record(arn, move.after)
        number = self._next(arn, f"producers:{to}")
        label = estate.label[arn]
        kind: Literal["queue", "topic"] = "queue" if arn in estate.queues else "topic"
        changes: list[Change] = []
        if before == "aws":
            changes += _publish(resource, label)
            changes += _manual(estate, arn, producers=True)
        if to == "both":
            changes.append(Change(ChangeKind.ROLL_OUT, label))
        elif kind == "topic":
            changes.append(Change(ChangeKind.STOP_TOPIC_ON_AWS, label))
        elif arn in estate.queue_topics:
            changes.append(Change(ChangeKind.STOP_QUEUE_DIRECT, label))
        else:
            changes.append(Change(ChangeKind.STOP_QUEUE, label))
        if kind == "topic" and to == "both":
            gate = self._after_consumers(
                estate.topic_queues[arn], GateKind.TOPIC_QUEUES_ON_NATS, label
            )
        elif kind == "topic":
            gate = Gate(
                GateKind.TOPIC_PUBLISHES_ON_NATS, label, [self.done_at[(arn, "producers:both")]]
            )
        elif dlq_of is not None:
            source = estate.label[dlq_of]
            gate = Gate(
                GateKind.DLQ_REDRIVE_ON_NATS, source, [self.done_at[(dlq_of, "producers:nats")]]
            )
            changes = [Change(ChangeKind.DLQ_MOVER_FILLS, label, source)]
        else:
            feeding = [
                self.done_at[(t, "producers:nats")]
                for t in estate.queue_topics.get(arn, [])
                if (t, "producers:nats") in self.done_at
            ]
            gate = self._after_consumers([arn], GateKind.QUEUE_ON_NATS, label)
            if feeding:
                gate = Gate(GateKind.TOPICS_PUBLISH_ON_NATS, label, feeding)
        return Step(
            number=number,
            resource=label,
            arn=arn,
            kind=kind,
            action="producers",
            to=to,
            # A FIFO queue's backlog in SQS must reach the stream before NATS producers publish
            # the same groups' next messages: `--wait` returns once it has.
            command=self._command(
                "producers", label, "--to", to, *(["--wait"] if _is_fifo(resource) else [])
            ),
            gate=gate,
            changes=changes,
            caveats=_fifo_caveats(resource, "producers") if dlq_of is None else [],
            dead_letter_of=_source_label(estate, dlq_of),
            # A DLQ's only producer is the bridge's DLQ mover: no application to point anywhere.
            gateway=self._producers_gateway(arn, move, number) if dlq_of is None else None,
        )

    def _producers_gateway(self, arn: str, move: Move, number: int) -> GatewayOption | None:
        # A topic's producers publish on NATS from their move to both sides on.
        since = self.done_at.get((arn, "producers:both"), number)
        return _gateway(move, since)

    def _after_consumers(self, queues: list[str], kind: GateKind, label: str) -> Gate:
        numbers = [
            self.done_at[(q, "consumers")] for q in queues if (q, "consumers") in self.done_at
        ]
        if not numbers:
            return Gate(GateKind.NO_QUEUE_ON_NATS, label)
        return Gate(kind, label, numbers)

    def _finish(self, arn: str, dlq_of: str | None) -> Step:
        estate = self.estate
        label = estate.label[arn]
        kind: Literal["queue", "topic"] = "queue" if arn in estate.queues else "topic"
        blocked: list[Blocker] = []
        unused: list[str] = []
        if dlq_of is not None and dlq_of not in self.finished:
            blocked = [Blocker(BlockerKind.SOURCE_NOT_FINISHED, estate.label[dlq_of])]
        else:
            view = current_view(estate.plan, self.records)
            blocked = finish_blockers(estate.plan, estate.resource(arn), view)
            if not blocked:
                (move,) = plan_finish(estate.plan, self.records, [arn])
                self._record(arn, move.after)
                self.finished.add(arn)
                unused = move.unused
        number = self._next(arn, "finish")
        changes: list[Change]
        if kind == "queue":
            command = self._command("finish", label, "--wait")
            routes = _route_names(estate.plan, "sqs-to-nats", arn)
            gate = Gate(
                GateKind.QUEUE_QUIET,
                label,
                [self.done_at[(dlq_of, "finish")]] if dlq_of is not None else [],
                routes[0] if routes else None,
                fed_by_topics=arn in estate.queue_topics,
            )
            changes = [Change(ChangeKind.QUEUE_RETIRED, label), Change(ChangeKind.RELAY_STOPS)]
        else:
            command = self._command("finish", label)
            queued = [
                self.done_at[(q, "finish")]
                for q in estate.topic_queues[arn]
                if (q, "finish") in self.done_at
            ]
            routes = _route_names(estate.plan, "sns-to-nats", arn)
            gate = Gate(GateKind.TOPIC_QUIET, label, queued, routes[0] if routes else None)
            changes = [Change(ChangeKind.TOPIC_RETIRED, label)]
        if unused:
            changes.append(Change(ChangeKind.UNUSED_AWS, label, items=list(unused)))
        if blocked:
            changes = _blocking_steps(estate, arn)
        return Step(
            number=number,
            resource=label,
            arn=arn,
            kind=kind,
            action="finish",
            to=None,
            command=None if blocked else command,
            gate=gate,
            changes=changes,
            dead_letter_of=_source_label(estate, dlq_of),
            blocked=blocked,
        )


# --- what the team changes ----------------------------------------------------------------------


def _bind(queue: Resource) -> list[Change]:
    if not queue.stream or not queue.durables:
        return [Change(ChangeKind.NO_STREAM, queue.name)]
    durables = queue.durables
    if len(durables) > 1:
        return [Change(ChangeKind.BIND_PARTITIONS, queue.name, queue.stream, list(durables))]
    return [Change(ChangeKind.BIND, queue.name, queue.stream, [durables[0]])]


def _publish(resource: Resource, label: str) -> list[Change]:
    out = [
        Change(
            ChangeKind.PUBLISH, label, resource.publish_subject or "", list(resource.subject_tokens)
        ),
        Change(ChangeKind.HEADERS, label),
    ]
    if resource.publish_subject and resource.publish_subject.endswith(".<MessageGroupId>"):
        out.append(Change(ChangeKind.GROUP_TOKEN, label))
    return out


def _note(owner: str, resource: Resource, f: Fidelity) -> Change:
    return Change(
        ChangeKind.PLAN_NOTE,
        resource.name,
        "" if owner == resource.name else owner,
        note=f.manual_step or "",
        attribute=f.attribute,
    )


def _manual(estate: _Estate, arn: str, *, producers: bool) -> list[Change]:
    """The manual steps of a resource's fidelity notes (and, for a queue, of the subscriptions
    delivering into it) that concern one side: producers, or the workers (everything else)."""
    resource = estate.resource(arn)
    entries = [(resource.name, f) for f in resource.fidelity]
    if arn in estate.queues:
        for sub in estate.plan.resources:
            if sub.kind == "sns-subscription" and sub.stream and sub.stream == resource.stream:
                entries += [(sub.name, f) for f in sub.fidelity]
    elif producers:
        # A topic has no workers: its notes, and those of its subscriptions no mapped queue
        # reads (a queue's own step carries the others), land on its producers' step.
        for sub in estate.plan.resources:
            of_topic = sub.kind == "sns-subscription" and sub.source_arn.startswith(arn + ":")
            if of_topic and sub.stream is None:
                entries += [(sub.name, f) for f in sub.fidelity]
        return _unique(_note(owner, resource, f) for owner, f in entries if f.manual_step)
    out = []
    for owner, f in entries:
        if not f.manual_step:
            continue
        about_producers = any(w in f.manual_step.lower() for w in _PRODUCER_WORDS)
        if about_producers == producers:
            out.append(_note(owner, resource, f))
    return _unique(out)


def _blocking_steps(estate: _Estate, topic_or_queue: str) -> list[Change]:
    """The manual steps that would unblock a finish (subscriptions only SNS serves, Fanout)."""
    topics = (
        [topic_or_queue]
        if topic_or_queue in estate.topics
        else estate.queue_topics.get(topic_or_queue, [])
    )
    out = []
    for topic in topics:
        out += [
            Change(ChangeKind.UNBLOCK, note=f.manual_step)
            for f in estate.topics[topic].fidelity
            if f.attribute == "Fanout" and f.manual_step
        ]
        for sub in estate.plan.resources:
            if sub.kind == "sns-subscription" and sub.source_arn.startswith(topic + ":"):
                out += [
                    Change(ChangeKind.UNBLOCK, other=sub.name, note=f.manual_step)
                    for f in sub.fidelity
                    if f.manual_step and f.attribute in ("Protocol", "Endpoint")
                ]
    return _unique(out)


def _gateway(move: Move, since: int) -> GatewayOption | None:
    steps = move.steps
    if not move.changed and move.side != "finish":
        # Where the plan's own state has the side moved already, `cutover` has nothing to do,
        # but an application may still take the third way: say so, as safe now.
        steps = gateway_steps(move.resource, move.side, move.after, move.after)
    found = next((s for s in steps if s.kind in GATEWAY_KINDS), None)
    return None if found is None else GatewayOption(found, since)


def _is_fifo(queue: Resource) -> bool:
    return any(f.attribute == "FifoQueue" for f in queue.fidelity)


def _fifo_caveats(queue: Resource, side: Switch) -> list[Caveat]:
    if not _is_fifo(queue):
        return []
    if side == "producers":
        return [Caveat(CaveatKind.FIFO_PRODUCERS)]
    caveats = [Caveat(CaveatKind.FIFO_CONSUMERS)]
    if len(queue.durables) > 1:
        caveats.append(Caveat(CaveatKind.PARTITIONED, len(queue.durables)))
    return caveats


def _source_label(estate: _Estate, dlq_of: str | None) -> str | None:
    return None if dlq_of is None else estate.label[dlq_of]


def _route_names(plan: Plan, kind: str, arn: str) -> list[str]:
    routes = plan.candidate_routes or plan.routes
    return sorted({r.name for r in routes if r.kind == kind and r.source_arn == arn})


def _unique(items: Iterable[Change]) -> list[Change]:
    """In order, each once (a note shared by a resource and its subscription is said once)."""
    out: list[Change] = []
    for item in items:
        if item not in out:
            out.append(item)
    return out
