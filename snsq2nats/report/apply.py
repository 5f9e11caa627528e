"""What `apply` did, object by object, and the one line that sums it up."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from snsq2nats.apply import ALREADY_DONE, ApplyResult
from snsq2nats.plan.model import Change
from snsq2nats.report.facts import change_name

_RESULT_STYLES: dict[str, str] = {"done": "green", "failed": "bold red", "skipped": "yellow"}
# A 1,000-object apply should not print 1,000 "done" rows; failures and skips are always shown.
MAX_DONE_ROWS = 60


def _label(change: Change) -> str:
    return f"{change.type} {change_name(change)}"


def outcome_table(result: ApplyResult) -> Table:
    """What apply did, object by object: the table printed at the end of a run."""
    table = Table(title="Applied", title_justify="left", title_style="bold underline")
    table.add_column("object", overflow="fold", ratio=3)
    table.add_column("action", no_wrap=True)
    table.add_column("result", overflow="fold", ratio=4)
    table.add_column("time", justify="right", no_wrap=True)
    done_rows = 0
    hidden = 0
    for outcome in result.outcomes:
        if outcome.status == "done":
            done_rows += 1
            if done_rows > MAX_DONE_ROWS:
                hidden += 1
                continue
        status: str = outcome.status
        if status == "skipped" and outcome.detail != ALREADY_DONE:
            status = "not done"
        text = Text(status, style=_RESULT_STYLES[outcome.status])
        if outcome.detail:
            text.append(f": {outcome.detail}", style="")
        seconds = f"{outcome.seconds:.2f}s" if outcome.status != "skipped" else ""
        table.add_row(Text(_label(outcome.change)), outcome.change.action, text, seconds)
    if hidden:
        table.add_row(Text(f"… and {hidden} more done"), "", "", "")
    return table


def result_line(result: ApplyResult) -> str:
    """One line: how much was done, what failed, what is left."""
    by_action: dict[str, int] = {}
    for outcome in result.done:
        by_action[outcome.change.action] = by_action.get(outcome.change.action, 0) + 1
    verbs = {"create": "created", "update": "updated", "replace": "replaced", "delete": "deleted"}
    parts = [f"{by_action[a]} {verbs[a]}" for a in verbs if by_action.get(a)]
    already = len(result.skipped) - len(result.not_done)
    if already:
        parts.append(f"{already} already as planned")
    summary = ", ".join(parts) or "nothing applied"
    if result.ok:
        return f"Apply complete: {summary} in {result.seconds:.1f}s."
    return (
        f"Apply stopped: {summary}; {len(result.failed)} failed, {len(result.not_done)} not done."
    )


def handover_lines(result: ApplyResult) -> list[str]:
    """Per topic whose fan-out this run moved from SNS to sources: where SNS's share ended and
    what was copied; a warning when there was no ledger of what SNS accepted."""
    lines = []
    for stream, cut in sorted(result.handovers.items()):
        line = (
            f"{stream}: NATS-published messages up to sequence {cut.acked} went through SNS; "
            f"from {cut.source_start} on its queues' streams source it"
        )
        if cut.in_doubt and cut.ledger:
            line += (
                f" ({len(cut.in_doubt)} in between, handed to SNS without all being "
                f"acknowledged: {cut.recorded} recorded as sent to SNS, {cut.copied} copies of "
                "the others written under their SNS ids)"
            )
        elif cut.in_doubt:
            line += (
                f". Warning: no ledger of what SNS accepted (a bridge or applied plan older "
                f"than it): all {len(cut.in_doubt)} messages handed to SNS without all being "
                f"acknowledged were copied ({cut.copied} copies); a queue whose consumers are "
                "still on AWS may get those SNS took twice"
            )
        lines.append(line)
    return lines
