"""Reports people read: the scan summary, and the plan for a terminal, a pull request or a browser.

Every plan output here is a pure function of a `Plan`: no clock, no environment, no I/O except
`write_report`. The same plan always gives byte-identical text, so goldens can be asserted and
a re-generated report only changes in a pull request when the plan did.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.padding import Padding
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from snsq2nats.console import Output
from snsq2nats.errors import UsageError
from snsq2nats.files import write_atomic
from snsq2nats.inventory import Inventory
from snsq2nats.jetstream.spec import NS
from snsq2nats.plan.model import VERDICT_ORDER, Change, Fidelity, Plan, Resource, Route

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
# plan: shared facts, computed once so the three formats cannot disagree

MARKERS = {"create": "+", "update": "~", "replace": "-/+", "delete": "-", "noop": "="}
# Destructive changes first: they are what a reviewer must not miss at the bottom of a long list.
ACTION_ORDER = {"delete": 0, "replace": 1, "update": 2, "create": 3, "noop": 4}
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
VERDICT_MEANING = {
    "unsupported": "no NATS equivalent: a person must act",
    "emulated": "kept by a snsq2nats runtime component (the bridge)",
    "approximate": "mapped, with a difference in behaviour",
}
FINDING_VERDICTS = ("unsupported", "emulated", "approximate")

# Field names as the server spells them (spec.py); the leaf of a dotted path is what counts.
_DURATION_FIELDS = {"max_age", "duplicate_window", "ack_wait", "inactive_threshold", "backoff"}
_SIZE_FIELDS = {"max_bytes", "max_msg_size"}
# JetStream writes "no limit" as -1 for counts and sizes, and as 0 for max_age.
_COUNT_FIELDS = {"max_msgs", "max_deliver", "max_ack_pending", "max_msgs_per_subject"}
_ZERO_IS_UNLIMITED = {"max_age"}


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else (plural or word + 's')}"


def summary_line(plan: Plan) -> str:
    counts = plan.counts()
    if not plan.pending:
        return (
            f"No changes: live JetStream already matches the estate ({counts['noop']} unchanged)."
        )
    return (
        f"Plan: {counts['create']} to create, {counts['update']} to update, "
        f"{counts['replace']} to replace, {counts['delete']} to delete, "
        f"{counts['noop']} unchanged."
    )


_USERINFO = re.compile(r"^((?:[A-Za-z][A-Za-z0-9+.-]*://)?)[^/@]*@")


def _safe_url(url: str) -> str:
    """Drop user:password@ from a server URL: reports are shared, credentials must not be."""
    return _USERINFO.sub(r"\1", url.strip())


def server_line(plan: Plan) -> str:
    server = plan.server
    if not server.reachable:
        line = "no NATS server reachable: everything planned as create"
        return f"{line} ({server.note})" if server.note else line
    details = [f"server {server.version}" if server.version else "server version unknown"]
    if server.cluster:
        details.append(f"cluster {server.cluster}")
    where = ", ".join(_safe_url(u) for u in server.url.split(",")) if server.url else "?"
    line = f"NATS {where} ({', '.join(details)})"
    return f"{line}: {server.note}" if server.note else line


def sorted_changes(plan: Plan, *, include_noop: bool = True) -> list[Change]:
    changes = [c for c in plan.changes if include_noop or c.action != "noop"]
    # Streams before their consumers, so a replace reads "stream, then what hangs off it".
    return sorted(
        changes, key=lambda c: (ACTION_ORDER[c.action], c.stream, c.type != "stream", c.name)
    )


def change_name(change: Change) -> str:
    # Consumer names are only unique within their stream.
    return f"{change.stream}/{change.name}" if change.type == "consumer" else change.name


def loss_line(change: Change) -> str | None:
    """What a destructive change costs in messages: the line a reviewer must consciously accept.

    Consumers hold no messages (their delivery state is what goes, and the reason says so).
    """
    if change.action not in ("replace", "delete"):
        return None
    if change.live_messages is not None:
        return f"{_plural(change.live_messages, 'message')} would be lost"
    if change.type == "stream":
        return "the stream's messages would be lost (count unknown)"
    return None


def findings(plan: Plan) -> list[tuple[Resource, Fidelity]]:
    """Every non-exact verdict, worst first, then by resource and attribute."""
    found = [(r, f) for r in plan.resources for f in r.fidelity if f.verdict != "exact"]
    return sorted(
        found,
        key=lambda rf: (
            VERDICT_ORDER[rf[1].verdict],
            rf[0].name,
            rf[0].source_arn,
            rf[1].attribute,
        ),
    )


# At most this many resource names per finding on a terminal; the report files list them all.
TERMINAL_NAMES = 6


def grouped_findings(plan: Plan) -> list[tuple[Fidelity, list[str]]]:
    """Findings that say the same thing about several resources, said once with every name.

    A real estate repeats itself (every SSE queue gets the same encryption note): a thousand
    identical lines would bury the one finding that differs.
    """
    groups: dict[tuple[str, str, str, str], tuple[Fidelity, list[str]]] = {}
    for resource, fidelity in findings(plan):
        key = (fidelity.verdict, fidelity.attribute, fidelity.note, fidelity.manual_step or "")
        groups.setdefault(key, (fidelity, []))[1].append(resource.name)
    return [
        groups[key] for key in sorted(groups, key=lambda k: (VERDICT_ORDER[k[0]], k[1], k[2], k[3]))
    ]


def manual_steps(plan: Plan) -> list[tuple[str, list[tuple[str, str]]]]:
    """Each distinct manual step once, with the (resource, attribute) pairs that need it."""
    steps: dict[str, list[tuple[str, str]]] = {}
    for resource, fidelity in findings(plan):
        if fidelity.manual_step:
            steps.setdefault(fidelity.manual_step, []).append((resource.name, fidelity.attribute))
    return list(steps.items())


def verdict_counts(plan: Plan) -> dict[str, int]:
    counts = dict.fromkeys(VERDICT_ORDER, 0)
    for resource in plan.resources:
        for fidelity in resource.fidelity:
            counts[fidelity.verdict] += 1
    return counts


def fidelity_line(plan: Plan) -> str:
    counts = verdict_counts(plan)
    parts = [f"{counts[v]} {v}" for v in FINDING_VERDICTS]
    exact = _plural(counts["exact"], "attribute")
    verb = "maps" if counts["exact"] == 1 else "map"
    return f"{', '.join(parts)}; {exact} {verb} exactly."


def format_duration(ns: int) -> str:
    """Nanoseconds as a person reads them: 30s, 4d, 1h30m, 250ms; exact, never rounded."""
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    rest = abs(ns)
    parts = []
    for unit, size in (
        ("d", 86_400 * NS),
        ("h", 3_600 * NS),
        ("m", 60 * NS),
        ("s", NS),
        ("ms", 1_000_000),
        ("µs", 1_000),
        ("ns", 1),
    ):
        amount, rest = divmod(rest, size)
        if amount:
            parts.append(f"{amount}{unit}")
    return sign + "".join(parts)


def format_size(n: int) -> str:
    """Bytes in the largest binary unit that divides them exactly (1 MiB, 256 KiB, 1,000 B)."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n:,} B"


