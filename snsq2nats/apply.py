"""Execute a plan against live JetStream: exactly its changes, in dependency order, safely.

Safety comes before speed, and all of it happens before the first write:

1. Re-read the live state and refuse objects snsq2nats does not own: a desired stream name taken
   by a foreign stream, or a foreign consumer where a managed one should be, is an error, never
   a silent "done".
2. Re-diff the plan's desired objects against that state. If the changes differ from the plan's
   (action, or the field changes a reviewer saw), the plan is stale and nothing is applied, as in
   Terraform. A planned change that the live state already satisfies is not staleness but work
   already done (typically a re-run after a partial failure): it is skipped, which is what makes
   re-applying the same plan converge.
3. A `replace` (delete + create: the stream's messages go) needs `allow_destructive`; without it
   the refusal names each stream and how many messages it would lose.

Then the changes run as a dependency graph with bounded concurrency: a stream after the streams
it sources and its DLQ target, a consumer after its stream, deletes last (one at a time, in the
plan's order, which already puts consumers before their streams and sourcing streams before
their origins). The first rejection stops the run: what is in flight finishes, nothing new
starts, and the result lists every change as done, failed or skipped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from snsq2nats.errors import ApplyError as ApplyError
from snsq2nats.errors import BucketMissing, SnsqError
from snsq2nats.jetstream.api import (
    ERR_CLUSTER_UNAVAILABLE,
    ERR_NO_PEERS,
    JetStreamApiError,
    api,
    create_consumer,
    create_stream,
    delete_consumer,
    delete_stream,
    pedantic_supported,
    restart_consumer_at,
    update_stream,
)
from snsq2nats.jetstream.operations import STREAM_INFO
from snsq2nats.jetstream.spec import (
    ROUTE_KEY,
    SOURCE_KEY,
    ConsumerSpec,
    LiveState,
    StreamSource,
    StreamSpec,
)
from snsq2nats.jetstream.state import read_bucket, read_live
from snsq2nats.plan.diff import CONFLICT_PREFIX, count_messages, diff
from snsq2nats.plan.metadata import is_managed
from snsq2nats.plan.model import Change, Desired, Plan, Route

if TYPE_CHECKING:
    from nats.aio.client import Client

    from snsq2nats.bridge.fanout_handover import CopyTarget, RelayCut
    from snsq2nats.bridge.follow import Applied

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_CONCURRENCY",
    "ApplyError",
    "ApplyResult",
    "Outcome",
    "apply_plan",
    "conflict_refusal",
    "destructive_refusal",
    "hand_over_fanout",
    "record_applied_revision",
]

Status = Literal["done", "failed", "skipped"]
Key = tuple[str, str, str]  # (type, stream, name): consumer names are unique per stream only

# Enough requests in flight to hide the round trip, few enough that the server's JetStream API
# queue (and a cluster's meta leader, which serialises stream assignments) never backs up.
DEFAULT_CONCURRENCY = 32
# A replicated create waits for the meta leader and a new RAFT group: slower than a lookup.
WRITE_TIMEOUT = 10.0

ALREADY_DONE = "already in the planned state"

# A cluster under load can briefly think a peer is offline (10005 "… peer offline") or be
# between meta leaders (10008). Every write here is idempotent (same-config creates succeed,
# deletes tolerate "gone"), so such a refusal is retried a few times before it counts as the
# server rejecting the object. So is no answer within WRITE_TIMEOUT: nats-server's cost per
# stream create grows with the streams it holds (measured by benchmarks/bench_estate: ~2 ms
# empty, ~10 ms at 8,000), and with 32 creates queued a stall leaves some unanswered for more
# than WRITE_TIMEOUT at 10,000 queues. The request was queued, not lost: its retry finds the
# object made (or makes it).
RETRY_DELAYS = (0.5, 1.0, 2.0)


@dataclass(frozen=True)
class Outcome:
    change: Change
    status: Status
    detail: str = ""
    seconds: float = 0.0

    @property
    def key(self) -> Key:
        return _key(self.change)


@dataclass
class ApplyResult:
    """Every pending change of the plan, in plan order, with what happened to it."""

    outcomes: list[Outcome] = field(default_factory=list)
    error: SnsqError | None = None  # the first refusal; usually a JetStreamApiError
    seconds: float = 0.0
    revision: int | None = None
    """The applied revision recorded for the bridges (`record_applied_revision`); None when
    the plan has no revision bucket (no routes) or the run stopped."""
    handovers: dict[str, RelayCut] = field(default_factory=dict)
    """Per topic stream whose fan-out this run moved from SNS to sources: where its stopped
    SNS relay left it, how many in-doubt messages the ledger named as sent to SNS, how many
    copies were written, and whether there was a ledger to read (`bridge.fanout_handover`)."""

    @property
    def ok(self) -> bool:
        return self.error is None and not self.failed

    def _with(self, status: Status) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == status]

    @property
    def done(self) -> list[Outcome]:
        return self._with("done")

    @property
    def failed(self) -> list[Outcome]:
        return self._with("failed")

    @property
    def skipped(self) -> list[Outcome]:
        return self._with("skipped")

    @property
    def not_done(self) -> list[Outcome]:
        """Skipped because the run stopped, not because the object was already right."""
        return [o for o in self.skipped if o.detail != ALREADY_DONE]


def _key(change: Change) -> Key:
    return (change.type, change.stream, change.name)


def _label(change: Change) -> str:
    if change.type == "consumer":
        return f"consumer {change.stream}/{change.name}"
    return f"stream {change.name}"


def _managed(config: Mapping[str, Any] | None) -> bool:
    """Created by snsq2nats: a source's object or a bridge-owned one (see plan.metadata)."""
    return is_managed((config or {}).get("metadata"))


