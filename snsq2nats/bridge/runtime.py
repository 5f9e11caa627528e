"""Run the selected routes until told to stop, then drain; the set can change while running.

One supervised task per route, run by the runner of its kind (`RUNNERS`, imported directly: a
runner that cannot be imported fails the bridge at start, never silently leaves a route out).
A runner that raises is logged and restarted with backoff: a bug or an outage in one route
must not stop the others. SIGINT/SIGTERM, `--duration` and `--max-messages` all end the run
the same way, by setting `ctx.stopping`; runners then finish what they hold and return.

The drain is bounded: it gets `drain_timeout` in all, and `nats_grace` once NATS is
unreachable (a drain cannot publish or acknowledge without it). A second signal ends it at
once. A drain cut short cancels the runners, logs what each route still held, and raises
`DrainIncomplete` (the CLI exits non-zero). Nothing is lost: nothing is ever acknowledged on
one side before the other side accepted it, so an SQS message in hand returns to its queue
after its visibility timeout and a NATS message is redelivered after its ack wait (both
absorbed by deduplication).

The running set is a `RouteSet`, changeable while it runs:

- `await route_set.start(route)` / `await route_set.stop(name)`: one route. Every route has a
  context of its own (`BridgeContext.for_route`) whose `stopping` the bridge-wide stop also
  sets, so stopping one route drains exactly as a full stop does, and the others never notice.
  `stop` returns once the runner has returned: the route is fully drained.
- `await route_set.reconcile(routes)`: make the running set exactly `routes` (drain the ones
  left out or changed, start the new) and return once that is done.

`run_bridge(ctx, routes)` starts every route. `run_bridge(..., coordinator=fleet)` hands the
`RouteSet` to a `Coordinator` instead (the fleet, `bridge.fleet`), which starts and stops routes
as it acquires and gives up leases; there, `routes` are only the candidates. To change the
candidates of a running fleet member, see `Fleet.set_candidates` and `Fleet.applied`.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol

from snsq2nats.bridge.context import BridgeContext, backoff
from snsq2nats.bridge.dlq import run_dlq_mover
from snsq2nats.bridge.filter_router import run_filter_router
from snsq2nats.bridge.metrics import RELEASED
from snsq2nats.bridge.nats_to_sns import run_nats_to_sns
from snsq2nats.bridge.nats_to_sqs import run_nats_to_sqs
from snsq2nats.bridge.sns_to_nats import run_sns_to_nats
from snsq2nats.bridge.sqs_to_nats import run_sqs_to_nats
from snsq2nats.errors import DrainIncomplete as DrainIncomplete
from snsq2nats.plan.model import Route

log = logging.getLogger(__name__)

Runner = Callable[[BridgeContext, Route], Awaitable[None]]

RUNNERS: dict[str, Runner] = {
    "sqs-to-nats": run_sqs_to_nats,
    "sns-to-nats": run_sns_to_nats,
    "nats-to-sqs": run_nats_to_sqs,
    "nats-to-sns": run_nats_to_sns,
    "dlq-mover": run_dlq_mover,
    "filter-router": run_filter_router,
}
AWS_TO_NATS = ("sqs-to-nats", "sns-to-nats")
NATS_TO_AWS = ("nats-to-sqs", "nats-to-sns")

# How long a stopping bridge may take to relay what it holds and leave the fleet, and how long
# of that it waits for NATS once NATS is unreachable.
DRAIN_TIMEOUT = 60.0
NATS_GRACE = 5.0


def route_direction(kind: str) -> str:
    if kind in AWS_TO_NATS:
        return "aws-to-nats"
    if kind in NATS_TO_AWS:
        return "nats-to-aws"
    return "internal"


def select_routes(routes: list[Route], direction: str, globs: tuple[str, ...] = ()) -> list[Route]:
    """Routes of a direction (`both` = all; the DLQ mover and filter router run with either),
    narrowed to names matching any of `globs`."""
    import fnmatch

    chosen = []
    for route in routes:
        side = route_direction(route.kind)
        if direction != "both" and side not in (direction, "internal"):
            continue
        if globs and not any(fnmatch.fnmatchcase(route.name, g) for g in globs):
            continue
        chosen.append(route)
    return chosen


async def supervise(
    ctx: BridgeContext,
    route: Route,
    runner: Runner,
    on_status: Callable[[], None] | None = None,
) -> None:
    """Run one route until stopping; restart it with capped exponential backoff if it fails.
    `on_status` hears of every change of the route's status (the fleet judges runners by it)."""
    timings = ctx.timings
    metrics = ctx.route_metrics(route)

    def status(now: str) -> None:
        if metrics.status != now:
            metrics.status = now
            if on_status is not None:
                on_status()

    failures = 0
    while not ctx.stopping.is_set():
        started = time.monotonic()
        status("running")
        try:
            await runner(ctx, route)
        except asyncio.CancelledError:
            status("stopped")
            raise
        except Exception as exc:
            if time.monotonic() - started > timings.healthy_after:
                failures = 0
            metrics.error()
            metrics.restarts += 1
            delay = backoff(failures, base=timings.restart_base, cap=timings.restart_cap)
            failures += 1
            status("restarting")
            log.error(
                "%s: runner failed (%s: %s); restarting in %.1fs",
                route.name,
                type(exc).__name__,
                exc,
                delay,
            )
            await ctx.pause(delay)
            continue
        status("stopped" if ctx.stopping.is_set() else "finished")
        return
    status("stopped")


