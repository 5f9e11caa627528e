"""The command line: each command is a short adapter over a library call.

Heavy modules (boto3, nats) are imported inside the commands so `--help` stays instant. This is
the only place exceptions become exit codes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from snsq2nats.console import Output
from snsq2nats.errors import SnsqError

if TYPE_CHECKING:
    from snsq2nats.plan.model import Plan, Route
    from snsq2nats.plan.pipeline import PlanRequest

F = TypeVar("F", bound=Callable[..., Any])


class FunnelGroup(click.Group):
    """Expected failures print one line and exit non-zero; nothing else reaches the user raw.

    Anything else is a bug: one line names it and exits 1, and `--debug` lets the traceback
    through instead. click's own exceptions (usage errors, `ctx.exit`) pass untouched.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SnsqError as err:
            Output().error(err)
            ctx.exit(err.exit_code)
        except KeyboardInterrupt:
            Output().info("interrupted")
            ctx.exit(130)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            if ctx.params.get("debug"):
                raise
            Output().unexpected(exc)
            ctx.exit(1)


def option_group(*options: Callable[[F], F]) -> Callable[[F], F]:
    """Several click options applied as one decorator, in the order they are listed."""

    def apply(fn: F) -> F:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return apply


aws_options = option_group(
    click.option(
        "--region",
        "regions",
        multiple=True,
        metavar="REGION",
        help="AWS region to read (repeatable). Default: AWS_REGION or the profile's region.",
    ),
    click.option(
        "--endpoint-url",
        envvar="AWS_ENDPOINT_URL",
        metavar="URL",
        help="Custom AWS endpoint (e.g. a local emulator). Env: AWS_ENDPOINT_URL.",
    ),
)

nats_options = option_group(
    click.option(
        "-s",
        "--server",
        envvar="NATS_URL",
        metavar="URL",
        help="NATS server URL(s), comma-separated. Env: NATS_URL.",
    ),
    click.option(
        "--context",
        "nats_context",
        envvar="NATS_CONTEXT",
        metavar="NAME",
        help="natscli context name or file. Env: NATS_CONTEXT. "
        "Credentials: NATS_CREDS, NATS_NKEY, NATS_USER/NATS_PASSWORD, NATS_TOKEN, "
        "NATS_CERT/NATS_KEY/NATS_CA.",
    ),
)

# What plan, apply, verify, subject, bridge and status share: where inventory and rules come from.
plan_options = option_group(
    aws_options,
    click.option(
        "--inventory",
        "inventory_path",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Plan from this inventory file (from `scan -o`) instead of scanning AWS.",
    ),
    click.option("--prefix", metavar="P", help="When scanning: only names starting with P."),
    click.option(
        "--mapping",
        "mapping_paths",
        multiple=True,
        type=click.Path(dir_okay=False, path_type=Path),
        help="Mapping rules file (repeatable; later files win).",
    ),
    click.option(
        "--replicas",
        type=click.IntRange(1, 5),
        help="Default stream replicas (overrides the mapping defaults).",
    ),
)


def plan_file_option(purpose: str) -> Callable[[F], F]:
    """`--plan FILE`: work from a saved plan instead of planning now."""
    return click.option(
        "--plan",
        "plan_path",
        type=click.Path(dir_okay=False, path_type=Path),
        help=f"{purpose} this plan file instead of planning now.",
    )


def plan_request(
    kwargs: dict[str, Any], *, prune: bool = False, offline: bool = False
) -> PlanRequest:
    from snsq2nats.plan.pipeline import PlanRequest

    return PlanRequest(
        inventory_path=kwargs["inventory_path"],
        regions=kwargs["regions"],
        endpoint_url=kwargs["endpoint_url"],
        prefix=kwargs["prefix"],
        mapping_paths=list(kwargs["mapping_paths"]),
        replicas=kwargs["replicas"],
        prune=prune,
        offline=offline,
    )


def build_plan(out: Output, kwargs: dict[str, Any], *, prune: bool, offline: bool) -> Plan:
    from snsq2nats.jetstream.connect import NatsOptions
    from snsq2nats.plan.pipeline import make_plan

    request = plan_request(kwargs, prune=prune, offline=offline)
    nats = None if offline else NatsOptions.resolve(kwargs["server"], kwargs["nats_context"])
    return make_plan(
        request,
        scan=lambda: scan_estate(out, request.regions, request.endpoint_url, request.prefix),
        nats=nats,
        progress=out.progress,
    )


def plan_for(out: Output, plan_path: Path | None, kwargs: dict[str, Any], *, live: bool) -> Plan:
    """The plan a command works from: a saved plan file, or one made now from the same inputs
    `plan` takes (`live`: read the NATS server too, else plan offline)."""
    from snsq2nats.plan.model import load_plan

    if plan_path is not None:
        return load_plan(plan_path)
    return build_plan(out, kwargs, prune=False, offline=not live)


