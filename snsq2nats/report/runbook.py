"""The migration runbook for people: GitHub-flavoured Markdown to review, a table for a terminal."""

from __future__ import annotations

from rich.table import Table

from snsq2nats.cutover.runbook import Runbook, Step
from snsq2nats.report.markdown import _MD_SPECIAL, _md_code, _md_text

_BOX = {"done": "[x]", "todo": "[ ]", "blocked": "[ ]"}
_STATUS = {"done": "done", "todo": "to do", "blocked": "blocked"}


def _md_prose(text: str) -> str:
    """Generated sentences keep their `code` spans; everything between them is escaped."""
    parts = text.split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick: nothing is code
        return _md_text(text)
    return "".join(
        " ".join(part.split("\n")).translate(_MD_SPECIAL) if i % 2 == 0 else _md_code(part)
        for i, part in enumerate(parts)
    )


def summary_line(book: Runbook) -> str:
    counts = book.counts()
    total = sum(counts.values())
    line = f"{counts['done']} of {total} steps done"
    if counts["blocked"]:
        line += f", {counts['blocked']} blocked"
    return f"{line} (progress from {book.progress_source})"


def _heading(step: Step) -> str:
    name = _md_code(step.resource)
    if step.action == "finish":
        title = f"finish {name}"
    else:
        title = f"{name}: {_md_text(step.title.rsplit(': ', 1)[1])}"
    role = f" ({_md_text(step.role)})" if step.role else ""
    return f"{step.number}. {title}{role}"


def runbook_markdown(book: Runbook) -> str:
    lines = ["# snsq2nats runbook", ""]
    lines += [
        f"From the plan generated {_md_text(book.plan_generated_at)}. "
        f"**{_md_text(summary_line(book))}.**",
        "",
    ]
    for note in book.notes:
        lines += [f"> **Note:** {_md_prose(note)}", ""]
    lines += [
        "Run each command with the options you give `snsq2nats plan` (or `--plan plan.json`) "
        "and your NATS and AWS options. A step's gate must hold before you run it; moves "
        "of different queues are independent, and any move can be undone with `--to aws` "
        "(`snsq2nats cutover history NAME` shows who moved what, when). `snsq2nats status` "
        "reports the routes of the plan it is given: make the plan again after a move "
        "(`snsq2nats plan` reads the live cutover state) to see the routes the move started.",
        "",
        "## Overview",
        "",
    ]
    for group in book.groups:
        lines.append(f"- {_md_text(group.title.capitalize())}")
        for step in group.steps:
            what = (
                _md_code(step.command)
                if step.command
                else f"blocked: {_md_prose(step.blocked or '')}"
            )
            lines.append(f"  - {_BOX[step.status]} {_heading(step)} — {what}")
    lines.append("")
    for group in book.groups:
        lines += [f"## {_md_text(group.title.capitalize())}", ""]
        if group.queues:
            names = ", ".join(_md_code(q) for q in group.queues)
            lines += [f"Queues: {names}.", ""]
        for step in group.steps:
            lines += [f"### {_heading(step)} ({_STATUS[step.status]})", ""]
            if step.command:
                lines += ["```sh", step.command, "```", ""]
            else:
                lines += [f"**Blocked:** {_md_prose(step.blocked or '')}.", ""]
            lines += [f"**Gate:** {_md_prose(step.gate)}.", ""]
            if step.changes:
                lines += ["**The team:**", ""]
                lines += [f"- {_md_prose(change)}" for change in step.changes]
                lines.append("")
            for caveat in step.caveats:
                lines += [f"> **Caveat:** {_md_prose(caveat)}", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def runbook_table(book: Runbook) -> Table:
    """The steps at a glance; gates and what each team changes are in the Markdown (`-o`)."""
    caption = summary_line(book) + "; gates and team changes: `snsq2nats runbook -o runbook.md`"
    table = Table(title="Runbook", title_justify="left", caption=caption)
    for column in ("#", "status", "step", "command"):
        table.add_column(column, overflow="fold")
    for group in book.groups:
        for step in group.steps:
            table.add_row(
                str(step.number),
                _STATUS[step.status],
                step.title + (f" ({step.role})" if step.role else ""),
                step.command or f"blocked: {step.blocked}",
            )
    return table
