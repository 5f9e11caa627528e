"""AWS accounts as NATS accounts (`accounts: {nats: per-account}`): who owns each stream, and
how a topic in one account reaches a queue in another.

Each stream and consumer goes into the NATS account named after its resource's AWS account
(the alias, else the ID); streams that belong to no AWS resource (the KV buckets) go into the
home account `SNSQ2NATS`, which the bridge and the tools use as today. The MAX_DELIVERIES
advisory stream is planned in each account holding a queue with a dead-letter queue: the
server raises a consumer's advisories in that consumer's account.

A queue stream sourcing a topic stream of another account keeps sourcing it, across the
boundary, rather than capturing the topic's subject through a subject import: a stream source
resumes from the last sequence it copied after any outage of either side, so the queue gets each
message once; a subject import is core NATS, and whatever is published while the queue's stream
is unavailable never reaches it. nats-server sources a stream of another account through an
`external` source: the sourcing account imports the origin's consumer-create API under a
prefix of its own and the subject the sourcing consumer delivers on (checked on nats-server
2.15 in tests/test_nats_accounts.py). So the topic's account exports, per edge,
`$JS.API.CONSUMER.CREATE.<topic stream>` and `….>` (services: creating a consumer on that
stream and nothing else) and `<deliver prefix>.>` (a stream), and `$JS.FC.>` (a service: the queue's
account answers the sourcing consumer's flow-control requests there).

Pure: a function of the translated state and the rules.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from snsq2nats.aws.arns import parse_arn
from snsq2nats.inventory import Inventory
from snsq2nats.jetstream.spec import (
    FOR_KEY,
    SOURCE_KEY,
    ConsumerSpec,
    ExternalSource,
    StreamSource,
    StreamSpec,
)
from snsq2nats.plan.model import Crossing, Desired, Grant, NatsAccount, Plan, Route
from snsq2nats.plan.routes import ADVISORY_STREAM
from snsq2nats.plan.rules import Rules

HOME = "SNSQ2NATS"
"""The NATS account of what no AWS account owns (buckets, advisory streams); the one account
of a plan without `per-account`."""
FLOW_CONTROL = "$JS.FC.>"
UNLIMITED = -1
"""An account's storage limit when one of its streams has no `max_bytes`: sizing it at some
guess would make the server refuse the account (a reservation beyond its `max_file_store`) or
refuse publishes the stream itself would take; the server's own store limit bounds it."""
BRIDGE_CONSUMERS = 16
"""Consumers an account's limit leaves for what the bridge creates while it runs (readers)."""


def api_prefix(origin: str) -> str:
    """Where the sourcing account reaches `origin`'s JetStream API."""
    return f"$JS.{origin}.API"


def deliver_prefix(target: str, origin_stream: str) -> str:
    return f"snsq2nats.deliver.{target}.{origin_stream}"


def _owner_arn(metadata: dict[str, str]) -> str | None:
    return metadata.get(SOURCE_KEY) or metadata.get(FOR_KEY)


def _aws_account(arn: str | None) -> str | None:
    if not arn:
        return None
    try:
        return parse_arn(arn).account or None
    except ValueError:
        return None