def _desired(plan: Plan) -> Desired:
    return Desired(
        streams=plan.streams,
        consumers=plan.consumers,
        resources=plan.resources,
        routes=plan.routes,
    )


# --- checks before anything is written ----------------------------------------------------------


def _conflicts(plan: Plan, live: LiveState) -> list[str]:
    """Desired objects whose names live objects without snsq2nats metadata already hold."""
    problems: list[str] = []
    for spec in plan.streams:
        ls = live.streams.get(spec.name)
        if ls is not None and not _managed(ls.config):
            problems.append(f"stream {spec.name} exists but is not managed by snsq2nats")
    for cspec in plan.consumers:
        ls = live.streams.get(cspec.stream_name)
        if ls is None or not _managed(ls.config):
            continue  # a foreign stream is reported above; a missing one is simply created
        cfg = ls.consumers.get(cspec.durable_name)
        if cfg is not None and not _managed(cfg):
            problems.append(f"consumer {cspec.key} exists but is not managed by snsq2nats")
    return problems


def _conflict_error(problems: list[str]) -> ApplyError:
    return ApplyError(
        "names the plan needs are taken by objects snsq2nats does not manage: "
        + "; ".join(problems),
        hint="snsq2nats never touches them: rename the mapped objects (mapping `rename`) "
        "or remove the existing ones, then plan again",
    )


def conflict_refusal(plan: Plan) -> ApplyError | None:
    """The error for a plan whose diff found foreign streams under desired names, if any.

    The diff keeps such a stream as a noop (it must never be touched), which must not read as
    "nothing to do": the mapped queue or topic would have no stream at all.
    """
    problems = [
        f"{_label(c)} exists but is not managed by snsq2nats"
        for c in plan.changes
        if c.reason.startswith(CONFLICT_PREFIX)
    ]
    return _conflict_error(problems) if problems else None


def _signature(change: Change) -> tuple[Any, ...]:
    """What a reviewer approved for one object: the action and each field's before → after."""
    return (change.action, tuple((d.field, repr(d.live), repr(d.desired)) for d in change.diff))


def _describe(change: Change | None) -> str:
    if change is None or change.action == "noop":
        return "no change"
    fields = ", ".join(d.field for d in change.diff)
    return f"{change.action} ({fields})" if fields else change.action


def _reconcile(plan: Plan, fresh: list[Change]) -> tuple[list[Change], list[Change], list[str]]:
    """Split the plan's pending changes into (to run, already done) and list what is stale."""
    planned = {_key(c): c for c in plan.pending}
    now = {_key(c): c for c in fresh if c.action != "noop"}
    stale: list[str] = []
    run: list[Change] = []
    already: list[Change] = []
    for change in plan.pending:
        current = now.get(_key(change))
        if current is None:
            already.append(change)
        elif _signature(current) == _signature(change):
            run.append(change)
        else:
            stale.append(f"{_label(change)}: planned {_describe(change)}, now {_describe(current)}")
    for key, current in now.items():
        if key not in planned:
            stale.append(f"{_label(current)}: planned no change, now {_describe(current)}")
    return run, already, stale


