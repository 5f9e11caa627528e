"""What `snsq2nats cutover` did (or, with --dry-run, would do), and the cutover history."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text

from snsq2nats.cutover import CutoverResult
from snsq2nats.plan.states import CutoverRecord


def _sides(state: object) -> str:
    producers = getattr(state, "producers", "?")
    consumers = getattr(state, "consumers", "?")
    finished = " (finished)" if getattr(state, "finished", False) else ""
    return f"producers {producers} · consumers {consumers}{finished}"


def cutover_report(result: CutoverResult) -> Group:
    parts: list[object] = []
    table = Table(
        title="Cutover (dry run: nothing recorded)" if result.dry_run else "Cutover",
        title_justify="left",
    )
    for column in ("resource", "move", "bridge relays", "then"):
        table.add_column(column, overflow="fold")
    for move in result.moves:
        relays = [f"start {r.name}" for r in move.starts] + [f"stop {r.name}" for r in move.stops]
        table.add_row(
            move.resource.name,
            move.describe() if move.changed else "no change",
            "\n".join(relays) or "none",
            "\n".join(f"{i}. {step}" for i, step in enumerate(move.steps, 1)),
        )
    parts.append(table)
    if any(m.unused for m in result.moves):
        unused = sorted({arn for m in result.moves for arn in m.unused})
        deleted = set(result.deleted)
        parts.append(
            Text(
                "AWS resources nothing uses any more:\n"
                + "\n".join(f"  {arn}{' (deleted)' if arn in deleted else ''}" for arn in unused)
                + ("" if deleted else "\n  (kept: pass --delete-aws to delete exactly these)")
            )
        )
    parts.append(Text(outcome_line(result)))
    return Group(*parts)  # type: ignore[arg-type]


def outcome_line(result: CutoverResult) -> str:
    if result.dry_run:
        return "dry run: run the same command without --dry-run to make the move"
    if result.revision is None:
        line = "no change: every resource is already where you asked"
    elif not result.confirmed:
        return (
            f"recorded at state revision {result.revision}, and PENDING: no bridge is running, "
            "so nothing has switched yet — keep the old side running (workers and producers); "
            "the move takes effect when a bridge starts (`snsq2nats bridge`)"
        )
    else:
        line = (
            f"recorded at state revision {result.revision}; confirmed by "
            f"{len(result.confirmed)} bridge(s) in {result.seconds_to_confirm:.1f}s"
        )
    for drained in result.drained:
        if drained.seconds is None:
            line += (
                f"\n{drained.where} is still fed ({'; '.join(drained.fed)}): not waited for; "
                "the bridge relays what arrives"
            )
        else:
            line += f"\n{drained.where} drained after {drained.seconds:.1f}s"
    for topic, cut in result.switched.items():
        line += (
            f"\n{topic}: NATS-published messages up to sequence {cut.acked} went through SNS; "
            f"from {cut.source_start} on its queues' streams source it"
        )
        if cut.in_doubt:
            line += (
                f" ({len(cut.in_doubt)} in between, handed to SNS without all being "
                f"acknowledged: {cut.copied} copied under their SNS ids, one of each kept)"
            )
    for kept in result.kept:
        line += f"\nkept {kept}"
    return line


def history_table(name: str, records: list[CutoverRecord]) -> Table:
    table = Table(title=f"Cutover history of {name}", title_justify="left")
    for column in ("revision", "when", "who", "from", "to", "command"):
        table.add_column(column, overflow="fold")
    for record in records:
        change = record.change
        table.add_row(
            str(record.revision),
            change.at if change else "",
            change.by if change else "",
            _sides(change.previous) if change else "",
            _sides(record.state),
            change.command if change else "",
        )
    if not records:
        table.caption = "never moved: where the plan's mapping puts it"
    return table


def cutover_state_table(records: list[CutoverRecord]) -> Table:
    """The resources `snsq2nats cutover` moved: where they are now, and the last change."""
    table = Table(title="Cutover state", title_justify="left")
    for column in ("resource", "now", "last change", "by", "revision"):
        table.add_column(column, overflow="fold")
    for record in records:
        change = record.change
        table.add_row(
            record.name,
            _sides(record.state),
            f"{change.at} · {change.command}" if change else "",
            change.by if change else "",
            str(record.revision),
        )
    table.caption = "`snsq2nats cutover history NAME` lists every change"
    return table
