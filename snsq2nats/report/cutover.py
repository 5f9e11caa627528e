"""What `snsq2nats cutover` did (or, with --dry-run, would do), and the cutover history."""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from snsq2nats.aws.arns import parse_arn
from snsq2nats.cutover import CutoverResult
from snsq2nats.cutover.moves import GATEWAY_KINDS, Move, TeamKind, TeamStep
from snsq2nats.gateway.keys import KEYS_FILE
from snsq2nats.plan.model import Plan
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
        case TeamKind.GATEWAY_WORKERS:
            return _gateway_workers(step)
        case TeamKind.GATEWAY_PRODUCERS:
            return _gateway_producers(step)
        case TeamKind.GATEWAY_WORKERS_BACK:
            return (
                "workers reading through the gateway are NATS workers: point them back at SQS "
                f"with the NATS workers (unset `{step.env}`, give them their AWS keys again)"
                + (", stopping them first as well" if step.fifo else "")
            )
        case TeamKind.GATEWAY_PRODUCERS_BACK:
            return (
                "producers sending through the gateway publish on NATS: point them back at AWS "
                f"with the NATS producers (unset `{step.env}`, give them their AWS keys again)"
            )


def _endpoint(step: TeamStep, who: str) -> str:
    return (
        f"or move the {who} without changing their code: set `{step.env}` (or the SDK's "
        "endpoint setting) to the gateway's URL (`snsq2nats gateway`) and give them the access "
        f"key of `{step.identity}` from `{KEYS_FILE}` (`snsq2nats auth` writes it)"
    )


def _gateway_workers(step: TeamStep) -> str:
    durables = list(step.durables) or [step.durable]
    reads = (
        f"the durable `{durables[0]}`"
        if len(durables) == 1
        else "the partition durables " + ", ".join(f"`{d}`" for d in durables)
    )
    text = (
        _endpoint(step, "workers")
        + f"; through the gateway they read {reads} as NATS workers do, so workers still on "
        "SQS and workers on the gateway share the queue's messages, each message once (the "
        "bridge relays SQS → NATS). "
    )
    if step.before == "nats":
        text += "Safe already: the queue's consumers are on NATS"
    else:
        text += (
            "Safe once the bridges confirm this move, not before: until the queue's consumers "
            "move, its messages wait in SQS for the AWS workers, and what reaches its stream "
            "the bridge relays to SQS through that same durable, so a worker on the gateway "
            "would get none of the first and race the relay for the second"
        )
    if step.fifo:
        text += (
            ". FIFO: each message group keeps its order across the mixed fleet: the bridge "
            "deletes a message from SQS only once a NATS worker acked it (a gateway worker acks "
            "with DeleteMessage), so SQS holds the group meanwhile, and through the gateway "
            "each durable has one message in flight, so a group's next message comes only "
            "after the one before it is deleted"
        )
    return text


def _gateway_producers(step: TeamStep) -> str:
    topic = step.env.endswith("SNS")
    who = "publishers" if topic else "producers"
    subject = step.subject or "(see `snsq2nats subject`)"
    text = (
        _endpoint(step, who)
        + f"; what they send through it is published to `{subject}` as a NATS producer "
        "publishes it"
    )
    if topic:
        text += (
            " and reaches every subscriber once, on either side; producers on SNS and on the "
            "gateway may run side by side. "
        )
    else:
        relay = (
            ", and the bridge relays it to SQS while the queue's consumers are on AWS"
            if step.consumers == "aws"
            else ""
        )
        text += relay + ". "
    if step.before in ("nats", "both"):
        text += f"Safe already: the {who} publish on NATS since an earlier move"
    elif topic:
        text += (
            "Safe once the bridges confirm this move, not before: until the topic's producers "
            "move, the bridge carries nothing published on NATS to the topic's subscribers on "
            "AWS"
        )
    else:
        text += (
            "Safe once the bridges confirm this move, not before: until the queue's producers "
            "move, the bridge does not count the queue as fed on NATS, so while its consumers "
            "are on AWS nothing would carry what the gateway sends to SQS"
        )
    if step.fifo and topic:
        text += (
            ". FIFO: publishers on SNS and on the gateway keep no one order between them, so "
            "no mixed fleet for a message group: move a group's publishers together"
        )
    elif step.fifo:
        text += (
            ". FIFO: a message group keeps its order only if it is sent on one side at a time: "
            "no mixed fleet for a group — the SQS producers stop first, and the producers send "
            "through the gateway once `--wait` returned; the gateway keeps MessageGroupId and "
            "deduplication (MessageDeduplicationId or content-based, 5 minutes) as SQS does"
        )
    return text


