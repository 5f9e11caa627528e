"""cutover and runbook: moving consumers and producers between AWS and NATS, in order."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import click

from snsq2nats.cli.app import Application, pass_app, with_nats
from snsq2nats.cli.nats_accounts import admin_options, connected, grants_option_help
from snsq2nats.cli.options import (
    NatsInputs,
    PlanInputs,
    account_options,
    gather,
    nats_options,
    option_group,
    plan_file_option,
    plan_options,
)
from snsq2nats.cli.plans import applied_plan_for

if TYPE_CHECKING:
    from nats.aio.client import Client

    from snsq2nats.aws.accounts import RouteAccounts
    from snsq2nats.jetstream.connect import NatsOptions


@click.group()
def cutover() -> None:
    """Move a queue's consumers, or a queue's or topic's producers, between AWS and NATS.

    Each move is recorded in the live cutover state (the `snsq2nats_cutover` bucket) that every
    running bridge follows: they switch their relays without a restart, and the command
    returns once they confirm. Each message reaches the moved application once, whether its
    old workers stop before, during or after the move.
    """


@dataclass(frozen=True)
class MoveOptions:
    """What every cutover move takes besides its names and direction."""

    plan_path: Path | None
    dry_run: bool
    wait: bool
    confirm_timeout: float
    drain_timeout: float | None
    record_only: bool
    as_json: bool
    grants_path: Path | None


cutover_options = option_group(
    plan_file_option("Move resources of"),
    plan_options,
    account_options,
    nats_options,
    click.option("--dry-run", is_flag=True, help="Show the moves and relays; record nothing."),
    click.option(
        "--wait",
        is_flag=True,
        help="Block until the old side is drained: consumers, then the old workers may stop; "
        "a queue's producers to NATS, then the NATS producers may start (FIFO order).",
    ),
    click.option(
        "--timeout",
        "confirm_timeout",
        type=click.FloatRange(min=1),
        default=120,
        show_default=True,
        help="Seconds to wait for the running bridges to confirm.",
    ),
    click.option(
        "--drain-timeout",
        type=click.FloatRange(min=1),
        help="With --wait: give up after this many seconds (default: wait as long as it takes).",
    ),
    click.option(
        "--record-only",
        is_flag=True,
        help="Record the move even when no bridge runs (exit 0; it is pending until one "
        "starts). Without it, a move no bridge confirmed exits 1.",
    ),
    click.option("--json", "as_json", is_flag=True, help="Print the result as JSON to stdout."),
    click.option(
        "--grants",
        "grants_path",
        envvar="SNSQ2NATS_GRANTS",
        type=click.Path(path_type=Path),
        help=grants_option_help("cutover"),
    ),
    gather(
        "move",
        MoveOptions,
        (
            "plan_path",
            "dry_run",
            "wait",
            "confirm_timeout",
            "drain_timeout",
            "record_only",
            "as_json",
            "grants_path",
        ),
    ),
)


@cutover.command("consumers")
@click.argument("names", nargs=-1, required=True)
@click.option("--to", "to", type=click.Choice(["nats", "aws"]), required=True)
@cutover_options
@pass_app
def cutover_consumers(
    app: Application,
    names: tuple[str, ...],
    to: str,
    inputs: PlanInputs,
    accounts: RouteAccounts,
    nats: NatsInputs,
    move: MoveOptions,
) -> None:
    """Move the consumers of QUEUE(s) (name or ARN) to NATS or back to AWS."""
    _cutover(app, "consumers", names, to, inputs, accounts, nats, move)


@cutover.command("producers")
@click.argument("names", nargs=-1, required=True)
@click.option("--to", "to", type=click.Choice(["aws", "both", "nats"]), required=True)
@cutover_options
@pass_app
def cutover_producers(
    app: Application,
    names: tuple[str, ...],
    to: str,
    inputs: PlanInputs,
    accounts: RouteAccounts,
    nats: NatsInputs,
    move: MoveOptions,
) -> None:
    """Move the producers of TOPIC(s) or QUEUE(s) (name or ARN) to NATS, both, or AWS."""
    _cutover(app, "producers", names, to, inputs, accounts, nats, move)


@cutover.command("finish")
@click.argument("names", nargs=-1, required=True)
@click.option(
    "--delete-aws",
    is_flag=True,
    help="Also delete the AWS resources the result lists as unused (only those).",
)
@cutover_options
@pass_app
def cutover_finish(
    app: Application,
    names: tuple[str, ...],
    delete_aws: bool,
    inputs: PlanInputs,
    accounts: RouteAccounts,
    nats: NatsInputs,
    move: MoveOptions,
) -> None:
    """Retire the bridge for TOPIC(s)/QUEUE(s) whose sides are all on NATS."""
    _cutover(app, "finish", names, None, inputs, accounts, nats, move, delete_aws=delete_aws)


@cutover.command("history")
@click.argument("name")
@plan_file_option("Find the resource in")
@plan_options
@nats_options
@click.option("--json", "as_json", is_flag=True, help="Print the history as JSON to stdout.")
@pass_app
def cutover_history(
    app: Application,
    name: str,
    plan_path: Path | None,
    inputs: PlanInputs,
    nats: NatsInputs,
    as_json: bool,
) -> None:
    """Every recorded move of a queue or topic: who, when, from what to what."""
    import json as jsonlib

    from snsq2nats.cutover import history, open_state
    from snsq2nats.cutover.moves import resolve
    from snsq2nats.report.cutover import history_table

    plan = applied_plan_for(app, plan_path, inputs, nats)
    (resource,) = resolve(plan, [name])

    async def read(nc: Client) -> list[Any]:
        return await history(await open_state(nc), resource.source_arn)

    records = app.run_nats(nats.options, "snsq2nats cutover", read)
    if as_json:
        app.out.data(jsonlib.dumps([r.model_dump(mode="json") for r in records], indent=2))
    else:
        app.out.info(history_table(resource.name, records))


def _cutover(
    app: Application,
    side: Literal["consumers", "producers", "finish"],
    names: tuple[str, ...],
    to: str | None,
    inputs: PlanInputs,
    accounts: RouteAccounts,
    nats: NatsInputs,
    move: MoveOptions,
    *,
    delete_aws: bool = False,
) -> None:
    import getpass
    import json as jsonlib
    import socket

    from snsq2nats.aws.accounts import clients_by_arn
    from snsq2nats.cutover import CutoverRequest, run_cutover
    from snsq2nats.errors import CutoverError
    from snsq2nats.report.cutover import cutover_json, cutover_report, plan_accounts

    plan = applied_plan_for(app, move.plan_path, inputs, nats)
    words = ["cutover", side, *names] + ([f"--to {to}"] if to else [])
    request = CutoverRequest(
        side=side,
        names=list(names),
        to=to,
        dry_run=move.dry_run,
        wait=move.wait,
        by=f"{getpass.getuser()}@{socket.gethostname()}",
        command=" ".join(words),
        confirm_timeout=move.confirm_timeout,
        drain_timeout=move.drain_timeout,
        delete_aws=delete_aws,
        record_only=move.record_only,
    )
    connection = nats.options
    # Each resource is read in its own account and region (its ARN says which), as the bridge
    # reads it: --assume-role / --profile NAME=ACCOUNT reach the accounts besides the base's.
    aws = clients_by_arn(inputs.aws.endpoint_url, accounts, inputs.aws.regions)

    others = admin_options(plan, nats, move.grants_path, "cutover")

    async def go(nc: Client) -> Any:
        async with connected(others, "snsq2nats cutover") as accounts:
            return await run_cutover(
                nc, plan, request, aws=aws, progress=app.out.line, accounts=accounts
            )

    result = app.run_nats(connection, "snsq2nats cutover", go)
    # One move of a several-account estate still says which account it moved.
    several = len(plan_accounts(plan)) > 1
    if move.as_json:
        app.out.data(jsonlib.dumps(cutover_json(result, accounts=several), indent=2))
    else:
        app.out.info(cutover_report(result, accounts=several))
    if result.no_bridge and not request.record_only:
        app.abort(
            CutoverError(
                f"the move is recorded (state revision {result.revision}) but pending: no "
                "bridge is running to make it",
                hint="start `snsq2nats bridge` (it switches as it starts; keep the old side "
                "running until then), or pass --record-only to record moves ahead of a bridge",
            )
        )


@click.command()
@plan_file_option("Order the moves of")
@plan_options
@nats_options
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the runbook as Markdown to this file.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the runbook as JSON to stdout.")
@pass_app
def runbook(
    app: Application,
    plan_path: Path | None,
    inputs: PlanInputs,
    nats: NatsInputs,
    output: Path | None,
    as_json: bool,
) -> None:
    """The order in which to move the whole estate, step by step, with progress marks."""
    import asyncio
    import json as jsonlib

    from snsq2nats.cutover.runbook import make_runbook
    from snsq2nats.files import write_atomic
    from snsq2nats.report.runbook import (
        runbook_json,
        runbook_markdown,
        runbook_table,
        summary_line,
    )

    plan = applied_plan_for(app, plan_path, inputs, nats, required=False)
    records, note = asyncio.run(_runbook_records(nats.options))
    book = make_runbook(plan, records, notes=[note] if note else None)
    if output is not None:
        write_atomic(output, runbook_markdown(book))
        app.out.info(f"wrote {output}: {summary_line(book)}")
    if as_json:
        app.out.data(jsonlib.dumps(runbook_json(book), indent=2))
    elif output is None:
        app.out.info(runbook_table(book))
    for line in book.notes:
        app.out.warn(line)


async def _runbook_records(nats: NatsOptions) -> tuple[dict[str, Any] | None, str | None]:
    """The live cutover records, or None and why when no server or bucket can give them."""
    from snsq2nats.cutover import open_state, read_records
    from snsq2nats.errors import BucketMissing, ConnectError, CutoverError

    connected = False

    async def read(nc: Client) -> dict[str, Any]:
        nonlocal connected
        connected = True
        await open_state(nc)
        return await read_records(nc)

    try:
        return await with_nats(nats, "snsq2nats runbook", read), None
    except ConnectError as err:
        if connected:  # only a server that cannot be reached is a note; the rest is an error
            raise
        return None, (
            f"no NATS server reachable ({err.what}): progress marks need one, so they show "
            "only the plan's own cutover state"
        )
    except (CutoverError, BucketMissing) as err:
        return None, f"{err.what}: progress marks show only the plan's own cutover state"
