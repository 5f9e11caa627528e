"""The plan as GitHub-flavoured Markdown, for a pull request."""

from __future__ import annotations

from collections.abc import Iterable

from snsq2nats.plan.model import Plan
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

# Characters that would start emphasis, links, HTML or end a table cell in GitHub Markdown.
_MD_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*_[]<>|~"})


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
        lines += [f"### {verdict.capitalize()} ({len(group)})", "", verdict_sentence(verdict), ""]
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
