"""The bridge follows the live cutover state: a move switches relays without a restart.

`snsq2nats cutover` records each move in the `snsq2nats_cutover` bucket (`plan.states`). Every
bridge watches it: on start it runs the routes the recorded state needs (the plan's candidate
routes that `plan.routes.route_active` selects), and on each change it hands the fleet the new
candidates, waits until this member has drained the routes that stop and started those that
start, then says so in its fleet heartbeat (`cutover_revision`), which is what the command
waits for. A bridge that was down simply starts in the state recorded meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from snsq2nats.errors import NatsConnectError
from snsq2nats.jetstream.kv import open_kv
from snsq2nats.plan.buckets import CUTOVER_FOLLOWER
from snsq2nats.plan.model import Plan, Route
from snsq2nats.plan.moves import current_view
from snsq2nats.plan.routes import active_routes
from snsq2nats.plan.states import CUTOVER_BUCKET, RESOURCE_PREFIX, CutoverRecord

if TYPE_CHECKING:
    from nats.aio.client import Client

    from snsq2nats.bridge.fleet import Fleet

log = logging.getLogger(__name__)

Select = Callable[[list[Route]], list[Route]]


class CutoverFollower:
    def __init__(self, nc: Client, plan: Plan, select: Select) -> None:
        self.nc = nc
        self.plan = plan
        self.select = select
        self.records: dict[str, CutoverRecord] = {}
        self.revision = 0
        self._watcher: Any = None
        """The bucket's watch, opened by `start`."""

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
        """Read the recorded state; the routes to run from the start."""
        from nats.js.errors import BucketNotFoundError, NotFoundError

        from snsq2nats.jetstream.state import read_bucket

        try:
            kv = await open_kv(self.nc, CUTOVER_FOLLOWER)
        except (BucketNotFoundError, NotFoundError):
            raise NatsConnectError(
                f"the cutover state bucket {CUTOVER_BUCKET} does not exist",
                where=where,
                hint="run `snsq2nats apply` with this plan (it creates the bucket) before bridging",
            ) from None
        # Watch first, then read: a change made in between is in the watch, never lost.
        self._watcher = await kv.watch(RESOURCE_PREFIX + ">", ignore_deletes=True)
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
        return self.routes()

    async def follow(self, fleet: Fleet, stopping: asyncio.Event) -> None:
        """Apply every later change until `stopping`; confirm each in the fleet heartbeat."""
        fleet.cutover_revision = self.revision
        while not stopping.is_set():
            try:
                entry = await self._watcher.updates(timeout=1.0)
            except TimeoutError:
                continue
            except Exception as exc:  # a reconnect restarts the ordered watch inside nats-py
                log.warning("cutover state watch interrupted (%s): retrying", exc)
                await asyncio.sleep(1.0)
                continue
            if entry is None or not self._take(entry.key, entry.value, entry.revision or 0):
                continue
            routes = self.routes()
            log.info(
                "cutover state revision %d: %d route(s) to run: %s",
                self.revision,
                len(routes),
                ", ".join(r.name for r in routes),
            )
            generation = fleet.set_candidates(routes)
            applied = asyncio.create_task(fleet.applied(generation))
            stop_wait = asyncio.create_task(stopping.wait())
            await asyncio.wait({applied, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
            stop_wait.cancel()
            if not applied.done():
                applied.cancel()
                return
            fleet.cutover_revision = self.revision
            with contextlib.suppress(Exception):
                await fleet.beat()

    async def close(self) -> None:
        if self._watcher is not None:
            with contextlib.suppress(Exception):
                await self._watcher.stop()
