"""The migration runbook for people: GitHub-flavoured Markdown to review, a table for a terminal."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

from rich.table import Table

from snsq2nats.aws.arns import parse_arn
from snsq2nats.cutover.moves import blocker_text
from snsq2nats.cutover.runbook import (
    RUNBOOK_FORMAT,
    Caveat,
    CaveatKind,
    Change,
    ChangeKind,
    Gate,
    GateKind,
    Runbook,
    Step,
)
from snsq2nats.report.cutover import gateway_json, team_step_text
from snsq2nats.report.markdown import _MD_SPECIAL, _md_code, _md_text

_BOX = {"done": "[x]", "todo": "[ ]", "blocked": "[ ]"}
_STATUS = {"done": "done", "todo": "to do", "blocked": "blocked"}


# --- the runbook's steps in words --------------------------------------------------------------


def step_account(step: Step) -> str:
    """The AWS account of the step's queue or topic."""
    return parse_arn(step.arn).account


def several_accounts(book: Runbook) -> bool:
    """Whether the runbook's steps span AWS accounts: only then does it name them, so a
    one-account runbook reads as it always did."""
    return len({step_account(s) for s in book.steps}) > 1


def _done(numbers: list[int]) -> str:
    """`step 3 is done` / `steps 3, 4 and 7 are done`."""
    numbers = sorted(set(numbers))
    if len(numbers) == 1:
        return f"step {numbers[0]} is done"
    listed = ", ".join(str(n) for n in numbers[:-1]) + f" and {numbers[-1]}"
    return f"steps {listed} are done"


def gate_text(gate: Gate) -> str:
    name = gate.name
    match gate.kind:
        case GateKind.APPLIED:
            return (
                "the plan is applied (`snsq2nats apply`), a bridge runs, and "
                f"{name}'s new workers are deployed, ready to bind"
            )
        case GateKind.SOURCE_CONSUMERS:
            return f"{_done(gate.steps)} ({name}'s consumers)"
        case GateKind.NO_QUEUE_ON_NATS:
            return "none: no queue of it reads on NATS, so this only starts the bridge's relays"
        case GateKind.TOPIC_QUEUES_ON_NATS:
            return f"{_done(gate.steps)} (every queue of {name} reads on NATS; `--wait` returned)"
        case GateKind.QUEUE_ON_NATS:
            return f"{_done(gate.steps)} ({name} reads on NATS; `--wait` returned)"
        case GateKind.TOPIC_PUBLISHES_ON_NATS:
            return f"{_done(gate.steps)} and every producer of {name} publishes on NATS"
        case GateKind.DLQ_REDRIVE_ON_NATS:
            return (
                f"{_done(gate.steps)}: the dead-letter queue's only producer is the redrive of "
                f"{name}, which runs on NATS now"
            )
        case GateKind.TOPICS_PUBLISH_ON_NATS:
            return f"{_done(gate.steps)} (its topics publish on NATS)"
        case GateKind.QUEUE_QUIET:
            publishers = (
                "its own producers and its topics' producers are"
                if gate.fed_by_topics
                else "its producers are"
            )
            text = (
                f"nothing publishes to the SQS queue {name} any more ({publishers} on NATS)"
                + (
                    f"; `snsq2nats status --route {gate.route}` shows it drained"
                    if gate.route
                    else ""
                )
                + " (`--wait` waits for the SQS queue to empty)"
            )
            return f"{_done(gate.steps)}; {text}" if gate.steps else text
        case GateKind.TOPIC_QUIET:
            return (f"{_done(gate.steps)}; " if gate.steps else "") + (
                f"`snsq2nats status --route {gate.route}` shows the relay drained"
                if gate.route
                else "nothing publishes to it on AWS any more"
            )


