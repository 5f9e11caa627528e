"""What `snsq2nats cutover` did (or, with --dry-run, would do), and the cutover history."""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from snsq2nats.cutover import CutoverResult
from snsq2nats.cutover.moves import TeamKind, TeamStep
from snsq2nats.plan.states import CutoverRecord

_WHERE = {"nats": "on NATS only", "both": "on NATS and on AWS", "aws": "on AWS only"}


def team_step_text(step: TeamStep) -> str:
    """What the application team does around a move, in words."""
    name = step.name
    match step.kind:
        case TeamKind.FINISHED_ALREADY:
            return f"nothing to do: {name} is finished already"
        case TeamKind.ALREADY_THERE:
            return f"nothing to do: {name}'s {step.side} are already on {step.where}"
        case TeamKind.START_NATS_WORKERS:
            return (
                f"start {name}'s workers on NATS: bind to the durable `{step.durable}` on "
                f"stream `{step.stream}` (pull, ack each message; `snsq2nats subject {name} "
                "--durable` says how many to fetch at once)"
            )
        case TeamKind.WORKERS_NOTE:
            return f"change in the workers — {step.attribute}: {step.note}"
        case TeamKind.AWS_WORKERS_MAY_RUN:
            return (
                "your AWS workers may keep running: each message is taken once, by them or by "
                "the bridge carrying it to NATS"
                + (
                    ", and each message group keeps its order (the bridge deletes a message "
                    "from SQS only once your NATS workers acked it, so SQS holds the group "
                    "meanwhile)"
                    if step.fifo
                    else ""
                )
                + "; stop them when `--wait` reports the SQS queue drained"
            )
        case TeamKind.STOP_NATS_WORKERS_FIRST:
            return (
                f"stop {name}'s NATS workers first: on the way back the bridge does not hold a "
                "message group while an AWS worker processes it, so NATS workers still "
                "running could process a group's next message before an AWS worker has "
                "processed the one before it"
            )
        case TeamKind.START_AWS_WORKERS_AFTER_RELAY:
            return (
                f"start {name}'s workers on AWS again (the SQS queue); `--wait` returns once "
                "the bridge has relayed what the stream held"
            )
        case TeamKind.START_AWS_WORKERS:
            return f"start {name}'s workers on AWS again (the SQS queue)"
        case TeamKind.NATS_WORKERS_MAY_RUN:
            return (
                "your NATS workers may keep running: each message in the stream is taken once, "
                "by them or by the bridge relaying it to SQS; stop them when `--wait` reports "
                "the stream drained"
            )
        case TeamKind.PRODUCERS_MAY_PUBLISH:
            return f"{name}'s producers may now publish {_WHERE[step.where]}"
        case TeamKind.PUBLISH_TO:
            subject = step.subject or "(see `snsq2nats subject`)"
            return (
                f"publish to `{subject}` (`snsq2nats subject {name}` prints the concrete "
                "subject; message attributes go in NATS headers)"
            )
        case TeamKind.PRODUCERS_NOTE:
            return f"change in the producers — {step.attribute}: {step.note}"
        case TeamKind.STOP_PUBLISHING_ON_AWS:
            return "stop publishing to AWS: what still arrives there is relayed"
        case TeamKind.STOP_PUBLISHING_ON_NATS:
            return "stop publishing on NATS: what is still in the stream is relayed"
        case TeamKind.NOTHING_ON_AWS:
            return f"nothing more runs on AWS for {name}"


def cutover_json(result: CutoverResult) -> dict[str, Any]:
    """`cutover --json`: the moves, with what the team does in words, and what happened."""
    return {
        "dry_run": result.dry_run,
        "revision": result.revision,
        "moves": [
            {
                "resource": m.resource.name,
                "arn": m.resource.source_arn,
                "kind": m.kind,
                "side": m.side,
                "changed": m.changed,
                "before": m.before.model_dump(),
                "after": m.after.model_dump(),
                "start": [r.name for r in m.starts],
                "stop": [r.name for r in m.stops],
                "steps": [team_step_text(s) for s in m.steps],
                "unused_aws": m.unused,
            }
            for m in result.moves
        ],
        "confirmed_by": result.confirmed,
        "no_bridge": result.no_bridge,
        "seconds_to_confirm": result.seconds_to_confirm,
        "pending": result.no_bridge,
        "drained": [d.__dict__ for d in result.drained],
        "deleted_aws": result.deleted,
        "kept_aws": result.kept,
        "switched_to_sources": {k: v.to_json() for k, v in result.switched.items()},
    }


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
            "\n".join(f"{i}. {team_step_text(step)}" for i, step in enumerate(move.steps, 1)),
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
