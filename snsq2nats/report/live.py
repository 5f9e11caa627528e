"""What the operator sees while the bridge runs.

On a terminal: a rich Live table refreshed every second (route, status, rate, in flight, errors,
skipped, undeliverable, lag). Otherwise, e.g. under systemd or in CI: one plain line per route
every `interval` seconds, so logs stay greppable and timestamps come from whatever collects
them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from rich.live import Live
from rich.table import Table
from rich.text import Text

from snsq2nats.bridge.context import BridgeContext, RouteMetrics
from snsq2nats.console import Output


class RateMeter:
    """Messages per second over the last refresh, not since start (a stalled route shows 0)."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, int]] = {}

    def rate(self, m: RouteMetrics) -> float:
        now = time.monotonic()
        then, count = self._last.get(m.route, (m.started, 0))
        self._last[m.route] = (now, m.messages)
        elapsed = now - then
        return (m.messages - count) / elapsed if elapsed > 0 else 0.0


def table(ctx: BridgeContext, meter: RateMeter) -> Table:
    grid = Table(title="snsq2nats bridge", title_justify="left")
    columns = ("route", "kind", "status", "messages", "rate/s", "in flight", "errors")
    for column in (*columns, "skipped", "undeliverable", "lag"):
        grid.add_column(
            column, justify="left" if column in ("route", "kind", "status") else "right"
        )
    for m in sorted(ctx.metrics.values(), key=lambda m: m.route):
        grid.add_row(
            Text(m.route),
            m.kind,
            Text(m.status),
            str(m.messages),
            f"{meter.rate(m):.1f}",
            str(m.in_flight),
            str(m.errors),
            str(m.skipped),
            # Never silent: red while any message could not be delivered or rightly skipped.
            Text(str(m.undeliverable_total), style="bold red" if m.undeliverable_total else ""),
            "-" if m.lag is None else str(m.lag),
        )
    return grid


def line(m: RouteMetrics, rate: float) -> str:
    lag = "-" if m.lag is None else str(m.lag)
    return (
        f"route={m.route} kind={m.kind} status={m.status.split(':')[0]} messages={m.messages} "
        f"rate={rate:.1f}/s in_flight={m.in_flight} errors={m.errors} skipped={m.skipped}"
        f"{_causes('skipped_by', m.skipped_by)} undeliverable={m.undeliverable_total}"
        f"{_causes('undeliverable_by', m.undeliverable_by)}"
        f"{_causes('rerouted_by', m.rerouted_by)} lag={lag}"
    )


def _causes(name: str, counts: dict[str, int]) -> str:
    """` name=cause:n,cause:n` when there is any, so plain logs say why, not only how many."""
    if not counts:
        return ""
    return f" {name}=" + ",".join(f"{c}:{n}" for c, n in sorted(counts.items()))


async def run_view(ctx: BridgeContext, out: Output, interval: float = 10.0) -> None:
    """Show progress until `ctx.stopping`."""
    meter = RateMeter()
    if out.interactive:
        with Live(table(ctx, meter), console=out.console, refresh_per_second=2) as live:
            while not ctx.stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ctx.stopping.wait(), timeout=1.0)
                live.update(table(ctx, meter))
        return
    while not ctx.stopping.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ctx.stopping.wait(), timeout=interval)
        if ctx.stopping.is_set():
            break
        for m in sorted(ctx.metrics.values(), key=lambda m: m.route):
            out.line(line(m, meter.rate(m)))


def summary(ctx: BridgeContext) -> list[str]:
    return [line(m, m.rate) for m in sorted(ctx.metrics.values(), key=lambda m: m.route)]


class LiveView:
    """The bridge session's view (`bridge.session.View`): progress while it runs, a summary
    line per route once it has drained."""

    def __init__(self, out: Output, interval: float = 10.0) -> None:
        self.out = out
        self.interval = interval

    async def show(self, ctx: BridgeContext) -> None:
        await run_view(ctx, self.out, self.interval)

    def final(self, ctx: BridgeContext) -> None:
        for text in summary(ctx):
            self.out.line(text)