def destructive_refusal(
    changes: Iterable[Change], messages: Callable[[Change], int | None] | None = None
) -> ApplyError | None:
    """The error for replaces not allowed by --allow-destructive, or None when there are none.

    `messages` gives a stream's current message count (default: the plan's count).
    """
    losses: list[str] = []
    for change in changes:
        if change.action != "replace":
            continue
        if change.type == "stream":
            count = messages(change) if messages else change.live_messages
            lost = count_messages(count) if count is not None else "an unknown number of messages"
            losses.append(f"stream {change.name} would lose {lost}")
        else:
            losses.append(
                f"consumer {change.stream}/{change.name} would lose its delivery state "
                "(acknowledgements, pending redeliveries)"
            )
    if not losses:
        return None
    n = len(losses)
    return ApplyError(
        f"the plan replaces {n} object{'s' if n != 1 else ''} (delete and recreate): "
        + "; ".join(losses),
        hint="review the loss, then apply again with --allow-destructive",
    )


def _foreign_consumers_lost(run: list[Change], live: LiveState) -> list[str]:
    """Replacing a stream deletes every consumer on it, including ones we must never touch."""
    problems: list[str] = []
    for change in run:
        if change.type != "stream" or change.action != "replace":
            continue
        ls = live.streams.get(change.name)
        foreign = sorted(n for n, cfg in (ls.consumers if ls else {}).items() if not _managed(cfg))
        if foreign:
            problems.append(
                f"replacing stream {change.name} would delete consumers snsq2nats does not "
                f"manage ({', '.join(foreign)})"
            )
    return problems


def _live_config(change: Change, live: LiveState) -> dict[str, Any] | None:
    ls = live.streams.get(change.stream)
    if ls is None:
        return None
    return ls.config if change.type == "stream" else ls.consumers.get(change.name)


def _unmanaged_targets(run: list[Change], live: LiveState) -> list[str]:
    """Updates, replaces and deletes must only ever land on objects snsq2nats created."""
    out: list[str] = []
    for change in run:
        if change.action in ("update", "replace", "delete"):
            config = _live_config(change, live)
            if config is not None and not _managed(config):
                out.append(f"{_label(change)} has no {SOURCE_KEY} or {ROUTE_KEY} metadata")
    return out


# --- execution ----------------------------------------------------------------------------------


@dataclass
class _Op:
    change: Change
    run: Callable[[], Awaitable[None]]
    deps: list[Key]


@dataclass
class _Runner:
    """Runs ops as a dependency graph, at most `concurrency` at once, stopping at a failure."""

    concurrency: int
    on_progress: Callable[[Outcome], None] | None
    outcomes: dict[Key, Outcome] = field(default_factory=dict)
    error: SnsqError | None = None
    failed_label: str | None = None

    def record(self, outcome: Outcome) -> None:
        self.outcomes[outcome.key] = outcome
        if self.on_progress is not None:
            self.on_progress(outcome)

    async def run(self, ops: list[_Op]) -> None:
        finished: dict[Key, asyncio.Event] = {_key(op.change): asyncio.Event() for op in ops}
        gate = asyncio.Semaphore(self.concurrency)

        async def one(op: _Op) -> None:
            key = _key(op.change)
            try:
                for dep in op.deps:
                    if dep in finished:
                        await finished[dep].wait()
                blocked = [
                    d for d in op.deps if d in self.outcomes and self.outcomes[d].status != "done"
                ]
                if blocked or self.stopped():
                    self.record(Outcome(op.change, "skipped", self._why_skipped(blocked)))
                    return
                async with gate:
                    # Re-checked inside the gate: a failure while this op queued stops it too.
                    if self.stopped():
                        self.record(Outcome(op.change, "skipped", self._why_skipped([])))
                        return
                    started = time.perf_counter()
                    try:
                        await _with_retries(op.run)
                    except SnsqError as exc:
                        if self.error is None:
                            self.error = exc
                            self.failed_label = _label(op.change)
                        self.record(
                            Outcome(
                                op.change,
                                "failed",
                                _error_detail(exc),
                                time.perf_counter() - started,
                            )
                        )
                        return
                    self.record(Outcome(op.change, "done", "", time.perf_counter() - started))
            finally:
                finished[key].set()

        await asyncio.gather(*(one(op) for op in ops))

    def stopped(self) -> bool:
        return self.error is not None

    def _why_skipped(self, blocked: list[Key]) -> str:
        if blocked:
            dep = self.outcomes[blocked[0]].change
            return f"needs {_label(dep)}, which was not applied"
        return f"apply stopped after {self.failed_label} failed"


