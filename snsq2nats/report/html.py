"""The plan as one self-contained HTML page for a browser: inline CSS, no scripts."""

from __future__ import annotations

import html
from collections.abc import Iterable

from snsq2nats.plan.model import Change, Plan
from snsq2nats.report.facts import (
    FINDING_VERDICTS,
    MARKERS,
    change_name,
    fidelity_line,
    findings,
    loss_line,
    manual_steps,
    server_line,
    sorted_changes,
    summary_line,
    verdict_sentence,
)
from snsq2nats.report.format import format_value, route_ends
from snsq2nats.report.picture import estate_svg

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
.picture { overflow-x: auto; border: 1px solid var(--line); border-radius: 6px; padding: 8px; }
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

    body += ["<h2>Estate</h2>", f'<div class="picture">{estate_svg(plan)}</div>']

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
            f'<span class="muted">{_e(verdict_sentence(verdict))}</span></h3>'
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