class RouteSet:
    """The routes this process runs, changeable while it runs.

    Each route runs supervised on a context of its own (`BridgeContext.for_route`), so one
    route can be drained while the others carry on: its runner sees its own `stopping` set,
    finishes what it holds and returns. The bridge-wide stop sets every route's stop.
    """

    def __init__(
        self,
        ctx: BridgeContext,
        runners: Mapping[str, Runner] = RUNNERS,
        *,
        drain_timeout: float = DRAIN_TIMEOUT,
    ) -> None:
        self.ctx = ctx
        self._runners = runners
        self._drain_timeout = drain_timeout
        self._running: dict[str, tuple[Route, BridgeContext, asyncio.Task[None]]] = {}
        self._draining: dict[str, asyncio.Task[None]] = {}
        self._watch: asyncio.Task[None] | None = None
        self.left: dict[str, int] = {}
        """Messages each route still held when the bridge-wide stop cancelled its drain."""
        self.status_changes = 0
        """Counts every change of a running route's status: a coordinator that saw the same
        count last time need not look at every route's status again."""

    @property
    def running(self) -> dict[str, Route]:
        """Routes started and not being stopped, by name."""
        return {name: route for name, (route, _, _) in self._running.items()}

    @property
    def draining(self) -> set[str]:
        return set(self._draining)

    def tasks(self) -> list[asyncio.Task[None]]:
        return [task for _, _, task in self._running.values()] + list(self._draining.values())

    async def start(self, route: Route) -> bool:
        """Start `route` (after any drain of the same name finishes); False if it cannot run:
        no runner for its kind, or the bridge is stopping."""
        self._watch_bridge_stop()
        current = self._running.get(route.name)
        if current is not None:
            if current[0] == route:
                return True
            await self.stop(route.name)  # changed in the plan: drain the old one first
        draining = self._draining.get(route.name)
        if draining is not None:
            await asyncio.shield(draining)
        if self.ctx.stopping.is_set() or route.name in self._running:
            return route.name in self._running
        runner = self._runners.get(route.kind)
        if runner is None:
            why = f"no runner for {route.kind}"
            self.ctx.route_metrics(route).status = f"not available: {why}"
            log.error("%s: not available (%s)", route.name, why)
            return False
        if self.ctx.nats_accounts is not None:
            runner = self.ctx.nats_accounts.wrap(runner)
        child = self.ctx.for_route(route)
        task = asyncio.create_task(
            supervise(child, route, runner, self._status_changed), name=route.name
        )
        self._running[route.name] = (route, child, task)
        return True

    def _status_changed(self) -> None:
        self.status_changes += 1

    async def stop(self, name: str) -> None:
        """Drain one route and return once its runner has returned (cancelled after the drain
        timeout: still safe, nothing is acknowledged before the other side accepted it)."""
        entry = self._running.pop(name, None)
        if entry is None:
            draining = self._draining.get(name)
            if draining is not None:
                await asyncio.shield(draining)
            return
        route, child, task = entry
        child.stopping.set()
        drain = self._draining[name] = asyncio.create_task(self._drain(route, task))
        await asyncio.shield(drain)

    async def _drain(self, route: Route, task: asyncio.Task[None]) -> None:
        try:
            _, pending = await asyncio.wait([task], timeout=self._drain_timeout)
            if pending:
                held = self.ctx.route_metrics(route).in_flight
                log.warning(
                    "%s: drain took longer than %gs: cancelling (%d message(s) in hand)",
                    route.name,
                    self._drain_timeout,
                    held,
                )
                self._record_left(route.name, held)
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            if not self.ctx.stopping.is_set():
                self.ctx.route_metrics(route).status = RELEASED
        finally:
            self._draining.pop(route.name, None)

    async def reconcile(self, routes: Iterable[Route]) -> None:
        """Make the running set exactly `routes`: drain the routes not in it (those whose
        definition changed too), start the new ones; return once all of that is done."""
        wanted = {route.name: route for route in routes}
        stale = [n for n, (r, _, _) in self._running.items() if wanted.get(n) != r]
        await asyncio.gather(*(self.stop(name) for name in stale))
        for route in wanted.values():
            await self.start(route)

    async def stop_all(self) -> None:
        """Drain every route at once (each within the drain timeout)."""
        await asyncio.gather(*(self.stop(name) for name in list(self._running)))
        await asyncio.gather(*list(self._draining.values()), return_exceptions=True)

    def cancel_all(self) -> None:
        for task in self.tasks():
            task.cancel()

    def abandon(self) -> None:
        """Cancel every route's run or drain now, recording what each still held."""
        for name in [*self._running, *self._draining]:
            metrics = self.ctx.metrics.get(name)
            self._record_left(name, metrics.in_flight if metrics is not None else 0)
        self.cancel_all()

    def _record_left(self, name: str, held: int) -> None:
        if held > 0 and self.ctx.stopping.is_set():
            self.left[name] = max(held, self.left.get(name, 0))

    def _watch_bridge_stop(self) -> None:
        """The bridge-wide stop reaches every route's own stop signal."""
        if self._watch is None:
            self._watch = asyncio.create_task(self._relay_bridge_stop())

    async def _relay_bridge_stop(self) -> None:
        await self.ctx.stopping.wait()
        for _, child, _ in self._running.values():
            child.stopping.set()

    def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()