@click.group(cls=FunnelGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="snsq2nats")
@click.option(
    "--debug",
    is_flag=True,
    envvar="SNSQ2NATS_DEBUG",
    help="Show the full traceback of an unexpected error. Env: SNSQ2NATS_DEBUG.",
)
def main(debug: bool) -> None:
    """Migrate AWS SNS/SQS messaging to NATS JetStream: scan, plan, apply, bridge."""


@main.command()
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
    help="Parallel describe calls.",
)
def scan(
    regions: tuple[str, ...],
    endpoint_url: str | None,
    prefix: str | None,
    output: Path | None,
    as_json: bool,
    concurrency: int,
) -> None:
    """Read every SNS topic, subscription and SQS queue into an inventory."""
    from snsq2nats.files import document_json, write_atomic
    from snsq2nats.report.terminal import scan_summary, warnings_table

    out = Output()
    inventory = scan_estate(out, regions, endpoint_url, prefix, concurrency)
    if output:
        write_atomic(output, document_json(inventory))
    if as_json:
        out.data(inventory.to_json())
        return
    out.info(scan_summary(inventory))
    table = warnings_table(inventory)
    if table is not None:
        out.info(table)
    if output:
        out.info(f"inventory written to {output}")


def scan_estate(
    out: Output,
    regions: tuple[str, ...],
    endpoint_url: str | None,
    prefix: str | None,
    concurrency: int = 16,
) -> Any:
    import boto3

    from snsq2nats.aws import scan as aws_scan
    from snsq2nats.aws.clients import make_clients, resolve_regions

    session = boto3.Session()
    chosen = resolve_regions(session, regions)
    clients = make_clients(session, chosen, endpoint_url, concurrency)
    with out.progress("scanning AWS", total=None) as bar:
        return aws_scan.scan(
            clients, prefix=prefix, concurrency=concurrency, on_progress=bar.advance
        )


@main.command()
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
def plan(
    prune: bool,
    offline: bool,
    output: Path | None,
    as_json: bool,
    reports: tuple[Path, ...],
    detailed_exitcode: bool,
    verbose: bool,
    **kwargs: Any,
) -> None:
    """Show what the estate becomes in JetStream and what would change (a dry run)."""
    from snsq2nats.files import document_json, write_atomic
    from snsq2nats.report.document import write_report
    from snsq2nats.report.terminal import render_plan

    out = Output()
    result = build_plan(out, kwargs, prune=prune, offline=offline)
    if output:
        write_atomic(output, document_json(result))
    for report in reports:
        write_report(report, result)
    if as_json:
        out.data(result.to_json())
    else:
        render_plan(out, result, verbose=verbose)
        for path in [*([output] if output else []), *reports]:
            out.info(f"written: {path}")
    from snsq2nats.apply import conflict_refusal

    # A desired name held by an object snsq2nats does not manage can never be applied: say so
    # now, as an error, rather than as an unchanged object at the bottom of the list.
    refusal = conflict_refusal(result)
    if refusal is not None:
        raise refusal
    if detailed_exitcode and result.pending:
        raise SystemExit(2)


@main.command()
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
def subject(
    source: str, attrs: tuple[str, ...], durable: bool, plan_path: Path | None, **kwargs: Any
) -> None:
    """Print the subject a NATS producer publishes to for a topic or queue (name or ARN).

    For a topic, stderr also says how headers are read: each attribute is a header of the same
    name, a String unless a filter policy of the topic compares it as a number (then a value
    that parses as a number is a Number, as SNS's Number type)."""
    from snsq2nats.plan.pipeline import header_rules, publish_subject, worker_durables

    out = Output()
    result = plan_for(out, plan_path, kwargs, live=False)
    if durable:
        from snsq2nats.plan.runbook import fetch_advice

        durables = worker_durables(result, source, attrs)
        for stream, name in durables:
            out.data(f"{stream} {name}")
        advice = fetch_advice(result, durables)
        if advice:
            out.line(advice)  # on stderr: stdout stays `STREAM DURABLE` lines for scripts
        return
    out.data(publish_subject(result, source, attrs))
    for text in header_rules(result, source):
        out.line(text)  # stderr: `$(snsq2nats subject …)` captures the subject alone


@main.command()
@click.option(
    "--dir",
    "workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".demo"),
    show_default=True,
    help="Where the demo writes the inventory, plan and reports.",
)
def demo(workdir: Path) -> None:
    """Run the migration story on local moto and nats-server (started and stopped here)."""
    from snsq2nats.demo.story import run_demo

    run_demo(Output(), workdir)


# --- apply ----------------------------------------------------------------------------------

# Planning options that mean nothing when a saved plan is applied: the plan already decided.
_PLANNING_ONLY = {
    "inventory_path": "--inventory",
    "prefix": "--prefix",
    "mapping_paths": "--mapping",
    "replicas": "--replicas",
    "regions": "--region",
}