def _transient(exc: SnsqError) -> bool:
    if not isinstance(exc, JetStreamApiError):
        return False
    if exc.err_code is None and exc.code is None:
        return True  # no answer in time: see RETRY_DELAYS
    if exc.err_code == ERR_NO_PEERS:
        # Only a peer that is offline right now; a placement no server matches never heals.
        return "offline" in (exc.description or "")
    return exc.err_code == ERR_CLUSTER_UNAVAILABLE


async def _with_retries(op: Callable[[], Awaitable[None]]) -> None:
    for delay in RETRY_DELAYS:
        try:
            await op()
            return
        except SnsqError as exc:
            if not _transient(exc):
                raise
        await asyncio.sleep(delay)
    await op()


def _error_detail(exc: SnsqError) -> str:
    if isinstance(exc, JetStreamApiError) and exc.err_code is not None:
        return f"{exc.err_code}: {exc.description}"
    return exc.what


def _dlq_targets(plan: Plan) -> dict[str, set[str]]:
    """Per stream, the DLQ streams its messages move to: indexed once, not searched per stream
    (that search is quadratic, minutes at 10,000 queues)."""
    targets: dict[str, set[str]] = {}
    for route in plan.routes:
        if route.kind == "dlq-mover" and route.stream and route.target_stream:
            targets.setdefault(route.stream, set()).add(route.target_stream)
    return targets


def _stream_deps(spec: StreamSpec, dlq_targets: Mapping[str, set[str]]) -> set[str]:
    """Streams that must exist first: the origins it sources and the DLQ its messages move to."""
    deps = {s.name for s in spec.sources or []} | dlq_targets.get(spec.name, set())
    deps.discard(spec.name)
    return deps


def _ops(
    nc: Client,
    plan: Plan,
    run: list[Change],
    live: LiveState,
    pedantic: bool,
    starts: Mapping[str, int] | None = None,
) -> list[_Op]:
    streams = {s.name: s for s in plan.streams}
    consumers = {(c.stream_name, c.durable_name): c for c in plan.consumers}
    writes = [c for c in run if c.action != "delete"]
    deletes = [c for c in run if c.action == "delete"]
    # A stream may only wait for streams the plan orders before it: the plan's order is
    # topological with any (never expected) cycle broken, so the waits can never deadlock.
    # Positions, not a copy of every earlier name per stream (quadratic memory at 10,000).
    position: dict[str, int] = {}
    for c in writes:
        if c.type == "stream":
            position.setdefault(c.name, len(position))
    changed_streams = set(position)
    dlq_targets = _dlq_targets(plan)

    def missing(change: Change) -> ApplyError:
        return ApplyError(
            f"the plan has a {change.action} for {_label(change)} but no desired config for it",
            hint="the plan file is inconsistent: run `snsq2nats plan -o FILE` again",
        )

    ops: list[_Op] = []
    for change in writes:
        if change.type == "stream":
            spec = streams.get(change.name)
            if spec is None:
                raise missing(change)
            mine = position[change.name]
            needed = {d for d in _stream_deps(spec, dlq_targets) if position.get(d, mine) < mine}
            deps = [("stream", d, d) for d in sorted(needed)]
            write = _stream_write(nc, change, spec, live, pedantic, starts or {})
            ops.append(_Op(change, write, deps))
        else:
            cspec = consumers.get((change.stream, change.name))
            if cspec is None:
                raise missing(change)
            deps = []
            if change.stream in changed_streams:
                deps.append(("stream", change.stream, change.stream))
            ops.append(_Op(change, _consumer_write(nc, change, cspec, live, pedantic), deps))
    # Deletes run one after another, after every write, in the plan's order.
    previous: list[Key] = [_key(c) for c in writes]
    for change in deletes:
        ops.append(_Op(change, _delete(nc, change), previous))
        previous = [_key(change)]
    return ops


def _stream_write(
    nc: Client,
    change: Change,
    spec: StreamSpec,
    live: LiveState,
    pedantic: bool,
    starts: Mapping[str, int],
) -> Callable[[], Awaitable[None]]:
    async def go() -> None:
        if change.action == "update":
            base = _live_config(change, live)
            anchored = await anchor_new_sources(nc, spec, base, starts)
            await update_stream(nc, anchored, pedantic=pedantic, base=base, timeout=WRITE_TIMEOUT)
            return
        if change.action == "replace":
            await delete_stream(nc, spec.name, missing_ok=True, timeout=WRITE_TIMEOUT)
        anchored = await anchor_new_sources(nc, spec, None, starts)
        await create_stream(nc, anchored, pedantic=pedantic, timeout=WRITE_TIMEOUT)

    return go