def change_text(change: Change) -> str:
    name = change.name
    match change.kind:
        case ChangeKind.NO_STREAM:
            return "the queue has no stream in the plan: see its fidelity notes"
        case ChangeKind.BIND:
            return (
                f"bind the workers to the durable `{change.items[0]}` on stream `{change.other}` "
                "(pull, ack each message after processing it)"
            )
        case ChangeKind.BIND_PARTITIONS:
            return (
                f"bind the workers to every partition durable on stream `{change.other}`: "
                + ", ".join(f"`{d}`" for d in change.items)
                + f" (pull, ack each message; `snsq2nats subject {shlex.quote(name)} "
                "--durable` lists them)"
            )
        case ChangeKind.PLAN_NOTE:
            where = f" ({change.other})" if change.other else ""
            return f"from the plan's notes — {change.attribute}{where}: {change.note}"
        case ChangeKind.KEEP_AWS_WORKERS:
            return (
                f"your AWS workers of {name} may keep running through the move: each message is "
                "taken once, by them or by the bridge carrying it to NATS; stop them when "
                "`--wait` reports the SQS queue drained"
            )
        case ChangeKind.PUBLISH:
            subject = change.other or "(none: see its fidelity notes)"
            return (
                f"publish to `{subject}` (`snsq2nats subject {shlex.quote(name)}` prints the "
                "concrete subject"
                + (
                    ", filling " + ", ".join(f"`--attr {t}=…`" for t in change.items)
                    if change.items
                    else ""
                )
                + ")"
            )
        case ChangeKind.HEADERS:
            return (
                "set each message attribute as a NATS header of the same name, its value as "
                "text: a String, or a Number where a filter policy of the topic compares it as "
                "one and it parses as one (`snsq2nats subject` prints the rule)"
            )
        case ChangeKind.GROUP_TOKEN:
            return (
                "the MessageGroupId is the last subject token (`--attr MessageGroupId=G` fills it)"
            )
        case ChangeKind.ROLL_OUT:
            return (
                "roll the new producers out at your pace: messages published on either side "
                "reach every subscriber once"
            )
        case ChangeKind.STOP_TOPIC_ON_AWS:
            return (
                f"stop publishing {name} on AWS: what still reaches SNS is relayed to NATS "
                "until the topic is finished"
            )
        case ChangeKind.STOP_QUEUE_DIRECT:
            return (
                f"stop publishing to the SQS queue {name} directly, if anything does (when only "
                "its topics feed it there is nothing to change: this records that nothing else "
                "does); what still arrives there is relayed until the queue is finished"
            )
        case ChangeKind.STOP_QUEUE:
            return (
                f"stop publishing to the SQS queue {name}: what still arrives there is relayed "
                "until the queue is finished"
            )
        case ChangeKind.DLQ_MOVER_FILLS:
            return (
                "nothing to change: the bridge's DLQ mover fills the stream of "
                f"{name} when {change.other}'s NATS workers give a message up"
            )
        case ChangeKind.QUEUE_RETIRED:
            return f"nothing more runs on AWS for {name}: its SQS queue gets nothing new"
        case ChangeKind.RELAY_STOPS:
            return "the bridge stops relaying it once it is empty"
        case ChangeKind.TOPIC_RETIRED:
            return (
                f"nothing more runs on AWS for {name}: the bridge removes its own queue and "
                "subscription"
            )
        case ChangeKind.UNUSED_AWS:
            return (
                "AWS resources nothing uses any more (kept unless you add `--delete-aws`, which "
                "deletes exactly these): " + ", ".join(change.items)
            )
        case ChangeKind.UNBLOCK:
            step = f"{change.other}: {change.note}" if change.other else change.note
            return f"before it can be: {step}"


def caveat_text(caveat: Caveat) -> str:
    match caveat.kind:
        case CaveatKind.FIFO_PRODUCERS:
            return (
                "FIFO: the AWS producers must be stopped first; start the NATS producers only "
                "once `--wait` returned (the SQS queue drained into the stream). A group's "
                "messages still in SQS are relayed after whatever NATS producers publish "
                "meanwhile, so publishing on NATS before the drain breaks the group's order"
            )
        case CaveatKind.FIFO_CONSUMERS:
            return (
                "FIFO: per-group order holds across the handover whatever the AWS workers do: "
                "the bridge takes the SQS queue's messages as one more competing consumer and "
                "deletes each from SQS only once the NATS workers acknowledged it, so SQS hands "
                "a group's next message to nobody (AWS worker or bridge) before the one before "
                "it is processed. Moving back to AWS, stop the NATS workers first. On NATS a "
                "group's order is what the plan's `FifoQueue` note says (the durable's "
                "max_ack_pending): workers fetch one message at a time with a short wait "
                "(`snsq2nats subject QUEUE --durable`)"
            )
        case CaveatKind.PARTITIONED:
            return (
                f"partitioned into {caveat.count}: a group's messages go to one partition "
                "durable, so every partition durable needs a worker (copies sourced from topics "
                "go to partition 0)"
            )


@dataclass(frozen=True)
class WordedStep:
    """A step's data in words, as `runbook --json` and the Markdown give them."""

    gate: str
    changes: list[str]
    caveats: list[str]
    role: str | None
    blocked: str | None
    gateway: str | None = None
    """The third way: the application changes only its endpoint (the words `cutover` prints)."""


def worded(step: Step) -> WordedStep:
    return WordedStep(
        gate=gate_text(step.gate),
        changes=[change_text(c) for c in step.changes],
        caveats=[caveat_text(c) for c in step.caveats],
        role=f"dead-letter queue of {step.dead_letter_of}" if step.dead_letter_of else None,
        blocked="; ".join(blocker_text(b) for b in step.blocked) if step.blocked else None,
        gateway=team_step_text(step.gateway.step) if step.gateway else None,
    )


def _gateway_ready(step: Step) -> str:
    """Whether the live state allows the third way yet, in a few words."""
    option = step.gateway
    if option is None:
        return ""
    if option.ready:
        return "ready now"
    if option.since != step.number:
        return f"once step {option.since} is done"
    return "once this move is made"


