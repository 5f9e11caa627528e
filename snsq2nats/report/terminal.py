"""The plan and the scan for a terminal: rich renderables, printed through `console.Output`."""

from __future__ import annotations

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.padding import Padding
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from snsq2nats.console import Output
from snsq2nats.inventory import Inventory
from snsq2nats.plan.model import Change, Plan
from snsq2nats.report.facts import (
    FINDING_VERDICTS,
    MARKERS,
    VERDICT_MEANING,
    change_name,
    fidelity_line,
    grouped_findings,
    loss_line,
    server_line,
    sorted_changes,
    summary_line,
    verdict_counts,
)
from snsq2nats.report.format import format_value, plural, route_ends, short_arn

# --------------------------------------------------------------------------------------------
# scan


def scan_summary(inventory: Inventory) -> Table:
    summary = inventory.summary()
    table = Table(title="AWS estate", title_justify="left", show_header=True)
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row("regions", ", ".join(inventory.regions))
    table.add_row("queues", str(summary["queues"]))
    table.add_row("  FIFO", str(summary["fifo_queues"]))
    table.add_row("  with a dead-letter queue", str(summary["queues_with_dlq"]))
    table.add_row("topics", str(summary["topics"]))
    table.add_row("  FIFO", str(summary["fifo_topics"]))
    table.add_row("subscriptions", str(summary["subscriptions"]))
    for protocol, count in summary["subscriptions_by_protocol"].items():
        table.add_row(f"  {protocol}", str(count))
    table.add_row("  with a filter policy", str(summary["filtered_subscriptions"]))
    table.add_row("warnings", str(summary["warnings"]))
    return table


def warnings_table(inventory: Inventory) -> Table | None:
    if not inventory.warnings:
        return None
    table = Table(title="Warnings", title_justify="left")
    table.add_column("code")
    table.add_column("resource", overflow="fold")
    table.add_column("message", overflow="fold")
    for warning in inventory.warnings:
        table.add_row(warning.code, warning.resource, warning.message)
    return table


# --------------------------------------------------------------------------------------------
# plan

ACTION_STYLES = {
    "create": "green",
    "update": "yellow",
    "replace": "bold red",
    "delete": "red",
    "noop": "dim",
}
VERDICT_STYLES = {
    "unsupported": "bold red",
    "emulated": "magenta",
    "approximate": "yellow",
    "exact": "green",
}
# At most this many resource names per finding on a terminal; the report files list them all.
TERMINAL_NAMES = 6
# At most this many changes (without -v) and routes on a terminal. An estate of 10,000 queues
# plans 20,000 objects: a screenful per object is unreadable, and laying it out took rich
# longer than planning. Destructive changes sort first, so they are never the ones left out.
TERMINAL_ROWS = 200


class _Trimmed:
    """Renders its content without trailing spaces.

    rich pads every table cell to the column width; on a plan that is copied into tickets and
    compared against golden files, trailing blanks are noise that editors and `git diff` flag.
    """

    def __init__(self, renderable: RenderableType) -> None:
        self.renderable = renderable

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        for line in console.render_lines(self.renderable, options, pad=False):
            while line and not line[-1].control and not line[-1].text.rstrip():
                line.pop()
            if line:
                last = line[-1]
                line[-1] = Segment(last.text.rstrip(), last.style, last.control)
            yield from line
            yield Segment.line()


def _heading(title: str) -> Text:
    return Text(title, style="bold underline")


def _grid(*columns: str) -> Table:
    """Columns by role: `short` at natural width, `label` capped, `prose` takes the rest.

    Names can be long (an SQS name may have 80 characters): capping the label column keeps the
    prose readable at 100 columns, and folding means a long name wraps instead of being cut.
    """
    grid = Table.grid(padding=(0, 2))
    for role in columns:
        if role == "short":
            grid.add_column(no_wrap=True)
        elif role == "label":
            grid.add_column(max_width=46, overflow="fold")
        else:
            grid.add_column(ratio=1, overflow="fold")
    return grid