class Coordinator(Protocol):
    """Decides which routes this process runs (the fleet, `bridge.fleet.Fleet`)."""

    async def run(self, routes: RouteSet) -> None:
        """Start and stop routes on `routes` until the bridge stops; then drain them all
        (`routes.stop_all()`), give up what it holds, and return."""


async def run_bridge(
    ctx: BridgeContext,
    routes: list[Route],
    runners: Mapping[str, Runner] = RUNNERS,
    duration: float | None = None,
    *,
    drain_timeout: float = DRAIN_TIMEOUT,
    nats_grace: float = NATS_GRACE,
    handle_signals: bool = True,
    coordinator: Coordinator | None = None,
) -> None:
    """Run `routes` until stopped (signal, duration, max messages) or all of them return.

    Without a coordinator every route runs; with one (the fleet), `routes` are only the
    candidates and the coordinator starts and stops them as it acquires and gives up leases.
    Raises `DrainIncomplete` when the drain had to be cut short.
    """
    loop = asyncio.get_running_loop()
    signals_seen = 0
    route_set = RouteSet(ctx, runners, drain_timeout=drain_timeout)
    give_up = asyncio.Event()

    def on_signal() -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen == 1:
            log.info("stopping: draining in-flight messages (signal again to stop at once)")
            ctx.stopping.set()
        else:
            log.warning("stopping at once: cancelling the drain")
            give_up.set()

    installed: list[signal.Signals] = []
    if handle_signals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, on_signal)
                installed.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):
                pass  # not the main thread, or a platform without loop signal handlers

    timer: asyncio.Task[None] | None = None
    if duration is not None:

        async def stop_later() -> None:
            await asyncio.sleep(duration)
            log.info("stopping: --duration %gs reached", duration)
            ctx.stopping.set()

        timer = asyncio.create_task(stop_later())

    async def work() -> None:
        if coordinator is not None:
            await _coordinated(ctx, route_set, coordinator)
        else:
            await route_set.reconcile(routes)
            await _until_stopped_or_done(ctx, route_set)

    try:
        await _bounded(ctx, route_set, work(), drain_timeout, nats_grace, give_up)
    finally:
        ctx.stopping.set()
        route_set.close()
        if timer is not None:
            timer.cancel()
        for sig in installed:
            loop.remove_signal_handler(sig)