def runbook_json(book: Runbook) -> dict[str, Any]:
    """`runbook --json`: the steps with their words (`format_version` says the shape)."""

    accounts = several_accounts(book)

    def step_json(step: Step) -> dict[str, Any]:
        words = worded(step)
        account = {"account": step_account(step)} if accounts else {}
        return {
            "number": step.number,
            "resource": step.resource,
            "arn": step.arn,
            **account,
            "kind": step.kind,
            "action": step.action,
            "to": step.to,
            "command": step.command,
            "gate": words.gate,
            "changes": words.changes,
            "caveats": words.caveats,
            "role": words.role,
            "blocked": words.blocked,
            "status": step.status,
            "gateway": None
            if step.gateway is None
            else {
                **gateway_json(step.gateway.step),
                "safe_from_step": step.gateway.since,
                "ready": step.gateway.ready,
            },
        }

    return {
        "format_version": RUNBOOK_FORMAT,
        "plan_generated_at": book.plan_generated_at,
        "progress_source": book.progress_source,
        "notes": list(book.notes),
        "counts": book.counts(),
        "groups": [
            {
                "title": g.title,
                "topics": g.topics,
                "queues": g.queues,
                "steps": [step_json(s) for s in g.steps],
            }
            for g in book.groups
        ],
    }


# --- Markdown and the terminal --------------------------------------------------------------------


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


def _heading(step: Step, accounts: bool = False) -> str:
    name = _md_code(step.resource)
    if accounts:
        name += f" in account {_md_code(step_account(step))}"
    if step.action == "finish":
        title = f"finish {name}"
    else:
        title = f"{name}: {_md_text(step.title.rsplit(': ', 1)[1])}"
    role = worded(step).role
    return f"{step.number}. {title}" + (f" ({_md_text(role)})" if role else "")


def _accounts_section(book: Runbook) -> list[str]:
    """Each AWS account's steps: the teams of one account find theirs at a glance."""
    by_account: dict[str, list[Step]] = {}
    for step in book.steps:
        by_account.setdefault(step_account(step), []).append(step)
    lines = ["## By AWS account", ""]
    for account, steps in sorted(by_account.items()):
        done = sum(s.status == "done" for s in steps)
        numbers = ", ".join(str(s.number) for s in steps)
        lines.append(f"- {_md_code(account)}: steps {numbers} ({done} of {len(steps)} done)")
    return [*lines, ""]


def runbook_markdown(book: Runbook) -> str:
    accounts = several_accounts(book)
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
                else f"blocked: {_md_prose(worded(step).blocked or '')}"
            )
            lines.append(f"  - {_BOX[step.status]} {_heading(step, accounts)} — {what}")
    lines.append("")
    if accounts:
        lines += _accounts_section(book)
    for group in book.groups:
        lines += [f"## {_md_text(group.title.capitalize())}", ""]
        if group.queues:
            names = ", ".join(_md_code(q) for q in group.queues)
            lines += [f"Queues: {names}.", ""]
        for step in group.steps:
            words = worded(step)
            lines += [f"### {_heading(step, accounts)} ({_STATUS[step.status]})", ""]
            if step.command:
                lines += ["```sh", step.command, "```", ""]
            else:
                lines += [f"**Blocked:** {_md_prose(words.blocked or '')}.", ""]
            lines += [f"**Gate:** {_md_prose(words.gate)}.", ""]
            if words.changes:
                lines += ["**The team:**", ""]
                lines += [f"- {_md_prose(change)}" for change in words.changes]
                lines.append("")
            if words.gateway:
                lines += [
                    f"**Or change the endpoint, no code change ({_gateway_ready(step)}):**",
                    "",
                    f"- {_md_prose(words.gateway)}",
                    "",
                ]
            for caveat in words.caveats:
                lines += [f"> **Caveat:** {_md_prose(caveat)}", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def runbook_table(book: Runbook) -> Table:
    """The steps at a glance; gates and what each team changes are in the Markdown (`-o`)."""
    caption = summary_line(book) + "; gates and team changes: `snsq2nats runbook -o runbook.md`"
    table = Table(title="Runbook", title_justify="left", caption=caption)
    accounts = several_accounts(book)
    table.add_column("#", overflow="fold")
    if accounts:
        # An account ID is looked up by eye: never folded.
        table.add_column("AWS account", min_width=12, no_wrap=True)
    for column in ("status", "step", "command", "or change the endpoint"):
        table.add_column(column, overflow="fold")
    for group in book.groups:
        for step in group.steps:
            words = worded(step)
            table.add_row(
                str(step.number),
                *([step_account(step)] if accounts else []),
                _STATUS[step.status],
                step.title + (f" ({words.role})" if words.role else ""),
                step.command or f"blocked: {words.blocked}",
                _gateway_cell(step),
            )
    return table


def _gateway_cell(step: Step) -> str:
    if step.gateway is None:
        return ""
    option = step.gateway.step
    if not option.identity:
        # Moving back: the application leaves the gateway with the other NATS ones.
        return f"back: unset {option.env}"
    return f"{option.env}, key of {option.identity}: {_gateway_ready(step)}"
