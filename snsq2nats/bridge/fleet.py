"""A bridge fleet: any number of bridge processes, on any hosts, share the routes through NATS.

Every bridge is a member; one member alone owns every route. The coordination lives in the
JetStream KV bucket `snsq2nats_fleet` (created by `snsq2nats apply`, replicated like the
streams), with two kinds of keys (their records: `plan.fleet`):

- `members.<member>`: the member's heartbeat (`Heartbeat`, JSON), rewritten every third of the
  lease TTL. The member id is `<host>-<pid>-<random>`, shown in the logs and on every metric.
- `routes.<route, base64url>`: the route's lease (`Lease`): which member runs it, since when.
  Written only when a lease is acquired, taken over or released, always with compare-and-set
  on the key's revision, so two members can never both acquire it.

A lease is valid as long as its holder's heartbeat is: members watch the bucket and judge a
member dead when its heartbeat revision has not moved for the lease TTL it declared, measured
on their own monotonic clock (no clock comparison between hosts). A view is trusted for that
only while it shows this member's own latest heartbeat: a stalled watch can never make live
members look dead.

Assignment is rendezvous hashing over the live members that have the same candidate routes
(the same plan, `--direction` and `--route`): each route goes to the member with the highest
hash of (member, route), so a join or a leave moves only the routes that must move. A member
that holds a route it no longer should drains it (its runner finishes what it holds, nothing
acknowledged on one side before the other accepted it), then releases the lease (a CAS
delete); the new owner acquires it once released. A dead member's leases are taken over by
CAS on their revision, within the lease TTL (plus one heartbeat interval) of its last
heartbeat. Two members judging each other differently can at worst run one route at once
for a moment during such a takeover; the dedup rules (`Nats-Msg-Id`) keep that exactly once.

For the live cutover (and any caller that changes what this member may run while it runs):

- `fleet.set_candidates(routes) -> int`: replace the candidate routes; returns a generation.
- `await fleet.applied(generation)`: returns once this member has applied that change: every
  route no longer a candidate drained and its lease released, and the new candidates assigned
  to this member acquired (when free) and started.
- `await fleet.beat()`: write the heartbeat now (after adding fields to `Heartbeat`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import secrets
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from snsq2nats.bridge.context import backoff
from snsq2nats.errors import BucketMissing, PermissionDeniedError
from snsq2nats.jetstream.kv import Kv, open_kv
from snsq2nats.jetstream.operations import BucketUse
from snsq2nats.jetstream.permissions import denials_of, refused
from snsq2nats.plan.buckets import FLEET_BUCKET, FLEET_MEMBER, FLEET_OBSERVER
from snsq2nats.plan.fleet import (
    MEMBERS,
    ROUTES,
    FleetSnapshot,
    Heartbeat,
    Lease,
    member_key,
    route_key,
    route_name,
    snapshot_of,
)
from snsq2nats.plan.model import Route

if TYPE_CHECKING:
    from nats.aio.client import Client

    from snsq2nats.bridge.runtime import RouteSet

log = logging.getLogger(__name__)

ERR_WRONG_LAST_SEQUENCE = 10071
"""A compare-and-set on a key whose revision moved (JetStream's error code)."""

DEFAULT_LEASE_TTL = 15.0
BLOCKED_SHOWN = 20
"""Blocked routes a heartbeat names (a heartbeat stays small; the count says the rest)."""
BLOCKED_REASON = 300


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def new_member_id() -> str:
    """`<host>-<pid>-<random>`: unique even for two processes of one host and pid namespace."""
    host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname() or "host")[:40].strip("-")
    return f"{host or 'host'}-{os.getpid()}-{secrets.token_hex(3)}"


def selection_digest(names: Iterable[str]) -> str:
    """Members with the same digest run the same candidate routes and share them out."""
    return hashlib.sha256("\n".join(sorted(names)).encode()).hexdigest()[:16]


def preferred(route: str, members: Iterable[str]) -> str | None:
    """Rendezvous hashing: the member with the highest hash of (member, route)."""

    def score(member: str) -> bytes:
        return hashlib.blake2b(f"{member}\0{route}".encode(), digest_size=8).digest()

    return max(members, key=score, default=None)


@dataclass
class SeenMember:
    heartbeat: Heartbeat
    revision: int
    changed_at: float


@dataclass
class SeenLease:
    lease: Lease
    revision: int


