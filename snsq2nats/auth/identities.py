"""Who may do what on NATS, derived from the plan (pure: no server, no secrets).

Per queue a producer (publish on the queue's own subjects, FIFO group and schedule subjects
included) and a consumer (pull from exactly the queue's durable, acknowledge its messages, read
that consumer's info); per topic a publisher on the topic's NATS subject space; the bridge with
what its routes use; an admin for plan/apply/verify/status scoped to the managed streams.

Every subject granted here comes from the operation declarations the requests are built from
(`jetstream.operations`) and, for the KV buckets, from each bucket's declared uses
(`plan.buckets.BUCKET_USES`), so a request and its grant cannot drift apart.

The bridge's grants are shaped to survive a re-plan where that is safe: on every stream a route
of the plan reads from, it may pull from and look up any consumer (a re-plan that adds a
bridge consumer, say a filter router's `snsq2nats-filter-*` durable, on a stream it already
relays from needs no new grant; NATS wildcards are whole tokens, so "any" is the only way to
say "its own consumers"). A re-plan that brings new streams or subjects does need new grants:
`apply` compares the plan with what `auth` last generated (`grants.json`) and says so.

Every identity has an inbox prefix of its own instead of `_INBOX.>`, so one application cannot
read another's replies (PubAcks, pulled messages). Acks are allowed in both subject forms:
`$JS.ACK.<stream>.<consumer>.>` and, for servers with `js_ack_fc_v2`, the form with domain and
account-hash tokens first, `$JS.ACK.*.*.<stream>.<consumer>.>`. (A literal `$JS.ACK.<stream>`
matches no real ack subject: every ack would be denied and every message redelivered.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from snsq2nats.aws.arns import parse_arn
from snsq2nats.jetstream.operations import (
    ACCOUNT_INFO,
    API,
    CONSUMER_CREATE,
    CONSUMER_DELETE,
    CONSUMER_DURABLE_CREATE,
    CONSUMER_INFO,
    CONSUMER_NEXT,
    MSG_DELETE,
    MSG_GET,
    STREAM_INFO,
    STREAM_LIST,
    STREAM_NAMES,
    STREAM_PURGE,
    pull_grants,
)
from snsq2nats.jetstream.operations import ACK as ACK_OP
from snsq2nats.plan.buckets import bucket_uses, sent_subject
from snsq2nats.plan.identities import resource_identity, safe_name
from snsq2nats.plan.model import Plan, Resource, Route
from snsq2nats.plan.routes import RELAY_PREFIX

Role = Literal["producer", "consumer", "publisher", "subscriber", "principal", "bridge", "admin"]


@dataclass(frozen=True)
class Identity:
    name: str
    role: Role
    serves: str | None
    """The ARN of the queue or topic this identity is for (None for bridge and admin)."""
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    description: str = ""

    @property
    def inbox_prefix(self) -> str:
        return inbox_prefix(self.name)

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "role": self.role,
            "serves": self.serves,
            "inbox_prefix": self.inbox_prefix,
            "publish": list(self.publish),
            "subscribe": list(self.subscribe),
            "description": self.description,
        }


def inbox_prefix(name: str) -> str:
    return f"_INBOX_{name}"


def ack_subjects(stream: str, consumer: str) -> list[str]:
    return ACK_OP.grants(stream=stream, consumer=consumer)


def pull_subjects(stream: str, consumer: str) -> list[str]:
    """Pull, acknowledge (ack, nak, in progress, term share one subject) and look the
    consumer up; nothing else of the stream."""
    return pull_grants(stream, consumer)


def _ordered(subjects: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(subjects))


def _identity(
    name: str, role: Role, serves: str | None, publish: list[str], about: str
) -> Identity:
    safe = safe_name(name)
    return Identity(
        name=safe,
        role=role,
        serves=serves,
        publish=_ordered(publish),
        subscribe=(f"{inbox_prefix(safe)}.>",),
        description=about,
    )


@dataclass
class _Subjects:
    """The plan's streams' subjects, split into what producers write and what the bridge
    relays from AWS into the same stream (the `aws.` space)."""

    plan: Plan
    by_stream: dict[str, list[str]] = field(init=False)

    def __post_init__(self) -> None:
        self.by_stream = {s.name: list(s.subjects) for s in self.plan.streams}

    def own(self, stream: str | None) -> list[str]:
        return [s for s in self.by_stream.get(stream or "", []) if not s.startswith(RELAY_PREFIX)]

    def relayed(self, stream: str | None) -> list[str]:
        return [s for s in self.by_stream.get(stream or "", []) if s.startswith(RELAY_PREFIX)]


def _topic_space(resource: Resource, subjects: _Subjects) -> list[str]:
    own = subjects.own(resource.stream)
    if own:
        return own
    base = (resource.publish_subject or "").split(".<")[0]
    return [base, f"{base}.>"] if resource.subject_tokens else [base]


def queue_identities(resource: Resource, subjects: _Subjects) -> list[Identity]:
    stream, consumer = resource.stream, resource.consumer
    producer_name = resource_identity(resource, "producer")
    worker_name = resource_identity(resource, "consumer")
    if not stream or not consumer or producer_name is None or worker_name is None:
        return []
    producer = _identity(
        producer_name,
        "producer",
        resource.source_arn,
        subjects.own(stream),
        f"sends to SQS queue {resource.name}",
    )
    durables = resource.durables
    worker = _identity(
        worker_name,
        "consumer",
        resource.source_arn,
        _each(durables, lambda d: pull_subjects(stream, d)),
        f"receives and deletes from SQS queue {resource.name} (durable {consumer})"
        if len(durables) == 1
        else f"receives and deletes from SQS queue {resource.name} (partition durables "
        f"{durables[0]} … {durables[-1]})",
    )
    return [producer, worker]


def topic_identities(resource: Resource, subjects: _Subjects) -> list[Identity]:
    publisher = resource_identity(resource, "publisher")
    if publisher is None:
        return []
    out = [
        _identity(
            publisher,
            "publisher",
            resource.source_arn,
            _topic_space(resource, subjects),
            f"publishes to SNS topic {resource.name}",
        )
    ]
    name = resource_identity(resource, "subscriber")
    if resource.stream and name is not None:
        # A NATS application that subscribes to the topic itself gets one durable of its own
        # on the topic stream, named after the identity (the server refuses any other name in
        # a CONSUMER.CREATE subject pinned so), and nothing of the queues'.
        out.append(
            _identity(
                name,
                "subscriber",
                resource.source_arn,
                [
                    *CONSUMER_CREATE.grants(stream=resource.stream, consumer=name),
                    *CONSUMER_DELETE.grants(stream=resource.stream, consumer=name),
                    *pull_subjects(resource.stream, name),
                ],
                f"subscribes to SNS topic {resource.name} with its own durable {name}",
            )
        )
    return out


def principal_name(principal: str) -> str:
    """A NATS user name for an AWS principal: `aws-role-checkout`, `aws-user-ops`,
    `aws-account-123456789012`, `aws-owner-account`."""
    if principal == "owner-account":
        return "aws-owner-account"
    if principal.isdigit():
        return f"aws-account-{principal}"
    try:
        arn = parse_arn(principal)
    except ValueError:
        return f"aws-{principal}"
    if arn.resource == "root":
        return f"aws-account-{arn.account}"
    kind, _, rest = arn.resource.partition("/")
    if kind == "assumed-role":
        rest = rest.split("/")[0]
        kind = "role"
    return f"aws-{kind}-{rest.rsplit('/', 1)[-1]}"


def _each(durables: list[str], grant: Callable[[str], list[str]]) -> list[str]:
    """A grant on every worker durable of a queue (one per partition of a partitioned one)."""
    return [subject for durable in durables for subject in grant(durable)]


def _grant_subjects(role: str, resource: Resource, subjects: _Subjects) -> list[str]:
    stream, consumer = resource.stream or "", resource.consumer or ""
    durables = resource.durables
    if role == "producer":
        return subjects.own(stream)
    if role == "publisher":
        return _topic_space(resource, subjects)
    if role == "consumer" and consumer:
        return _each(durables, lambda d: pull_subjects(stream, d))
    if role == "receiver" and consumer:
        # Receiving without deleting: pull, never acknowledge (messages come back, as in SQS).
        return _each(
            durables,
            lambda d: [
                *CONSUMER_NEXT.grants(stream=stream, consumer=d),
                *CONSUMER_INFO.grants(stream=stream, consumer=d),
            ],
        )
    if role == "reader" and stream:
        infos = _each(durables, lambda d: CONSUMER_INFO.grants(stream=stream, consumer=d))
        return [*STREAM_INFO.grants(stream=stream), *infos]
    if role == "purger" and stream:
        return STREAM_PURGE.grants(stream=stream)
    return []


@dataclass(frozen=True)
class PrincipalGrant:
    """Roles one AWS principal has on one queue or topic, and the NATS identity they go to."""

    name: str
    """The identity's name (`principal_name` of the principal, unless `auth --iam` merged it
    into the IAM principal's identity)."""
    principal: str
    resource: Resource
    roles: tuple[str, ...]
    source: str = "resource policy"


