"""Run every selected route at once until told to stop, then drain.

One supervised task per route, run by the runner of its kind (`RUNNERS`, imported directly: a
runner that cannot be imported fails the bridge at start, never silently leaves a route out).
A runner that raises is logged and restarted with backoff: a bug or an outage in one route
must not stop the others. SIGINT/SIGTERM, `--duration` and `--max-messages` all end the run
the same way, by setting `ctx.stopping`; runners then finish what they hold and return. A
second signal, or a drain longer than `drain_timeout`, cancels them: still safe, because
nothing is ever acknowledged on one side before the other side accepted it, so the cost is
only redelivery (absorbed by deduplication).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from snsq2nats.bridge.context import BridgeContext, backoff
from snsq2nats.bridge.dlq import run_dlq_mover
from snsq2nats.bridge.filter_router import run_filter_router
from snsq2nats.bridge.nats_to_sns import run_nats_to_sns
from snsq2nats.bridge.nats_to_sqs import run_nats_to_sqs
from snsq2nats.bridge.sns_to_nats import run_sns_to_nats
from snsq2nats.bridge.sqs_to_nats import run_sqs_to_nats
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


async def supervise(ctx: BridgeContext, route: Route, runner: Runner) -> None:
    """Run one route until stopping; restart it with capped exponential backoff if it fails."""
    timings = ctx.timings
    metrics = ctx.route_metrics(route)
    failures = 0
    while not ctx.stopping.is_set():
        started = time.monotonic()
        metrics.status = "running"
        try:
            await runner(ctx, route)
        except asyncio.CancelledError:
            metrics.status = "stopped"
            raise
        except Exception as exc:
            if time.monotonic() - started > timings.healthy_after:
                failures = 0
            metrics.error()
            metrics.restarts += 1
            delay = backoff(failures, base=timings.restart_base, cap=timings.restart_cap)
            failures += 1
            metrics.status = "restarting"
            log.error(
                "%s: runner failed (%s: %s); restarting in %.1fs",
                route.name,
                type(exc).__name__,
                exc,
                delay,
            )
            await ctx.pause(delay)
            continue
        metrics.status = "stopped" if ctx.stopping.is_set() else "finished"
        return
    metrics.status = "stopped"


async def run_bridge(
    ctx: BridgeContext,
    routes: list[Route],
    runners: Mapping[str, Runner] = RUNNERS,
    duration: float | None = None,
    *,
    drain_timeout: float = 60.0,
    handle_signals: bool = True,
) -> None:
    """Run `routes` until stopped (signal, duration, max messages) or all of them return."""
    loop = asyncio.get_running_loop()
    signals_seen = 0
    tasks: dict[str, asyncio.Task[None]] = {}

    def on_signal() -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen == 1:
            log.info("stopping: draining in-flight messages (signal again to stop at once)")
            ctx.stopping.set()
        else:
            for task in tasks.values():
                task.cancel()

    installed: list[signal.Signals] = []
    if handle_signals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, on_signal)
                installed.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):
                pass  # not the main thread, or a platform without loop signal handlers

    for route in routes:
        runner = runners.get(route.kind)
        if runner is None:
            why = f"no runner for {route.kind}"
            ctx.route_metrics(route).status = f"not available: {why}"
            log.error("%s: not available (%s)", route.name, why)
            continue
        tasks[route.name] = asyncio.create_task(supervise(ctx, route, runner), name=route.name)

    timer: asyncio.Task[None] | None = None
    if duration is not None:

        async def stop_later() -> None:
            await asyncio.sleep(duration)
            log.info("stopping: --duration %gs reached", duration)
            ctx.stopping.set()

        timer = asyncio.create_task(stop_later())
    try:
        if tasks:
            stop_wait = asyncio.create_task(ctx.stopping.wait())
            all_done = asyncio.gather(*tasks.values(), return_exceptions=True)
            racing: list[asyncio.Future[Any]] = [stop_wait, all_done]
            await asyncio.wait(racing, return_when=asyncio.FIRST_COMPLETED)
            stop_wait.cancel()
            if not all_done.done():
                _, pending = await asyncio.wait(tasks.values(), timeout=drain_timeout)
                if pending:
                    log.warning("drain took longer than %gs: cancelling", drain_timeout)
                    for task in pending:
                        task.cancel()
                    await asyncio.gather(*pending, return_exceptions=True)
            await asyncio.gather(all_done, return_exceptions=True)
    finally:
        ctx.stopping.set()
        if timer is not None:
            timer.cancel()
        for sig in installed:
            loop.remove_signal_handler(sig)
