"""gateway: the SQS API served from JetStream, so applications move by changing an endpoint."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from snsq2nats.cli.app import Application, pass_app
from snsq2nats.cli.options import NatsInputs, nats_options
from snsq2nats.errors import UsageError

if TYPE_CHECKING:
    from snsq2nats.gateway.principal import Authenticator


def _address(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(
            f"--listen {value!r} is not HOST:PORT", hint="e.g. 0.0.0.0:8080 (port 0: any free)"
        )
    return host.strip("[]") or "0.0.0.0", int(port)


@click.command()
@click.option(
    "--listen",
    default="127.0.0.1:8080",
    show_default=True,
    envvar="SNSQ2NATS_GATEWAY_LISTEN",
    metavar="HOST:PORT",
    help="Where the API, /healthz, /readyz and /metrics listen; 0.0.0.0:8080 in a pod. "
    "Env: SNSQ2NATS_GATEWAY_LISTEN.",
)
@click.option(
    "--public-url",
    envvar="SNSQ2NATS_GATEWAY_PUBLIC_URL",
    metavar="URL",
    help="The base of the queue URLs handed to clients (a load balancer's address); by default "
    "the address each client reached. Env: SNSQ2NATS_GATEWAY_PUBLIC_URL.",
)
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--tls-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="With --tls-cert: serve HTTPS.",
)
@click.option(
    "--plan",
    "plan_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Serve this plan file's queues instead of the revision `apply` recorded in NATS "
    "(which the gateway follows as it changes).",
)
@click.option(
    "--handle-secret",
    envvar="SNSQ2NATS_GATEWAY_SECRET",
    metavar="TEXT",
    show_envvar=False,
    help="The secret sealing receipt handles; every replica needs the same one. Prefer the "
    "environment (SNSQ2NATS_GATEWAY_SECRET) to the command line, which others can read.",
)
@click.option(
    "--keys",
    "keys_path",
    default="nats-auth",
    show_default=True,
    envvar="SNSQ2NATS_GATEWAY_KEYS",
    type=click.Path(path_type=Path),
    help="The access keys `snsq2nats auth` wrote (gateway-keys.json, or its directory): each "
    "request's SigV4 signature is verified with them and runs on NATS as the key's identity. "
    "Env: SNSQ2NATS_GATEWAY_KEYS.",
)
# Tests only: a verifier that skips signatures, with one shared NATS connection.
@click.option("--authenticator", hidden=True, metavar="MODULE:NAME")
@nats_options
@pass_app
def gateway(
    app: Application,
    listen: str,
    public_url: str | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    plan_path: Path | None,
    handle_secret: str | None,
    keys_path: Path,
    authenticator: str | None,
    nats: NatsInputs,
) -> None:
    """Serve the applied queues over the SQS API (JSON and Query protocols) from JetStream.

    Point an application's AWS_ENDPOINT_URL_SQS at the gateway and it sends, receives and deletes
    through the queues' streams and worker durables, with no code change. Replicas are
    stateless: run several behind a load balancer with the same --handle-secret. SIGTERM stops
    it gracefully: no new requests, those in flight finish, held messages return to their queue
    when their visibility timeout ends.
    """
    import asyncio
    import signal

    from snsq2nats.console import configure_logging
    from snsq2nats.gateway.keys import load_keys
    from snsq2nats.gateway.service import GatewaySettings, load_authenticator, serve
    from snsq2nats.gateway.sigv4 import SigV4Authenticator
    from snsq2nats.plan.model import load_plan

    configure_logging(app.out.console)
    host, port = _address(listen)
    settings = GatewaySettings(
        host=host,
        port=port,
        public_url=public_url,
        tls_cert=tls_cert,
        tls_key=tls_key,
        handle_secret=handle_secret,
    )
    plan = load_plan(plan_path) if plan_path is not None else None
    if authenticator is None:
        keys = load_keys(keys_path)
        verifier: Authenticator = SigV4Authenticator(keys)
    else:
        keys, verifier = None, load_authenticator(authenticator)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(
            nats.options,
            settings,
            verifier,
            plan,
            stop,
            keys=keys,
            on_listening=lambda url: app.out.line(f"gateway listening on {url}"),
        )
        app.out.line("gateway stopped")

    asyncio.run(run())