def policy_grants(plan: Plan) -> list[PrincipalGrant]:
    """What the queues' and topics' resource policies grant, per named principal."""
    return [
        PrincipalGrant(
            principal_name(grant.principal), grant.principal, resource, tuple(grant.roles)
        )
        for resource in sorted(plan.resources, key=lambda r: (r.kind, r.name))
        for grant in (resource.access.grants if resource.access else [])
        # Anyone: no identity stands for it (the plan reports it).
        if grant.principal != "*"
    ]


def principal_identities(
    plan: Plan, subjects: _Subjects, grants: list[PrincipalGrant] | None = None
) -> list[Identity]:
    """One identity per AWS principal with the union of its roles over every queue and topic:
    those a resource policy names (`grants`: those and what IAM grants, from `auth --iam`)."""
    publish: dict[str, list[str]] = {}
    about: dict[str, list[str]] = {}
    arns: dict[str, str] = {}
    for grant in policy_grants(plan) if grants is None else grants:
        arns.setdefault(grant.name, grant.principal)
        for role in grant.roles:
            publish.setdefault(grant.name, []).extend(
                _grant_subjects(role, grant.resource, subjects)
            )
        via = "" if grant.source == "resource policy" else f" ({grant.source})"
        about.setdefault(grant.name, []).append(
            f"{'+'.join(grant.roles)} on {grant.resource.name}{via}"
        )
    return [
        _identity(name, "principal", None, publish[name], f"{arns[name]}: {'; '.join(about[name])}")
        for name in sorted(publish)
    ]