async def anchor_new_sources(
    nc: Client,
    spec: StreamSpec,
    base: dict[str, Any] | None,
    starts: Mapping[str, int] | None = None,
) -> StreamSpec:
    """Start a newly added source after the origin's last message, never at its beginning.

    Like a new SNS subscription, a new source carries what is published from now on: starting
    at the origin's first message would hand the queue the topic's whole retained history.
    A source of a topic whose fan-out moves from SNS to sources starts where the SNS relay
    stopped (`starts`, from `hand_over_fanout`). Sources the live stream already has keep the
    start they were created with; one whose filter changed is a new source to the server
    (which would start it again at that first start: every retained message twice), so it
    starts after the origin's last message too.
    """
    if not spec.sources:
        return spec
    existing = {
        str(s.get("name")): s for s in (base or {}).get("sources") or [] if isinstance(s, dict)
    }
    anchored = []
    for source in spec.sources:
        live = existing.get(source.name)
        if live is not None and _same_filter(live, source):
            start = live.get("opt_start_seq")
        elif live is None and starts and source.name in starts:
            start = starts[source.name]
        elif source.external is not None:
            # The origin is another NATS account's stream, whose info this account cannot
            # read (its import is the consumer-create API only): start from now instead.
            now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
            anchored.append(source.model_copy(update={"opt_start_time": now}))
            continue
        else:
            last = await _last_seq(nc, source.name)
            start = last + 1 if last else None
        anchored.append(source.model_copy(update={"opt_start_seq": start or None}))
    return spec.model_copy(update={"sources": anchored})


def _same_filter(live: Mapping[str, Any], source: StreamSource) -> bool:
    """The live source selects what `source` does (the server's identity of a source)."""
    wanted = source.to_api()
    transforms = [
        (t.get("src"), t.get("dest") or "") for t in wanted.get("subject_transforms") or []
    ]
    live_transforms = [
        (t.get("src"), t.get("dest") or "") for t in live.get("subject_transforms") or []
    ]
    return (live.get("filter_subject") or None) == (
        wanted.get("filter_subject") or None
    ) and live_transforms == transforms


async def anchor_new_consumer(nc: Client, spec: ConsumerSpec) -> ConsumerSpec:
    """A bridge consumer planned to start at "new" messages gets an exact start sequence: the
    record of where it began, which "new" alone would not leave."""
    if spec.deliver_policy != "new" or ROUTE_KEY not in spec.metadata:
        return spec
    last = await _last_seq(nc, spec.stream_name)
    return spec.model_copy(
        update={"deliver_policy": "by_start_sequence", "opt_start_seq": last + 1}
    )


def _keep_anchor(spec: ConsumerSpec, base: Mapping[str, Any] | None) -> ConsumerSpec:
    """An update keeps the start a consumer planned as "new" was anchored at when created.

    The start is immutable, and the server refuses "new" next to the live opt_start_seq
    (10094): without this a metadata update of a filter router could never apply.
    """
    if spec.deliver_policy != "new" or not base:
        return spec
    if base.get("deliver_policy") != "by_start_sequence" or not base.get("opt_start_seq"):
        return spec
    return spec.model_copy(
        update={"deliver_policy": "by_start_sequence", "opt_start_seq": base["opt_start_seq"]}
    )


async def _last_seq(nc: Client, stream: str) -> int:
    info = await api(nc, STREAM_INFO.subject(stream=stream), None, WRITE_TIMEOUT)
    return int((info.get("state") or {}).get("last_seq") or 0)


def _consumer_write(
    nc: Client, change: Change, spec: ConsumerSpec, live: LiveState, pedantic: bool
) -> Callable[[], Awaitable[None]]:
    async def go() -> None:
        if change.action == "update":
            base = _live_config(change, live)
            await create_consumer(
                nc,
                _keep_anchor(spec, base),
                action="update",
                pedantic=pedantic,
                base=base,
                timeout=WRITE_TIMEOUT,
            )
            return
        if change.action == "replace":
            await delete_consumer(
                nc, spec.stream_name, spec.durable_name, missing_ok=True, timeout=WRITE_TIMEOUT
            )
        anchored = await anchor_new_consumer(nc, spec)
        await create_consumer(
            nc, anchored, action="create", pedantic=pedantic, timeout=WRITE_TIMEOUT
        )

    return go


