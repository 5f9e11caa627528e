"""Is it safe to switch? Per bridge route, the backlog on both sides and a drained verdict.

A route is drained when nothing is waiting on its *source* side: the SQS queue it empties
(visible, in flight and delayed all zero) for AWS → NATS routes, the durable consumer it reads
(pending and unacknowledged both zero) for NATS → AWS routes, the filter router and the DLQ
mover. The other side's numbers are shown for context. SQS's counts are approximate and
eventually consistent: AWS advises waiting for a minute of zeros before trusting them.

Each route also shows which bridge fleet member holds its lease, for how long, and whether
that member's heartbeat is current (from the fleet's KV bucket, `plan.fleet`).

In a per-account plan (`accounts: {nats: per-account}`) each stream lives in its AWS account's
NATS account, where a connection to another account cannot see it: each route's stream and
consumers are read over a connection to the account holding them (`collect`'s `accounts`);
the fleet, the cutover state and the undeliverable records stay the home connection's.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from snsq2nats.aws.arns import parse_arn
from snsq2nats.aws.backlog import queue_backlog
from snsq2nats.aws.clients import SqsByAccount
from snsq2nats.aws.errors import error_code, is_missing
from snsq2nats.errors import SnsqError
from snsq2nats.jetstream.operations import CONSUMER_INFO, STREAM_INFO
from snsq2nats.plan.buckets import FLEET_OBSERVER
from snsq2nats.plan.fleet import FleetSnapshot, lease_age, snapshot_of
from snsq2nats.plan.model import Plan, Route

if TYPE_CHECKING:
    from nats.aio.client import Client

AWS_TO_NATS = {"sqs-to-nats", "sns-to-nats"}
# Routes read at once: bounds the AWS threads, their connections and the NATS requests in flight,
# so 10,000 routes cost time in proportion, not 10,000 sockets.
CONCURRENCY = 32
# From this many streams on, one paged STREAM.LIST (256 a page) is cheaper than an INFO each.
LIST_STREAMS_FROM = 64
# From this many routes on, one ListQueues per region is cheaper than a GetQueueUrl each.
LIST_QUEUES_FROM = 64


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
    problem: str | None = None
    """Why no live member runs the route while the fleet has live members (a failure)."""


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
    undeliverable: dict[str, int] = field(default_factory=dict)
    """Messages the route recorded as undeliverable, by cause (`bridge.undeliverable`)."""
    account: str | None = None
    """The AWS account of the route's queue or topic, set only when the plan's routes span
    several accounts."""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        # Left out for one account: a one-account estate's JSON keeps the shape it always had.
        if self.account is None:
            del data["account"]
        return data


def estate_accounts(plan: Plan) -> list[str]:
    """The AWS accounts the plan's routes live in (every route, not only those selected, so
    one account's routes still say which account they are)."""
    routes = [*plan.routes, *plan.candidate_routes]
    return sorted({parse_arn(r.aws_arn).account for r in routes})


