"""Where a command's plan comes from: a saved plan file, or one made now as `plan` makes it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from snsq2nats.cli.app import Application
from snsq2nats.cli.options import AwsInputs, NatsInputs, PlanInputs

if TYPE_CHECKING:
    from collections.abc import Callable

    from snsq2nats.inventory import Inventory
    from snsq2nats.jetstream.connect import NatsOptions
    from snsq2nats.plan.model import Plan


def scan_estate(
    app: Application, aws: AwsInputs, prefix: str | None, concurrency: int = 16
) -> Inventory:
    import boto3

    from snsq2nats.aws import scan as aws_scan
    from snsq2nats.aws.clients import make_clients, resolve_regions

    session = boto3.Session()
    chosen = resolve_regions(session, aws.regions)
    clients = make_clients(session, chosen, aws.endpoint_url, concurrency)
    with app.out.progress("scanning AWS", total=None) as bar:
        return aws_scan.scan(
            clients, prefix=prefix, concurrency=concurrency, on_progress=bar.advance
        )


def build_plan(
    app: Application,
    inputs: PlanInputs,
    nats: NatsInputs | None,
    *,
    prune: bool,
    offline: bool,
    grants: Path | None = None,
    accounts: bool = False,
) -> Plan:
    """A plan made now (`offline` or without `nats`: the NATS server is not read).

    `accounts`: a plan with a NATS account per AWS account reads every account, each with
    the admin creds of the `auth` output at `grants` (found as `apply --grants` finds it)."""
    from snsq2nats.plan.pipeline import make_plan

    def admins(given: NatsInputs) -> Callable[[Plan], dict[str, NatsOptions]]:
        def others(draft: Plan) -> dict[str, NatsOptions]:
            from snsq2nats.cli.nats_accounts import admin_options

            return admin_options(
                draft,
                given,
                grants,
                "plan",
                before="; or plan with --offline before anything exists on NATS",
            )

        return others

    return make_plan(
        inputs.request(prune=prune, offline=offline),
        scan=lambda: scan_estate(app, inputs.aws, inputs.prefix),
        nats=None if offline or nats is None else nats.options,
        progress=app.out.progress,
        accounts=admins(nats) if accounts and nats is not None else None,
    )


def plan_for(
    app: Application,
    plan_path: Path | None,
    inputs: PlanInputs,
    nats: NatsInputs | None = None,
    *,
    live: bool = False,
) -> Plan:
    """The plan a command works from: a saved plan file, or one made now from the same inputs
    `plan` takes (`live`: read the NATS server too, else plan offline)."""
    from snsq2nats.plan.model import load_plan

    if plan_path is not None:
        return load_plan(plan_path)
    return build_plan(app, inputs, nats, prune=False, offline=not live)


def applied_plan_for(
    app: Application,
    plan_path: Path | None,
    inputs: PlanInputs,
    nats: NatsInputs,
    *,
    required: bool = True,
) -> Plan:
    """The plan a command about the running migration works from (cutover, status, runbook):
    a saved plan file; else, when nothing to plan from is given (`--inventory`, `--mapping`,
    …), the revision `apply` recorded in NATS — what the bridges run — so a step acts on what
    is applied without scanning AWS again; else (none recorded) one made now.

    `required=False`: a server that cannot be reached is no error here (the runbook works
    without one); the plan is made now instead.
    """
    from snsq2nats.bridge.follow import read_applied
    from snsq2nats.errors import ConnectError

    if plan_path is not None or inputs.given_flags():
        return plan_for(app, plan_path, inputs)
    try:
        applied = app.run_nats(nats.options, "snsq2nats", read_applied)
    except ConnectError:
        if required:
            raise
        applied = None
    if applied is None:
        return plan_for(app, plan_path, inputs)
    app.out.line(
        f"working from the applied plan (revision {applied.revision}, generated "
        f"{applied.pointer.generated_at}); --plan FILE or planning options choose another"
    )
    return applied.plan