def _delete(nc: Client, change: Change) -> Callable[[], Awaitable[None]]:
    async def go() -> None:
        if change.type == "stream":
            await delete_stream(nc, change.name, missing_ok=True, timeout=WRITE_TIMEOUT)
        else:
            await delete_consumer(
                nc, change.stream, change.name, missing_ok=True, timeout=WRITE_TIMEOUT
            )

    return go


# --- the applied revision (what the bridges run) ------------------------------------------------

CONFIRM_TIMEOUT = 120.0
"""How long apply waits for the running bridges to stop a topic's SNS relay (a drain)."""


async def record_applied_revision(
    nc: Client, plan: Plan, step: str = "applied", starts: Mapping[str, int] | None = None
) -> int | None:
    """Record `plan` as the applied revision every bridge runs and follows (`plan.revision`):
    the chunks first, then the pointer, then the chunks of the revision before the previous
    one go (a bridge may be reading the previous one right now). The pointer's KV revision,
    or None when the plan has no revision bucket (a plan without routes)."""
    from snsq2nats.jetstream.kv import open_kv
    from snsq2nats.plan.buckets import REVISION_WRITER
    from snsq2nats.plan.revision import POINTER_KEY, Pointer, encode, retired_chunks

    try:
        kv = await open_kv(nc, REVISION_WRITER)
    except BucketMissing:
        return None
    # Read as the bridges read (a counted pull), not by a direct get: the same grants.
    current = (await read_bucket(nc, REVISION_WRITER, POINTER_KEY) or {}).get(POINTER_KEY)
    old = Pointer.model_validate_json(current.value) if current is not None else None
    applied_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    pointer, chunks = encode(plan, applied_at, step, old, starts)
    for key, value in chunks.items():
        await kv.put(key, value)
    revision = int(await kv.put(POINTER_KEY, pointer.to_bytes()))
    for key in retired_chunks(pointer, old):
        await kv.delete(key)
    return revision


def fanout_switches(plan: Plan, live: LiveState, run: list[Change]) -> set[str]:
    """Topic streams whose fan-out this run moves from SNS to stream sources: a stream the run
    writes gains a source on a topic stream whose SNS relay (the to-sns consumer) exists while
    the plan has no such relay any more."""
    from snsq2nats.plan.routes import TO_SNS_CONSUMER

    streams = {spec.name: spec for spec in plan.streams}
    relayed = {r.stream for r in plan.candidate_routes if r.kind == "nats-to-sns"}
    switching: set[str] = set()
    for change in run:
        spec = streams.get(change.name) if change.type == "stream" else None
        if spec is None or change.action == "delete":
            continue
        ls = live.streams.get(change.name)
        has = {str(s.get("name")) for s in ((ls.config if ls else {}).get("sources") or [])}
        for source in spec.sources or []:
            origin = live.streams.get(source.name)
            if (
                source.name not in has
                and source.name not in relayed
                and origin is not None
                and TO_SNS_CONSUMER in origin.consumers
            ):
                switching.add(source.name)
    return switching


def _runnable(route: Route, live: LiveState) -> bool:
    """The route's JetStream objects exist before this run writes anything."""
    if route.stream and route.stream not in live.streams:
        return False
    if route.target_stream and route.target_stream not in live.streams:
        return False
    if route.advisory_stream and route.advisory_consumer:
        advisory = live.streams.get(route.advisory_stream)
        if advisory is None or route.advisory_consumer not in advisory.consumers:
            return False
    if route.kind in ("nats-to-sqs", "nats-to-sns", "filter-router") and route.stream:
        consumers = live.streams[route.stream].consumers
        return all(d in consumers for d in route.durables)
    return True


