"""auth: the NATS users the plan needs, each with least-privilege permissions."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import click

from snsq2nats.cli.app import Application, pass_app
from snsq2nats.cli.options import PlanInputs, plan_file_option, plan_options
from snsq2nats.cli.plans import plan_for


@click.command()
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
    show_default="password",
    help="bcrypt passwords, nkeys, or certificate-mapped users (mutual TLS, verify_and_map).",
)
@click.option(
    "--tls-user",
    show_default="{name}",
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
@click.option(
    "--iam",
    "with_iam",
    is_flag=True,
    help="Also derive an identity per IAM role and user whose policies let it send to, "
    "receive from or publish to the estate's queues and topics (reads the account's IAM: "
    "iam:GetAccountAuthorizationDetails), merged with the resource policies' grants.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the identities (with --iam, and the IAM report) as JSON to stdout.",
)
@pass_app
def auth(
    app: Application,
    plan_path: Path | None,
    inputs: PlanInputs,
    fmt: Literal["config", "jwt", "nsc"],
    credentials: Literal["password", "nkey", "tls"] | None,
    tls_user: str | None,
    url: str | None,
    out_dir: Path,
    with_iam: bool,
    as_json: bool,
) -> None:
    """Generate NATS users with least-privilege permissions for every queue, topic and tool."""
    import json

    from snsq2nats.auth.identities import identities
    from snsq2nats.auth.options import (
        DEFAULT_CREDENTIALS,
        DEFAULT_TLS_USER,
        check_options,
        check_plan_format,
    )
    from snsq2nats.auth.output import context_url, write_identities
    from snsq2nats.auth.record import merged_identities
    from snsq2nats.jetstream.connect import DEFAULT_NATS_URL

    check_options(fmt, credentials, tls_user)

    url = context_url(url, DEFAULT_NATS_URL)
    plan = plan_for(app, plan_path, inputs)
    check_plan_format(fmt, bool(plan.nats_accounts))
    report = None
    grants = None
    if with_iam:
        from snsq2nats.auth.iam import iam_grants
        from snsq2nats.aws.iam import iam_client, read_authorization

        authorization = read_authorization(iam_client(inputs.aws.endpoint_url))
        grants, report = iam_grants(plan, authorization)
    generated = identities(plan, grants)
    written = write_identities(
        generated,
        out_dir,
        fmt=fmt,
        credentials=credentials or DEFAULT_CREDENTIALS,
        tls_user=tls_user or DEFAULT_TLS_USER,
        url=url,
        iam=with_iam,
        merged=merged_identities(identities(plan), generated, report.aliases) if report else None,
        plan=plan,
    )
    if as_json:
        doc: dict[str, object] = {"identities": [i.to_dict() for i in generated]}
        if report is not None:
            doc["iam"] = report.to_dict()
        app.out.data(json.dumps(doc, indent=2))
        return
    if report is not None:
        from snsq2nats.report.iam import iam_summary, iam_table

        app.out.info(iam_table(report))
        app.out.info(iam_summary(report))
        for problem in report.problems:
            app.out.warn(problem)
    app.out.info(f"grants recorded in {written.record}: apply checks later plans against them")
    count = f"{len(generated)} identities"
    if fmt == "nsc":
        app.out.info(f"{count}: nsc script {written.main}")
    elif fmt == "jwt":
        app.out.info(f"{count}: server config {written.main}")
        app.out.info(
            f"creds files (0600) in {out_dir / 'creds'}, contexts in {out_dir / 'contexts'}"
        )
    else:
        app.out.info(f"{count}: server config {written.main}")
        contexts, secrets = out_dir / "contexts", out_dir / "secrets"
        app.out.info(f"natscli contexts in {contexts}; secrets (0600) in {secrets}")
    app.out.info(f"gateway access keys (0600, one per identity) in {written.keys}")