async def _bounded(
    ctx: BridgeContext,
    route_set: RouteSet,
    work: Awaitable[None],
    drain_timeout: float,
    nats_grace: float,
    give_up: asyncio.Event,
) -> None:
    """Run `work`; once the bridge stops, let it drain for `drain_timeout` at most and for
    `nats_grace` at most while NATS is unreachable. `give_up` (a second signal) cancels the
    routes at once and leaves the rest of `work` (giving up the fleet's leases) the same bounds.
    A drain cut short raises `DrainIncomplete` with what each route still held."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work)
    stop_wait = asyncio.ensure_future(ctx.stopping.wait())
    why = ""
    try:
        await asyncio.wait([task, stop_wait], return_when=asyncio.FIRST_COMPLETED)
        deadline = loop.time() + drain_timeout
        lost: float | None = None
        while not task.done():
            now = loop.time()
            if getattr(ctx.nc, "is_connected", True):
                lost = None
            elif lost is None:
                lost = now
                log.warning("stopping: NATS unreachable; waiting %gs for it to return", nats_grace)
            if give_up.is_set() and not why:
                why = "stopped at once by a second signal"
                route_set.abandon()
            if lost is not None and now - lost >= nats_grace:
                why = f"NATS unreachable for {nats_grace:g}s during the drain"
                break
            if now >= deadline:
                why = f"the drain took longer than {drain_timeout:g}s"
                break
            # A short tick: the NATS client offers no event to wait on here.
            await asyncio.wait([task], timeout=min(0.25, deadline - now))
        else:
            task.result()  # the work's own outcome, error included
            if not route_set.left:
                return
            why = why or f"a route's drain took longer than {drain_timeout:g}s"
            raise DrainIncomplete(why, _report(ctx, route_set.left))
    except asyncio.CancelledError:
        # The caller cancelled the whole run: the work goes with it.
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise
    finally:
        stop_wait.cancel()
    # Cut short: what each route holds now stays undelivered.
    route_set.abandon()
    log.error("stopping: %s: cancelling the drain", why)
    task.cancel()
    await asyncio.gather(task, *route_set.tasks(), return_exceptions=True)
    if not route_set.left:
        log.error("stopping: no route held a message; this member's leases expire by their TTL")
    raise DrainIncomplete(why, _report(ctx, route_set.left))


def _report(ctx: BridgeContext, left: Mapping[str, int]) -> Mapping[str, int]:
    """Log where each route's undelivered messages are; `left`, for the error."""
    for name, count in sorted(left.items()):
        metrics = ctx.metrics.get(name)
        if metrics is not None and metrics.kind in AWS_TO_NATS:
            where = "received from SQS: back in the queue after its visibility timeout"
        else:
            where = "fetched from NATS: redelivered after the consumer's ack wait"
        log.error("%s: left %d message(s) undelivered (%s)", name, count, where)
    return left


async def _until_stopped_or_done(ctx: BridgeContext, route_set: RouteSet) -> None:
    tasks = route_set.tasks()
    if not tasks:
        return
    stop_wait = asyncio.create_task(ctx.stopping.wait())
    all_done = asyncio.gather(*tasks, return_exceptions=True)
    racing: list[asyncio.Future[Any]] = [stop_wait, all_done]
    await asyncio.wait(racing, return_when=asyncio.FIRST_COMPLETED)
    stop_wait.cancel()
    if not all_done.done():
        await route_set.stop_all()
    await asyncio.gather(all_done, return_exceptions=True)


async def _coordinated(ctx: BridgeContext, route_set: RouteSet, coordinator: Coordinator) -> None:
    """The coordinator runs until the bridge stops; should it fail, the routes it started are
    drained before the error goes up."""
    try:
        await coordinator.run(route_set)
    except BaseException:
        ctx.stopping.set()
        await route_set.stop_all()
        raise