async def hand_over_fanout(
    nc: Client,
    plan: Plan,
    live: LiveState,
    run: list[Change],
    timeout: float = CONFIRM_TIMEOUT,
    *,
    cuts: dict[str, RelayCut] | None = None,
    home: Client | None = None,
) -> dict[str, int]:
    """Stop the SNS relay of each topic whose fan-out moves to stream sources, exactly once.

    Before anything is written, the bridges are handed a revision without those relays (the
    new plan's routes that can already run) and apply waits until every live bridge confirms
    it, which it does once the relay has stopped. The relay consumer's floors then say what
    SNS has (`bridge.fanout_handover`): the new sources start after the last message it was
    handed (returned per topic stream for `anchor_new_sources`), those of the few handed to it
    without an ack that its ledger does not name as accepted by SNS are copied into the queue
    streams under their SNS ids (exact also for a queue whose consumers are still on AWS; all
    of them without a ledger), and the topic's filter routers start after its ack floor. Each
    topic's cut is put in `cuts`. The same handover as `cutover finish TOPIC`
    (`cutover.switch_to_sources`).

    `home`: the home account's connection when `nc` is another NATS account's (`apply_plan`):
    the applied revision the bridges follow, their fleet and the SNS relays' ledger are there.
    The interim revision is then the applied one without the switching relays: the other
    accounts' routes keep running as the bridges run them now, and a second account's handover
    in the same apply still finds its own relay in it.
    """
    from snsq2nats.bridge.fanout_handover import carry_in_doubt, read_cut
    from snsq2nats.bridge.follow import wait_for_plan_revision

    switching = fanout_switches(plan, live, run)
    if not switching:
        return {}
    where = home or nc
    relaying, resumed, applied = await _relaying(where, keep_handover=home is not None)
    if relaying is not None:
        # Only a relay the bridges run now hands over; a to-sns consumer left behind by a
        # finished topic (or an earlier switch) is history, and a new source is a new one.
        switching &= relaying | set(resumed)
    if not switching:
        return {}
    starts = {s: resumed[s] for s in switching if s in resumed}

    def interim_runs(route: Route) -> bool:
        # A switching topic's filter routers wait too: their consumers have held the topic's
        # messages since they were planned, and start at N + 1 below.
        switched_router = route.kind == "filter-router" and route.stream in switching
        return _runnable(route, live) and not switched_router

    def still_runs(route: Route) -> bool:
        stopped = route.kind in ("nats-to-sns", "filter-router") and route.stream in switching
        return not stopped

    if home is not None and applied is not None:
        interim = applied.plan.model_copy(
            update={
                "candidate_routes": [r for r in applied.plan.candidate_routes if still_runs(r)],
                "routes": [r for r in applied.plan.routes if still_runs(r)],
            }
        )
    else:
        interim = plan.model_copy(
            update={
                "candidate_routes": [r for r in plan.candidate_routes if interim_runs(r)],
                "routes": [r for r in plan.routes if interim_runs(r)],
            }
        )
    revision = await record_applied_revision(where, interim, "handover", dict(resumed))
    if revision is not None:
        _, waiting = await wait_for_plan_revision(where, revision, timeout)
        if waiting:
            raise ApplyError(
                f"bridge(s) {', '.join(waiting)} did not stop the SNS relay of "
                f"{', '.join(sorted(switching))} within {timeout:g}s",
                hint="nothing but the bridges' routes changed (NATS-published messages of "
                "those topics wait in their streams): check the bridges' logs, then run "
                "apply again",
            )
    if cuts is None:
        cuts = {}
    for stream in sorted(switching - set(starts)):
        # Read once every bridge has stopped the relay: its floors no longer move.
        cut = await read_cut(nc, stream)
        cut = await carry_in_doubt(
            nc,
            cut,
            _relay_subjects(plan, stream),
            _copy_targets(plan, live, stream),
            route="apply",
            ledger=home,
        )
        cuts[stream] = cut
        starts[stream] = cut.source_start
    for router in plan.candidate_routes:
        spec = plan.consumer(router.stream, router.consumer)
        held = (
            router.stream in live.streams
            and router.consumer in live.streams[router.stream].consumers
        )  # a new one is created by this run, anchored as every new bridge consumer
        if router.kind == "filter-router" and router.stream in starts and spec and held:
            # What SNS was handed up to N reached the queue through it; the router takes N + 1
            # on (its copies carry the SNS path's ids: one of each is kept).
            switched = cuts.get(router.stream)
            start = switched.router_start if switched else starts[router.stream]
            await restart_consumer_at(nc, spec, start)
    if revision is not None:
        # Said in the handover record too: an apply stopped after this resumes at the same
        # sequences (the relay's consumer may be gone by then).
        await record_applied_revision(where, interim, "handover", {**resumed, **starts})
    return starts


def _relay_subjects(plan: Plan, stream: str) -> list[str]:
    """The NATS-origin space the topic stream's SNS relay sent (the one the new plan has)."""
    for route in plan.candidate_routes:
        if route.kind in ("nats-to-sns", "filter-router") and route.stream == stream:
            return list(route.relay_subjects)
    return []  # AWS-relayed messages are still told apart by their origin header