@main.command()
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
def apply(
    plan_file: Path | None,
    auto_approve: bool,
    allow_destructive: bool,
    prune: bool,
    grants_path: Path | None,
    ignore_grants: bool,
    **kwargs: Any,
) -> None:
    """Create or change the JetStream objects: a saved PLAN_FILE exactly, or a fresh plan."""
    from snsq2nats.apply import conflict_refusal, destructive_refusal
    from snsq2nats.jetstream.connect import NatsOptions
    from snsq2nats.plan.model import load_plan
    from snsq2nats.report.facts import summary_line
    from snsq2nats.report.terminal import render_plan

    out = Output()
    if plan_file is not None:
        given = [flag for name, flag in _PLANNING_ONLY.items() if kwargs.get(name)]
        given += ["--prune"] if prune else []
        if given:
            from snsq2nats.errors import UsageError

            raise UsageError(
                f"{', '.join(given)} cannot be combined with a plan file",
                hint="the saved plan already fixes what is applied; plan again to change it",
            )
        plan = load_plan(plan_file)
        out.info(f"applying {plan_file}: {summary_line(plan)}")
        if not ignore_grants:
            _check_grants(out, plan, plan_file, kwargs, grants_path)
    else:
        plan = build_plan(out, kwargs, prune=prune, offline=False)
        _require_reachable(plan)
        render_plan(out, plan)
        conflicts = conflict_refusal(plan)
        if conflicts is not None:
            raise conflicts
        if not ignore_grants:
            _check_grants(out, plan, None, kwargs, grants_path)
        if plan.pending:
            if not allow_destructive:
                refusal = destructive_refusal(plan.pending)
                if refusal is not None:
                    raise refusal
            if not auto_approve:
                _confirm(_stdin_is_terminal())
    nats = NatsOptions.resolve(kwargs["server"], kwargs["nats_context"])
    _run_apply(out, nats, plan, allow_destructive=allow_destructive)


def _grants_record(kwargs: dict[str, Any], given: Path | None) -> Any:
    """The record `auth` wrote: given, beside the natscli context file in use (auth writes
    `<dir>/contexts/NAME.json` and `<dir>/grants.json`), or in ./nats-auth."""
    import os

    from snsq2nats.auth.record import DEFAULT_DIR, load_record

    if given is not None:
        record = load_record(given)
        if record is None:
            from snsq2nats.errors import UsageError

            raise UsageError(f"no grants record at {given}", hint="run `snsq2nats auth` first")
        return record
    context = kwargs.get("nats_context") or os.environ.get("NATS_CONTEXT")
    if context and Path(context).is_file() and Path(context).parent.name == "contexts":
        record = load_record(Path(context).parent.parent)
        if record is not None:
            return record
    return load_record(DEFAULT_DIR)


def _planning_args(plan_file: Path | None, kwargs: dict[str, Any]) -> list[str]:
    """The options that name this plan to another command (`auth`)."""
    if plan_file is not None:
        return ["--plan", str(plan_file)]
    args: list[str] = []
    for name, flag in (*_PLANNING_ONLY.items(), ("endpoint_url", "--endpoint-url")):
        value = kwargs.get(name)
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if item not in (None, "", ()):
                args += [flag, str(item)]
    return args


def _check_grants(
    out: Output, plan: Plan, plan_file: Path | None, kwargs: dict[str, Any], given: Path | None
) -> None:
    """Refuse, before changing anything, a plan the generated identities cannot run."""
    from snsq2nats.auth.identities import identities
    from snsq2nats.auth.record import gaps, outdated_error

    record = _grants_record(kwargs, given)
    if record is None:
        return
    found = gaps(record, identities(plan))
    if found:
        raise outdated_error(record, found, _planning_args(plan_file, kwargs))
    out.info(f"grants: {record.path} covers this plan")


def _require_reachable(plan: Plan) -> None:
    if not plan.server.reachable:
        from snsq2nats.errors import NatsConnectError

        raise NatsConnectError(
            "cannot apply: no NATS server reachable",
            where=plan.server.url,
            hint=(plan.server.note or "") + "; check --server / NATS_URL and the credentials",
        )


def _stdin_is_terminal() -> bool:
    import sys

    return sys.stdin.isatty()


def _confirm(interactive: bool) -> None:
    from snsq2nats.errors import UsageError

    if not interactive:
        raise UsageError(
            "refusing to apply without confirmation: not running on a terminal",
            hint="review the plan, then pass --auto-approve (or apply a file saved by plan -o)",
        )
    if not click.confirm("Apply these changes to NATS JetStream?", default=False, err=True):
        raise SnsqError("apply cancelled: nothing was changed")