def _changes_renderable(plan: Plan, *, verbose: bool) -> RenderableType:
    changes = sorted_changes(plan, include_noop=verbose)
    noops = plan.counts()["noop"]
    if not changes:
        return Text("  nothing to change" + ("" if noops == 0 else f" ({noops} unchanged)"))
    grid = _grid("short", "short", "label", "prose")
    left_out = changes[TERMINAL_ROWS:] if not verbose else []
    for change in changes[: len(changes) - len(left_out)]:
        style = ACTION_STYLES[change.action]
        detail = Text(change.reason)
        for diff in change.diff:
            detail.append("\n  ")
            detail.append(f"{diff.field}: ")
            detail.append(format_value(diff.field, diff.live), style="red")
            detail.append(" → ")
            detail.append(format_value(diff.field, diff.desired), style="green")
        loss = loss_line(change)
        if loss:
            detail.append(f"\n  ! {loss}", style="bold red")
        grid.add_row(
            Text(MARKERS[change.action], style=style),
            Text(change.type),
            Text(change_name(change), style="bold" if change.action != "noop" else "dim"),
            detail,
        )
    parts: list[RenderableType] = [Padding(grid, (0, 0, 0, 2))]
    if left_out:
        parts.append(Text(f"  … {_left_out_line(left_out)}", style="dim"))
    if not verbose and noops:
        parts.append(Text(f"  = {plural(noops, 'unchanged object')} not listed", style="dim"))
    return Group(*parts)


def _left_out_line(changes: list[Change]) -> str:
    by_action: dict[str, int] = {}
    for change in changes:
        by_action[change.action] = by_action.get(change.action, 0) + 1
    counts = ", ".join(f"{n} {action}" for action, n in by_action.items())
    return (
        f"and {plural(len(changes), 'more change')} not listed ({counts}): "
        "-o plan.json or --report plan.md lists every one"
    )


def _findings_renderables(plan: Plan) -> list[RenderableType]:
    counts = verdict_counts(plan)
    grouped = grouped_findings(plan)
    out: list[RenderableType] = [_heading("Fidelity"), Text(fidelity_line(plan))]
    for verdict in FINDING_VERDICTS:
        if not counts[verdict]:
            continue
        out.append(Text(""))
        title = Text(f"{verdict.capitalize()} ({counts[verdict]})", style=VERDICT_STYLES[verdict])
        title.append(f": {VERDICT_MEANING[verdict]}", style="")
        out.append(title)
        for fidelity, names in (g for g in grouped if g[0].verdict == verdict):
            shown = ", ".join(names[:TERMINAL_NAMES])
            if len(names) > TERMINAL_NAMES:
                shown += f" and {len(names) - TERMINAL_NAMES} more"
            header = Text(fidelity.attribute, style="bold")
            header.append(f" on {shown}", style="")
            # A hanging indent: the prose wraps under itself, not under the names.
            body = Text(fidelity.note)
            if fidelity.manual_step:
                body.append("\nmanual step: ", style="bold")
                body.append(fidelity.manual_step)
            out.append(Group(Padding(header, (0, 0, 0, 2)), Padding(body, (0, 0, 0, 6))))
    return out


def _routes_renderable(plan: Plan) -> RenderableType:
    table = Table(title="Bridge routes", title_justify="left", title_style="bold underline")
    table.add_column("kind", no_wrap=True)
    table.add_column("name", overflow="fold", ratio=2)
    table.add_column("from → to", overflow="fold", ratio=5)
    routes = sorted(plan.routes, key=lambda r: (r.kind, r.name))
    for route in routes[:TERMINAL_ROWS]:
        source, target = route_ends(route, short_arn)
        table.add_row(route.kind, Text(route.name), Text(f"{source} → {target}"))
    if len(routes) > TERMINAL_ROWS:
        table.caption = (
            f"and {plural(len(routes) - TERMINAL_ROWS, 'more route')} not listed: "
            "-o plan.json or --report plan.md lists every one"
        )
        table.caption_justify = "left"
    return table


def plan_renderables(plan: Plan, *, verbose: bool = False) -> list[RenderableType]:
    """The plan for a terminal, top to bottom; `verbose` also lists the unchanged objects."""
    server = Text(server_line(plan))
    if not plan.server.reachable:
        server.stylize("bold yellow")
        server = Text("! ", style="bold yellow") + server
    parts: list[RenderableType] = [
        server,
        Text(summary_line(plan), style="bold"),
        Text(""),
        _heading("Changes"),
        _changes_renderable(plan, verbose=verbose),
        Text(""),
        *_findings_renderables(plan),
    ]
    if plan.routes:
        parts += [Text(""), _routes_renderable(plan)]
    return [_Trimmed(part) for part in parts]


def render_plan(out: Output, plan: Plan, *, verbose: bool = False) -> None:
    for renderable in plan_renderables(plan, verbose=verbose):
        out.info(renderable)
