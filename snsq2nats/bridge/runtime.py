"""Run every selected route at once until told to stop, then drain.

One supervised task per route. A runner that raises is logged and restarted with backoff: a bug
or an outage in one route must not stop the others. SIGINT/SIGTERM, `--duration` and
`--max-messages` all end the run the same way, by setting `ctx.stopping`; runners then finish
what they hold and return. A second signal, or a drain longer than `drain_timeout`, cancels
them: still safe, because nothing is ever acknowledged on one side before the other side
accepted it, so the cost is only redelivery (absorbed by deduplication).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from snsq2nats.bridge.context import AwsThreads, BridgeContext
from snsq2nats.plan.model import Route

Runner = Callable[[BridgeContext, Route], Awaitable[None]]

RUNNER_PATHS: dict[str, str] = {
    "sqs-to-nats": "snsq2nats.bridge.aws_to_nats:run_sqs_to_nats",
    "sns-to-nats": "snsq2nats.bridge.aws_to_nats:run_sns_to_nats",
    "nats-to-sqs": "snsq2nats.bridge.nats_to_aws:run_nats_to_sqs",
    "nats-to-sns": "snsq2nats.bridge.nats_to_aws:run_nats_to_sns",
    "dlq-mover": "snsq2nats.bridge.dlq:run_dlq_mover",
    "filter-router": "snsq2nats.bridge.filter_router:run_filter_router",
}
AWS_TO_NATS = ("sqs-to-nats", "sns-to-nats")
NATS_TO_AWS = ("nats-to-sqs", "nats-to-sns")
# Concurrent short AWS calls worth having: past this the GIL, not the thread count, limits.
MAX_CALL_THREADS = 64
RESTART_BASE = 1.0
RESTART_CAP = 60.0
# A runner that stayed up this long had recovered: its next crash starts the backoff afresh.
HEALTHY_AFTER = 60.0


def load_runners(
    paths: Mapping[str, str] = RUNNER_PATHS,
) -> tuple[dict[str, Runner], dict[str, str]]:
    """The runners that can be imported, and why the others cannot (by route kind)."""
    runners: dict[str, Runner] = {}
    missing: dict[str, str] = {}
    for kind, path in paths.items():
        module_name, _, attr = path.partition(":")
        try:
            module = importlib.import_module(module_name)
            runners[kind] = getattr(module, attr)
        except ModuleNotFoundError as exc:
            if exc.name is not None and module_name.startswith(exc.name):
                missing[kind] = f"{module_name} is not installed"
            else:
                missing[kind] = f"{module_name} cannot be imported: {exc}"
        except (ImportError, AttributeError) as exc:
            missing[kind] = f"{path} cannot be loaded: {exc}"
    return runners, missing


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


async def _pause(ctx: BridgeContext, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(ctx.stopping.wait(), timeout=seconds)


async def supervise(ctx: BridgeContext, route: Route, runner: Runner) -> None:
    """Run one route until stopping; restart it with capped exponential backoff if it fails."""
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
            if time.monotonic() - started > HEALTHY_AFTER:
                failures = 0
            failures += 1
            metrics.error()
            metrics.restarts += 1
            delay = min(RESTART_CAP, RESTART_BASE * 2 ** (failures - 1))
            metrics.status = "restarting"
            ctx.log(
                f"{route.name}: runner failed ({type(exc).__name__}: {exc}); "
                f"restarting in {delay:.0f}s"
            )
            await _pause(ctx, delay)
            continue
        metrics.status = "stopped" if ctx.stopping.is_set() else "finished"
        return
    metrics.status = "stopped"


def aws_threads_for(ctx: BridgeContext, routes: list[Route]) -> AwsThreads:
    """A poll thread for every poller of every route that long-polls AWS, and a call thread for
    every batch a route may have at AWS at once (`max_in_flight` / 10), within reason."""
    polling = sum(1 for route in routes if route.kind in AWS_TO_NATS)
    at_aws = sum(1 for route in routes if route.kind in AWS_TO_NATS + NATS_TO_AWS)
    batches = max(1, ctx.max_in_flight // 10)
    return AwsThreads(
        polls=ctx.pollers * polling, calls=min(MAX_CALL_THREADS, max(4, batches * at_aws))
    )


def freeze_startup_heap() -> None:
    """Everything made before relaying (boto3's service models, the plan, the clients) lives
    for the whole run; frozen, it is no longer rescanned by every full collection, which
    otherwise costs about a tenth of the relay's time on a busy route."""
    gc.freeze()


async def run_bridge(
    ctx: BridgeContext,
    routes: list[Route],
    runners: Mapping[str, Runner],
    duration: float | None = None,
    *,
    missing: Mapping[str, str] | None = None,
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
            ctx.log("stopping: draining in-flight messages (signal again to stop at once)")
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

    owned_threads = None
    if ctx.aws_call is None and ctx.aws_threads is None:
        owned_threads = ctx.aws_threads = aws_threads_for(ctx, routes)
    freeze_startup_heap()
    for route in routes:
        runner = runners.get(route.kind)
        if runner is None:
            why = (missing or {}).get(route.kind, f"no runner for {route.kind}")
            ctx.route_metrics(route).status = f"not available: {why}"
            ctx.log(f"{route.name}: not available ({why})")
            continue
        tasks[route.name] = asyncio.create_task(supervise(ctx, route, runner), name=route.name)

    timer: asyncio.Task[None] | None = None
    if duration is not None:

        async def stop_later() -> None:
            await asyncio.sleep(duration)
            ctx.log(f"stopping: --duration {duration:g}s reached")
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
                    ctx.log(f"drain took longer than {drain_timeout:g}s: cancelling")
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
        if owned_threads is not None:
            ctx.aws_threads = None
            owned_threads.shutdown()
