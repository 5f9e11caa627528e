"""What the operator sees while the bridge runs.

On a terminal: a rich Live table refreshed every second (route, status, rate, in flight, errors,
skipped, undeliverable, lag). Otherwise, e.g. under systemd or in CI: every `interval` seconds
one plain summary line of the whole bridge, and one plain line per route that did something
since its last line (or never had one and is not a fresh idle route), so logs stay greppable,
timestamps come from whatever collects them, and thousands of idle routes cost one line, not
thousands.
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

    def rate(self, m: RouteMetrics, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
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


Shown = tuple[str, int, int, int, int, int, int | None, tuple[tuple[str, int], ...]]
"""What a plain route line says, its rate aside: a route whose last line said the same and
relays nothing now has nothing new to say."""

QUIET: Shown = ("running", 0, 0, 0, 0, 0, None, ())
"""A route never shown that says this (or the same with lag 0) is idle: no line of its own."""


def _shown(m: RouteMetrics) -> Shown:
    causes = (m.skipped_by, m.undeliverable_by, m.rerouted_by)
    return (
        m.status,
        m.messages,
        m.in_flight,
        m.errors,
        m.skipped,
        m.undeliverable_total,
        None if m.lag == 0 else m.lag,
        tuple((c, n) for counts in causes for c, n in counts.items()) if any(causes) else (),
    )


class PlainView:
    """The non-terminal view's lines at each refresh: the summary, then the routes with news."""

    def __init__(self) -> None:
        self.meter = RateMeter()
        self._shown: dict[str, Shown] = {}

    def lines(self, ctx: BridgeContext) -> list[str]:
        now = time.monotonic()
        routes: list[str] = []
        running = messages = in_flight = errors = undeliverable = 0
        total_rate = 0.0
        for m in ctx.metrics.values():
            rate = self.meter.rate(m, now)
            total_rate += rate
            running += m.status == "running"
            messages += m.messages
            in_flight += m.in_flight
            errors += m.errors
            undeliverable += m.undeliverable_total
            shown = _shown(m)
            if rate or shown != self._shown.get(m.route, QUIET):
                self._shown[m.route] = shown
                routes.append(line(m, rate))
        head = (
            f"routes={len(ctx.metrics)} running={running} active={len(routes)} "
            f"messages={messages} rate={total_rate:.1f}/s in_flight={in_flight} errors={errors} "
            f"undeliverable={undeliverable}"
        )
        return [head, *sorted(routes)]


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
    plain = PlainView()
    while not ctx.stopping.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ctx.stopping.wait(), timeout=interval)
        if ctx.stopping.is_set():
            break
        for text in plain.lines(ctx):
            out.line(text)


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