def split(
    desired: Desired, inventory: Inventory, rules: Rules
) -> tuple[Desired, list[NatsAccount], list[Crossing]]:
    """The desired state with cross-account sources made external, each NATS account with what
    it holds, and every edge between two AWS accounts. Unchanged under `nats: one`."""
    if rules.accounts.nats == "one":
        return desired, [], []
    label = rules.accounts.label
    owner: dict[str, str] = {}
    aws_of: dict[str, str | None] = {}
    for stream in desired.streams:
        aws = _aws_account(_owner_arn(stream.metadata))
        owner[stream.name] = label(aws) if aws else HOME
        aws_of[owner[stream.name]] = aws
    desired, advisories = _advisories_per_account(desired, owner)
    owner.update(advisories)
    origin_arn = {s.name: _owner_arn(s.metadata) for s in desired.streams}
    crossings: list[Crossing] = []
    streams: list[StreamSpec] = []
    for stream in desired.streams:
        sources: list[StreamSource] = []
        for source in stream.sources or []:
            origin, target = owner.get(source.name, HOME), owner[stream.name]
            if origin == target:
                sources.append(source)
                continue
            deliver = deliver_prefix(target, source.name)
            external = ExternalSource(api=api_prefix(origin), deliver=deliver)
            sources.append(source.model_copy(update={"external": external}))
            # A source with one filter creates its consumer on `…CREATE.<stream>.<name>.<filter>`,
            # one with several (a topic's subject and its `.>`) on `…CREATE.<stream>`.
            create = f"$JS.API.CONSUMER.CREATE.{source.name}.>"
            create_all = f"$JS.API.CONSUMER.CREATE.{source.name}"
            crossings.append(
                Crossing(
                    source_arn=origin_arn.get(source.name) or "",
                    target_arn=_owner_arn(stream.metadata) or "",
                    from_account=origin,
                    to_account=target,
                    how="stream-source",
                    origin_stream=source.name,
                    target_stream=stream.name,
                    exports=[
                        Grant(type="service", subject=create),
                        Grant(type="service", subject=create_all),
                        Grant(type="stream", subject=f"{deliver}.>"),
                        Grant(type="service", subject=FLOW_CONTROL),
                    ],
                    imports=[
                        Grant(
                            type="service",
                            subject=create,
                            local_subject=f"{api_prefix(origin)}.CONSUMER.CREATE.{source.name}.>",
                        ),
                        Grant(
                            type="service",
                            subject=create_all,
                            local_subject=f"{api_prefix(origin)}.CONSUMER.CREATE.{source.name}",
                        ),
                        Grant(type="stream", subject=f"{deliver}.>"),
                        Grant(type="service", subject=FLOW_CONTROL),
                    ],
                )
            )
        streams.append(stream.model_copy(update={"sources": sources}) if sources else stream)
    crossings += _bridged(desired, inventory, owner, label)
    accounts = _accounts(streams, desired.consumers, owner, aws_of)
    return desired.model_copy(update={"streams": streams}), accounts, crossings


def advisory_stream_of(account: str) -> str:
    """The stream holding an account's MAX_DELIVERIES advisories: the one-account name in the
    home account, the account's name appended elsewhere (a plan names each stream once)."""
    return ADVISORY_STREAM if account == HOME else f"{ADVISORY_STREAM}_{account}"


def _advisories_per_account(
    desired: Desired, owner: dict[str, str]
) -> tuple[Desired, dict[str, str]]:
    """One advisory stream per NATS account holding a queue with a DLQ route, with the DLQ
    movers' durables on it: nats-server raises a consumer's MAX_DELIVERIES advisory in the
    consumer's own account, so only a stream there captures it, and the mover, which works in
    the queue's account, reads it there. Returns the desired state and each advisory stream's
    account."""
    template = next((s for s in desired.streams if s.name == ADVISORY_STREAM), None)
    movers = [r for r in desired.candidate_routes if r.kind == "dlq-mover" and r.stream]
    if template is None or not movers:
        return desired, {}
    stream_of = {str(r.stream): advisory_stream_of(owner.get(str(r.stream), HOME)) for r in movers}
    by_durable = {r.advisory_consumer: stream_of[str(r.stream)] for r in movers}
    accounts = {
        advisory_stream_of(owner.get(str(r.stream), HOME)): owner.get(str(r.stream), HOME)
        for r in movers
    }

    def moved(route: Route) -> Route:
        if route.kind != "dlq-mover" or route.stream not in stream_of:
            return route
        return route.model_copy(update={"advisory_stream": stream_of[str(route.stream)]})

    streams: list[StreamSpec] = []
    for stream in desired.streams:
        if stream.name != ADVISORY_STREAM:
            streams.append(stream)
            continue
        streams.extend(stream.model_copy(update={"name": name}) for name in sorted(accounts))
    consumers = [
        c.model_copy(update={"stream_name": by_durable[c.durable_name]})
        if c.stream_name == ADVISORY_STREAM and c.durable_name in by_durable
        else c
        for c in desired.consumers
    ]
    changed = desired.model_copy(
        update={
            "streams": streams,
            "consumers": consumers,
            "routes": [moved(r) for r in desired.routes],
            "candidate_routes": [moved(r) for r in desired.candidate_routes],
        }
    )
    return changed, accounts