def format_value(field: str, value: Any) -> str:
    """One side of a field diff, in the units the field means (durations and sizes decoded)."""
    leaf = field.rsplit(".", 1)[-1]
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if leaf in _ZERO_IS_UNLIMITED and value == 0:
            return "unlimited"
        if leaf in _SIZE_FIELDS | _COUNT_FIELDS and value == -1:
            return "unlimited"
        if leaf in _DURATION_FIELDS:
            return format_duration(value)
        if leaf in _SIZE_FIELDS:
            return format_size(value)
        return str(value)
    if isinstance(value, list) and leaf in _DURATION_FIELDS:
        return "[" + ", ".join(format_value(field, v) for v in value) + "]"
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "[" + ", ".join(value) + "]"
    if isinstance(value, str):
        return value
    # Nested objects (sources, placement, metadata): sorted JSON is unambiguous and stable.
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _arn_parts(arn: str) -> list[str]:
    return arn.split(":", 5)


def short_arn(arn: str) -> str:
    """`sqs:us-east-1:orders` for a 100-column terminal; the full ARN is in the files."""
    parts = _arn_parts(arn)
    if len(parts) != 6 or parts[0] != "arn":
        return arn
    return f"{parts[2]}:{parts[3]}:{parts[5]}"


def _nats_end(route: Route, *, with_consumer: bool) -> str:
    if with_consumer and route.stream and route.consumer:
        return f"{route.stream}/{route.consumer}"
    if route.subject and route.stream:
        return f"{route.subject} ({route.stream})"
    return route.subject or route.stream or "?"