def _route_publish(route: Route, subjects: _Subjects) -> list[str]:
    """What one route's relay does on NATS besides pulling (its pulls are granted per stream it
    reads: `_read_streams`)."""
    if route.kind == "sqs-to-nats":
        return subjects.own(route.stream)
    if route.kind == "sns-to-nats":
        return subjects.relayed(route.stream)
    out: list[str] = []
    if route.kind == "nats-to-sns" and route.stream:
        # What SNS accepted, recorded before the ack (`plan.buckets.SENT_LEDGER`).
        out.append(sent_subject(route.stream))
    if route.kind == "filter-router":
        out += subjects.own(route.target_stream)
    if route.kind == "dlq-mover":
        if route.stream:
            # Fetch the failed message by sequence, then remove it once the DLQ holds a copy.
            out += MSG_GET.grants(stream=route.stream) + MSG_DELETE.grants(stream=route.stream)
        out += subjects.own(route.target_stream)
    return out


def _read_streams(route: Route) -> list[str]:
    """The streams a route pulls from: the workers' durables of a queue it relays to AWS, the
    topic stream's relay and filter consumers, the advisories' consumer of the DLQ mover."""
    if route.kind in ("nats-to-sqs", "nats-to-sns", "filter-router"):
        return [route.stream] if route.stream else []
    if route.kind == "dlq-mover":
        return [route.advisory_stream] if route.advisory_stream else []
    return []


def bridge_identity(plan: Plan, subjects: _Subjects) -> Identity:
    publish = [*STREAM_NAMES.grants(), *STREAM_LIST.grants()]
    for use in bucket_uses("bridge"):
        publish += use.grants()
    # Any route a cutover state may run: a move switches relays without new credentials.
    routes = plan.candidate_routes or plan.routes
    for route in routes:
        if route.stream:
            publish += STREAM_INFO.grants(stream=route.stream)
        publish += _route_publish(route, subjects)
    # Pull, ack and look up any consumer of the streams it reads: the routes' durables, and a
    # re-plan's new bridge consumer there (a filter router's) without new grants.
    for stream in sorted({s for route in routes for s in _read_streams(route)}):
        publish += pull_grants(stream)
    return _identity("snsq2nats-bridge", "bridge", None, publish, "runs the bridge's routes")


def admin_identity(plan: Plan, subjects: _Subjects) -> Identity:
    """plan/apply/verify/status: the managed streams and their consumers, nothing else."""
    publish = [*ACCOUNT_INFO.grants(), *STREAM_NAMES.grants(), *STREAM_LIST.grants()]
    for use in bucket_uses("admin"):
        publish += use.grants()
    for stream in sorted(subjects.by_stream):
        # One wildcard per API family and stream, so the grant list (and a JWT carrying it)
        # stays short: CREATE/UPDATE/INFO/DELETE/PURGE, message get/delete, consumer
        # create/info/delete/names/list, pulls and acks on any of the stream's consumers.
        publish += [
            f"{API}.STREAM.*.{stream}",
            f"{API}.STREAM.MSG.*.{stream}",
            f"{API}.CONSUMER.*.{stream}",
            f"{API}.CONSUMER.*.{stream}.>",
            *CONSUMER_DURABLE_CREATE.grants(stream=stream),
            *pull_grants(stream),
        ]
        # verify sends canaries through every queue and topic.
        publish += subjects.own(stream) + subjects.relayed(stream)
    return _identity("snsq2nats-admin", "admin", None, publish, "plan, apply, verify, status")


def identities(plan: Plan, grants: list[PrincipalGrant] | None = None) -> list[Identity]:
    """Every identity the plan implies, in a stable order; `grants`: the AWS principals' (by
    default those the resource policies name)."""
    subjects = _Subjects(plan)
    out: list[Identity] = []
    for resource in sorted(plan.resources, key=lambda r: (r.kind, r.name)):
        if resource.kind == "sqs-queue":
            out += queue_identities(resource, subjects)
        elif resource.kind == "sns-topic":
            out += topic_identities(resource, subjects)
    out += principal_identities(plan, subjects, grants)
    if plan.candidate_routes or plan.routes:
        out.append(bridge_identity(plan, subjects))
    out.append(admin_identity(plan, subjects))
    return out
