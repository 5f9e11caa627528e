"""Translate an inventory into JetStream: the semantic table of DESIGN.md §2 as one pure function.

The work per resource kind lives in `queues`, `topics` and `subscriptions`; this module runs
them in the order the facts become known, so each verdict is decided once, where everything it
depends on is already settled:

1. names: every queue, then every topic (collisions reported in that order; a topic's
   promoted attributes come with its name);
2. subscriptions: how each topic reaches each queue (a stream source, the filter router, SNS);
3. queues: streams, consumers and verdicts, knowing which are fed by a topic and which
   dead-letter queues are mapped;
4. routes (`routes.derive`): which topics need a stream for the bridge as well;
5. topics: their streams and verdicts.

Every attribute gets a fidelity verdict; nothing is dropped silently.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import replace
from typing import TypeVar

from snsq2nats.aws.arns import arn_name, parse_arn
from snsq2nats.errors import MappingError
from snsq2nats.inventory import Inventory, Subscription
from snsq2nats.jetstream.spec import ConsumerSpec, StreamSpec
from snsq2nats.plan.buckets import bucket_specs, ledger_specs
from snsq2nats.plan.context import Context
from snsq2nats.plan.model import Desired, Fidelity, Resource, Route
from snsq2nats.plan.queues import QueueFacts, QueueNames, name_queue, plan_queue
from snsq2nats.plan.routes import BRIDGE_QUEUE_PREFIX, QueueInfo, TopicInfo, derive
from snsq2nats.plan.rules import Cutover, Override, Rules
from snsq2nats.plan.subscriptions import Wiring, fanout_of, settle, wire
from snsq2nats.plan.topics import TopicNames, name_topic, topic_resource, topic_stream

_KIND_ORDER = {"sqs-queue": 0, "sns-topic": 1, "sns-subscription": 2}


def translate(
    inventory: Inventory,
    rules: Rules,
    *,
    server_version: str | None = None,
    cutover: Mapping[str, Cutover] | None = None,
    moved: Collection[str] = frozenset(),
) -> Desired:
    """The desired JetStream state for an inventory: pure, deterministic.

    `cutover`: the live cutover state by ARN (the `snsq2nats_cutover` bucket), which wins over
    the mapping's `cutover:` keys; `moved`: the resources it has a record of.
    """
    ctx = Context(rules, server_version)
    of_account = _account_contexts(ctx)
    queues = _name_queues(inventory, of_account, cutover or {})
    topics = _name_topics(inventory, of_account, cutover or {})
    wirings = _wire(inventory, topics, queues, rules)
    fanouts = {
        arn: fanout_of(group, topics[arn].cutover.finished)
        for arn, group in _group(wirings, lambda w: w.topic_arn).items()
    }
    wirings = [settle(w, *fanouts[w.topic_arn]) for w in wirings]
    into_queue = _group(wirings, lambda w: w.queue_arn)
    of_topic = _group(wirings, lambda w: w.topic_arn)
    scanned = {q.arn for q in inventory.queues}
    dead_letter_for = _dead_letter_counts(queues)
    plans = [
        plan_queue(
            names,
            _queue_facts(names, into_queue.get(arn, []), queues, scanned, dead_letter_for),
            of_account(names.queue.account),
        )
        for arn, names in queues.items()
    ]
    derived = derive(
        [_route_named(plan.info(), plan.names.queue.account, rules) for plan in plans],
        [
            _route_named(_topic_info(names, of_topic.get(arn, [])), names.topic.account, rules)
            for arn, names in topics.items()
        ],
        rules.defaults,
        advisory_replicas=rules.defaults.replicas,
        moved=moved,
    )
    _check_route_names(derived.candidates)

    streams: list[StreamSpec] = list(derived.streams)
    # Every route a cutover state may run needs them, not only those running in this one.
    streams += bucket_specs(bool(derived.candidates), rules.defaults.replicas)
    # Any topic with a stream: one that fans out through SNS in no revision of this plan may in
    # the applied one, and the handover of that fan-out (during this very apply) reads its records.
    streams += ledger_specs(bool(derived.topic_streams), rules.defaults.replicas)
    consumers: list[ConsumerSpec] = list(derived.consumers)
    resources: list[Resource] = []
    for names in topics.values():
        topic_ctx = of_account(names.topic.account)
        stream = (
            topic_stream(names, topic_ctx) if names.topic.arn in derived.topic_streams else None
        )
        if stream is not None:
            streams.append(stream)
        fanout = fanouts.get(names.topic.arn, ("sources", [], False))
        resources.append(topic_resource(names, stream, *fanout))
    for plan in plans:
        streams.append(plan.stream)
        consumers.extend(plan.consumers)
        resources.append(plan.resource())
    resources.extend(w.resource for w in wirings if w.resource is not None)
    resources = _mark_cross_account(resources, inventory, rules.accounts.nats == "per-account")
    return Desired(
        streams=sorted(streams, key=lambda s: s.name),
        consumers=sorted(consumers, key=lambda c: c.key),
        resources=sorted(resources, key=lambda r: (_KIND_ORDER[r.kind], r.source_arn)),
        routes=derived.routes,
        candidate_routes=derived.candidates,
    )


def _account_contexts(ctx: Context) -> Callable[[str], Context]:
    """The context each account's resources are named in. Under `accounts: merge` that is the
    one context; under `prefix` each account gets its own templates, sharing the registries of
    names taken, so a collision across accounts is still caught."""
    accounts = ctx.rules.accounts
    if accounts.naming == "merge":
        return lambda account: ctx
    made: dict[str, Context] = {}

    def of_account(account: str) -> Context:
        if account not in made:
            naming = accounts.naming_for(ctx.rules.naming, account)
            made[account] = Context(
                ctx.rules.model_copy(update={"naming": naming}),
                ctx.server_version,
                streams=ctx.streams,
                subjects=ctx.subjects,
            )
        return made[account]

    return of_account


InfoT = TypeVar("InfoT", QueueInfo, TopicInfo)


def _route_named(info: InfoT, account: str, rules: Rules) -> InfoT:
    """Under `accounts: prefix`, routes (and the bridge's queue for a topic) are named after
    `<label>-<name>`, so same-named queues of two accounts get two routes."""
    if rules.accounts.naming == "merge":
        return info
    return replace(info, name=f"{rules.accounts.label(account)}-{info.name}")


def _check_route_names(routes: list[Route]) -> None:
    """The bridge runs one route per name, and route names come from AWS names: two accounts'
    `orders` given apart by `{account}` in the naming templates would still share `sqs:orders`.
    (Same-named queues of one account's regions are left as they were.)"""
    owners: dict[str, str] = {}
    for route in routes:
        owner = owners.setdefault(route.name, route.source_arn)
        if _account_of(owner) not in ("", _account_of(route.source_arn)):
            raise MappingError(
                f"route name {route.name!r} would be shared by {owner} and {route.source_arn}",
                where="naming",
                hint="they are in different AWS accounts and the bridge runs one route per "
                "name: set `accounts: prefix` in a --mapping file (routes are then named "
                "`<account>-<name>`)",
            )


def _mark_cross_account(
    resources: list[Resource], inventory: Inventory, per_account: bool = False
) -> list[Resource]:
    """Every edge whose two ends are in different AWS accounts, as a fidelity line on the
    resource it starts from: a subscription to another account's queue, a dead-letter queue
    in another account."""
    edges: dict[str, list[tuple[str, str, str]]] = {}
    for sub in inventory.subscriptions:
        if sub.protocol == "sqs":
            edges.setdefault(sub.arn, []).append(("Endpoint", sub.account, sub.endpoint))
        if sub.redrive_policy is not None:
            target = sub.redrive_policy.dead_letter_target_arn
            edges.setdefault(sub.arn, []).append(("RedrivePolicy", sub.account, target))
    for queue in inventory.queues:
        if queue.redrive_policy is not None:
            target = queue.redrive_policy.dead_letter_target_arn
            edges.setdefault(queue.arn, []).append(("RedrivePolicy", queue.account, target))
    marked: list[Resource] = []
    for resource in resources:
        notes = [
            _cross_account(attribute, here, there, per_account)
            for attribute, here, there in edges.get(resource.source_arn, [])
            if _account_of(there) not in ("", here)
        ]
        if notes:
            resource = resource.model_copy(update={"fidelity": [*resource.fidelity, *notes]})
        marked.append(resource)
    return marked


def _account_of(arn: str) -> str:
    try:
        return parse_arn(arn).account
    except ValueError:
        return ""


def _cross_account(attribute: str, here: str, there: str, per_account: bool) -> Fidelity:
    what = "dead-letter queue" if attribute == "RedrivePolicy" else "queue"
    if per_account:
        return Fidelity(
            attribute=f"{attribute} (cross-account)",
            value=f"{here} → {_account_of(there)}",
            verdict="approximate",
            target="NATS account per AWS account",
            note=f"the {what} {there} is in AWS account {_account_of(there)}, this resource in "
            f"{here}: each is in its own NATS account, and the plan's `crossings` say how the "
            "edge crosses (a stream source through an export and an import, or the bridge)",
        )
    return Fidelity(
        attribute=f"{attribute} (cross-account)",
        value=f"{here} → {_account_of(there)}",
        verdict="approximate",
        target="one NATS account",
        note=f"the {what} {there} is in AWS account {_account_of(there)}, this resource in "
        f"{here}: on NATS both are in one account, so the edge crosses no account boundary "
        "and keeping the two apart rests on each identity's permissions (`snsq2nats auth`); "
        "a NATS account per AWS account is not planned yet",
    )


def _name_queues(
    inventory: Inventory, of_account: Callable[[str], Context], cutover: Mapping[str, Cutover]
) -> dict[str, QueueNames]:
    queues: dict[str, QueueNames] = {}
    for queue in inventory.queues:
        if _bridge_owned(queue.name):
            continue  # the bridge's own queue for a topic, seen by a scan made while it ran
        ctx = of_account(queue.account)
        override = _with_live(ctx.rules.resolve(queue.name, queue.arn), cutover.get(queue.arn))
        if not override.exclude:
            queues[queue.arn] = name_queue(queue, override, ctx)
    return queues


def _name_topics(
    inventory: Inventory, of_account: Callable[[str], Context], cutover: Mapping[str, Cutover]
) -> dict[str, TopicNames]:
    # Grouped once: asking the inventory per topic is topics x subscriptions, minutes at 10k.
    of_topic: dict[str, list[Subscription]] = {}
    for sub in inventory.subscriptions:
        of_topic.setdefault(sub.topic_arn, []).append(sub)
    topics: dict[str, TopicNames] = {}
    for topic in inventory.topics:
        ctx = of_account(topic.account)
        override = _with_live(ctx.rules.resolve(topic.name, topic.arn), cutover.get(topic.arn))
        if not override.exclude:
            subscriptions = of_topic.get(topic.arn, [])
            topics[topic.arn] = name_topic(topic, override, subscriptions, ctx)
    return topics


def _bridge_owned(queue_name: str) -> bool:
    return queue_name.startswith(BRIDGE_QUEUE_PREFIX)


def _with_live(override: Override, live: Cutover | None) -> Override:
    return override if live is None else override.model_copy(update={"cutover": live})


def _wire(
    inventory: Inventory,
    topics: dict[str, TopicNames],
    queues: dict[str, QueueNames],
    rules: Rules,
) -> list[Wiring]:
    wirings: list[Wiring] = []
    for sub in inventory.subscriptions:
        topic = topics.get(sub.topic_arn)
        if topic is None:
            continue  # topic excluded or not scanned: reported by the scan
        if sub.protocol == "sqs" and _bridge_owned(arn_name(sub.endpoint)):
            continue  # the bridge's subscription: its sns-to-nats route, not a subscriber
        excluded = rules.resolve(sub.arn, sub.arn).exclude
        target = queues.get(sub.endpoint) if sub.protocol == "sqs" else None
        wirings.append(wire(sub, topic, target, excluded=excluded))
    return wirings


def _group(wirings: list[Wiring], key: Callable[[Wiring], str | None]) -> dict[str, list[Wiring]]:
    groups: dict[str, list[Wiring]] = {}
    for wiring in wirings:
        value = key(wiring)
        if value is not None:
            groups.setdefault(value, []).append(wiring)
    return groups


def _dead_letter_counts(queues: dict[str, QueueNames]) -> dict[str, int]:
    """How many mapped queues dead-letter into each queue ARN, counted in one pass."""
    counts: dict[str, int] = {}
    for q in queues.values():
        if q.queue.redrive_policy is not None:
            target = q.queue.redrive_policy.dead_letter_target_arn
            counts[target] = counts.get(target, 0) + 1
    return counts


def _queue_facts(
    names: QueueNames,
    wirings: list[Wiring],
    queues: dict[str, QueueNames],
    scanned: set[str],
    dead_letter_for: dict[str, int],
) -> QueueFacts:
    """What the subscriptions into the queue and the other queues decide about it."""
    feeding = [w for w in wirings if w.feeds_queue]
    redrive = names.queue.redrive_policy
    dlq_unmapped = None
    if redrive is not None and redrive.dead_letter_target_arn not in queues:
        dlq_unmapped = (
            "the dead-letter queue is excluded by the mapping rules"
            if redrive.dead_letter_target_arn in scanned
            else "the dead-letter queue was not scanned"
        )
    return QueueFacts(
        fed_by_topic=bool(feeding),
        sources=tuple(w.source for w in feeding if w.source is not None),
        dlq_unmapped=dlq_unmapped,
        dead_letter_for=dead_letter_for.get(names.queue.arn, 0),
    )


def _topic_info(names: TopicNames, wirings: list[Wiring]) -> TopicInfo:
    """The topic as the routes see it, with the subscriptions of it that were wired."""
    fanout, _, switchable = fanout_of(wirings, names.cutover.finished)
    return names.info(
        [w.info for w in wirings], any(w.topic_needs_stream for w in wirings), fanout, switchable
    )
