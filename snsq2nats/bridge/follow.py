"""The bridge follows the live cutover state and the applied revision: no restart, ever.

`snsq2nats cutover` records each move in the `snsq2nats_cutover` bucket (`plan.states`);
`snsq2nats apply` records the plan it made true in the `snsq2nats_revision` bucket
(`plan.revision`). Every bridge watches both: on start it runs the routes the recorded state
needs among the applied revision's candidate routes (those `plan.routes.route_active` selects),
and on each change it hands the fleet the new candidates, waits until this member has drained
the routes that stop and started those that start, then says so in its fleet heartbeat
(`cutover_revision`, `plan_revision`), which is what `cutover` and `apply` wait for. A bridge
that was down simply starts in the state and the revision recorded meanwhile.

A route a new revision changes (same name, new content: a filter policy, the topics feeding a
queue) is drained and released first and started again from the new revision, so no message
is handled by the old and the new version of a route at once: the durable it reads keeps the
position between the two.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from snsq2nats.errors import NatsConnectError
from snsq2nats.jetstream.kv import open_kv
from snsq2nats.plan.buckets import CUTOVER_FOLLOWER, REVISION_FOLLOWER
from snsq2nats.plan.model import Plan, Route
from snsq2nats.plan.revision import (
    POINTER_KEY,
    REVISION_BUCKET,
    Pointer,
    RevisionUnreadable,
    decode,
    digest_of,
)
from snsq2nats.plan.routes import active_routes
from snsq2nats.plan.states import RESOURCE_PREFIX, CutoverRecord, current_view

if TYPE_CHECKING:
    from nats.aio.client import Client

    from snsq2nats.bridge.context import BridgeContext
    from snsq2nats.bridge.fleet import Fleet

log = logging.getLogger(__name__)

Select = Callable[[list[Route]], list[Route]]

READ_ATTEMPTS = 5


@dataclass(frozen=True)
class Applied:
    """The applied revision: its number (the pointer's KV revision), pointer and plan."""

    revision: int
    pointer: Pointer
    plan: Plan


async def read_applied(nc: Client) -> Applied | None:
    """The applied revision recorded in NATS; None when there is none (no bucket, or an
    `apply` that never recorded one)."""
    from snsq2nats.jetstream.state import read_bucket

    for _ in range(READ_ATTEMPTS):
        pointers = await read_bucket(nc, REVISION_FOLLOWER, POINTER_KEY)
        entry = (pointers or {}).get(POINTER_KEY)
        if entry is None:
            return None
        pointer = Pointer.model_validate_json(entry.value)
        try:
            return Applied(entry.revision, pointer, await _read_plan(nc, pointer))
        except RevisionUnreadable as exc:
            # Replaced between the two reads (its chunks go once a newer one is recorded).
            log.info("applied revision %d unreadable (%s): reading again", entry.revision, exc)
    raise NatsConnectError(
        f"the applied revision in {REVISION_BUCKET} stays unreadable",
        hint="run `snsq2nats apply PLAN_FILE` again: it records the revision afresh",
    )


async def _read_plan(nc: Client, pointer: Pointer) -> Plan:
    from snsq2nats.jetstream.state import read_bucket

    chunks = await read_bucket(nc, REVISION_FOLLOWER, f"chunk.{pointer.digest}.>") or {}
    return decode(pointer, {key: value.value for key, value in chunks.items()})


@dataclass(frozen=True)
class Chosen:
    plan: Plan
    revision: int
    """The applied revision the plan is (0: the file, no revision recorded)."""
    note: str | None
    """What a person should know about the choice (a stale file), or None."""


async def choose_plan(nc: Client, given: Plan | None, given_name: str = "the plan file") -> Chosen:
    """The plan a bridge runs: the applied revision. A plan file that is not it is followed
    by the applied one (said in `note`); with no revision recorded, only a given file runs."""
    from snsq2nats.errors import UsageError

    applied = await read_applied(nc)
    if applied is None:
        if given is None:
            raise UsageError(
                f"no applied revision is recorded in NATS (bucket {REVISION_BUCKET})",
                hint="run `snsq2nats apply PLAN_FILE` (it records the plan the bridges run), "
                "or pass `--plan PLAN_FILE`",
            )
        return Chosen(
            given,
            0,
            f"no applied revision recorded: running {given_name} (`snsq2nats apply` it to "
            "record it; the bridge then follows what is applied)",
        )
    note = None
    if given is not None and digest_of(given) != digest_of(applied.plan):
        note = (
            f"{given_name} (generated {given.generated_at}) is not the applied revision: "
            f"following revision {applied.revision} (plan generated "
            f"{applied.pointer.generated_at}, applied {applied.pointer.applied_at})"
        )
    return Chosen(applied.plan, applied.revision, note)


async def wait_for_plan_revision(
    nc: Client, revision: int, timeout: float, *, grace: float = 3.0
) -> tuple[list[str], list[str]]:
    """Wait until every live bridge fleet member runs applied revision `revision` (or later);
    (those that do, those that did not in `timeout`). Live: its heartbeat was written within
    `grace` lease TTLs and it is not leaving (a dead member's routes go to the others, which
    run the new revision)."""
    from pydantic import ValidationError

    from snsq2nats.jetstream.state import read_bucket
    from snsq2nats.plan.buckets import FLEET_OBSERVER
    from snsq2nats.plan.fleet import MEMBERS, Heartbeat

    deadline = time.monotonic() + timeout
    while True:
        try:
            values = await read_bucket(nc, FLEET_OBSERVER, MEMBERS + ">") or {}
        except Exception as exc:  # a busy or electing server: read again
            log.debug("reading the fleet's heartbeats failed (%s): retrying", exc)
            values = None
        if values is not None:
            done: list[str] = []
            waiting: list[str] = []
            for entry in values.values():
                try:
                    beat = Heartbeat.model_validate_json(entry.value)
                except ValidationError:
                    continue
                if beat.leaving or time.time() - entry.written > grace * beat.lease_ttl:
                    continue
                (done if beat.plan_revision >= revision else waiting).append(beat.member)
            if not waiting or time.monotonic() > deadline:
                return sorted(done), sorted(waiting)
        await asyncio.sleep(0.25)


class CutoverFollower:
    def __init__(self, nc: Client, plan: Plan, select: Select, plan_revision: int = 0) -> None:
        self.nc = nc
        self.plan = plan
        self.select = select
        self.records: dict[str, CutoverRecord] = {}
        self.revision = 0
        self.plan_revision = plan_revision
        """The applied revision `plan` is (0: a plan file, none recorded yet)."""
        self._watcher: Any = None
        """The cutover bucket's watch, opened by `start`."""
        self._revisions: Any = None
        """The applied revision's pointer watch, opened by `start`."""
        self.running: dict[str, Route] = {}
        """The routes last handed to the fleet, by name: a changed one is restarted."""

    def routes(self) -> list[Route]:
        view = current_view(self.plan, self.records)
        return self.select(active_routes(self.plan.candidate_routes, view))

    def _take(self, key: str, value: bytes | None, revision: int) -> bool:
        """Fold one bucket value in; True if it changed the state."""
        if not value:
            return False
        try:
            record = CutoverRecord.from_bytes(value, revision)
        except ValueError as exc:
            log.error("cutover state %s unreadable (%s): ignored", key, exc)
            return False
        known = self.records.get(record.arn)
        if known is not None and known.revision >= revision:
            return False  # the watch's first values repeat what the snapshot read
        self.records[record.arn] = record
        self.revision = max(self.revision, revision)
        return True

    async def start(self, where: str = "") -> list[Route]:
        """Read the recorded state and the applied revision; the routes to run from the start."""
        from snsq2nats.jetstream.state import read_bucket

        kv = await open_kv(self.nc, CUTOVER_FOLLOWER, where or None)
        # Watch first, then read: a change made in between is in the watch, never lost.
        self._watcher = await kv.watch(RESOURCE_PREFIX + ">", ignore_deletes=True)
        revisions = await open_kv(self.nc, REVISION_FOLLOWER, where or None)
        self._revisions = await revisions.watch(POINTER_KEY, ignore_deletes=True)
        applied = await read_applied(self.nc)
        if applied is not None and applied.revision > self.plan_revision:
            self._adopt(applied)
        for key, entry in (
            await read_bucket(self.nc, CUTOVER_FOLLOWER, RESOURCE_PREFIX + ">") or {}
        ).items():
            self._take(key, entry.value, entry.revision)
        if self.records:
            log.info(
                "cutover state (revision %d): %d resource(s) moved",
                self.revision,
                len(self.records),
            )
        routes = self.routes()
        self.running = {r.name: r for r in routes}
        return routes

    def _adopt(self, applied: Applied) -> None:
        log.info(
            "applied revision %d (%s; plan generated %s, applied %s): %d candidate route(s)",
            applied.revision,
            applied.pointer.step,
            applied.pointer.generated_at,
            applied.pointer.applied_at,
            len(applied.plan.candidate_routes),
        )
        self.plan = applied.plan
        self.plan_revision = applied.revision

    async def _next(self, watcher: Any, timeout: float) -> Any:
        """The watch's next entry, or None when there is none within `timeout`."""
        try:
            return await watcher.updates(timeout=timeout)
        except TimeoutError:
            return None
        except Exception as exc:  # a reconnect restarts the ordered watch inside nats-py
            log.warning("watch interrupted (%s): retrying", exc)
            await asyncio.sleep(1.0)
            return None

    async def _newer_revision(self, entry: Any) -> bool:
        """Adopt the revision a pointer update names, if newer; True if it was."""
        if entry is None or not entry.value or (entry.revision or 0) <= self.plan_revision:
            return False
        for _ in range(READ_ATTEMPTS):
            try:
                pointer = Pointer.model_validate_json(entry.value)
                plan = await _read_plan(self.nc, pointer)
            except RevisionUnreadable as exc:
                log.info("applied revision %s unreadable (%s): reading again", entry.revision, exc)
            except Exception as exc:
                log.warning(
                    "reading applied revision %s failed (%s): retrying", entry.revision, exc
                )
                await asyncio.sleep(1.0)
                continue
            else:
                self._adopt(Applied(entry.revision or 0, pointer, plan))
                return True
            applied = await read_applied(self.nc)
            if applied is None or applied.revision <= self.plan_revision:
                return False
            self._adopt(applied)
            return True
        return False

    async def follow(
        self, fleet: Fleet, stopping: asyncio.Event, ctx: BridgeContext | None = None
    ) -> None:
        """Apply every later change until `stopping`; confirm each in the fleet heartbeat.
        `ctx` (the bridge's context) gets each new revision's plan for the routes it starts."""
        fleet.cutover_revision = self.revision
        fleet.plan_revision = self.plan_revision
        while not stopping.is_set():
            entry = await self._next(self._watcher, 0.5)
            changed = entry is not None and self._take(entry.key, entry.value, entry.revision or 0)
            if self._revisions is not None:
                pointer = await self._next(self._revisions, 0.01 if changed else 0.5)
                changed = await self._newer_revision(pointer) or changed
            if not changed:
                continue
            if ctx is not None:
                ctx.plan = self.plan
            if not await self._switch(fleet, stopping):
                return
            fleet.cutover_revision = self.revision
            fleet.plan_revision = self.plan_revision
            with contextlib.suppress(Exception):
                await fleet.beat()

    async def _switch(self, fleet: Fleet, stopping: asyncio.Event) -> bool:
        """Hand the fleet the routes to run now; False if stopped before it applied them."""
        routes = self.routes()
        changed = {r.name for r in routes if r.name in self.running and self.running[r.name] != r}
        log.info(
            "cutover state revision %d, applied revision %d: %d route(s) to run: %s",
            self.revision,
            self.plan_revision,
            len(routes),
            ", ".join(r.name for r in routes),
        )
        steps = [routes]
        if changed:
            # Drained and released first, then started from the new revision: never both.
            log.info("route(s) changed by the applied revision: %s", ", ".join(sorted(changed)))
            steps.insert(0, [r for r in routes if r.name not in changed])
        for step in steps:
            generation = fleet.set_candidates(step)
            self.running = {r.name: r for r in step}
            applied = asyncio.create_task(fleet.applied(generation))
            stop_wait = asyncio.create_task(stopping.wait())
            await asyncio.wait({applied, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
            stop_wait.cancel()
            if not applied.done():
                applied.cancel()
                return False
        return True

    async def close(self) -> None:
        for watcher in (self._watcher, self._revisions):
            if watcher is not None:
                with contextlib.suppress(Exception):
                    await watcher.stop()
