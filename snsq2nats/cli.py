"""The command line: each command is a short adapter over a library call.

Heavy modules (boto3, nats) are imported inside the commands so `--help` stays instant. This is
the only place exceptions become exit codes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from snsq2nats.console import Output
from snsq2nats.errors import SnsqError

F = TypeVar("F", bound=Callable[..., Any])


class FunnelGroup(click.Group):
    """Expected failures print one line and exit non-zero; nothing else reaches the user raw."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SnsqError as err:
            Output().error(err)
            ctx.exit(err.exit_code)
        except KeyboardInterrupt:
            Output().info("interrupted")
            ctx.exit(130)


def aws_options(fn: F) -> F:
    @click.option(
        "--region",
        "regions",
        multiple=True,
        metavar="REGION",
        help="AWS region to read (repeatable). Default: AWS_REGION or the profile's region.",
    )
    @click.option(
        "--endpoint-url",
        envvar="AWS_ENDPOINT_URL",
        metavar="URL",
        help="Custom AWS endpoint (e.g. a local emulator). Env: AWS_ENDPOINT_URL.",
    )
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


@click.group(cls=FunnelGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="snsq2nats")
def main() -> None:
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
    from snsq2nats.files import write_atomic
    from snsq2nats.report import scan_summary, warnings_table

    out = Output()
    inventory = scan_estate(out, regions, endpoint_url, prefix, concurrency)
    if output:
        write_atomic(output, inventory.to_json())
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

    from snsq2nats import aws_scan

    session = boto3.Session()
    chosen = aws_scan.resolve_regions(session, regions)
    clients = aws_scan.make_clients(session, chosen, endpoint_url, concurrency)
    with out.progress("scanning AWS", total=None) as bar:
        return aws_scan.scan(
            clients, prefix=prefix, concurrency=concurrency, on_progress=bar.advance
        )


__all__ = ["SnsqError", "main"]
