"""export: the plan's streams and consumers as files for natscli, NACK or Terraform."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import click

from snsq2nats.cli.app import Application, pass_app
from snsq2nats.cli.options import (
    NatsInputs,
    PlanInputs,
    nats_options,
    plan_file_option,
    plan_options,
)
from snsq2nats.cli.plans import plan_for


@click.command()
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
@pass_app
def export(
    app: Application,
    fmt: Literal["natscli", "nack", "terraform"],
    plan_path: Path | None,
    inputs: PlanInputs,
    nats: NatsInputs,
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
) -> None:
    """Write the plan's streams and consumers for natscli, NACK or Terraform."""
    import json

    from snsq2nats.export.bundle import write_export
    from snsq2nats.export.nack import Connection
    from snsq2nats.export.targets import export_plan

    # A live plan when a server answers: Terraform's import commands need to know what exists.
    plan = plan_for(app, plan_path, inputs, nats, live=True)
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
        plan, fmt, include_bridge=not without_bridge, bundle=bundle, connection=connection
    )
    write_export(result, out_dir)
    if as_json:
        app.out.data(json.dumps(result.to_dict(), indent=2))
        return
    app.out.info(f"{fmt}: {len(result.files)} file(s) written to {out_dir}")
    if result.bridge_owned:
        app.out.info(f"bridge-owned (leave out with --without-bridge): {len(result.bridge_owned)}")
    for note in result.notes:
        app.out.warn(f"{note.object}: {note.message}")