def _bridged(
    desired: Desired, inventory: Inventory, owner: dict[str, str], label: Callable[[str], str]
) -> list[Crossing]:
    """Topic → queue edges across accounts that no stream source carries (a filtered
    subscription through the filter router, a fan-out still through SNS): the bridge's."""
    stream_of = {r.source_arn: r.stream for r in desired.resources}
    sourced = {
        (s.metadata.get(SOURCE_KEY), src.name) for s in desired.streams for src in s.sources or []
    }
    out: list[Crossing] = []
    for sub in inventory.subscriptions:
        if sub.protocol != "sqs" or sub.topic_arn not in stream_of or sub.endpoint not in stream_of:
            continue
        here, there = _aws_account(sub.topic_arn), _aws_account(sub.endpoint)
        if here == there or (sub.endpoint, stream_of[sub.topic_arn]) in sourced:
            continue
        out.append(
            Crossing(
                source_arn=sub.topic_arn,
                target_arn=sub.endpoint,
                from_account=label(here) if here else HOME,
                to_account=label(there) if there else HOME,
                how="bridge",
                origin_stream=stream_of[sub.topic_arn],
                target_stream=stream_of[sub.endpoint],
            )
        )
    return out


def _accounts(
    streams: list[StreamSpec],
    consumers: list[ConsumerSpec],
    owner: dict[str, str],
    aws_of: dict[str, str | None],
) -> list[NatsAccount]:
    held: dict[str, list[StreamSpec]] = {}
    for stream in streams:
        held.setdefault(owner[stream.name], []).append(stream)
    # Every source (same account or not) is a consumer on its origin stream, in the origin's
    # account: it counts against that account's consumer limit.
    sourcing: dict[str, int] = {}
    for stream in streams:
        for source in stream.sources or []:
            origin = owner.get(source.name, HOME)
            sourcing[origin] = sourcing.get(origin, 0) + 1
    out: list[NatsAccount] = []
    for name in sorted(held):
        own = held[name]
        names = {s.name for s in own}
        durables = sorted(
            f"{c.stream_name}/{c.durable_name}" for c in consumers if c.stream_name in names
        )

        out.append(
            NatsAccount(
                name=name,
                aws_account=aws_of.get(name),
                streams=sorted(names),
                consumers=durables,
                max_streams=len(own),
                max_consumers=len(durables) + sourcing.get(name, 0) + BRIDGE_CONSUMERS,
                disk_storage=_storage([s for s in own if s.storage == "file"]),
                memory_storage=_storage([s for s in own if s.storage == "memory"]),
            )
        )
    return out


def _storage(streams: list[StreamSpec]) -> int:
    """The sum of the streams' `max_bytes`, unlimited if one has none."""
    if any(s.max_bytes <= 0 for s in streams):
        return UNLIMITED
    return sum(s.max_bytes for s in streams)


def account_plan(plan: Plan, name: str) -> Plan:
    """The part of a per-account plan one NATS account's connection applies: its streams, its
    consumers and their changes."""
    held = {s for a in plan.nats_accounts if a.name == name for s in a.streams}
    return plan.model_copy(
        update={
            "streams": [s for s in plan.streams if s.name in held],
            "consumers": [c for c in plan.consumers if c.stream_name in held],
            "changes": [c for c in plan.changes if c.stream in held],
        }
    )


def apply_order(plan: Plan) -> list[str]:
    """The accounts in the order to apply them: an account whose streams others source from
    before those (a topic's stream exists before a queue in another account sources it), and
    the home account last unless another needs it first: its part records the applied revision
    the bridges follow, which must come after every account's objects and fan-out handover."""
    after: dict[str, set[str]] = {}
    for crossing in plan.crossings:
        if crossing.how == "stream-source":
            after.setdefault(crossing.to_account, set()).add(crossing.from_account)
    done: list[str] = []
    pending = [a.name for a in plan.nats_accounts]
    while pending:
        ready = [a for a in pending if after.get(a, set()) <= set(done)] or pending[:1]
        pick = next((a for a in ready if a != HOME), ready[0])
        done.append(pick)
        pending.remove(pick)
    return done


def admin_credentials(
    plan: Plan, auth_dir: Path, admin: str = "snsq2nats-admin"
) -> dict[str, Path]:
    """Each NATS account's admin creds file under the directory `auth --format jwt` wrote."""
    home = auth_dir / "creds"
    return {
        a.name: home / (f"{admin}.creds" if a.name == HOME else f"{a.name}/{admin}.creds")
        for a in plan.nats_accounts
    }