def _run_apply(out: Output, nats: Any, plan: Plan, *, allow_destructive: bool) -> None:
    import asyncio

    from snsq2nats.apply import ApplyError, apply_plan
    from snsq2nats.jetstream.connect import connect_nats
    from snsq2nats.report.apply import outcome_table, result_line

    async def go() -> Any:
        nc = await connect_nats(nats, name="snsq2nats apply")
        try:
            if not plan.pending:
                # Still checked against the live state: an empty plan can be stale too.
                return await apply_plan(nc, plan, allow_destructive=allow_destructive)
            with out.progress("applying", total=len(plan.pending)) as bar:
                return await apply_plan(
                    nc,
                    plan,
                    allow_destructive=allow_destructive,
                    on_progress=lambda _outcome: bar.advance(1),
                )
        finally:
            await nc.close()

    result = asyncio.run(go())
    if result.revision is not None:
        out.info(f"Recorded as applied revision {result.revision}: running bridges follow it.")
    if not result.outcomes:
        out.info("No changes. JetStream matches the plan.")
        return
    out.info(outcome_table(result))
    out.info(result_line(result))
    if not result.ok:
        failed = result.failed[0] if result.failed else None
        what = f"{failed.change.type} {failed.change.name}: {failed.detail}" if failed else ""
        raise ApplyError(
            f"apply stopped: the server rejected {what}",
            hint=(
                f"{len(result.done)} change(s) were applied and kept, "
                f"{len(result.not_done)} not done; fix the cause, then run apply again"
            ),
        )


# --- verify ---------------------------------------------------------------------------------


@main.command()
@plan_file_option("Verify the mapping in")
@plan_options
@nats_options
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON to stdout.")
@click.option(
    "--timeout",
    type=click.FloatRange(0.1, 600),
    default=5.0,
    show_default=True,
    help="Seconds to wait for each canary.",
)
@click.option(
    "--sample",
    type=click.IntRange(min=1),
    metavar="N",
    help="Check N queues and topics, evenly spread over the plan, instead of all of them.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 256),
    default=32,
    show_default=True,
    help="Checks in flight at once.",
)
def verify(
    plan_path: Path | None,
    as_json: bool,
    timeout: float,
    sample: int | None,
    concurrency: int,
    **kwargs: Any,
) -> None:
    """Send a canary through every queue and topic and receive it where the plan says."""
    import asyncio
    import json

    from snsq2nats.jetstream.connect import NatsOptions, connect_nats
    from snsq2nats.report.verify import results_table, summary_line
    from snsq2nats.verify import result_counts, verify_plan

    out = Output()
    plan = plan_for(out, plan_path, kwargs, live=True)
    nats = NatsOptions.resolve(kwargs["server"], kwargs["nats_context"])

    async def go() -> list[Any]:
        nc = await connect_nats(nats, name="snsq2nats verify")
        try:
            # The total comes with the first tick (it depends on --sample).
            with out.progress("verifying", total=None) as bar:
                return await verify_plan(
                    nc,
                    plan,
                    timeout=timeout,
                    on_progress=bar.advance,
                    sample=sample,
                    concurrency=concurrency,
                )
        finally:
            await nc.close()

    results = asyncio.run(go())
    counts = result_counts(results)
    if as_json:
        doc = {
            "ok": counts["failed"] == 0,
            "counts": counts,
            "results": [r.to_dict() for r in results],
        }
        out.data(json.dumps(doc, indent=2, ensure_ascii=False))
    else:
        out.info(results_table(results))
        out.info(summary_line(counts))
    if counts["failed"]:
        raise SystemExit(1)


# --- bridge ---------------------------------------------------------------------------------