def gateway_json(step: TeamStep) -> dict[str, Any]:
    """A move's gateway option as data: what changes in the application, and in words."""
    return {
        "kind": step.kind.value,
        "env": step.env,
        "identity": step.identity or None,
        "keys_file": KEYS_FILE if step.identity else None,
        "text": team_step_text(step),
    }


def gateway_step(steps: list[TeamStep]) -> TeamStep | None:
    """The move's team step about applications that change only their endpoint, if any."""
    return next((s for s in steps if s.kind in GATEWAY_KINDS), None)


def plan_accounts(plan: Plan) -> list[str]:
    """The AWS accounts of the plan's queues and topics."""
    return sorted(
        {
            parse_arn(r.source_arn).account
            for r in plan.resources
            if r.kind in ("sqs-queue", "sns-topic") and r.source_arn.startswith("arn:")
        }
    )


def _move_account(move: Move) -> str:
    return parse_arn(move.resource.source_arn).account


def _several_accounts(result: CutoverResult, accounts: bool | None) -> bool:
    """Name the accounts when the caller says the estate spans several (`plan_accounts`), or,
    when it does not say, when the moves themselves do; a one-account estate reads as always."""
    if accounts is not None:
        return accounts
    return len({_move_account(m) for m in result.moves}) > 1


def cutover_json(result: CutoverResult, *, accounts: bool | None = None) -> dict[str, Any]:
    """`cutover --json`: the moves, with what the team does in words, and what happened.
    `accounts`: whether each move says its AWS account (see `_several_accounts`)."""
    several = _several_accounts(result, accounts)
    return {
        "dry_run": result.dry_run,
        "revision": result.revision,
        "moves": [
            {
                "resource": m.resource.name,
                "arn": m.resource.source_arn,
                **({"account": _move_account(m)} if several else {}),
                "kind": m.kind,
                "side": m.side,
                "changed": m.changed,
                "before": m.before.model_dump(),
                "after": m.after.model_dump(),
                "start": [r.name for r in m.starts],
                "stop": [r.name for r in m.stops],
                "steps": [team_step_text(s) for s in m.steps],
                "unused_aws": m.unused,
                "gateway": _gateway_or_none(m.steps),
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


def _gateway_or_none(steps: list[TeamStep]) -> dict[str, Any] | None:
    step = gateway_step(steps)
    return None if step is None else gateway_json(step)


def _sides(state: object) -> str:
    producers = getattr(state, "producers", "?")
    consumers = getattr(state, "consumers", "?")
    finished = " (finished)" if getattr(state, "finished", False) else ""
    return f"producers {producers} · consumers {consumers}{finished}"


def cutover_report(result: CutoverResult, *, accounts: bool | None = None) -> Group:
    parts: list[object] = []
    table = Table(
        title="Cutover (dry run: nothing recorded)" if result.dry_run else "Cutover",
        title_justify="left",
    )
    several = _several_accounts(result, accounts)
    if several:
        # An account ID is looked up by eye: never folded.
        table.add_column("AWS account", min_width=12, no_wrap=True)
    for column in ("resource", "move", "bridge relays", "then"):
        table.add_column(column, overflow="fold")
    # Each account's moves together; the order within an account kept.
    moves = sorted(result.moves, key=_move_account) if several else result.moves
    for move in moves:
        relays = [f"start {r.name}" for r in move.starts] + [f"stop {r.name}" for r in move.stops]
        table.add_row(
            *([_move_account(move)] if several else []),
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
            recorded = (
                f"{cut.recorded} recorded as sent to SNS, the others"
                if cut.ledger
                else "no ledger of what SNS accepted, so every one"
            )
            line += (
                f" ({len(cut.in_doubt)} in between, handed to SNS without all being "
                f"acknowledged: {recorded} copied under their SNS ids ({cut.copied} copies), "
                "one of each kept)"
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
