"""The command line: each command is a short adapter over a library call.

One module per command group; every command receives the `Application` (app.py) and its
options as typed values (options.py). Heavy modules (boto3, nats) are imported inside the
commands so `--help` stays instant. This is the only place exceptions become exit codes.
"""

from __future__ import annotations

import click

from snsq2nats.cli import apply, auth, bridge, cutover, export, gateway, planning, verify
from snsq2nats.cli.app import FunnelGroup
from snsq2nats.errors import SnsqError


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


# In the order of the migration (`--help` sorts them). The package's names stay its modules.
for command in (
    planning.scan,
    planning.plan,
    planning.subject,
    planning.demo,
    apply.apply,
    verify.verify,
    bridge.bridge,
    bridge.status,
    cutover.cutover,
    cutover.runbook,
    export.export,
    auth.auth,
    gateway.gateway,
):
    main.add_command(command)

__all__ = ["SnsqError", "main"]