async def _in_thread(executor: Executor | None, fn: Callable[..., Any], **kwargs: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(
        executor, functools.partial(fn, **kwargs)
    )


async def sqs_backlog(
    sqs: Any,
    arn: str,
    name: str | None = None,
    *,
    executor: Executor | None = None,
    listed: _QueueUrls | None = None,
) -> SqsBacklog:
    """The queue's approximate counts; a queue that does not exist holds nothing.

    `listed`: the region's queue URLs, listed once, which saves a GetQueueUrl per queue."""
    parts = parse_arn(arn)
    region, account, queue_name = parts.region, parts.account, name or parts.resource
    url = listed.urls.get((region, account, queue_name)) if listed is not None else None
    if url is None and listed is not None and (region, account) in listed.accounts:
        return SqsBacklog(queue=queue_name, exists=False)  # the listing had its account
    try:
        counts = await _in_thread(
            executor, queue_backlog, sqs=sqs, name=queue_name, account=account, url=url
        )
    except Exception as exc:
        if is_missing(exc):
            return SqsBacklog(queue=queue_name, exists=False)
        raise SnsqError(
            f"cannot read SQS queue counts ({error_code(exc) or type(exc).__name__})",
            where=queue_name,
        ) from None
    return SqsBacklog(
        queue=queue_name,
        visible=counts.visible,
        not_visible=counts.not_visible,
        delayed=counts.delayed,
    )


async def nats_backlog(
    nc: Client,
    stream: str,
    consumer: str | None,
    *,
    streams: Mapping[str, dict[str, Any]] | None = None,
) -> NatsBacklog:
    """`streams`: every stream's info, already listed (a stream not in it does not exist)."""
    from snsq2nats.jetstream.api import JetStreamApiError, api

    backlog = NatsBacklog(stream=stream, consumer=consumer)
    if streams is not None:
        listed = streams.get(stream)
        if listed is None:
            backlog.exists = False
            return backlog
        info = listed
    else:
        try:
            info = await api(nc, STREAM_INFO.subject(stream=stream), None, 5.0)
        except JetStreamApiError:
            backlog.exists = False
            return backlog
    backlog.stream_messages = int((info.get("state") or {}).get("messages", 0))
    if consumer:
        try:
            cinfo = await api(
                nc, CONSUMER_INFO.subject(stream=stream, consumer=consumer), None, 5.0
            )
        except JetStreamApiError:
            backlog.exists = False
            return backlog
        backlog.pending = int(cinfo.get("num_pending", 0))
        backlog.ack_pending = int(cinfo.get("num_ack_pending", 0))
    return backlog


async def durables_backlog(
    nc: Client,
    stream: str,
    durables: list[str],
    *,
    streams: Mapping[str, dict[str, Any]] | None = None,
) -> NatsBacklog:
    """One durable's backlog, or a partitioned queue's summed over its partition durables
    (`by_partition` keeps each one's pending+unacknowledged for the reason line)."""
    if len(durables) <= 1:
        return await nats_backlog(nc, stream, durables[0] if durables else None, streams=streams)
    parts = await asyncio.gather(*(nats_backlog(nc, stream, d, streams=streams) for d in durables))
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


@dataclass
class _QueueUrls:
    """Queue URLs from ListQueues, by (region, account, name), and the (region, account)s
    the listing covered: a name missing there does not exist."""

    urls: dict[tuple[str, str, str], str] = field(default_factory=dict)
    accounts: set[tuple[str, str]] = field(default_factory=set)

    def add(self, region: str, url: str) -> None:
        # https://sqs.<region>.amazonaws.com/<account>/<name> (emulators: <host>/<account>/<name>)
        path = urlsplit(url).path.strip("/").split("/")
        if len(path) >= 2:
            self.urls[(region, path[-2], path[-1])] = url
            self.accounts.add((region, path[-2]))


@dataclass
class _Reading:
    """What every route's status of one run shares."""

    durables: dict[str, list[str]]  # queue stream -> the durables its NATS workers read
    streams: Mapping[str, dict[str, Any]] | None = None  # listed once, when many are read
    executor: Executor | None = None
    queues: _QueueUrls | None = None  # listed once, when many are read
    # Per stream, the connection to the NATS account holding it (None: the one connection).
    conn: Callable[[str], Client] | None = None


def _connections(
    plan: Plan, home: Client, accounts: Mapping[str, Client] | None
) -> Callable[[str], Client] | None:
    """Each stream's connection in a per-account plan: its NATS account's (`accounts`, by
    name), the home one's for a stream of the home account or of no account."""
    if not accounts:
        return None
    holder = {stream: a.name for a in plan.nats_accounts for stream in a.streams}
    return lambda stream: accounts.get(holder.get(stream, ""), home)


def _queue_durables(plan: Plan) -> dict[str, list[str]]:
    """Per queue stream, the durables the queue's NATS workers read (what an sqs-to-nats route
    fills; one per partition of a partitioned queue): indexed once, not searched per route."""
    durables: dict[str, list[str]] = {}
    for r in plan.resources:
        if r.kind == "sqs-queue" and r.stream is not None:
            durables.setdefault(r.stream, r.durables)
    return durables


async def route_status(
    nc: Client,
    sqs_for: Callable[[str], Any],
    plan: Plan,
    route: Route,
    reading: _Reading | None = None,
) -> RouteStatus:
    shared = reading if reading is not None else _Reading(_queue_durables(plan))
    streams, executor = shared.streams, shared.executor
    home = nc
    if shared.conn is not None:
        # The route's own NATS account: its stream (a queue's or a topic's) is there.
        nc = shared.conn(route.stream or "")
    parts = parse_arn(route.aws_arn)
    region = parts.region
    # A client acting in the route's own account when the caller has one (`aws.clients.
    # SqsByAccount`): another account's queue is read with that account's credentials.
    sqs = sqs_for(region, parts.account) if isinstance(sqs_for, SqsByAccount) else sqs_for(region)
    if route.kind in AWS_TO_NATS:
        queue_name = route.bridge_queue if route.kind == "sns-to-nats" else None
        aws = await sqs_backlog(
            sqs, route.aws_arn, queue_name, executor=executor, listed=shared.queues
        )
        nats = (
            await durables_backlog(
                nc, route.stream, shared.durables.get(route.stream, []), streams=streams
            )
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
        # The advisories' stream is the home account's; the DLQ's stream its queue's account's.
        advisories = await nats_backlog(home, stream, consumer, streams=streams)
        dlq_nc = shared.conn(route.target_stream or "") if shared.conn is not None else home
        dlq_stream = await nats_backlog(dlq_nc, route.target_stream or "", None, streams=streams)
        dlq_sqs = await sqs_backlog(sqs, route.aws_arn, executor=executor, listed=shared.queues)
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

    nats = await durables_backlog(nc, route.stream or "", route.durables, streams=streams)
    target = (
        await sqs_backlog(sqs, route.aws_arn, executor=executor, listed=shared.queues)
        if route.kind == "nats-to-sqs"
        else None
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


async def _mark_undeliverable(nc: Client, statuses: list[RouteStatus]) -> None:
    """A route with recorded undeliverable messages is not drained, whatever its backlog."""
    from snsq2nats.bridge.undeliverable import read_records
    from snsq2nats.plan.buckets import FLEET_BUCKET

    records = await read_records(nc)
    for status in statuses:
        found = records.get(status.route, [])
        causes: dict[str, int] = {}
        for _, record in found:
            for cause, count in record.causes.items():
                causes[cause] = causes.get(cause, 0) + count
        if not causes:
            continue
        status.undeliverable = causes
        status.drained = False
        last = max((seen for _, r in found for seen in r.last), key=lambda s: s.at, default=None)
        status.reason = (
            f"{sum(causes.values())} undeliverable message(s) ("
            + ", ".join(f"{c} {n}" for c, n in sorted(causes.items()))
            + (f"; last {last.stream} seq {last.seq}: {last.detail}" if last else "")
            + f"); once handled: nats kv del {FLEET_BUCKET} "
            + " ".join(key for key, _ in found)
            + f" | {status.reason}"
        )


async def read_fleet(nc: Client) -> FleetSnapshot | None:
    """Every heartbeat and lease in the fleet's bucket; None when there is no bucket (the plan
    was not applied)."""
    from snsq2nats.jetstream.state import read_bucket

    values = await read_bucket(nc, FLEET_OBSERVER)
    return None if values is None else snapshot_of(values)


def route_owner(fleet: FleetSnapshot, route: str, now: datetime) -> RouteOwner:
    lease = fleet.leases.get(route)
    owner = (
        RouteOwner()
        if lease is None
        else RouteOwner(
            member=lease.member,
            lease_age=lease_age(lease, now),
            heartbeat_age=fleet.heartbeat_age(lease.member, now),
            alive=fleet.alive(lease.member, now),
        )
    )
    if not owner.alive:
        owner.problem = _ownership_problem(fleet, route, owner, now)
    elif owner.member is not None and route in fleet.members[owner.member].blocked:
        # Held by a live member whose runner of it keeps failing: nothing relays it either.
        owner.problem = (
            f"held by {owner.member} but not running: "
            + (fleet.members[owner.member].blocked[route])
        )
    return owner


def _ownership_problem(
    fleet: FleetSnapshot, route: str, owner: RouteOwner, now: datetime
) -> str | None:
    """A route the running fleet does not run, and why: members say which routes they cannot
    acquire or run (their heartbeat's `blocked`). None when no member is alive at all (no
    bridge running is not a fleet failure: the route simply waits)."""
    live = [m for m in fleet.members if fleet.alive(m, now) and not fleet.members[m].leaving]
    if not live:
        return None
    causes = [
        f"{m}: {fleet.members[m].blocked[route]}" for m in live if route in fleet.members[m].blocked
    ]
    if owner.member is None:
        head = f"unowned while {len(live)} bridge member(s) run"
    else:
        head = (
            f"held by {owner.member}, silent for {owner.heartbeat_age or 0:.0f}s "
            f"(a takeover is due)"
        )
    if causes:
        return f"{head}; {'; '.join(causes)}"
    unready = [m for m in live if not fleet.members[m].ready]
    if unready:
        return f"{head}; not ready: {', '.join(unready)} (see their /readyz and logs)"
    return f"{head}; no member reports why (are they running another plan or --route?)"


def _place(route: Route, sqs_for: Callable[[str], Any]) -> tuple[str, str]:
    """Where the route's queue is listed from: its region, and its account when each account
    has its own client."""
    parts = parse_arn(route.aws_arn)
    return parts.region, parts.account if isinstance(sqs_for, SqsByAccount) else ""


async def collect(
    nc: Client,
    sqs_for: Callable[[str], Any],
    plan: Plan,
    routes: list[Route],
    *,
    concurrency: int = CONCURRENCY,
    on_progress: Callable[[int, int | None], None] | None = None,
    accounts: Mapping[str, Client] | None = None,
) -> list[RouteStatus]:
    """Every route's status, in the order given, `concurrency` routes at a time.

    `accounts`: in a per-account plan, the connection to each NATS account other than the
    home one (`nc`'s), by name: each route's stream is read in its own account."""
    from snsq2nats.jetstream.state import stream_infos

    wanted = {s for r in routes for s in (r.stream, r.target_stream, r.advisory_stream) if s}
    streams: dict[str, dict[str, Any]] | None = None
    if len(wanted) >= LIST_STREAMS_FROM:
        # Many streams: one paged listing per account reads them all, 256 a request (a stream
        # name is unique across the plan's accounts).
        streams = {}
        for conn in [nc, *(accounts or {}).values()]:
            streams.update(await stream_infos(conn))
    gate = asyncio.Semaphore(max(1, concurrency))
    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="status") as pool:
        queues = None
        if len(routes) >= LIST_QUEUES_FROM:
            # Many queues: ListQueues (1,000 a page) instead of a GetQueueUrl per queue.
            from snsq2nats.aws.scan import list_queue_urls

            queues = _QueueUrls()
            loop = asyncio.get_running_loop()
            try:
                places = sorted({_place(r, sqs_for) for r in routes})
                for region, account in places:
                    sqs = (
                        sqs_for(region, account)
                        if isinstance(sqs_for, SqsByAccount)
                        else sqs_for(region)
                    )
                    for url in await loop.run_in_executor(pool, list_queue_urls, sqs, None):
                        queues.add(region, url)
            except Exception:
                # Only a shortcut: without sqs:ListQueues (status never needed it), or on any
                # error listing, each queue is looked up by name as before.
                queues = None
        reading = _Reading(
            _queue_durables(plan), streams, pool, queues, _connections(plan, nc, accounts)
        )

        async def one(route: Route) -> RouteStatus:
            async with gate:
                status = await route_status(nc, sqs_for, plan, route, reading)
            if on_progress is not None:
                on_progress(1, len(routes))
            return status

        statuses = list(await asyncio.gather(*(one(r) for r in routes)))
    if len(estate_accounts(plan)) > 1:
        for status, route in zip(statuses, routes, strict=True):
            status.account = parse_arn(route.aws_arn).account
    await _mark_undeliverable(nc, statuses)
    fleet = await read_fleet(nc)
    if fleet is not None:
        now = datetime.now(UTC)
        for status in statuses:
            status.owner = route_owner(fleet, status.route, now)
            if status.owner.problem:
                # Not drained, whatever the backlog: nothing relays it, so nothing stays so.
                status.drained = False
                status.reason = f"{status.owner.problem} — {status.reason}"
    return statuses
