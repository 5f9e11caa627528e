"""scan, plan, subject and demo: reading the estate and saying what it becomes."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from snsq2nats.cli.app import Application, pass_app
from snsq2nats.cli.nats_accounts import grants_option_help
from snsq2nats.cli.options import (
    AwsInputs,
    NatsInputs,
    PlanInputs,
    aws_options,
    nats_options,
    plan_file_option,
    plan_options,
)
from snsq2nats.cli.plans import build_plan, plan_for, scan_estate

if TYPE_CHECKING:
    from snsq2nats.inventory import Inventory


@click.command()
@aws_options
@click.option("--prefix", metavar="P", help="Only queues and topics whose name starts with P.")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the inventory JSON to this file.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the inventory JSON to stdout.")
@click.option(
    "--concurrency",
    type=click.IntRange(1, 64),
    default=16,
    show_default=True,
    help="Parallel describe calls (and accounts × regions listed at once).",
)
@click.option(
    "--profile",
    "profiles",
    multiple=True,
    metavar="NAME",
    help="Read the account of this AWS profile (repeatable: several accounts, one estate).",
)
@click.option(
    "--assume-role",
    "role_template",
    metavar="ARN",
    help="Read each --account through this role, assumed from the base credentials: "
    "'arn:aws:iam::{account}:role/NAME'.",
)
@click.option(
    "--account",
    "accounts",
    multiple=True,
    metavar="ID",
    help="An AWS account ID to read with --assume-role (repeatable).",
)
@click.option(
    "--organization",
    is_flag=True,
    help="Read every active account AWS Organizations lists (ListAccounts from the base "
    "credentials) through --assume-role.",
)
@click.option(
    "--inventory",
    "base_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Update this inventory: the accounts read now replace their part of it, the others "
    "stay (with --profile or --assume-role/--account).",
)
@pass_app
def scan(
    app: Application,
    aws: AwsInputs,
    prefix: str | None,
    output: Path | None,
    as_json: bool,
    concurrency: int,
    profiles: tuple[str, ...],
    role_template: str | None,
    accounts: tuple[str, ...],
    organization: bool,
    base_path: Path | None,
) -> None:
    """Read every SNS topic, subscription and SQS queue into an inventory.

    With --profile, --assume-role/--account or --assume-role/--organization, several AWS
    accounts are read as one estate; an account that cannot be read is a warning, and the scan
    fails only when none could be."""
    from snsq2nats.files import document_json, write_atomic
    from snsq2nats.report.terminal import scan_summary, warnings_table

    if profiles or role_template or accounts or organization:
        inventory = _scan_accounts(
            app,
            aws,
            prefix,
            concurrency,
            profiles,
            role_template,
            accounts,
            organization,
            base_path,
        )
    elif base_path is not None:
        from snsq2nats.errors import UsageError

        raise UsageError(
            "--inventory needs the accounts to read again",
            hint="pass --profile NAME, or --assume-role TEMPLATE with --account ID (or "
            "--organization)",
        )
    else:
        inventory = scan_estate(app, aws, prefix, concurrency)
    if output:
        write_atomic(output, document_json(inventory))
    if as_json:
        app.out.data(inventory.to_json())
        return
    app.out.info(scan_summary(inventory))
    table = warnings_table(inventory)
    if table is not None:
        app.out.info(table)
    if output:
        app.out.info(f"inventory written to {output}")


def _scan_accounts(
    app: Application,
    aws: AwsInputs,
    prefix: str | None,
    concurrency: int,
    profiles: tuple[str, ...],
    role_template: str | None,
    accounts: tuple[str, ...],
    organization: bool,
    base_path: Path | None,
) -> Inventory:
    """Several accounts as one estate, or (`base_path`) their part of an existing inventory."""
    from snsq2nats.aws.accounts import (
        account_clients,
        account_sources,
        organization_accounts,
        organization_sources,
    )
    from snsq2nats.aws.scan import AccountOutcome, merge_inventory, scan_accounts
    from snsq2nats.inventory import load_inventory

    sources = account_sources(profiles, role_template, accounts, organization=organization)
    base = load_inventory(base_path) if base_path is not None else None
    # Updating an inventory reads the regions it holds unless others are named.
    regions = aws.regions or (tuple(base.regions) if base is not None else ())
    if organization and role_template:
        listed = organization_accounts(aws.endpoint_url, regions)
        for skipped in (a for a in listed if not a.active):
            app.out.warn(f"account {skipped.id} not read: its status is {skipped.status}")
        sources += organization_sources(role_template, listed)
        if not sources:
            from snsq2nats.errors import ScanError

            raise ScanError(
                "the organization lists no active account",
                where="AWS Organizations ListAccounts",
                hint="check that the base credentials are the organization's management account",
            )
    targets = [account_clients(s, regions, aws.endpoint_url, concurrency) for s in sources]

    def tell(outcome: AccountOutcome) -> None:
        name = outcome.label
        if outcome.account is not None and outcome.account != outcome.label:
            name = f"{outcome.label} ({outcome.account})"
        if outcome.regions_read:
            app.out.line(
                f"account {name}: {outcome.queues} queues, {outcome.topics} topics, "
                f"{outcome.subscriptions} subscriptions in {', '.join(outcome.regions_read)}"
            )
        for failure in outcome.failures:
            app.out.warn(f"account {name} not read: {failure}")

    with app.out.progress(f"scanning {len(targets)} AWS accounts", total=None) as bar:
        inventory = scan_accounts(
            targets,
            prefix=prefix,
            concurrency=concurrency,
            on_progress=bar.advance,
            on_account=tell,
        )
    return inventory if base is None else merge_inventory(base, inventory)


@click.command()
@plan_options
@nats_options
@click.option("--prune", is_flag=True, help="Plan deletes of managed objects whose source is gone.")
@click.option("--offline", is_flag=True, help="Do not read NATS: plan everything as create.")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the plan JSON (for `apply`) to this file.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the plan JSON to stdout.")
@click.option(
    "--report",
    "reports",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write a review document: FILE.md or FILE.html (repeatable).",
)
@click.option(
    "--detailed-exitcode",
    is_flag=True,
    help="Exit 0 when nothing changes, 2 when changes are pending, 1 on error.",
)
@click.option("-v", "--verbose", is_flag=True, help="Also list unchanged objects.")
@click.option(
    "--grants",
    "grants_path",
    envvar="SNSQ2NATS_GRANTS",
    type=click.Path(path_type=Path),
    help=grants_option_help("plan"),
)
@pass_app
def plan(
    app: Application,
    inputs: PlanInputs,
    nats: NatsInputs,
    prune: bool,
    offline: bool,
    output: Path | None,
    as_json: bool,
    reports: tuple[Path, ...],
    detailed_exitcode: bool,
    verbose: bool,
    grants_path: Path | None,
) -> None:
    """Show what the estate becomes in JetStream and what would change (a dry run).

    With `accounts: {nats: per-account}` each NATS account's streams are read with its admin
    creds from `auth --format jwt`'s output (--grants), so what exists in any account is
    planned as it is."""
    from snsq2nats.apply import conflict_refusal
    from snsq2nats.files import document_json, write_atomic
    from snsq2nats.report.document import write_report
    from snsq2nats.report.terminal import render_plan

    result = build_plan(
        app, inputs, nats, prune=prune, offline=offline, grants=grants_path, accounts=True
    )
    if output:
        write_atomic(output, document_json(result))
    for report in reports:
        write_report(report, result)
    if as_json:
        app.out.data(result.to_json())
    else:
        render_plan(app.out, result, verbose=verbose)
        for path in [*([output] if output else []), *reports]:
            app.out.info(f"written: {path}")
    # A desired name held by an object snsq2nats does not manage can never be applied: say so
    # now, as an error, rather than as an unchanged object at the bottom of the list.
    refusal = conflict_refusal(result)
    if refusal is not None:
        app.abort(refusal)
    if detailed_exitcode and result.pending:
        app.abort(code=2)


@click.command()
@click.argument("source")
@click.option(
    "--attr",
    "attrs",
    multiple=True,
    metavar="NAME=VALUE",
    help="A message attribute value for a promoted subject token (repeatable). "
    "FIFO queues take MessageGroupId=G.",
)
@click.option(
    "--durable",
    "durable",
    is_flag=True,
    help="Print the STREAM DURABLE a worker binds to instead: for a partitioned FIFO queue, "
    "the partition of --attr MessageGroupId=G, or every partition without a group.",
)
@plan_file_option("Read the mapping from")
@plan_options
@pass_app
def subject(
    app: Application,
    source: str,
    attrs: tuple[str, ...],
    durable: bool,
    plan_path: Path | None,
    inputs: PlanInputs,
) -> None:
    """Print the subject a NATS producer publishes to for a topic or queue (name or ARN).

    For a topic, stderr also says how headers are read: each attribute is a header of the same
    name, a String unless a filter policy of the topic compares it as a number (then a value
    that parses as a number is a Number, as SNS's Number type)."""
    from snsq2nats.plan.pipeline import header_rules, publish_subject, worker_durables

    result = plan_for(app, plan_path, inputs)
    if durable:
        from snsq2nats.plan.workers import fetch_advice

        durables = worker_durables(result, source, attrs)
        for stream, name in durables:
            app.out.data(f"{stream} {name}")
        advice = fetch_advice(result, durables)
        if advice:
            app.out.line(advice)  # on stderr: stdout stays `STREAM DURABLE` lines for scripts
        return
    app.out.data(publish_subject(result, source, attrs))
    for text in header_rules(result, source):
        app.out.line(text)  # stderr: `$(snsq2nats subject …)` captures the subject alone


@click.command()
@click.option(
    "--dir",
    "workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".demo"),
    show_default=True,
    help="Where the demo writes the inventory, plan and reports.",
)
@pass_app
def demo(app: Application, workdir: Path) -> None:
    """Run the migration story on local moto and nats-server (started and stopped here)."""
    from snsq2nats.demo.story import run_demo

    run_demo(app.out, workdir)
