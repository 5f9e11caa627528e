"""`snsq2nats cutover`: move one application at a time, exactly once, without editing YAML.

A move is recorded in the live cutover state (`plan.states`, the KV bucket every bridge
watches). The bridges switch their relays without a restart and confirm in their fleet
heartbeat; the command returns once every live bridge has. The handover needs no synchronised
switch point: a relay that starts joins the old side's workers as one more competing consumer
of the one copy each message has (`plan.routes`), so whether the old workers stop before,
during or after the switch, each message is taken once — by them, or by the bridge carrying it
to the new side; a FIFO queue's relay keeps each message's group locked in SQS until the NATS
workers processed it (`bridge.fifo_handover`), so group order holds too. `--wait` then blocks
until the old side holds nothing (also for a move made earlier), which is when the old workers
may stop. With no bridge running a move is recorded and pending: nothing switches until one
starts, and the CLI exits 1 unless asked to record only.

`finish` retires the bridge's paths for a resource whose sides are all on NATS, removes the
bridge-owned queue and subscription of a finished topic, and lists the AWS resources nothing
uses any more (deleted only with `--delete-aws`, and only those).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from snsq2nats.cutover.moves import (
    Move,
    Side,
    aws_feeds,
    plan_finish,
    plan_moves,
    switches_at_finish,
)
from snsq2nats.errors import CutoverError
from snsq2nats.jetstream.api import (
    JetStreamApiError,
    api,
    delete_consumer,
    restart_consumer_at,
)
from snsq2nats.jetstream.kv import Kv, open_kv
from snsq2nats.jetstream.state import read_bucket
from snsq2nats.plan.buckets import CUTOVER_WRITER, FLEET_OBSERVER
from snsq2nats.plan.fleet import MEMBERS, Heartbeat
from snsq2nats.plan.model import Plan, Resource, Route
from snsq2nats.plan.routes import active_routes
from snsq2nats.plan.states import Change, CutoverRecord, current_view, record_key

if TYPE_CHECKING:
    from nats.aio.client import Client

    from snsq2nats.aws.accounts import ClientsFor
    from snsq2nats.aws.clients import RegionClients
    from snsq2nats.bridge.fanout_handover import RelayCut
    from snsq2nats.jetstream.spec import StreamSource
    from snsq2nats.jetstream.state import KvValue

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
CONFIRM_TIMEOUT = 120.0
POLL = 1.0


@dataclass
class CutoverRequest:
    side: Side
    names: list[str]
    to: str | None = None
    dry_run: bool = False
    wait: bool = False
    by: str = "unknown"
    command: str = ""
    delete_aws: bool = False
    confirm_timeout: float = CONFIRM_TIMEOUT
    drain_timeout: float | None = None
    record_only: bool = False
    """Record the move even though no bridge runs to make it (the CLI exits 0 then)."""


@dataclass
class Drained:
    """The old side of a move, as `--wait` found it: the SQS queue a consumers move (or a
    queue's producers move to NATS) left, or the stream a move back to AWS left."""

    resource: str
    where: str
    seconds: float | None
    """How long it took to drain; None when it was not waited for (see `fed`)."""
    fed: list[str] = field(default_factory=list)
    """What still feeds it on AWS: it never stays empty, so `--wait` does not wait for it."""


@dataclass
class CutoverResult:
    moves: list[Move]
    dry_run: bool = False
    revision: int | None = None
    confirmed: list[str] = field(default_factory=list)
    """The bridge fleet members that confirmed running the new state."""
    seconds_to_confirm: float | None = None
    drained: list[Drained] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    """Bridge-owned AWS resources finish left in place, and why."""
    switched: dict[str, RelayCut] = field(default_factory=dict)
    """Topics finish switched from SNS to stream sources: where SNS's share ended."""

    @property
    def no_bridge(self) -> bool:
        return self.revision is not None and not self.confirmed


# --- the state bucket ---------------------------------------------------------------------------


async def open_state(nc: Client) -> Kv:
    """The cutover state bucket; BucketMissing when the plan was not applied."""
    return await open_kv(nc, CUTOVER_WRITER)


async def read_records(nc: Client) -> dict[str, CutoverRecord]:
    """Every recorded resource by ARN."""
    from snsq2nats.plan.states import RESOURCE_PREFIX, parse_records

    values = await read_bucket(nc, CUTOVER_WRITER, RESOURCE_PREFIX + ">")
    return parse_records(values or {})


async def history(kv: Kv, arn: str) -> list[CutoverRecord]:
    from nats.js.errors import NoKeysError

    try:
        entries = await kv.history(record_key(arn))
    except NoKeysError:
        return []
    return [CutoverRecord.from_bytes(e.value, e.revision or 0) for e in entries if e.value]


async def _record(
    kv: Kv, moves: list[Move], records: dict[str, CutoverRecord], request: CutoverRequest
) -> int:
    from nats.js.errors import KeyWrongLastSequenceError

    at = datetime.now(UTC).isoformat(timespec="seconds")
    revision = 0
    for move in moves:
        if not move.changed:
            continue
        arn = move.resource.source_arn
        record = CutoverRecord(
            arn=arn,
            kind=move.kind,
            name=move.resource.name,
            state=move.after,
            change=Change(by=request.by, at=at, command=request.command, previous=move.before),
        )
        key = record_key(arn)
        previous = records.get(arn)
        try:
            if previous is None:
                revision = await kv.create(key, record.to_bytes())
            else:
                revision = await kv.update(key, record.to_bytes(), last=previous.revision)
        except KeyWrongLastSequenceError:
            raise CutoverError(
                f"the cutover state of {move.resource.name} changed while this command ran",
                hint="run the command again: it reads the new state first",
            ) from None
        records[arn] = record.model_copy(update={"revision": revision})
    return revision


# --- checks ---------------------------------------------------------------------------------------


def stream_connections(
    plan: Plan, nc: Client, accounts: Mapping[str, Client] | None
) -> Callable[[str], Client]:
    """Each stream's connection: in a per-account plan its NATS account's (`accounts`, by
    name; the home one's, `nc`, for the rest), else `nc`."""
    holder = {stream: a.name for a in plan.nats_accounts for stream in a.streams}
    others = dict(accounts or {})
    return lambda stream: others.get(holder.get(stream, ""), nc)


async def check_applied(
    nc: Client, moves: list[Move], conn: Callable[[str], Client] | None = None
) -> None:
    """Every object the moved resources and the relays to start need exists on the server
    (`conn`: each stream's connection, in a per-account plan)."""
    needed: dict[str, tuple[str, str]] = {}
    for move in moves:
        if move.resource.stream:
            stream = move.resource.stream
            needed[f"$JS.API.STREAM.INFO.{stream}"] = (stream, f"stream {stream}")
        for route in move.starts:
            if route.stream:
                needed[f"$JS.API.STREAM.INFO.{route.stream}"] = (
                    route.stream,
                    f"stream {route.stream}",
                )
            if route.stream and route.consumer:
                needed[f"$JS.API.CONSUMER.INFO.{route.stream}.{route.consumer}"] = (
                    route.stream,
                    f"consumer {route.stream}/{route.consumer}",
                )
    for subject, (stream, what) in needed.items():
        try:
            await api(conn(stream) if conn else nc, subject, None, 5.0)
        except JetStreamApiError as err:
            if err.code != 404:
                raise
            raise CutoverError(
                f"{what} does not exist on the server",
                hint="run `snsq2nats apply` with this plan first: a cutover only starts and "
                "stops bridge relays, it creates nothing",
            ) from None


# --- the bridges ----------------------------------------------------------------------------------


async def wait_for_bridges(
    nc: Client, revision: int, timeout: float, progress: Progress
) -> list[str]:
    """Wait until every live bridge fleet member runs cutover state `revision`; their ids.

    Live: a heartbeat written recently (on the server's clock, generously: a busy host beats
    late) that keeps moving while we wait. A member whose heartbeat stands still for two lease
    TTLs is dead: its routes go to the others, which already run the new state. A member that
    says it is not ready (a route it should run it cannot acquire or run) confirms nothing:
    it is waited for like one that has not switched yet, and named with why.
    """
    from pydantic import ValidationError

    started = time.monotonic()
    # member → (heartbeat, its revision, when we saw that revision change)
    seen: dict[str, tuple[Heartbeat, int, float]] = {}
    first = True
    last_said = 0.0
    while True:
        try:
            values = await read_bucket(nc, FLEET_OBSERVER, MEMBERS + ">")
        except Exception as exc:  # a busy or electing server: read again
            log.debug("reading the fleet's heartbeats failed (%s): retrying", exc)
            await asyncio.sleep(POLL / 2)
            continue
        if values is None:
            return []  # no fleet bucket: no bridge has ever run against this plan
        now = time.monotonic()
        for entry in values.values():
            try:
                beat = Heartbeat.model_validate_json(entry.value)
            except ValidationError:
                continue
            previous = seen.get(beat.member)
            stale = time.time() - entry.written > max(30.0, 10 * beat.lease_ttl)
            if beat.leaving or (first and stale):
                seen.pop(beat.member, None)
                continue
            if previous is None and not first:
                # Joined after the move was recorded: it starts in the new state.
                continue
            since = now if previous is None or previous[1] != entry.revision else previous[2]
            seen[beat.member] = (beat, entry.revision, since)
        first = False
        for member, (beat, _, since) in list(seen.items()):
            # A busy host can delay a beat: dead only after two TTLs without one.
            if now - since > 2 * beat.lease_ttl:
                progress(f"bridge {member} stopped beating: its routes go to the others")
                del seen[member]
        waiting = sorted(
            m
            for m, (beat, _, _) in seen.items()
            if beat.cutover_revision < revision or not beat.ready
        )
        unready = {m: _unready(seen[m][0]) for m in waiting if not seen[m][0].ready}
        if not waiting:
            if not seen and values:
                progress("no live bridge: " + _heartbeats_summary(values.values()))
            return sorted(seen)
        if now - started > timeout:
            raise CutoverError(
                f"bridge(s) {', '.join(waiting)} did not confirm the move within {timeout:g}s"
                + "".join(f"; {m} is not ready: {why}" for m, why in unready.items()),
                hint="the move is recorded and they switch when they catch up: check their "
                "logs and /readyz, then run `snsq2nats status`",
            )
        if now - last_said > 5:
            last_said = now
            progress(f"waiting for {len(waiting)} bridge(s) to switch: {', '.join(waiting)}")
            for member, why in unready.items():
                progress(f"bridge {member} is not ready (it confirms nothing until it is): {why}")
        await asyncio.sleep(POLL / 2)


def _unready(beat: Heartbeat) -> str:
    blocked = dict(beat.blocked)
    if not blocked:
        return "a route it should run cannot run"
    return "; ".join(f"{route}: {why}" for route, why in sorted(blocked.items()))


def _heartbeats_summary(entries: Iterable[KvValue]) -> str:
    """What the fleet bucket holds when no member is live: each member, how old its last
    heartbeat is, and whether it left (decoded, never the raw bytes)."""
    from pydantic import ValidationError

    said = []
    for entry in entries:
        age = f"{time.time() - entry.written:.0f}s ago"
        try:
            beat = Heartbeat.model_validate_json(entry.value)
        except ValidationError:
            said.append(f"an unreadable heartbeat written {age}")
            continue
        said.append(f"{beat.member} {'left' if beat.leaving else 'last beat'} {age}")
    return "; ".join(said) or "no heartbeat"


# --- draining the old side ------------------------------------------------------------------------


def _clients(aws: RegionClients | ClientsFor, arn: str) -> RegionClients:
    """The clients acting where `arn` lives: `aws` is one region's clients (a one-account
    estate) or the clients of each ARN's own account and region (`aws.accounts.clients_by_arn`,
    what `snsq2nats cutover` passes)."""
    return aws(arn) if callable(aws) else aws


async def _sqs_backlog(aws: RegionClients | ClientsFor, arn: str) -> int:
    from snsq2nats.aws.arns import parse_arn
    from snsq2nats.aws.backlog import queue_backlog

    parts = parse_arn(arn)
    # Made on a thread: opening an account's clients may ask STS for its role.
    sqs = await asyncio.to_thread(lambda: _clients(aws, arn).sqs)
    counts = await asyncio.to_thread(queue_backlog, sqs, parts.resource, parts.account)
    return counts.total


async def _stream_backlog(nc: Client, stream: str, durable: str) -> int:
    info = await api(nc, f"$JS.API.CONSUMER.INFO.{stream}.{durable}", None, 5.0)
    return int(info.get("num_pending") or 0) + int(info.get("num_ack_pending") or 0)


async def drain(
    what: str,
    backlog: Callable[[], Awaitable[int]],
    progress: Progress,
    timeout: float | None,
) -> float:
    """Poll `backlog()` until it reads 0 twice in a row (SQS counts are approximate)."""
    started = time.monotonic()
    zeros = 0
    last_said = 0.0
    while zeros < 2:
        left = await backlog()
        zeros = zeros + 1 if left == 0 else 0
        now = time.monotonic()
        if left and now - last_said > 2:
            last_said = now
            progress(f"{what}: {left} message(s) left")
        if timeout is not None and now - started > timeout:
            raise CutoverError(
                f"{what} still holds {left} message(s) after {timeout:g}s",
                hint="the move is done; run the command again with --wait to keep watching",
            )
        if zeros < 2:
            await asyncio.sleep(POLL)
    return time.monotonic() - started


def _drains_before_nats_producers(move: Move) -> bool:
    """A queue's producers moving to NATS while its consumers are there: what the AWS producers
    sent is still being relayed from SQS. (With the consumers on AWS, NATS producers' messages
    are relayed into SQS after everything already there: nothing to wait for.)"""
    return (
        move.kind == "queue" and move.after.producers == "nats" and move.after.consumers == "nats"
    )


async def _drain_old_side(
    nc: Client,
    aws: RegionClients | ClientsFor | None,
    move: Move,
    request: CutoverRequest,
    progress: Progress,
    feeds: list[str],
) -> Drained | None:
    """Wait until the side the consumers left holds nothing, whether this command moved them
    or an earlier one did (`--wait` on a move already made waits just the same)."""
    resource = move.resource
    if move.side == "producers":
        # What the AWS producers left in SQS must reach the stream before NATS producers publish
        # the same groups' next messages (relayed later, it would land after them).
        then = f"the NATS producers of {resource.name} may start"
    else:
        then = f"the old workers of {resource.name} may stop"
    if move.after.consumers == "nats":
        if aws is None:
            raise CutoverError("--wait on a move to NATS reads the SQS queue: no AWS access given")
        where = f"SQS queue {resource.name}"
        if feeds:
            # It never stays empty while fed; the bridge relays whatever arrives (a FIFO queue
            # keeps each group's order across both sides), so the old workers may stop whenever.
            progress(
                f"{where} is still fed ({'; '.join(feeds)}): not waiting for it to drain; the "
                f"bridge relays what arrives ({then} whenever suits)"
            )
            return Drained(resource.name, where, None, feeds)
        seconds = await drain(
            where, lambda: _sqs_backlog(aws, resource.source_arn), progress, request.drain_timeout
        )
    else:
        assert resource.stream and resource.consumer
        where = f"stream {resource.stream} (durable {resource.consumer})"
        stream, durable = resource.stream, resource.consumer
        seconds = await drain(
            where, lambda: _stream_backlog(nc, stream, durable), progress, request.drain_timeout
        )
    progress(f"{where} is drained: {then}")
    return Drained(resource.name, where, round(seconds, 3))


# --- the command ----------------------------------------------------------------------------------


async def run_cutover(
    nc: Client,
    plan: Plan,
    request: CutoverRequest,
    *,
    aws: RegionClients | ClientsFor | None = None,
    progress: Progress = lambda line: None,
    accounts: Mapping[str, Client] | None = None,
) -> CutoverResult:
    """`accounts`: in a per-account plan, the connection to each NATS account but the home one
    (`nc`'s, where the cutover state, the fleet and the SNS relays' ledger are): the streams a
    move needs are checked, and drained, in their own accounts, and a topic's switch to stream
    sources at its finish runs in the topic's account (its queue streams are there too)."""
    conn = stream_connections(plan, nc, accounts)
    kv = await open_state(nc)
    records = await read_records(nc)
    if request.side == "finish":
        moves = plan_finish(plan, records, request.names)
    else:
        assert request.to is not None
        moves = plan_moves(plan, records, request.side, request.names, request.to)
    await check_applied(nc, moves, conn)
    if request.side == "finish":
        _check_switch_accounts(plan, moves)
    result = CutoverResult(moves=moves, dry_run=request.dry_run)
    if request.dry_run:
        return result
    if any(m.changed for m in moves):
        if request.side == "finish":
            await _before_finish(nc, plan, aws, moves, request, progress, conn)
        started = time.monotonic()
        result.revision = await _record(kv, moves, records, request)
        progress(f"recorded (state revision {result.revision}); waiting for the bridges to switch")
        result.confirmed = await wait_for_bridges(
            nc, result.revision, request.confirm_timeout, progress
        )
        result.seconds_to_confirm = round(time.monotonic() - started, 3)
        if not result.confirmed:
            progress("no bridge is running: the move is recorded and pending until one starts")
            # Nothing relays the old side yet: waiting for it to drain would wait for nothing.
            return result
        if request.side == "finish":
            await _after_finish(nc, plan, aws, moves, request, result, conn)
    elif request.side == "finish":
        # Finished already: a run interrupted between the finish and its switch completes it
        # (each part of the switch is left alone where it is done).
        for move in moves:
            if move.kind == "topic" and switches_at_finish(move.resource):
                try:
                    result.switched[move.resource.name] = await switch_to_sources(
                        nc, plan, move.resource, conn=conn
                    )
                except JetStreamApiError as err:
                    if err.code != 404:
                        raise
                    # The relay's consumer is gone (a later plan, applied with --prune): that
                    # plan made the topic's sources, nothing is left to complete.
    if request.wait and request.side in ("consumers", "producers"):
        if result.revision is None and not await wait_for_bridges(
            nc, 0, request.confirm_timeout, progress
        ):
            raise CutoverError(
                "nothing drains the old side of "
                + ", ".join(m.resource.name for m in moves)
                + ": no bridge is running",
                hint="start `snsq2nats bridge` (the move is already recorded), then run the "
                "command again",
            )
        view = current_view(plan, await read_records(nc))
        running = {r.name for r in active_routes(plan.candidate_routes, view)}
        for move in moves:
            if move.side == "producers" and not _drains_before_nats_producers(move):
                continue
            relay = ("sqs:" if move.after.consumers == "nats" else "to-sqs:") + move.resource.name
            if not move.changed and relay not in running:
                # Where the plan always had them, and nothing on the other side to relay.
                continue
            feeds = aws_feeds(plan, move.resource, view) if move.kind == "queue" else []
            stream = move.resource.stream
            drained = await _drain_old_side(
                conn(stream) if stream else nc, aws, move, request, progress, feeds
            )
            if drained is not None:
                result.drained.append(drained)
    return result


async def _before_finish(
    nc: Client,
    plan: Plan,
    aws: RegionClients | ClientsFor | None,
    moves: list[Move],
    request: CutoverRequest,
    progress: Progress,
    conn: Callable[[str], Client],
) -> None:
    """A finished queue's SQS queue must be empty: the relay stops with the finish. A topic the
    finish switches to sources has its filter routers' consumers removed first: they were made
    by apply and hold everything since, which SNS delivered already; the switch makes them
    again at the switch's sequence (the routers the bridges start with the finish retry until
    then: a few seconds, and nothing is read before it)."""
    for move in moves:
        if move.kind == "topic" and move.changed and switches_at_finish(move.resource):
            for route in _routers_at_finish(move):
                assert route.stream and route.consumer
                await delete_consumer(
                    conn(route.stream), route.stream, route.consumer, missing_ok=True
                )
        if move.kind != "queue":
            continue
        if aws is None:
            raise CutoverError("finishing a queue reads its SQS queue: no AWS access given")
        where = f"SQS queue {move.resource.name}"
        arn = move.resource.source_arn
        if request.wait:

            async def backlog(clients: RegionClients | ClientsFor = aws, arn: str = arn) -> int:
                return await _sqs_backlog(clients, arn)

            await drain(where, backlog, progress, request.drain_timeout)
            continue
        left = await _sqs_backlog(aws, arn)
        if left:
            raise CutoverError(
                f"{where} still holds {left} message(s) the bridge has not relayed yet",
                hint="pass --wait to finish once it is empty",
            )
    if aws is None:
        return  # the bridge queues stay (`_after_finish` says so)
    for move in moves:
        for route in move.stops if move.kind == "topic" and move.changed else []:
            if route.kind == "sns-to-nats" and route.bridge_queue:
                await _detach_bridge_queue(nc, plan, aws, route)


async def _after_finish(
    nc: Client,
    plan: Plan,
    aws: RegionClients | ClientsFor | None,
    moves: list[Move],
    request: CutoverRequest,
    result: CutoverResult,
    conn: Callable[[str], Client],
) -> None:
    for move in moves:
        if move.kind == "topic" and switches_at_finish(move.resource):
            result.switched[move.resource.name] = await switch_to_sources(
                nc, plan, move.resource, conn=conn
            )
        for route in move.stops:
            if route.kind == "sns-to-nats" and route.bridge_queue:
                if aws is None:
                    result.kept.append(f"{route.bridge_queue} (no AWS access given)")
                    continue
                await _remove_bridge_queue(nc, plan, aws, route)
                result.deleted.append(route.bridge_queue)
        if request.delete_aws and aws is not None:
            # Subscriptions before their topic: deleting the topic takes them along.
            for arn in sorted(move.unused, key=lambda a: a.count(":"), reverse=True):
                await _delete_aws(aws, arn)
                result.deleted.append(arn)


def _switched_queues(plan: Plan, topic: Resource) -> list[Resource]:
    """The subscriptions into a queue stream that a topic's switch gives a source."""
    routed = {
        r.source_arn
        for r in plan.candidate_routes
        if r.kind == "filter-router" and r.aws_arn == topic.source_arn and r.at_finish
    }
    return [
        sub
        for sub in plan.resources
        if sub.kind == "sns-subscription"
        and sub.source_arn.startswith(topic.source_arn + ":")
        and sub.stream is not None
        and sub.source_arn not in routed
    ]


def _check_switch_accounts(plan: Plan, moves: list[Move]) -> None:
    """Refuse, before anything is recorded, a finish whose switch would source a topic's stream
    from another NATS account: such a crossing is carried by the bridge in this plan, so the
    accounts export and import nothing for it."""
    if not plan.nats_accounts:
        return
    holder = {stream: a.name for a in plan.nats_accounts for stream in a.streams}
    for move in moves:
        topic = move.resource
        if move.kind != "topic" or not topic.stream or not switches_at_finish(topic):
            continue
        for sub in _switched_queues(plan, topic):
            assert sub.stream is not None
            if holder.get(sub.stream) != holder.get(topic.stream):
                raise CutoverError(
                    f"finishing topic {topic.name} would make stream {sub.stream} (NATS account "
                    f"{holder.get(sub.stream)}) source {topic.stream} (account "
                    f"{holder.get(topic.stream)}), a crossing this plan carries through the "
                    "bridge, with no export or import for it",
                    hint="plan the topic's fan-out on NATS (a re-plan with its producers on "
                    "NATS), run `snsq2nats auth --format jwt` and apply: apply hands the "
                    "fan-out over exactly once; nothing was recorded",
                )


async def switch_to_sources(
    nc: Client,
    plan: Plan,
    topic: Resource,
    *,
    conn: Callable[[str], Client] | None = None,
) -> RelayCut:
    """Hand a finished topic's queues from SNS to stream sources, exactly once.

    The bridges have stopped the nats-to-sns relay (they confirmed the finish), so its
    consumer's floors say which messages SNS has (`bridge.fanout_handover`): each subscribed
    queue's stream sources the topic after the last one delivered to the relay, the few handed
    to it without an ack are copied in under their SNS ids first, and the topic's filter
    routers start after its ack floor. What SNS delivered is in the SQS queues, relayed to the
    same streams until each queue is finished. A source a queue stream already has (a second
    run) is left as it is.

    `conn`: each stream's connection in a per-account plan (`stream_connections`): the switch
    runs in the topic's account, where its queue streams are (`_check_switch_accounts`), and
    reads the SNS relays' ledger over `nc`, the home account's.
    """
    from snsq2nats.bridge.fanout_handover import (
        carry_in_doubt,
        copy_target,
        read_cut,
        source_filters,
    )
    from snsq2nats.plan.subscriptions import stream_source

    assert topic.stream is not None
    home = nc
    nc = conn(topic.stream) if conn else nc
    relay = next(
        r
        for r in plan.candidate_routes
        if r.kind == "nats-to-sns" and r.source_arn == topic.source_arn
    )
    cut = await read_cut(nc, topic.stream)
    routed = {
        r.source_arn: r
        for r in plan.candidate_routes
        if r.kind == "filter-router" and r.aws_arn == topic.source_arn and r.at_finish
    }
    for router in routed.values():
        await _start_router_at(nc, plan, router, cut.router_start)
    sourcing: list[tuple[str, dict[str, Any], StreamSource]] = []
    for sub in plan.resources:
        if sub.kind != "sns-subscription" or not sub.source_arn.startswith(topic.source_arn + ":"):
            continue
        if sub.stream is None or sub.source_arn in routed:
            continue  # not into a queue, or its filter router carries it
        filters = sub.filter_subjects or list(relay.relay_subjects)
        live = (await api(nc, f"$JS.API.STREAM.INFO.{sub.stream}", None, 5.0))["config"]
        if any(s.get("name") == topic.stream for s in live.get("sources") or []):
            continue
        source = stream_source(topic.stream, filters).model_copy(
            update={"opt_start_seq": cut.source_start}
        )
        sourcing.append((sub.stream, live, source))
    # The copies first: a run stopped before the sources are added copies again (the same ids).
    targets = [copy_target(plan, stream, source_filters(source)) for stream, _, source in sourcing]
    cut = await carry_in_doubt(
        nc,
        cut,
        relay.relay_subjects,
        targets,
        route=f"finish:{topic.name}",
        ledger=home if home is not nc else None,
    )
    for stream, live, source in sourcing:
        live["sources"] = [*(live.get("sources") or []), source.to_api()]
        await api(nc, f"$JS.API.STREAM.UPDATE.{stream}", live, 10.0)
        log.info(
            "%s: %s sources %s from sequence %d", topic.name, stream, topic.stream, cut.source_start
        )
    return cut


def _routers_at_finish(move: Move) -> list[Route]:
    return [r for r in move.starts if r.kind == "filter-router" and r.at_finish]


async def _start_router_at(nc: Client, plan: Plan, router: Route, start: int) -> None:
    """Make a switched topic's filter-router consumer start at `start` (the first message SNS
    did not get), as the plan's own consumer otherwise, so a later `plan` finds it unchanged."""
    spec = plan.consumer(router.stream, router.consumer)
    if spec is None:
        raise CutoverError(
            f"the plan has no consumer {router.stream}/{router.consumer} for route {router.name}",
            hint="make the plan again with `snsq2nats plan` (and apply it), then finish again",
        )
    if await restart_consumer_at(nc, spec, start):
        log.info("%s: its consumer starts at sequence %d", router.name, start)


async def _detach_bridge_queue(
    nc: Client, plan: Plan, aws: RegionClients | ClientsFor, route: Route
) -> None:
    """Unsubscribe a finishing topic's bridge queue before the bridges stop its relay: what
    reaches the queue after a relay stopped is taken by the relay's long poll, which lives on
    in SQS, and would hold `_remove_bridge_queue` up for a visibility timeout (see
    `bridge.sns_to_nats`). Until the finish is confirmed the running relay drains it."""
    from snsq2nats.bridge.sns_to_nats import detach_bridge_queue

    # The bridge queue lives in the topic's account and region, as the bridge made it.
    clients = await asyncio.to_thread(_clients, aws, route.aws_arn)
    await detach_bridge_queue(nc, plan, clients.sqs, clients.sns, route)


async def _remove_bridge_queue(
    nc: Client, plan: Plan, aws: RegionClients | ClientsFor, route: Route
) -> None:
    """Unsubscribe the topic's bridge queue (again: a relay restarted since the finish began
    subscribes it anew), relay what it still holds, delete it."""
    from snsq2nats.bridge.sns_to_nats import remove_bridge_queue

    clients = await asyncio.to_thread(_clients, aws, route.aws_arn)
    await remove_bridge_queue(nc, plan, clients.sqs, clients.sns, route)


async def _delete_aws(aws: RegionClients | ClientsFor, arn: str) -> None:
    from snsq2nats.aws.arns import parse_arn

    parts = parse_arn(arn)
    # A subscription's ARN names its topic's account and region: the topic owner unsubscribes.
    clients = await asyncio.to_thread(_clients, aws, arn)
    if parts.service == "sqs":
        url = (
            await asyncio.to_thread(
                clients.sqs.get_queue_url,
                QueueName=parts.resource,
                QueueOwnerAWSAccountId=parts.account,
            )
        )["QueueUrl"]
        await asyncio.to_thread(clients.sqs.delete_queue, QueueUrl=url)
    elif ":" in parts.resource:
        await asyncio.to_thread(clients.sns.unsubscribe, SubscriptionArn=arn)
    else:
        await asyncio.to_thread(clients.sns.delete_topic, TopicArn=arn)
    log.info("deleted %s", arn)
