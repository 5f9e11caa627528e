"""bridge and status: relaying live traffic along the plan's routes, and how far along it is."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from snsq2nats.cli.app import Application, pass_app
from snsq2nats.cli.nats_accounts import admin_options, connected, grants_option_help
from snsq2nats.cli.options import (
    AwsInputs,
    NatsInputs,
    PlanInputs,
    account_options,
    aws_options,
    nats_options,
    plan_file_option,
    plan_options,
)
from snsq2nats.cli.plans import applied_plan_for
from snsq2nats.errors import UsageError

if TYPE_CHECKING:
    from nats.aio.client import Client

    from snsq2nats.aws.accounts import RouteAccounts
    from snsq2nats.jetstream.connect import NatsOptions
    from snsq2nats.plan.model import Plan, Route


@click.command()
@click.option(
    "--plan",
    "plan_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A plan file, for a server where no plan was applied yet. The bridge always runs (and "
    "follows) the revision `apply` recorded in NATS; a file that is not it is said so.",
)
@aws_options
@account_options
@nats_options
@click.option(
    "--direction",
    type=click.Choice(["aws-to-nats", "nats-to-aws", "both"]),
    default="both",
    show_default=True,
    help="Which relays to run (the DLQ mover and filter router run with either).",
)
@click.option("--route", "route_globs", multiple=True, metavar="GLOB", help="Only routes named so.")
@click.option("--metrics-port", type=click.IntRange(0, 65535), help="Serve Prometheus metrics.")
@click.option(
    "--metrics-host",
    default="127.0.0.1",
    show_default=True,
    envvar="SNSQ2NATS_METRICS_HOST",
    metavar="ADDRESS",
    help="Address the metrics, /healthz and /readyz listen on; 0.0.0.0 for probes and "
    "scrapes from other hosts (a pod). Env: SNSQ2NATS_METRICS_HOST.",
)
@click.option("--duration", type=click.FloatRange(min=0), help="Stop after this many seconds.")
@click.option(
    "--max-messages", type=click.IntRange(min=1), help="Stop after relaying this many messages."
)
@click.option(
    "--cleanup",
    is_flag=True,
    help="Remove the bridge-owned SQS queues of SNS topics (relaying what they hold), then exit.",
)
@click.option(
    "--pollers",
    type=click.IntRange(1, 64),
    default=4,
    show_default=True,
    help="SQS pollers per route at most: an idle queue holds one long poll, a backlog adds more.",
)
@click.option(
    "--max-in-flight",
    type=click.IntRange(10, 100_000),
    default=256,
    show_default=True,
    help="Messages in flight per route.",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 1024),
    default=1,
    show_default=True,
    help="Local bridge processes, all members of the fleet (one per core on a large host); "
    "worker i serves metrics on --metrics-port + i.",
)
@click.option(
    "--lease-ttl",
    type=click.FloatRange(min=1.0),
    default=15.0,
    show_default=True,
    help="Seconds without a heartbeat before a fleet member's routes are taken over.",
)
@click.option(
    "--grants",
    "grants_path",
    envvar="SNSQ2NATS_GRANTS",
    type=click.Path(path_type=Path),
    help="A plan with `accounts: {nats: per-account}`: the directory `snsq2nats auth --format "
    "jwt` wrote (or its grants.json), whose creds/<account>/snsq2nats-bridge.creds the bridge "
    "relays each NATS account's routes with; the NATS options connect to the home account. "
    "Default: beside the --context file auth wrote, else ./nats-auth. Env: SNSQ2NATS_GRANTS.",
)
@click.option("--poll-wait", type=click.IntRange(1, 20), default=20, hidden=True)
@click.option("--visibility-timeout", type=click.IntRange(2, 43_200), default=30, hidden=True)
@pass_app
def bridge(
    app: Application,
    plan_path: Path | None,
    aws: AwsInputs,
    accounts: RouteAccounts,
    nats: NatsInputs,
    direction: str,
    route_globs: tuple[str, ...],
    metrics_port: int | None,
    metrics_host: str,
    duration: float | None,
    max_messages: int | None,
    cleanup: bool,
    pollers: int,
    max_in_flight: int,
    workers: int,
    lease_ttl: float,
    grants_path: Path | None,
    poll_wait: int,
    visibility_timeout: int,
) -> None:
    """Relay live traffic between AWS and NATS along the applied plan's routes during cutover.

    The bridge runs the revision `snsq2nats apply` recorded in NATS and follows each later
    apply and cutover move without a restart. Every bridge process is a member of one fleet
    (coordinated in NATS): run more of them, on this host (--workers) or others, with the same
    NATS URL, and they share the routes.
    """
    import asyncio
    import gc
    import sys

    from snsq2nats.bridge.context import RelaySettings
    from snsq2nats.bridge.runtime import select_routes
    from snsq2nats.bridge.session import bridge_session
    from snsq2nats.bridge.worker_status import WorkerStatus, reporter_from_env
    from snsq2nats.bridge.workers import (
        run_workers,
        stop_with_parent,
        worker_index,
        worker_metrics_port,
    )
    from snsq2nats.console import configure_logging
    from snsq2nats.report.live import LiveView

    configure_logging(app.out.console)
    plan, plan_revision = _bridge_plan(app, nats, plan_path)

    def select(candidates: list[Route]) -> list[Route]:
        return select_routes(candidates, direction, route_globs)

    # The routes of any cutover state: the live state (the cutover bucket) picks among them.
    candidates = plan.candidate_routes or plan.routes
    routes = select(candidates)
    if cleanup:
        routes = [r for r in routes if r.kind == "sns-to-nats"]
    if not routes:
        app.abort(
            UsageError(
                "no bridge routes selected",
                hint="the plan has routes: " + ", ".join(r.name for r in candidates)
                if candidates
                else "the plan has no queue or topic to bridge",
            )
        )
    nats_accounts = _nats_accounts(plan, routes, nats, grants_path)
    settings = RelaySettings(
        pollers=pollers,
        max_in_flight=max_in_flight,
        wait_time_seconds=poll_wait,
        visibility_timeout=visibility_timeout,
        max_messages=max_messages,
    )
    index = worker_index()
    if workers > 1 and index is None and not cleanup:
        # On a terminal the parent shows one live view of all its workers; otherwise each
        # worker prints its own plain lines.
        out = app.out
        monitor = WorkerStatus(workers, plan, LiveView(out), out.line) if out.interactive else None
        raise SystemExit(run_workers(workers, sys.argv[1:], monitor))  # the workers' own code

    async def session() -> None:
        stop = asyncio.Event()
        guard = asyncio.create_task(stop_with_parent(stop)) if index is not None else None
        try:
            await bridge_session(
                nats.options,
                plan,
                routes,
                regions=aws.regions,
                endpoint_url=aws.endpoint_url,
                settings=settings,
                duration=duration,
                metrics_port=worker_metrics_port(metrics_port, index),
                metrics_host=metrics_host,
                cleanup=cleanup,
                stop=stop,
                # Everything made before relaying (boto3's service models, the plan, the
                # clients) lives for the whole run; frozen, it is no longer rescanned by every
                # full collection, which otherwise costs about a tenth of a busy route's time.
                on_ready=gc.freeze,
                view=reporter_from_env() or LiveView(app.out),
                lease_ttl=lease_ttl,
                select=None if cleanup else select,
                plan_revision=plan_revision,
                accounts=accounts,
                nats_accounts=nats_accounts,
            )
        finally:
            if guard is not None:
                guard.cancel()

    asyncio.run(session())


def _nats_accounts(
    plan: Plan, routes: list[Route], nats: NatsInputs, given: Path | None
) -> dict[str, NatsOptions] | None:
    """A per-account plan: the connection options of each NATS account the routes relay in
    besides the home one, with that account's bridge creds from `auth`'s directory."""
    if not plan.nats_accounts:
        return None
    from snsq2nats.auth.bridge import account_options
    from snsq2nats.auth.record import find_record

    record = find_record(given, nats.context)
    if record is None:
        raise UsageError(
            "the plan puts each AWS account in its own NATS account: the bridge relays each "
            "route with that account's bridge credentials, and found no `auth` output to take "
            "them from",
            hint="run `snsq2nats auth --plan PLAN --format jwt -o DIR`, then bridge with "
            "--grants DIR",
        )
    return account_options(plan, routes, nats.options, record.path.parent)


def _bridge_plan(app: Application, nats: NatsInputs, plan_path: Path | None) -> tuple[Plan, int]:
    """The plan the bridge runs: the applied revision recorded in NATS (a `--plan` file that
    is not it is followed by it, and said so), or the file when none is recorded yet."""
    from snsq2nats.bridge.follow import choose_plan
    from snsq2nats.plan.model import load_plan

    given = load_plan(plan_path) if plan_path is not None else None

    async def choose(nc: Client) -> Any:
        return await choose_plan(nc, given, str(plan_path or "the plan file"))

    chosen = app.run_nats(nats.options, "snsq2nats bridge", choose)
    if chosen.note:
        app.out.warn(chosen.note)
    return chosen.plan, chosen.revision


@click.command()
@plan_file_option("Read the routes from")
@click.option("--route", "route_globs", multiple=True, metavar="GLOB", help="Only these routes.")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON on stdout.")
@plan_options
@account_options
@nats_options
@click.option(
    "--grants",
    "grants_path",
    envvar="SNSQ2NATS_GRANTS",
    type=click.Path(path_type=Path),
    help=grants_option_help("status"),
)
@pass_app
def status(
    app: Application,
    plan_path: Path | None,
    route_globs: tuple[str, ...],
    as_json: bool,
    inputs: PlanInputs,
    accounts: RouteAccounts,
    nats: NatsInputs,
    grants_path: Path | None,
) -> None:
    """Per bridge route: backlog on both sides and whether it is drained (exit 0 only if all)."""
    import json as jsonlib

    from snsq2nats.bridge.runtime import select_routes
    from snsq2nats.report.cutover import cutover_state_table
    from snsq2nats.report.status import status_line, status_table

    plan = applied_plan_for(app, plan_path, inputs, nats)
    candidates = plan.candidate_routes or plan.routes
    routes = select_routes(candidates, "both", route_globs)
    if not routes:
        app.abort(
            UsageError(
                "no bridge routes selected",
                hint="routes in the plan: " + (", ".join(r.name for r in candidates) or "none"),
            )
        )
    nats_accounts = admin_options(plan, nats, grants_path, "status")
    statuses, records = _collect_status(
        app, nats, plan, routes, inputs.aws.endpoint_url, accounts, nats_accounts
    )
    if as_json:
        app.out.data(
            jsonlib.dumps(
                {
                    "drained": all(s.drained for s in statuses),
                    "routes": [s.to_dict() for s in statuses],
                    "cutover": [r.model_dump(mode="json") for r in records],
                },
                indent=2,
            )
        )
    else:
        if records:
            app.out.info(cutover_state_table(records))
        app.out.info(status_table(statuses))
        app.out.info(status_line(statuses))
    if not all(s.drained for s in statuses):
        app.abort(code=1)


def _collect_status(
    app: Application,
    nats: NatsInputs,
    plan: Plan,
    routes: list[Route],
    endpoint_url: str | None,
    accounts: RouteAccounts,
    nats_accounts: dict[str, NatsOptions],
) -> tuple[list[Any], list[Any]]:
    """The routes the live cutover state runs (of those selected), their backlogs, and the
    recorded cutover state (`nats_accounts`: a per-account plan's other NATS accounts)."""
    from snsq2nats import status as status_lib
    from snsq2nats.aws.accounts import status_sqs
    from snsq2nats.aws.clients import sqs_by_region
    from snsq2nats.cutover import read_records
    from snsq2nats.plan.routes import route_active
    from snsq2nats.plan.states import current_view

    # A connection per route read at once.
    sqs_for: Any = sqs_by_region(endpoint_url, status_lib.CONCURRENCY)
    if accounts.given:
        sqs_for = status_sqs(endpoint_url, status_lib.CONCURRENCY, accounts)

    async def collect(nc: Client) -> tuple[list[Any], list[Any]]:
        records = await read_records(nc)
        view = current_view(plan, records)
        running = [r for r in routes if route_active(r, view)]
        async with connected(nats_accounts, "snsq2nats status") as others:
            with app.out.progress("reading routes", total=len(running)) as bar:
                statuses = await status_lib.collect(
                    nc, sqs_for, plan, running, on_progress=bar.advance, accounts=others
                )
        return statuses, sorted(records.values(), key=lambda r: r.name)

    return app.run_nats(nats.options, "snsq2nats status", collect)
