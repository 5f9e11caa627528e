"""apply: make JetStream match a plan, checked against the grants `auth` recorded."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from snsq2nats.cli.app import Application, pass_app
from snsq2nats.cli.options import NatsInputs, PlanInputs, nats_options, plan_options
from snsq2nats.cli.plans import build_plan
from snsq2nats.errors import SnsqError, UsageError

ADMIN = "snsq2nats-admin"

if TYPE_CHECKING:
    from nats.aio.client import Client

    from snsq2nats.jetstream.connect import NatsOptions
    from snsq2nats.plan.model import Plan


@click.command()
@click.argument("plan_file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@plan_options
@nats_options
@click.option("--auto-approve", is_flag=True, help="Apply without asking for confirmation.")
@click.option(
    "--allow-destructive",
    is_flag=True,
    help="Allow replaces (delete and recreate), which lose the stream's messages.",
)
@click.option(
    "--prune", is_flag=True, help="When planning: delete managed objects whose source is gone."
)
@click.option(
    "--grants",
    "grants_path",
    envvar="SNSQ2NATS_GRANTS",
    type=click.Path(path_type=Path),
    help="The grants.json `snsq2nats auth` wrote (or its directory), checked against the plan "
    "before applying. Default: beside the --context file auth wrote, else ./nats-auth. "
    "Env: SNSQ2NATS_GRANTS.",
)
@click.option(
    "--ignore-grants", is_flag=True, help="Apply even when the generated grants do not cover it."
)
@pass_app
def apply(
    app: Application,
    plan_file: Path | None,
    inputs: PlanInputs,
    nats: NatsInputs,
    auto_approve: bool,
    allow_destructive: bool,
    prune: bool,
    grants_path: Path | None,
    ignore_grants: bool,
) -> None:
    """Create or change the JetStream objects: a saved PLAN_FILE exactly, or a fresh plan."""
    from snsq2nats.apply import conflict_refusal, destructive_refusal
    from snsq2nats.plan.model import load_plan
    from snsq2nats.report.facts import summary_line
    from snsq2nats.report.terminal import render_plan

    if plan_file is not None:
        # The planning options mean nothing beside a saved plan: it already decided.
        given = inputs.given_flags() + (["--prune"] if prune else [])
        if given:
            app.abort(
                UsageError(
                    f"{', '.join(given)} cannot be combined with a plan file",
                    hint="the saved plan already fixes what is applied; plan again to change it",
                )
            )
        plan = load_plan(plan_file)
        app.out.info(f"applying {plan_file}: {summary_line(plan)}")
        plan_args = ["--plan", str(plan_file)]
    else:
        plan = build_plan(app, inputs, nats, prune=prune, offline=False)
        _require_reachable(app, plan)
        render_plan(app.out, plan)
        conflicts = conflict_refusal(plan)
        if conflicts is not None:
            app.abort(conflicts)
        plan_args = inputs.as_args()
    if not ignore_grants:
        _check_grants(app, plan, plan_args, nats.context, grants_path)
    admins = _account_admins(plan, nats.context, grants_path)
    if plan_file is None and plan.pending:
        if not allow_destructive:
            refusal = destructive_refusal(plan.pending)
            if refusal is not None:
                app.abort(refusal)
        if not auto_approve:
            _confirm(app, _stdin_is_terminal())
    if admins:
        _run_per_account(app, nats, plan, admins, allow_destructive=allow_destructive)
    else:
        _run_apply(app, nats, plan, allow_destructive=allow_destructive)


def _account_admins(plan: Plan, context: str | None, given: Path | None) -> dict[str, Path]:
    """A per-account plan: each NATS account's admin creds file, from the directory of the
    `auth --format jwt` run whose grants record apply found."""
    if not plan.nats_accounts:
        return {}
    from snsq2nats.auth.record import find_record
    from snsq2nats.plan.accounts import admin_credentials

    record = find_record(given, context)
    if record is None:
        raise UsageError(
            "the plan puts each AWS account in its own NATS account: apply connects to each "
            "with that account's admin credentials, and found no `auth` output to take them from",
            hint="run `snsq2nats auth --plan PLAN --format jwt -o DIR`, then apply with "
            "--grants DIR",
        )
    return admin_credentials(plan, record.path.parent)


def _run_per_account(
    app: Application,
    nats: NatsInputs,
    plan: Plan,
    admins: dict[str, Path],
    *,
    allow_destructive: bool,
) -> None:
    """Apply each NATS account's part with its own admin, origins of cross-account sources
    first and the home account's last (it records the applied revision), stopping at the first
    account the server refuses something in."""
    import dataclasses

    from snsq2nats.auth.identities import inbox_prefix
    from snsq2nats.plan.accounts import HOME, account_plan, apply_order

    def admin_of(account: str) -> NatsOptions:
        return dataclasses.replace(
            nats.options,
            creds=str(admins[account]),
            nkey=None,
            user=None,
            password=None,
            token=None,
            inbox_prefix=inbox_prefix(ADMIN),
        )

    for account in apply_order(plan):
        app.out.info(f"account {account}: {admins[account]}")
        part = account_plan(plan, account)
        _run_apply(
            app,
            NatsInputs(nats.server, nats.context, admin_of(account)),
            part,
            allow_destructive=allow_destructive,
            # A topic's fan-out handover waits for the bridges and reads the SNS relay's
            # ledger in the home account (with the fleet's buckets), not the topic's.
            home=admin_of(HOME) if account != HOME and HOME in admins else None,
        )


def _check_grants(
    app: Application, plan: Plan, plan_args: list[str], context: str | None, given: Path | None
) -> None:
    """Refuse, before changing anything, a plan the generated identities cannot run
    (`plan_args`: the options that name this plan to `auth`)."""
    from snsq2nats.auth.identities import identities
    from snsq2nats.auth.record import find_record, gaps, outdated_error

    record = find_record(given, context)
    if record is None:
        return
    found = gaps(record, identities(plan))
    if found:
        app.abort(outdated_error(record, found, plan_args))
    app.out.info(f"grants: {record.path} covers this plan")


def _require_reachable(app: Application, plan: Plan) -> None:
    if not plan.server.reachable:
        from snsq2nats.errors import NatsConnectError

        app.abort(
            NatsConnectError(
                "cannot apply: no NATS server reachable",
                where=plan.server.url,
                hint=(plan.server.note or "") + "; check --server / NATS_URL and the credentials",
            )
        )


def _stdin_is_terminal() -> bool:
    import sys

    return sys.stdin.isatty()


def _confirm(app: Application, interactive: bool) -> None:
    if not interactive:
        app.abort(
            UsageError(
                "refusing to apply without confirmation: not running on a terminal",
                hint="review the plan, then pass --auto-approve (or apply a file saved by plan -o)",
            )
        )
    if not click.confirm("Apply these changes to NATS JetStream?", default=False, err=True):
        app.abort(SnsqError("apply cancelled: nothing was changed"))


def _run_apply(
    app: Application,
    nats: NatsInputs,
    plan: Plan,
    *,
    allow_destructive: bool,
    home: NatsOptions | None = None,
) -> None:
    from snsq2nats.apply import ApplyError, apply_plan
    from snsq2nats.jetstream.connect import connect_nats
    from snsq2nats.report.apply import handover_lines, outcome_table, result_line

    async def go(nc: Client) -> Any:
        homes = await connect_nats(home, name="snsq2nats apply") if home else None
        try:
            return await apply_to(nc, homes)
        finally:
            if homes is not None:
                await homes.close()

    async def apply_to(nc: Client, home: Client | None) -> Any:
        if not plan.pending:
            # Still checked against the live state: an empty plan can be stale too.
            return await apply_plan(nc, plan, allow_destructive=allow_destructive, home=home)
        with app.out.progress("applying", total=len(plan.pending)) as bar:
            return await apply_plan(
                nc,
                plan,
                allow_destructive=allow_destructive,
                on_progress=lambda _outcome: bar.advance(1),
                home=home,
            )

    result = app.run_nats(nats.options, "snsq2nats apply", go)
    for line in handover_lines(result):
        app.out.info(line)
    if result.revision is not None:
        app.out.info(f"Recorded as applied revision {result.revision}: running bridges follow it.")
    if not result.outcomes:
        app.out.info("No changes. JetStream matches the plan.")
        return
    app.out.info(outcome_table(result))
    app.out.info(result_line(result))
    if not result.ok:
        failed = result.failed[0] if result.failed else None
        what = f"{failed.change.type} {failed.change.name}: {failed.detail}" if failed else ""
        app.abort(
            ApplyError(
                f"apply stopped: the server rejected {what}",
                hint=(
                    f"{len(result.done)} change(s) were applied and kept, "
                    f"{len(result.not_done)} not done; fix the cause, then run apply again"
                ),
            )
        )
