"""Is it safe to switch? Per bridge route, the backlog on both sides and a drained verdict.

A route is drained when nothing is waiting on its *source* side: the SQS queue it empties
(visible, in flight and delayed all zero) for AWS → NATS routes, the durable consumer it reads
(pending and unacknowledged both zero) for NATS → AWS routes, the filter router and the DLQ
mover. The other side's numbers are shown for context. SQS's counts are approximate and
eventually consistent: AWS advises waiting for a minute of zeros before trusting them.

Each route also shows which bridge fleet member holds its lease, for how long, and whether
that member's heartbeat is current (from the fleet's KV bucket, `bridge.fleet`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from snsq2nats.bridge.fleet import FleetSnapshot, lease_age, read_fleet
from snsq2nats.errors import SnsqError
from snsq2nats.plan.model import Plan, Route

AWS_TO_NATS = {"sqs-to-nats", "sns-to-nats"}
COUNT_ATTRIBUTES = [
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
]


@dataclass
class SqsBacklog:
    queue: str
    visible: int = 0
    not_visible: int = 0
    delayed: int = 0
    exists: bool = True

    @property
    def total(self) -> int:
        return self.visible + self.not_visible + self.delayed


@dataclass
class NatsBacklog:
    stream: str
    consumer: str | None
    pending: int = 0
    ack_pending: int = 0
    stream_messages: int = 0
    exists: bool = True
    by_partition: list[int] = field(default_factory=list, repr=False)
    """A partitioned queue: each partition durable's pending+unacknowledged, partition order."""

    @property
    def total(self) -> int:
        return self.pending + self.ack_pending


@dataclass
class RouteOwner:
    """The fleet member running a route (`member` None: no member holds its lease)."""

    member: str | None = None
    lease_age: float | None = None
    """Seconds since the member acquired the lease."""
    heartbeat_age: float | None = None
    """Seconds since the member's last heartbeat."""
    alive: bool = False
    """Its heartbeat is within its lease TTL (a dead member's routes are being taken over)."""


@dataclass
class RouteStatus:
    route: str
    kind: str
    drained: bool
    reason: str
    aws: SqsBacklog | None = None
    nats: NatsBacklog | None = None
    dlq: dict[str, int] = field(default_factory=dict)
    owner: RouteOwner | None = None
    """None when the fleet's bucket does not exist (the plan was not applied)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _arn_parts(arn: str) -> tuple[str, str, str]:
    parts = arn.split(":")
    return parts[3], parts[4], parts[5]


async def sqs_backlog(sqs: Any, arn: str, name: str | None = None) -> SqsBacklog:
    """The queue's approximate counts; a queue that does not exist holds nothing."""
    _, account, queue_name = _arn_parts(arn)
    queue_name = name or queue_name
    try:
        url = (
            await asyncio.to_thread(
                sqs.get_queue_url, QueueName=queue_name, QueueOwnerAWSAccountId=account
            )
        )["QueueUrl"]
        attrs = (
            await asyncio.to_thread(
                sqs.get_queue_attributes, QueueUrl=url, AttributeNames=COUNT_ATTRIBUTES
            )
        )["Attributes"]
    except Exception as exc:
        code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
        if "NonExistentQueue" in code or "QueueDoesNotExist" in code:
            return SqsBacklog(queue=queue_name, exists=False)
        raise SnsqError(
            f"cannot read SQS queue counts ({code or type(exc).__name__})", where=queue_name
        ) from None
    return SqsBacklog(
        queue=queue_name,
        visible=int(attrs.get("ApproximateNumberOfMessages", 0)),
        not_visible=int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0)),
        delayed=int(attrs.get("ApproximateNumberOfMessagesDelayed", 0)),
    )


async def nats_backlog(nc: Any, stream: str, consumer: str | None) -> NatsBacklog:
    from snsq2nats.jetstream.api import JetStreamApiError, api

    backlog = NatsBacklog(stream=stream, consumer=consumer)
    try:
        info = await api(nc, f"$JS.API.STREAM.INFO.{stream}", None, 5.0)
    except JetStreamApiError:
        backlog.exists = False
        return backlog
    backlog.stream_messages = int((info.get("state") or {}).get("messages", 0))
    if consumer:
        try:
            cinfo = await api(nc, f"$JS.API.CONSUMER.INFO.{stream}.{consumer}", None, 5.0)
        except JetStreamApiError:
            backlog.exists = False
            return backlog
        backlog.pending = int(cinfo.get("num_pending", 0))
        backlog.ack_pending = int(cinfo.get("num_ack_pending", 0))
    return backlog