def _copy_targets(plan: Plan, live: LiveState, stream: str) -> list[CopyTarget]:
    from snsq2nats.bridge.fanout_handover import copy_target, source_filters

    """The queue streams that exist and get a source of `stream` in this run: each gets the
    in-doubt messages the SNS relay may not have sent (new streams start after them anyway)."""
    out = []
    for spec in plan.streams:
        ls = live.streams.get(spec.name)
        if ls is None:
            continue
        had = {str(s.get("name")) for s in ls.config.get("sources") or [] if isinstance(s, dict)}
        for source in spec.sources or []:
            if source.name == stream and stream not in had:
                out.append(copy_target(plan, spec.name, source_filters(source)))
    return out


async def _relaying(
    nc: Client, *, keep_handover: bool = False
) -> tuple[set[str] | None, dict[str, int], Applied | None]:
    """The topic streams whose SNS relay the bridges run in the applied revision and the
    cutover state (None: no revision recorded, any live relay counts), the starts of a
    handover an earlier apply recorded but did not finish, and that revision.

    `keep_handover`: a per-account apply, where one account's handover may follow another's
    in the same apply: the relays a handover revision still runs count too."""
    from snsq2nats.bridge.follow import read_applied
    from snsq2nats.plan.buckets import CUTOVER_WRITER
    from snsq2nats.plan.routes import active_routes
    from snsq2nats.plan.states import RESOURCE_PREFIX, current_view, parse_records

    applied = await read_applied(nc)
    if applied is None:
        return None, {}, None
    handover = applied.pointer.step == "handover"
    resumed = dict(applied.pointer.starts) if handover else {}
    if handover and not keep_handover:
        return set(), resumed, applied
    records = parse_records(await read_bucket(nc, CUTOVER_WRITER, RESOURCE_PREFIX + ">") or {})
    view = current_view(applied.plan, records)
    relays = active_routes(applied.plan.candidate_routes, view)
    return {r.stream for r in relays if r.kind == "nats-to-sns" and r.stream}, resumed, applied


async def apply_plan(
    nc: Client,
    plan: Plan,
    *,
    allow_destructive: bool,
    on_progress: Callable[[Outcome], None] | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    confirm_timeout: float = CONFIRM_TIMEOUT,
    home: Client | None = None,
) -> ApplyResult:
    """Apply `plan` over the connection `nc`; raises ApplyError if it must not start.

    `home`: in a per-account plan, the home account's connection when `nc` is another NATS
    account's: a fan-out handover records its interim revision and waits for the bridges
    there, and reads the SNS relays' ledger there (None: all over `nc`). The applied revision
    itself is recorded by the home account's part, applied last (`plan.accounts.apply_order`).

    Returns the result of every pending change; `result.ok` is False (and `result.error` holds
    the server's refusal) when the server rejected one, in which case the run stopped there.
    """
    started = time.perf_counter()
    live = await read_live(nc)
    conflicts = _conflicts(plan, live)
    if conflicts:
        raise _conflict_error(conflicts)
    prune = any(c.action == "delete" for c in plan.changes)
    fresh = diff(_desired(plan), live, prune=prune)
    run, already, stale = _reconcile(plan, fresh)
    if stale:
        raise ApplyError(
            "the live state changed since the plan was made: " + "; ".join(stale),
            hint="run plan again and apply the new plan; nothing was changed",
        )
    unsafe = _unmanaged_targets(run, live) + _foreign_consumers_lost(run, live)
    if unsafe:
        raise ApplyError(
            "refusing to touch objects snsq2nats does not manage: " + "; ".join(unsafe),
            hint="nothing was changed",
        )
    if not allow_destructive:

        def current(change: Change) -> int | None:
            ls = live.streams.get(change.name)
            return ls.messages if ls is not None else change.live_messages

        refusal = destructive_refusal(run, current)
        if refusal is not None:
            raise refusal

    cuts: dict[str, RelayCut] = {}
    starts = await hand_over_fanout(nc, plan, live, run, confirm_timeout, cuts=cuts, home=home)
    ops = _ops(nc, plan, run, live, pedantic_supported(live.server), starts)
    runner = _Runner(concurrency=max(1, concurrency), on_progress=on_progress)
    for change in already:
        runner.record(Outcome(change, "skipped", ALREADY_DONE))
    await runner.run(ops)
    ordered = [runner.outcomes[_key(c)] for c in plan.pending]
    result = ApplyResult(
        outcomes=ordered,
        error=runner.error,
        seconds=time.perf_counter() - started,
        handovers=cuts,
    )
    if result.ok:
        result.revision = await record_applied_revision(nc, plan)
    return result