def route_ends(route: Route, arn: Callable[[str], str] = str) -> tuple[str, str]:
    """Where a bridge route reads and where it writes, in the direction traffic flows."""
    if route.kind in ("sqs-to-nats", "sns-to-nats"):
        return arn(route.aws_arn), _nats_end(route, with_consumer=False)
    if route.kind in ("nats-to-sqs", "nats-to-sns"):
        return _nats_end(route, with_consumer=True), arn(route.aws_arn)
    source = _nats_end(route, with_consumer=True) if route.consumer else (route.stream or "?")
    if route.target_stream:
        target = (
            f"{route.subject} ({route.target_stream})" if route.subject else route.target_stream
        )
    else:
        target = route.subject or "?"
    return source, target


# --------------------------------------------------------------------------------------------
# plan: terminal


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
    for change in changes:
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
    if not verbose and noops:
        parts.append(Text(f"  = {_plural(noops, 'unchanged object')} not listed", style="dim"))
    return Group(*parts)


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
    for route in sorted(plan.routes, key=lambda r: (r.kind, r.name)):
        source, target = route_ends(route, short_arn)
        table.add_row(route.kind, Text(route.name), Text(f"{source} → {target}"))
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


# --------------------------------------------------------------------------------------------
# plan: Markdown for a pull request

# Characters that would start emphasis, links, HTML or end a table cell in GitHub Markdown.
_MD_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*_[]<>|~"})


def _sentence(verdict: str) -> str:
    meaning = VERDICT_MEANING[verdict]
    return f"{meaning[0].upper()}{meaning[1:]}."


def _md_text(value: object) -> str:
    return " ".join(str(value).split()).translate(_MD_SPECIAL)