@dataclass
class View:
    """The bucket as this member's watch last showed it."""

    members: dict[str, SeenMember] = field(default_factory=dict)
    leases: dict[str, SeenLease] = field(default_factory=dict)
    loaded: bool = False


async def open_bucket(nc: Client, where: str = "", use: BucketUse = FLEET_MEMBER) -> Kv:
    """The fleet's KV bucket; BucketMissing (saying to run `apply`) when it does not exist."""
    return await open_kv(nc, use, where or None)


class Fleet:
    """This process's membership: heartbeats, leases, and which routes it runs (a
    `runtime.Coordinator`)."""

    def __init__(
        self,
        nc: Client,
        candidates: Iterable[Route],
        *,
        lease_ttl: float = DEFAULT_LEASE_TTL,
        member: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.nc = nc
        self.member = member or new_member_id()
        self.lease_ttl = lease_ttl
        self._clock = clock
        self._started = now_iso()
        self._candidates: dict[str, Route] = {r.name: r for r in candidates}
        self._selection = selection_digest(self._candidates)
        self._generation = 0
        self._applied = -1
        self._applied_changed = asyncio.Condition()
        self.view = View()
        self.owned: dict[str, int] = {}
        """Routes this member holds the lease of and runs: name → lease revision."""
        self._handovers: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._kv: Kv | None = None
        self._beat_revision = 0
        self._beat_at = 0.0
        self._beat_ok_at = 0.0
        self._unseen_since: float | None = None
        self._leaving = False
        self._watch_restart = asyncio.Event()
        self.joined = False
        self.cutover_revision = 0
        """Set by `bridge.follow` once this member runs that cutover state revision."""
        self.plan_revision = 0
        """Set by `bridge.follow` once this member runs that applied revision."""
        self._assigned: tuple[tuple[str, ...], int, set[str]] = ((), -1, set())
        self._leases_changed = 0
        """Counts the lease changes the watch showed (a member's heartbeat is not one)."""
        self._handed_over = 0
        """Counts the handovers that finished."""
        self._settled: tuple[Any, ...] | None = None
        """What a full step depended on when it left nothing to retry: a step that finds the
        same skips the walk over every route (an idle fleet's steps cost O(members))."""
        self._settled_at = 0.0
        self.steps = 0
        self.walks = 0
        """Steps taken, and those of them that walked every route (for tests and debugging)."""
        self.blocked: dict[str, str] = {}
        """Routes this member should run but cannot (acquire or start failed, or the runner
        keeps failing), with why: the member is not ready while any is here."""

    # --- interface for callers --------------------------------------------------------------

    @property
    def heartbeat_interval(self) -> float:
        return self.lease_ttl / 3

    def set_candidates(self, routes: Iterable[Route]) -> int:
        """Replace the routes this member may run; returns the generation to `applied`."""
        self._candidates = {r.name: r for r in routes}
        self._selection = selection_digest(self._candidates)
        self._generation += 1
        self._beat_at = 0.0  # announce the new selection at once
        self._wake.set()
        return self._generation

    async def applied(self, generation: int | None = None) -> None:
        """Return once this member has applied `generation` (default: the latest)."""
        wanted = self._generation if generation is None else generation
        async with self._applied_changed:
            await self._applied_changed.wait_for(lambda: self._applied >= wanted)

    def live_members(self) -> list[str]:
        now = self._clock()
        return sorted(m for m, seen in self.view.members.items() if self._alive(seen, now))

    def heartbeat(self) -> Heartbeat:
        return Heartbeat(
            member=self.member,
            host=socket.gethostname(),
            pid=os.getpid(),
            started=self._started,
            at=now_iso(),
            lease_ttl=self.lease_ttl,
            selection=self._selection,
            routes=len(self.owned),
            leaving=self._leaving,
            cutover_revision=self.cutover_revision,
            plan_revision=self.plan_revision,
            ready=not self.blocked,
            blocked={
                name: why[:BLOCKED_REASON]
                for name, why in sorted(self.blocked.items())[:BLOCKED_SHOWN]
            },
        )

    async def beat(self) -> None:
        """Write this member's heartbeat now."""
        assert self._kv is not None
        revision = await self._kv.put(
            member_key(self.member), self.heartbeat().model_dump_json().encode()
        )
        self._beat_revision = revision
        self._beat_ok_at = self._clock()
        if self._unseen_since is None:
            self._unseen_since = self._beat_ok_at

    # --- the member's life --------------------------------------------------------------------

    async def run(self, routes: RouteSet) -> None:
        stopping = routes.ctx.stopping
        self._kv = await open_bucket(self.nc)
        await self._beat_retrying(stopping)
        watching = asyncio.create_task(self._watch(), name="fleet-watch")
        try:
            while not self.view.loaded and not stopping.is_set():
                await self._sleep(stopping, 0.05)
            self.joined = True
            log.info("fleet member %s joined (lease TTL %gs)", self.member, self.lease_ttl)
            while not stopping.is_set():
                now = self._clock()
                if now - self._beat_at >= self.heartbeat_interval:
                    self._beat_at = now
                    with contextlib.suppress(Exception):
                        await self.beat()
                # Cleared before the step: a change seen during it wakes the next one at once.
                self._wake.clear()
                await self._step(routes, now)
                await self._sleep(stopping, min(1.0, self.heartbeat_interval / 2), self._wake)
            await self._leave(routes)
        finally:
            watching.cancel()
            await asyncio.gather(watching, return_exceptions=True)
            for task in list(self._handovers.values()):
                task.cancel()

    async def _leave(self, routes: RouteSet) -> None:
        """Say so (no route is handed to a leaving member), drain, release, then disappear."""
        self._leaving = True
        with contextlib.suppress(Exception):
            await self.beat()
        await asyncio.gather(*self._handovers.values(), return_exceptions=True)
        await routes.stop_all()
        assert self._kv is not None
        for name, revision in list(self.owned.items()):
            with contextlib.suppress(Exception):
                await self._kv.delete(route_key(name), last=revision)
            self.owned.pop(name, None)
        with contextlib.suppress(Exception):
            await self._kv.delete(member_key(self.member))
        log.info("fleet member %s left", self.member)

    async def _beat_retrying(self, stopping: asyncio.Event) -> None:
        attempt = 0
        while True:
            try:
                await self.beat()
                self._beat_at = self._clock()
                return
            except Exception as exc:
                if stopping.is_set():
                    raise
                log.warning("fleet heartbeat failed (%s); retrying", type(exc).__name__)
                await self._sleep(stopping, backoff(attempt))
                attempt += 1

    @staticmethod
    async def _sleep(
        stopping: asyncio.Event, seconds: float, wake: asyncio.Event | None = None
    ) -> None:
        waits = [asyncio.ensure_future(stopping.wait())]
        if wake is not None:
            waits.append(asyncio.ensure_future(wake.wait()))
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        for task in waits:
            task.cancel()

    # --- watching the bucket ------------------------------------------------------------------

    async def _watch(self) -> None:
        """Keep `view` current; start the watch afresh when it fails or goes stale."""
        attempt = 0
        while True:
            assert self._kv is not None
            watcher: Any = None
            try:
                watcher = await self._kv.watch(
                    ">", inactive_threshold=max(30.0, self.lease_ttl * 4)
                )
                await self._follow(watcher)
                log.info("fleet: watching the bucket afresh")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("fleet watch failed (%s: %s); watching again", type(exc).__name__, exc)
                await asyncio.sleep(backoff(attempt))
                attempt += 1
            else:
                attempt = 0
            finally:
                self._watch_restart.clear()
                if watcher is not None:
                    with contextlib.suppress(Exception):
                        await watcher.stop()

    async def _follow(self, watcher: Any) -> None:
        """Apply the watch's updates until told to watch afresh. The first values are the
        whole bucket, ended by a None: a key they did not show is gone."""
        initial: set[str] | None = set()
        restart = asyncio.ensure_future(self._watch_restart.wait())
        try:
            while not self._watch_restart.is_set():
                update = asyncio.ensure_future(watcher.updates(timeout=None))
                done, _ = await asyncio.wait([update, restart], return_when=asyncio.FIRST_COMPLETED)
                if update not in done:
                    update.cancel()
                    return
                entry = update.result()
                if entry is None:
                    if initial is not None:
                        self._forget_unseen(initial)
                    initial = None
                    self.view.loaded = True
                else:
                    if initial is not None:
                        initial.add(entry.key)
                    self._apply(entry)
                self._wake.set()
        finally:
            restart.cancel()

    def _forget_unseen(self, seen: set[str]) -> None:
        self._leases_changed += 1
        self.view.members = {m: v for m, v in self.view.members.items() if member_key(m) in seen}
        self.view.leases = {r: v for r, v in self.view.leases.items() if route_key(r) in seen}

    def _apply(self, entry: Any) -> None:
        key: str = entry.key
        deleted = entry.operation in ("DEL", "PURGE")
        revision = int(entry.revision or 0)
        try:
            if key.startswith(MEMBERS):
                member = key[len(MEMBERS) :]
                if deleted:
                    self.view.members.pop(member, None)
                    return
                heartbeat = Heartbeat.model_validate_json(entry.value or b"")
                old = self.view.members.get(member)
                if old is None or old.revision != revision:
                    self.view.members[member] = SeenMember(heartbeat, revision, self._clock())
            elif key.startswith(ROUTES):
                self._leases_changed += 1
                if deleted:
                    self.view.leases.pop(route_name(key), None)
                    return
                lease = Lease.model_validate_json(entry.value or b"")
                self.view.leases[lease.route] = SeenLease(lease, revision)
        except ValidationError:
            log.warning("fleet: ignoring a malformed value under %s", key)

    # --- deciding -----------------------------------------------------------------------------

    def _alive(self, seen: SeenMember, now: float) -> bool:
        if seen.heartbeat.member == self.member:
            return True
        return now - seen.changed_at < seen.heartbeat.lease_ttl

    def _fresh(self, now: float) -> bool:
        """The view shows this member's latest heartbeat. One not shown for a heartbeat
        interval means the watch has stalled: watch afresh."""
        mine = self.view.members.get(self.member)
        if mine is not None and mine.revision >= self._beat_revision:
            self._unseen_since = None
            return True
        if self._unseen_since is not None and now - self._unseen_since > self.heartbeat_interval:
            self._unseen_since = now
            self._watch_restart.set()
        return False

    def _group(self, now: float) -> list[str]:
        """The members the routes are shared among: live, not leaving, same candidates."""
        group = [
            m
            for m, seen in self.view.members.items()
            if m != self.member
            and self._alive(seen, now)
            and not seen.heartbeat.leaving
            and seen.heartbeat.selection == self._selection
        ]
        if not self._leaving:
            group.append(self.member)
        return group

    def _mine(self, group: list[str]) -> set[str]:
        """The candidates rendezvous hashing gives this member, recomputed only when the group
        or the candidates change (a step runs on every heartbeat seen)."""
        key = tuple(sorted(group))
        if self._assigned[:2] != (key, self._generation):
            names = {n for n in self._candidates if preferred(n, key) == self.member}
            self._assigned = (key, self._generation, names)
        return self._assigned[2]

    def _inputs(
        self, routes: RouteSet, now: float, fresh: bool, beating: bool, group: list[str]
    ) -> tuple[Any, ...]:
        """Everything a step's decisions depend on beside time, each cheap to read: when none
        moved since a step that left nothing to retry, another step would decide the same."""
        alive = tuple(sorted(m for m, seen in self.view.members.items() if self._alive(seen, now)))
        return (
            self._generation,
            self._leases_changed,
            self._handed_over,
            routes.status_changes,
            len(self.owned),
            len(self._handovers),
            tuple(sorted(group)),
            alive,
            fresh,
            beating,
            self._leaving,
            routes.ctx.stopping.is_set(),
        )

    async def _step(self, routes: RouteSet, now: float) -> None:
        generation = self._generation
        fresh = self._fresh(now)
        beating = now - self._beat_ok_at <= self.lease_ttl
        group = self._group(now)
        inputs = self._inputs(routes, now, fresh, beating, group)
        self.steps += 1
        # A full walk once a TTL all the same: what no input above shows is retried there.
        if inputs == self._settled and now - self._settled_at < self.lease_ttl:
            if fresh:
                await self._forget_dead(group, now)
            return
        self._settled = None
        self.walks += 1
        settled = await self._full_step(routes, now, generation, fresh, beating, group)
        if settled and not self.blocked:
            # The inputs from before the walk: a change seen during it (or made by it) differs
            # from them, so the next step walks again.
            self._settled = inputs
            self._settled_at = now

    async def _full_step(
        self,
        routes: RouteSet,
        now: float,
        generation: int,
        fresh: bool,
        beating: bool,
        group: list[str],
    ) -> bool:
        """Walk every route; True when it left nothing to retry at the next step."""
        settled = True
        if not beating and self.owned:
            # Unable to heartbeat for a whole TTL: others may take these routes over. Stop
            # running them; the leases are picked up again if they are still ours later.
            log.warning(
                "fleet: no heartbeat for %gs: stopping this member's routes", self.lease_ttl
            )
            for name in list(self.owned):
                if name not in self._handovers:
                    self._hand_over(name, routes, release=False)
        mine = self._mine(group)
        for name, revision in list(self.owned.items()):
            if name in self._handovers:
                continue
            seen = self.view.leases.get(name)
            if seen is not None and seen.revision > revision and seen.lease.member != self.member:
                log.warning("fleet: %s was taken over by %s: stopping it", name, seen.lease.member)
                self._hand_over(name, routes, release=False)
            elif name not in mine:
                self._hand_over(name, routes, release=True)
        for name in mine:
            if not beating or routes.ctx.stopping.is_set():
                break
            if self._generation != generation:
                # New candidates arrived while acquiring (a followed revision restarting a
                # changed route takes it out first): `mine` is stale, the next step recomputes.
                settled = False
                break
            if (
                name not in self.owned
                and name not in self._handovers
                and not await self._consider(self._candidates[name], routes, now, fresh)
            ):
                settled = False
        self._judge_runners(routes, mine)
        if fresh:
            await self._forget_dead(group, now)
        for name, seen in list(self.view.leases.items()):
            # Ours in the bucket but not run here (a release that failed, or before a self-stop).
            if (
                seen.lease.member == self.member
                and name not in self.owned
                and name not in self._handovers
                and name not in mine
            ):
                await self._release(name, seen.revision)
                settled = False  # the watch shows it gone, or the next step retries
        removals = [n for n in self._handovers if n not in self._candidates]
        if not removals and all(n in self._candidates for n in self.owned):
            await self._mark_applied(generation)
        return settled

    async def _forget_dead(self, group: list[str], now: float) -> None:
        """Delete the heartbeat of a member dead for two TTLs (one member does it: the one
        preferred for it), so `status` and the bucket do not list it for ever."""
        assert self._kv is not None
        for member, seen in list(self.view.members.items()):
            dead_for = now - seen.changed_at - seen.heartbeat.lease_ttl
            if (
                member != self.member
                and dead_for > seen.heartbeat.lease_ttl
                and preferred(MEMBERS + member, group) == self.member
            ):
                with contextlib.suppress(Exception):
                    await self._kv.delete(member_key(member), last=seen.revision)
                    log.info(
                        "fleet: forgot member %s (no heartbeat since %s)", member, seen.heartbeat.at
                    )

    async def _consider(self, route: Route, routes: RouteSet, now: float, fresh: bool) -> bool:
        """Acquire `route` (this member's by the hash) if free, ours, or its holder is dead.
        False when it failed for a reason only a retry finds gone."""
        from nats.js.errors import KeyWrongLastSequenceError

        assert self._kv is not None
        seen = self.view.leases.get(route.name)
        value = Lease(route=route.name, member=self.member, since=now_iso()).model_dump_json()
        try:
            if seen is None:
                revision = await self._kv.create(route_key(route.name), value.encode())
            elif seen.lease.member == self.member:
                # Ours by the view (from before a self-stop): confirm by compare-and-set, as
                # the view may not show yet that it was released or taken over since.
                revision = await self._kv.update(
                    route_key(route.name), value.encode(), last=seen.revision
                )
            else:
                holder = self.view.members.get(seen.lease.member)
                if (holder is not None and self._alive(holder, now)) or not fresh:
                    # Held by a live member (a handover under way): not this one's failure.
                    self._unblock(route.name)
                    return True
                revision = await self._kv.update(
                    route_key(route.name), value.encode(), last=seen.revision
                )
                log.warning(
                    "fleet: took %s over from %s (no heartbeat for %gs)",
                    route.name,
                    seen.lease.member,
                    self.lease_ttl,
                )
        except KeyWrongLastSequenceError:
            self._unblock(route.name)
            return True  # another member got there first; the watch will show who
        except Exception as exc:
            why = f"cannot acquire: {self._why(exc)}"
            log.warning("fleet: cannot acquire %s (%s)", route.name, why)
            self._block(route.name, why)
            return False
        self.owned[route.name] = revision
        if not await routes.start(route):
            self.owned.pop(route.name, None)
            await self._release(route.name, revision)
            if not routes.ctx.stopping.is_set():
                status = routes.ctx.route_metrics(route).status
                self._block(route.name, f"cannot start: {status}")
            return False
        self._unblock(route.name)
        log.info("fleet: %s runs here (member %s)", route.name, self.member)
        return True

    # --- readiness ----------------------------------------------------------------------------

    def _block(self, name: str, why: str) -> None:
        if self.blocked.get(name) != why:
            self.blocked[name] = why
            self._beat_at = 0.0  # say so in the heartbeat at once: cutover must not count it

    def _unblock(self, name: str) -> None:
        if self.blocked.pop(name, None) is not None:
            self._beat_at = 0.0

    def _why(self, exc: BaseException) -> str:
        """The error, with the server's permission refusal behind it when there is one: nats-py's
        KV requests only time out when the server refuses them."""
        if isinstance(exc, PermissionDeniedError):
            return str(exc)  # names the refused subject already
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        refusal = self._refusal(f"kv_{FLEET_BUCKET}", f"$kv.{FLEET_BUCKET}")
        return f"{text}; server: {refusal}" if refusal else text

    def _refusal(self, *needles: str) -> str | None:
        denials = denials_of(self.nc)
        if denials is None:
            return None
        wanted = [n.lower() for n in needles]
        for message in reversed(denials.messages):
            if any(n in message.lower() for n in wanted):
                return f"refused {refused(message)}"
        return None

    def _judge_runners(self, routes: RouteSet, mine: set[str]) -> None:
        """Block routes held here whose runner is not running (failing and restarting, or not
        available); forget blocks of routes no longer this member's."""
        for name in list(self.blocked):
            if name not in mine or name not in self._candidates:
                self._unblock(name)
        for name in self.owned:
            if name in self._handovers:
                continue
            route = self._candidates.get(name)
            metrics = routes.ctx.metrics.get(name)
            if route is None or metrics is None:
                continue
            if metrics.status in ("running", "starting"):
                if self.blocked.get(name, "").startswith("runner "):
                    self._unblock(name)
                continue
            why = f"runner {metrics.status} ({metrics.restarts} restart(s))"
            refusal = self._refusal(*(s for s in (route.stream, route.target_stream) if s))
            self._block(name, f"{why}; server: {refusal}" if refusal else why)

    def _hand_over(self, name: str, routes: RouteSet, *, release: bool) -> None:
        self._handovers[name] = asyncio.create_task(self._drain_and_release(name, routes, release))

    async def _drain_and_release(self, name: str, routes: RouteSet, release: bool) -> None:
        try:
            await routes.stop(name)
            revision = self.owned.pop(name, None)
            if release and revision is not None:
                await self._release(name, revision)
                log.info("fleet: %s drained and released", name)
        finally:
            self._handovers.pop(name, None)
            self._handed_over += 1
            self._wake.set()

    async def _release(self, name: str, revision: int) -> None:
        assert self._kv is not None
        try:
            await self._kv.delete(route_key(name), last=revision)
        except Exception as exc:
            if getattr(exc, "err_code", None) == ERR_WRONG_LAST_SEQUENCE:
                return  # released already, or taken over meanwhile: the watch shows by whom
            # NATS unreachable: the next step sees.
            log.info("fleet: releasing %s: %s", name, type(exc).__name__)

    async def _mark_applied(self, generation: int) -> None:
        if generation > self._applied:
            async with self._applied_changed:
                self._applied = generation
                self._applied_changed.notify_all()


# --- reading the fleet from outside ---------------------------------------------------------


async def read_fleet(nc: Client) -> FleetSnapshot | None:
    """Every heartbeat and lease in the bucket; None when there is no bucket (not applied)."""
    try:
        kv = await open_bucket(nc, use=FLEET_OBSERVER)
    except BucketMissing:
        return None
    values: dict[str, Any] = {}
    watcher: Any = await kv.watch(">")
    try:
        async for entry in watcher:
            if entry is None:
                break
            if entry.operation in ("DEL", "PURGE") or not entry.value:
                values.pop(entry.key, None)
                continue
            values[entry.key] = entry
    finally:
        with contextlib.suppress(Exception):
            await watcher.stop()
    return snapshot_of(values)