@main.command()
@click.option(
    "--plan",
    "plan_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A plan file, for a server where no plan was applied yet. The bridge always runs (and "
    "follows) the revision `apply` recorded in NATS; a file that is not it is said so.",
)
@aws_options
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
@click.option("--poll-wait", type=click.IntRange(1, 20), default=20, hidden=True)
@click.option("--visibility-timeout", type=click.IntRange(2, 43_200), default=30, hidden=True)
def bridge(
    plan_path: Path | None,
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
    poll_wait: int,
    visibility_timeout: int,
    **kwargs: Any,
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

    from snsq2nats.bridge.runtime import select_routes
    from snsq2nats.bridge.workers import (
        run_workers,
        stop_with_parent,
        worker_index,
        worker_metrics_port,
    )
    from snsq2nats.console import configure_logging
    from snsq2nats.errors import UsageError
    from snsq2nats.jetstream.connect import NatsOptions

    out = Output()
    configure_logging(out.console)
    nats = NatsOptions.resolve(kwargs["server"], kwargs["nats_context"])
    plan, plan_revision = _bridge_plan(out, nats, plan_path)

    def select(candidates: list[Route]) -> list[Route]:
        return select_routes(candidates, direction, route_globs)

    # The routes of any cutover state: the live state (the cutover bucket) picks among them.
    candidates = plan.candidate_routes or plan.routes
    routes = select(candidates)
    if cleanup:
        routes = [r for r in routes if r.kind == "sns-to-nats"]
    if not routes:
        raise UsageError(
            "no bridge routes selected",
            hint="the plan has routes: " + ", ".join(r.name for r in candidates)
            if candidates
            else "the plan has no queue or topic to bridge",
        )
    settings = {
        "pollers": pollers,
        "max_in_flight": max_in_flight,
        "wait_time_seconds": poll_wait,
        "visibility_timeout": visibility_timeout,
        "max_messages": max_messages,
    }
    from snsq2nats.bridge.session import bridge_session
    from snsq2nats.bridge.worker_status import WorkerStatus, reporter_from_env
    from snsq2nats.report.live import LiveView

    index = worker_index()
    if workers > 1 and index is None and not cleanup:
        # On a terminal the parent shows one live view of all its workers; otherwise each
        # worker prints its own plain lines.
        monitor = WorkerStatus(workers, plan, LiveView(out), out.line) if out.interactive else None
        raise SystemExit(run_workers(workers, sys.argv[1:], monitor))

    async def session() -> None:
        stop = asyncio.Event()
        guard = asyncio.create_task(stop_with_parent(stop)) if index is not None else None
        try:
            await bridge_session(
                nats,
                plan,
                routes,
                regions=kwargs["regions"],
                endpoint_url=kwargs["endpoint_url"],
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
                view=reporter_from_env() or LiveView(out),
                lease_ttl=lease_ttl,
                select=None if cleanup else select,
                plan_revision=plan_revision,
            )
        finally:
            if guard is not None:
                guard.cancel()

    asyncio.run(session())


def _bridge_plan(out: Output, nats: Any, plan_path: Path | None) -> tuple[Plan, int]:
    """The plan the bridge runs: the applied revision recorded in NATS (a `--plan` file that
    is not it is followed by it, and said so), or the file when none is recorded yet."""
    import asyncio

    from snsq2nats.bridge.follow import choose_plan
    from snsq2nats.jetstream.connect import connect_nats
    from snsq2nats.plan.model import load_plan

    given = load_plan(plan_path) if plan_path is not None else None

    async def choose() -> Any:
        nc = await connect_nats(nats, name="snsq2nats bridge")
        try:
            return await choose_plan(nc, given, str(plan_path or "the plan file"))
        finally:
            await nc.close()

    chosen = asyncio.run(choose())
    if chosen.note:
        out.warn(chosen.note)
    return chosen.plan, chosen.revision


@main.command()
@plan_file_option("Read the routes from")
@click.option("--route", "route_globs", multiple=True, metavar="GLOB", help="Only these routes.")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON on stdout.")
@plan_options
@nats_options
def status(
    plan_path: Path | None, route_globs: tuple[str, ...], as_json: bool, **kwargs: Any
) -> None:
    """Per bridge route: backlog on both sides and whether it is drained (exit 0 only if all)."""
    import asyncio
    import json as jsonlib

    from snsq2nats.bridge.runtime import select_routes
    from snsq2nats.errors import UsageError
    from snsq2nats.jetstream.connect import NatsOptions
    from snsq2nats.report.cutover import cutover_state_table
    from snsq2nats.report.status import status_line, status_table

    out = Output()
    plan = plan_for(out, plan_path, kwargs, live=False)
    candidates = plan.candidate_routes or plan.routes
    routes = select_routes(candidates, "both", route_globs)
    if not routes:
        raise UsageError(
            "no bridge routes selected",
            hint="routes in the plan: " + (", ".join(r.name for r in candidates) or "none"),
        )
    nats = NatsOptions.resolve(kwargs["server"], kwargs["nats_context"])
    statuses, records = asyncio.run(
        _collect_status(out, nats, plan, routes, kwargs["endpoint_url"])
    )
    if as_json:
        out.data(
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
            out.info(cutover_state_table(records))
        out.info(status_table(statuses))
        out.info(status_line(statuses))
    if not all(s.drained for s in statuses):
        raise SystemExit(1)


async def _collect_status(
    out: Output, nats: Any, plan: Plan, routes: list[Any], endpoint_url: str | None
) -> tuple[list[Any], list[Any]]:
    """The routes the live cutover state runs (of those selected), their backlogs, and the
    recorded cutover state."""
    import boto3
    from botocore.config import Config

    from snsq2nats import status as status_lib
    from snsq2nats.cutover import read_records
    from snsq2nats.jetstream.connect import connect_nats
    from snsq2nats.plan.moves import current_view
    from snsq2nats.plan.routes import route_active

    session = boto3.Session()
    clients: dict[str, Any] = {}
    # One connection per concurrent route: botocore's default pool of 10 would drop the rest.
    config = Config(max_pool_connections=status_lib.CONCURRENCY)

    def sqs_for(region: str) -> Any:
        if region not in clients:
            clients[region] = session.client(
                "sqs", region_name=region, endpoint_url=endpoint_url, config=config
            )
        return clients[region]

    nc = await connect_nats(nats, name="snsq2nats status")
    try:
        records = await read_records(nc)
        view = current_view(plan, records)
        running = [r for r in routes if route_active(r, view)]
        with out.progress("reading routes", total=len(running)) as bar:
            statuses = await status_lib.collect(nc, sqs_for, plan, running, on_progress=bar.advance)
        return statuses, sorted(records.values(), key=lambda r: r.name)
    finally:
        await nc.close()


# --- cutover --------------------------------------------------------------------------------


@main.group()
def cutover() -> None:
    """Move a queue's consumers, or a queue's or topic's producers, between AWS and NATS.

    Each move is recorded in the live cutover state (the `snsq2nats_cutover` bucket) that every
    running bridge follows: they switch their relays without a restart, and the command
    returns once they confirm. Each message reaches the moved application once, whether its
    old workers stop before, during or after the move.
    """


cutover_options = option_group(
    plan_file_option("Move resources of"),
    plan_options,
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
)


@cutover.command("consumers")
@click.argument("names", nargs=-1, required=True)
@click.option("--to", "to", type=click.Choice(["nats", "aws"]), required=True)
@cutover_options
def cutover_consumers(names: tuple[str, ...], to: str, **kwargs: Any) -> None:
    """Move the consumers of QUEUE(s) (name or ARN) to NATS or back to AWS."""
    _cutover("consumers", names, to, kwargs)


@cutover.command("producers")
@click.argument("names", nargs=-1, required=True)
@click.option("--to", "to", type=click.Choice(["aws", "both", "nats"]), required=True)
@cutover_options
def cutover_producers(names: tuple[str, ...], to: str, **kwargs: Any) -> None:
    """Move the producers of TOPIC(s) or QUEUE(s) (name or ARN) to NATS, both, or AWS."""
    _cutover("producers", names, to, kwargs)


@cutover.command("finish")
@click.argument("names", nargs=-1, required=True)
@click.option(
    "--delete-aws",
    is_flag=True,
    help="Also delete the AWS resources the result lists as unused (only those).",
)
@cutover_options
def cutover_finish(names: tuple[str, ...], delete_aws: bool, **kwargs: Any) -> None:
    """Retire the bridge for TOPIC(s)/QUEUE(s) whose sides are all on NATS."""
    _cutover("finish", names, None, kwargs, delete_aws=delete_aws)


@cutover.command("history")
@click.argument("name")
@plan_file_option("Find the resource in")
@plan_options
@nats_options
@click.option("--json", "as_json", is_flag=True, help="Print the history as JSON to stdout.")
def cutover_history(name: str, as_json: bool, plan_path: Path | None, **kwargs: Any) -> None:
    """Every recorded move of a queue or topic: who, when, from what to what."""
    import asyncio
    import json as jsonlib

    from snsq2nats.cutover import history, open_state
    from snsq2nats.jetstream.connect import NatsOptions, connect_nats
    from snsq2nats.plan.moves import resolve
    from snsq2nats.report.cutover import history_table

    out = Output()
    plan = plan_for(out, plan_path, kwargs, live=False)
    (resource,) = resolve(plan, [name])
    nats = NatsOptions.resolve(kwargs["server"], kwargs["nats_context"])

    async def read() -> list[Any]:
        nc = await connect_nats(nats, name="snsq2nats cutover")
        try:
            return await history(await open_state(nc), resource.source_arn)
        finally:
            await nc.close()

    records = asyncio.run(read())
    if as_json:
        out.data(jsonlib.dumps([r.model_dump(mode="json") for r in records], indent=2))
    else:
        out.info(history_table(resource.name, records))


def _cutover(
    side: str, names: tuple[str, ...], to: str | None, kwargs: dict[str, Any], **extra: Any
) -> None:
    import asyncio
    import getpass
    import json as jsonlib
    import socket

    from snsq2nats.cutover import CutoverRequest, run_cutover
    from snsq2nats.jetstream.connect import NatsOptions, connect_nats
    from snsq2nats.report.cutover import cutover_report

    out = Output()
    as_json = kwargs.pop("as_json")
    plan = plan_for(out, kwargs.pop("plan_path"), kwargs, live=False)
    words = ["cutover", side, *names] + ([f"--to {to}"] if to else [])
    request = CutoverRequest(
        side=side,  # type: ignore[arg-type]
        names=list(names),
        to=to,
        dry_run=kwargs["dry_run"],
        wait=kwargs["wait"],
        by=f"{getpass.getuser()}@{socket.gethostname()}",
        command=" ".join(words),
        confirm_timeout=kwargs["confirm_timeout"],
        drain_timeout=kwargs["drain_timeout"],
        delete_aws=extra.get("delete_aws", False),
        record_only=kwargs["record_only"],
    )
    nats = NatsOptions.resolve(kwargs["server"], kwargs["nats_context"])
    aws = _aws_clients(plan, kwargs)

    async def go() -> Any:
        nc = await connect_nats(nats, name="snsq2nats cutover")
        try:
            return await run_cutover(nc, plan, request, aws=aws, progress=out.line)
        finally:
            await nc.close()

    result = asyncio.run(go())
    if as_json:
        out.data(jsonlib.dumps(result.to_json(), indent=2))
    else:
        out.info(cutover_report(result))
    if result.no_bridge and not request.record_only:
        from snsq2nats.errors import CutoverError

        raise CutoverError(
            f"the move is recorded (state revision {result.revision}) but pending: no bridge "
            "is running to make it",
            hint="start `snsq2nats bridge` (it switches as it starts; keep the old side "
            "running until then), or pass --record-only to record moves ahead of a bridge",
        )


def _aws_clients(plan: Plan, kwargs: dict[str, Any]) -> Any:
    """SQS/SNS clients for the plan's region (the ARNs say where the resources live)."""
    import boto3

    from snsq2nats.aws.arns import parse_arn
    from snsq2nats.aws.clients import make_clients

    session = boto3.Session()
    arns = [r.source_arn for r in plan.resources if r.kind == "sqs-queue"]
    region = (
        kwargs["regions"][0]
        if kwargs["regions"]
        else (parse_arn(arns[0]).region if arns else session.region_name)
    )
    if not region:
        return None
    (clients,) = make_clients(session, [region], kwargs["endpoint_url"])
    return clients


@main.command()
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
def runbook(plan_path: Path | None, output: Path | None, as_json: bool, **kwargs: Any) -> None:
    """The order in which to move the whole estate, step by step, with progress marks."""
    import asyncio
    import json as jsonlib

    from snsq2nats.files import write_atomic
    from snsq2nats.jetstream.connect import NatsOptions
    from snsq2nats.plan.runbook import make_runbook
    from snsq2nats.report.runbook import runbook_markdown, runbook_table, summary_line

    out = Output()
    plan = plan_for(out, plan_path, kwargs, live=False)
    nats = NatsOptions.resolve(kwargs["server"], kwargs["nats_context"])
    records, note = asyncio.run(_runbook_records(nats))
    book = make_runbook(plan, records, notes=[note] if note else None)
    if output is not None:
        write_atomic(output, runbook_markdown(book))
        out.info(f"wrote {output}: {summary_line(book)}")
    if as_json:
        out.data(jsonlib.dumps(book.to_json(), indent=2))
    elif output is None:
        out.info(runbook_table(book))
    for line in book.notes:
        out.warn(line)


async def _runbook_records(nats: Any) -> tuple[dict[str, Any] | None, str | None]:
    """The live cutover records, or None and why when no server or bucket can give them."""
    from snsq2nats.cutover import open_state, read_records
    from snsq2nats.errors import ConnectError, CutoverError
    from snsq2nats.jetstream.connect import connect_nats

    try:
        nc = await connect_nats(nats, name="snsq2nats runbook")
    except ConnectError as err:
        return None, (
            f"no NATS server reachable ({err.what}): progress marks need one, so they show "
            "only the plan's own cutover state"
        )
    try:
        await open_state(nc)
        return await read_records(nc), None
    except CutoverError as err:
        return None, f"{err.what}: progress marks show only the plan's own cutover state"
    finally:
        await nc.close()


# --- export ---------------------------------------------------------------------------------


@main.command()
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["natscli", "nack", "terraform"]),
    required=True,
    help="natscli JSON configs + create script, NACK resources, or Terraform resources.",
)
@plan_file_option("Export")
@plan_options
@nats_options
@click.option(
    "-o",
    "--output",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("export"),
    show_default=True,
    help="Directory to write into.",
)
@click.option(
    "--bundle", is_flag=True, help="One file (NACK, Terraform) instead of one per object."
)
@click.option("--without-bridge", is_flag=True, help="Leave out the objects only the bridge needs.")
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON to stdout.")
@click.option("--servers", multiple=True, metavar="URL", help="NACK: NATS URL(s) on each resource.")
@click.option("--creds", metavar="PATH", help="NACK: credentials file path in the controller.")
@click.option("--tls-cert", metavar="PATH", help="NACK: client certificate path.")
@click.option("--tls-key", metavar="PATH", help="NACK: client key path.")
@click.option("--tls-ca", metavar="PATH", help="NACK: CA certificate path.")
@click.option("--account", metavar="NAME", help="NACK: an Account resource to connect through.")
@click.option("--namespace", metavar="NS", help="NACK: Kubernetes namespace of the resources.")
def export(
    fmt: str,
    plan_path: Path | None,
    out_dir: Path,
    bundle: bool,
    without_bridge: bool,
    as_json: bool,
    servers: tuple[str, ...],
    creds: str | None,
    tls_cert: str | None,
    tls_key: str | None,
    tls_ca: str | None,
    account: str | None,
    namespace: str | None,
    **kwargs: Any,
) -> None:
    """Write the plan's streams and consumers for natscli, NACK or Terraform."""
    import json

    from snsq2nats.export.bundle import write_export
    from snsq2nats.export.nack import Connection
    from snsq2nats.export.targets import export_plan

    out = Output()
    # A live plan when a server answers: Terraform's import commands need to know what exists.
    plan = plan_for(out, plan_path, kwargs, live=True)
    connection = Connection(
        servers=list(servers),
        creds=creds,
        tls_cert=tls_cert,
        tls_key=tls_key,
        tls_ca=tls_ca,
        account=account,
        namespace=namespace,
    )
    result = export_plan(
        plan,
        fmt,  # type: ignore[arg-type]
        include_bridge=not without_bridge,
        bundle=bundle,
        connection=connection,
    )
    write_export(result, out_dir)
    if as_json:
        out.data(json.dumps(result.to_dict(), indent=2))
        return
    out.info(f"{fmt}: {len(result.files)} file(s) written to {out_dir}")
    if result.bridge_owned:
        out.info(f"bridge-owned (leave out with --without-bridge): {len(result.bridge_owned)}")
    for note in result.notes:
        out.warn(f"{note.object}: {note.message}")