def _md_code(value: object) -> str:
    """An inline code span that survives backticks and pipes inside the value."""
    text = " ".join(str(value).split()).replace("|", "\\|")
    if not text:
        return ""
    longest = run = 0
    for char in text:
        run = run + 1 if char == "`" else 0
        longest = max(longest, run)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _md_table(header: Iterable[str], rows: Iterable[Iterable[str]]) -> list[str]:
    head = list(header)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def plan_markdown(plan: Plan) -> str:
    """The review document for a pull request (GitHub-flavoured Markdown)."""
    lines = ["# snsq2nats plan", ""]
    provenance = f"Generated {_md_text(plan.generated_at)}"
    if plan.inventory_generated_at:
        provenance += f" from the inventory of {_md_text(plan.inventory_generated_at)}"
    lines += [f"{provenance} (plan format {plan.format_version}).", ""]
    lines += [f"**{_md_text(summary_line(plan))}**", ""]
    if plan.server.reachable:
        lines += [f"Server: {_md_text(server_line(plan))}", ""]
    else:
        lines += [f"> **Warning:** {_md_text(server_line(plan))}", ""]

    lines += ["## Changes", ""]
    changes = sorted_changes(plan)
    if changes:
        rows = [
            [
                _md_code(MARKERS[c.action]),
                c.action,
                c.type,
                _md_code(change_name(c)),
                _md_text(c.reason),
            ]
            for c in changes
        ]
        lines += [*_md_table(["", "action", "type", "name", "reason"], rows), ""]
    else:
        lines += ["Nothing to change.", ""]
    for change in changes:
        loss = loss_line(change)
        if not change.diff and not loss:
            continue
        marker = _md_code(MARKERS[change.action])
        lines += [f"### {marker} {change.action} {change.type} {_md_code(change_name(change))}", ""]
        if loss:
            lines += [f"**{_md_text(loss.capitalize())}.**", ""]
        if change.diff:
            rows = [
                [
                    _md_code(d.field),
                    _md_code(format_value(d.field, d.live)),
                    _md_code(format_value(d.field, d.desired)),
                ]
                for d in change.diff
            ]
            lines += [*_md_table(["field", "live", "desired"], rows), ""]

    lines += ["## Fidelity", "", _md_text(fidelity_line(plan)), ""]
    found = findings(plan)
    for verdict in FINDING_VERDICTS:
        group = [(r, f) for r, f in found if f.verdict == verdict]
        if not group:
            continue
        lines += [f"### {verdict.capitalize()} ({len(group)})", "", _sentence(verdict), ""]
        rows = [
            [
                _md_code(r.name),
                _md_code(f.attribute),
                _md_code(f.value) if f.value is not None else "",
                _md_code(f.target) if f.target else "",
                _md_text(f.note),
            ]
            for r, f in group
        ]
        lines += [*_md_table(["resource", "attribute", "value", "becomes", "note"], rows), ""]

    steps = manual_steps(plan)
    if steps:
        # One box per distinct action (enabling encryption once covers every queue that asked).
        lines += ["### Manual steps", ""]
        for step, where in steps:
            names = ", ".join(f"{_md_code(name)} {_md_code(attr)}" for name, attr in where)
            lines.append(f"- [ ] {_md_text(step)} ({names})")
        lines.append("")

    lines += ["## Resources", ""]
    if plan.resources:
        rows = [
            [
                _md_code(r.source_arn),
                r.kind,
                _md_code(r.stream) if r.stream else "",
                _md_code(r.consumer) if r.consumer else "",
                _md_code(r.publish_subject) if r.publish_subject else "",
                r.worst_verdict,
            ]
            for r in plan.resources
        ]
        header = ["source ARN", "kind", "stream", "consumer", "publish subject", "fidelity"]
        lines += [*_md_table(header, rows), ""]
    else:
        lines += ["No resources.", ""]

    lines += ["## Bridge routes", ""]
    if plan.routes:
        rows = []
        for route in sorted(plan.routes, key=lambda r: (r.kind, r.name)):
            source, target = route_ends(route)
            rows.append([route.kind, _md_code(route.name), _md_code(source), _md_code(target)])
        lines += [*_md_table(["kind", "name", "from", "to"], rows), ""]
    else:
        lines += ["No bridge routes.", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


# --------------------------------------------------------------------------------------------
# plan: self-contained HTML for a browser

_CSS = """
:root { --fg: #1f2328; --muted: #656d76; --line: #d0d7de; --bg: #f6f8fa; }
* { box-sizing: border-box; }
body { font: 14px/1.5 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: var(--fg);
  max-width: 1200px; margin: 0 auto; padding: 24px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 18px; border-bottom: 1px solid var(--line); padding-bottom: 4px; margin-top: 32px; }
h3 { font-size: 15px; margin: 20px 0 6px; }
.muted { color: var(--muted); }
.summary { font-size: 16px; font-weight: 600; margin: 12px 0; }
.server { padding: 8px 12px; border-radius: 6px; background: var(--bg);
  border: 1px solid var(--line); }
.server.down { background: #fff8c5; border-color: #d4a72c; font-weight: 600; }
table { border-collapse: collapse; width: 100%; margin: 6px 0 12px; }
th, td { border: 1px solid var(--line); padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: var(--bg); font-weight: 600; }
code { font: 12px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  overflow-wrap: break-word; }
.badge { display: inline-block; padding: 0 8px; border-radius: 10px; font-size: 12px;
  font-weight: 600; color: #fff; white-space: nowrap; }
.create { background: #1a7f37; } .update { background: #9a6700; }
.replace { background: #bc4c00; } .delete { background: #cf222e; }
.noop { background: #6e7781; }
.unsupported { background: #cf222e; } .emulated { background: #8250df; }
.approximate { background: #9a6700; } .exact { background: #1a7f37; }
ul.diff { margin: 4px 0 0; padding-left: 18px; }
.old { color: #cf222e; } .new { color: #1a7f37; }
.loss { color: #cf222e; font-weight: 600; }
ul.steps { list-style: none; padding-left: 4px; }
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _code(value: object | None) -> str:
    return "" if value is None or value == "" else f"<code>{_e(value)}</code>"


def _badge(kind: str, label: str | None = None) -> str:
    return f'<span class="badge {_e(kind)}">{_e(label or kind)}</span>'


def _html_table(header: Iterable[str], rows: Iterable[Iterable[str]]) -> list[str]:
    """Cells arrive already escaped (they may hold markup such as badges)."""
    out = ["<table>", "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>"]
    out += ["<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows]
    out.append("</table>")
    return out


def _change_detail(change: Change) -> str:
    parts = [_e(change.reason)]
    loss = loss_line(change)
    if loss:
        parts.append(f'<div class="loss">{_e(loss)}</div>')
    if change.diff:
        items = "".join(
            f"<li>{_code(d.field)}: <span class='old'>{_e(format_value(d.field, d.live))}</span>"
            f" → <span class='new'>{_e(format_value(d.field, d.desired))}</span></li>"
            for d in change.diff
        )
        parts.append(f'<ul class="diff">{items}</ul>')
    return "".join(parts)


def plan_html(plan: Plan) -> str:
    """A single self-contained page: inline CSS, no scripts, no external assets."""
    body: list[str] = ["<h1>snsq2nats plan</h1>"]
    provenance = f"Generated {plan.generated_at}"
    if plan.inventory_generated_at:
        provenance += f" from the inventory of {plan.inventory_generated_at}"
    body.append(f'<p class="muted">{_e(provenance)} (plan format {plan.format_version}).</p>')
    server_class = "server" if plan.server.reachable else "server down"
    body.append(f'<p class="{server_class}">{_e(server_line(plan))}</p>')
    body.append(f'<p class="summary">{_e(summary_line(plan))}</p>')

    body.append("<h2>Changes</h2>")
    changes = sorted_changes(plan)
    if changes:
        rows = [
            [
                _badge(c.action, f"{MARKERS[c.action]} {c.action}"),
                _e(c.type),
                _code(change_name(c)),
                _change_detail(c),
            ]
            for c in changes
        ]
        body += _html_table(["action", "type", "name", "reason"], rows)
    else:
        body.append("<p>Nothing to change.</p>")

    body += ["<h2>Fidelity</h2>", f"<p>{_e(fidelity_line(plan))}</p>"]
    found = findings(plan)
    for verdict in FINDING_VERDICTS:
        group = [(r, f) for r, f in found if f.verdict == verdict]
        if not group:
            continue
        body.append(
            f"<h3>{_badge(verdict)} {len(group)} "
            f'<span class="muted">{_e(_sentence(verdict))}</span></h3>'
        )
        rows = [
            [_code(r.name), _code(f.attribute), _code(f.value), _code(f.target), _e(f.note)]
            for r, f in group
        ]
        body += _html_table(["resource", "attribute", "value", "becomes", "note"], rows)

    steps = manual_steps(plan)
    if steps:
        # Checkboxes a reviewer can tick while reading; nothing is stored, no script needed.
        items = "".join(
            f"<li><label><input type='checkbox'> {_e(step)} <span class='muted'>("
            + ", ".join(f"{_code(name)} {_code(attr)}" for name, attr in where)
            + ")</span></label></li>"
            for step, where in steps
        )
        body.append(f'<h3>Manual steps</h3><ul class="steps">{items}</ul>')

    body.append("<h2>Resources</h2>")
    if plan.resources:
        rows = [
            [
                _code(r.source_arn),
                _e(r.kind),
                _code(r.stream),
                _code(r.consumer),
                _code(r.publish_subject),
                _badge(r.worst_verdict),
            ]
            for r in plan.resources
        ]
        header = ["source ARN", "kind", "stream", "consumer", "publish subject", "fidelity"]
        body += _html_table(header, rows)
    else:
        body.append("<p>No resources.</p>")

    body.append("<h2>Bridge routes</h2>")
    if plan.routes:
        rows = []
        for route in sorted(plan.routes, key=lambda r: (r.kind, r.name)):
            source, target = route_ends(route)
            rows.append([_e(route.kind), _code(route.name), _code(source), _code(target)])
        body += _html_table(["kind", "name", "from", "to"], rows)
    else:
        body.append("<p>No bridge routes.</p>")

    head = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e('snsq2nats plan: ' + summary_line(plan))}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
    ]
    return "\n".join([*head, *body, "</body>", "</html>"]) + "\n"


# --------------------------------------------------------------------------------------------
# plan: files

_FORMATS: dict[str, Callable[[Plan], str]] = {
    ".md": plan_markdown,
    ".html": plan_html,
    ".htm": plan_html,
}


def write_report(path: Path, plan: Plan) -> None:
    """`--report FILE.md` or `--report FILE.html`: the format follows the file name."""
    render = _FORMATS.get(path.suffix.lower())
    if render is None:
        raise UsageError(
            f"unknown report format {path.suffix or '(no suffix)'!r}",
            where=str(path),
            hint="name the report FILE.md for Markdown or FILE.html for a browser",
        )
    write_atomic(path, render(plan))