async def durables_backlog(nc: Any, stream: str, durables: list[str]) -> NatsBacklog:
    """One durable's backlog, or a partitioned queue's summed over its partition durables
    (`by_partition` keeps each one's pending+unacknowledged for the reason line)."""
    if len(durables) <= 1:
        return await nats_backlog(nc, stream, durables[0] if durables else None)
    parts = await asyncio.gather(*(nats_backlog(nc, stream, d) for d in durables))
    total = NatsBacklog(stream=stream, consumer=",".join(durables))
    total.stream_messages = parts[0].stream_messages
    total.exists = all(p.exists for p in parts)
    total.pending = sum(p.pending for p in parts)
    total.ack_pending = sum(p.ack_pending for p in parts)
    total.by_partition = [p.total for p in parts]
    return total


def _partition_detail(backlog: NatsBacklog | None) -> str:
    busy = [(i, n) for i, n in enumerate(backlog.by_partition if backlog else []) if n]
    if not busy:
        return ""
    return " (by partition: " + ", ".join(f"p{i} {n}" for i, n in busy) + ")"


def _queue_durables(plan: Plan, route: Route) -> list[str]:
    """The durables the queue's NATS workers read (what an sqs-to-nats route fills)."""
    return next(
        (r.durables for r in plan.resources if r.kind == "sqs-queue" and r.stream == route.stream),
        [],
    )


async def route_status(
    nc: Any, sqs_for: Callable[[str], Any], plan: Plan, route: Route
) -> RouteStatus:
    region = _arn_parts(route.aws_arn)[0]
    if route.kind in AWS_TO_NATS:
        queue_name = route.bridge_queue if route.kind == "sns-to-nats" else None
        aws = await sqs_backlog(sqs_for(region), route.aws_arn, queue_name)
        nats = (
            await durables_backlog(nc, route.stream, _queue_durables(plan, route))
            if route.stream
            else None
        )
        if not aws.exists:
            return RouteStatus(
                route.name,
                route.kind,
                True,
                "no SQS queue to drain (bridge not started)",
                aws,
                nats,
            )
        drained = aws.total == 0
        reason = (
            "SQS queue empty"
            if drained
            else f"{aws.total} message(s) still in SQS ({aws.visible} visible, "
            f"{aws.not_visible} in flight, {aws.delayed} delayed)"
        )
        return RouteStatus(route.name, route.kind, drained, reason, aws, nats)

    if route.kind == "dlq-mover":
        consumer = route.advisory_consumer
        stream = route.advisory_stream or "snsq2nats_advisories"
        advisories = await nats_backlog(nc, stream, consumer)
        dlq_stream = await nats_backlog(nc, route.target_stream or "", None)
        dlq_sqs = await sqs_backlog(sqs_for(region), route.aws_arn)
        dlq = {"nats_messages": dlq_stream.stream_messages, "sqs_messages": dlq_sqs.total}
        drained = advisories.exists and advisories.total == 0
        reason = (
            "no dead-letter moves waiting"
            if drained
            else "advisory consumer missing: run apply"
            if not advisories.exists
            else f"{advisories.total} dead-letter move(s) waiting"
        )
        return RouteStatus(route.name, route.kind, drained, reason, dlq_sqs, advisories, dlq)

    nats = await durables_backlog(nc, route.stream or "", route.durables)
    target = (
        await sqs_backlog(sqs_for(region), route.aws_arn) if route.kind == "nats-to-sqs" else None
    )
    if not nats.exists:
        return RouteStatus(
            route.name, route.kind, False, "stream or consumer missing: run apply", target, nats
        )
    drained = nats.total == 0
    reason = (
        "nothing pending on NATS"
        if drained
        else f"{nats.pending} pending, {nats.ack_pending} unacknowledged on NATS"
        + _partition_detail(nats)
    )
    return RouteStatus(route.name, route.kind, drained, reason, target, nats)


def route_owner(fleet: FleetSnapshot, route: str, now: datetime) -> RouteOwner:
    lease = fleet.leases.get(route)
    if lease is None:
        return RouteOwner()
    return RouteOwner(
        member=lease.member,
        lease_age=lease_age(lease, now),
        heartbeat_age=fleet.heartbeat_age(lease.member, now),
        alive=fleet.alive(lease.member, now),
    )


async def collect(
    nc: Any, sqs_for: Callable[[str], Any], plan: Plan, routes: list[Route]
) -> list[RouteStatus]:
    statuses = list(await asyncio.gather(*(route_status(nc, sqs_for, plan, r) for r in routes)))
    fleet = await read_fleet(nc)
    if fleet is not None:
        now = datetime.now(UTC)
        for status in statuses:
            status.owner = route_owner(fleet, status.route, now)
    return statuses
