"""verify: a canary through every queue and topic, received where the plan says."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from snsq2nats.cli.app import Application, pass_app
from snsq2nats.cli.nats_accounts import admin_options, connected, grants_option_help
from snsq2nats.cli.options import (
    NatsInputs,
    PlanInputs,
    nats_options,
    plan_file_option,
    plan_options,
)
from snsq2nats.cli.plans import plan_for

if TYPE_CHECKING:
    from nats.aio.client import Client


@click.command()
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
@click.option(
    "--grants",
    "grants_path",
    envvar="SNSQ2NATS_GRANTS",
    type=click.Path(path_type=Path),
    help=grants_option_help("verify"),
)
@pass_app
def verify(
    app: Application,
    plan_path: Path | None,
    inputs: PlanInputs,
    nats: NatsInputs,
    as_json: bool,
    timeout: float,
    sample: int | None,
    concurrency: int,
    grants_path: Path | None,
) -> None:
    """Send a canary through every queue and topic and receive it where the plan says."""
    import json

    from snsq2nats.report.verify import results_table, summary_line
    from snsq2nats.verify import result_counts, verify_plan

    plan = plan_for(app, plan_path, inputs, nats, live=True)
    others = admin_options(plan, nats, grants_path, "verify")

    async def go(nc: Client) -> list[Any]:
        # The total comes with the first tick (it depends on --sample).
        async with connected(others, "snsq2nats verify") as accounts:
            with app.out.progress("verifying", total=None) as bar:
                return await verify_plan(
                    nc,
                    plan,
                    timeout=timeout,
                    on_progress=bar.advance,
                    sample=sample,
                    concurrency=concurrency,
                    accounts=accounts,
                )

    results = app.run_nats(nats.options, "snsq2nats verify", go)
    counts = result_counts(results)
    if as_json:
        doc = {
            "ok": counts["failed"] == 0,
            "counts": counts,
            "results": [r.to_dict() for r in results],
        }
        app.out.data(json.dumps(doc, indent=2, ensure_ascii=False))
    else:
        app.out.info(results_table(results))
        app.out.info(summary_line(counts))
    if counts["failed"]:
        app.abort(code=1)