# --- auth -----------------------------------------------------------------------------------


@main.command()
@plan_file_option("Generate from")
@plan_options
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["config", "jwt", "nsc"]),
    default="config",
    show_default=True,
    help="A server authorization block (+ contexts), operator-mode JWTs and creds files "
    "(+ contexts), or an nsc script.",
)
@click.option(
    "--credentials",
    type=click.Choice(["password", "nkey", "tls"]),
    default="password",
    show_default=True,
    help="bcrypt passwords, nkeys, or certificate-mapped users (mutual TLS, verify_and_map).",
)
@click.option(
    "--tls-user",
    default="{name}",
    show_default=True,
    metavar="TEMPLATE",
    help="With --credentials tls: the certificate email or DN each identity maps to.",
)
@click.option(
    "-s",
    "--server",
    "--url",
    "url",
    envvar="NATS_URL",
    metavar="URL",
    help="The server URL(s), comma-separated, written into each natscli context. "
    "Env: NATS_URL. Default: nats://127.0.0.1:4222.",
)
@click.option(
    "-o",
    "--output",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("nats-auth"),
    show_default=True,
    help="Directory for the config, the secrets (mode 0600) and the contexts.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the identities as JSON to stdout.")
def auth(
    plan_path: Path | None,
    fmt: str,
    credentials: str,
    tls_user: str,
    url: str | None,
    out_dir: Path,
    as_json: bool,
    **kwargs: Any,
) -> None:
    """Generate NATS users with least-privilege permissions for every queue, topic and tool."""
    import json

    from snsq2nats.auth.config import write_auth, write_contexts, write_private
    from snsq2nats.auth.identities import identities
    from snsq2nats.auth.jwt import nsc_script, write_jwt
    from snsq2nats.auth.record import RECORD, record_text
    from snsq2nats.errors import UsageError
    from snsq2nats.jetstream.connect import DEFAULT_NATS_URL

    out = Output()
    # Every cluster URL the user gave goes into the contexts, as natscli takes them.
    url = ",".join(u.strip() for u in (url or DEFAULT_NATS_URL).split(",") if u.strip())
    if not url:
        raise UsageError("--server is empty", hint="give the NATS URL(s) the identities use")
    plan = plan_for(out, plan_path, kwargs, live=False)
    generated = identities(plan)
    # What apply checks a later plan against (no secrets: permissions and these options).
    options = ["--format", fmt] if fmt != "config" else ["--credentials", credentials]
    options += ["--tls-user", tls_user] if fmt == "config" and credentials == "tls" else []
    options += ["--url", url] if fmt != "nsc" and url else []
    write_private(out_dir / RECORD, record_text(generated, options))
    if not as_json:
        out.info(f"grants recorded in {out_dir / RECORD}: apply checks later plans against them")
    if as_json:
        out.data(json.dumps({"identities": [i.to_dict() for i in generated]}, indent=2))
    if fmt == "nsc":
        script = out_dir / "nsc.sh"
        write_private(script, nsc_script(generated))
        script.chmod(0o700)
        if not as_json:
            out.info(f"{len(generated)} identities: nsc script {script}")
        return
    if fmt == "jwt":
        jwt = write_jwt(generated, out_dir)
        write_contexts(
            generated, out_dir, url, {n: {"creds": str(p)} for n, p in jwt.creds.items()}
        )
        if not as_json:
            out.info(f"{len(generated)} identities: server config {jwt.server_config}")
            out.info(
                f"creds files (0600) in {out_dir / 'creds'}, contexts in {out_dir / 'contexts'}"
            )
        return
    tls_names = {i.name: tls_user.format(name=i.name) for i in generated}
    written = write_auth(
        generated,
        out_dir,
        mode=credentials,  # type: ignore[arg-type]
        url=url,
        tls_names=tls_names if credentials == "tls" else None,
    )
    if as_json:
        return
    out.info(f"{len(generated)} identities: server config {written.config}")
    out.info(f"natscli contexts in {out_dir / 'contexts'}; secrets (0600) in {out_dir / 'secrets'}")


__all__ = ["SnsqError", "main"]
