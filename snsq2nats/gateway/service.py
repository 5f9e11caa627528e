"""Running the gateway: the estate it serves, its listener, and a stop that loses nothing.

`serve` connects to NATS, takes the estate from a plan file or from the revision `apply`
recorded in NATS (and follows later applies), listens, and runs until `stop` is set (the CLI
sets it on SIGTERM/SIGINT). Stopping closes the listener first, lets requests in flight finish
(a long poll ends within its 20 s), then drains the NATS connection. A message received and not
deleted stays with JetStream: it comes back when its visibility timeout ends, whichever replica
or worker asks next.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from snsq2nats.errors import SnsqError, UsageError
from snsq2nats.gateway.connections import IdentityConnections
from snsq2nats.gateway.estate import Estate
from snsq2nats.gateway.handles import HandleSigner
from snsq2nats.gateway.keys import GatewayKeys
from snsq2nats.gateway.principal import Authenticator
from snsq2nats.gateway.server import Gateway, NatsLink, PerIdentity, SharedConnection
from snsq2nats.gateway.sqs import SqsActions

if TYPE_CHECKING:
    from nats.aio.client import Client

    from snsq2nats.jetstream.connect import NatsOptions
    from snsq2nats.plan.model import Plan

log = logging.getLogger(__name__)

FOLLOW_EVERY = 10.0
"""Seconds between reads of the applied revision (a new apply's queues appear within this)."""
STOP_GRACE = 25.0
"""Seconds requests in flight may take to finish at a stop: above the longest long poll."""


@dataclass(frozen=True)
class GatewaySettings:
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    handle_secret: str | None = None

    def ssl_context(self) -> ssl.SSLContext | None:
        if self.tls_cert is None and self.tls_key is None:
            return None
        if self.tls_cert is None or self.tls_key is None:
            raise UsageError(
                "--tls-cert and --tls-key go together",
                hint="give both (the key may also sit in the certificate file: pass it twice)",
            )
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(self.tls_cert, self.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(
                f"cannot load the TLS certificate {self.tls_cert} and key {self.tls_key}: {exc}",
                hint="pass a PEM certificate (chain) and its unencrypted PEM key",
            ) from None
        return context


def load_authenticator(spec: str) -> Authenticator:
    """`MODULE:NAME`: a class or function that, called with no argument, gives the verifier."""
    module_name, _, attribute = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError):
        raise UsageError(
            f"no authenticator {spec!r}", hint="name it as MODULE:NAME, importable here"
        ) from None
    authenticator: Authenticator = factory()
    return authenticator


class EstateSource:
    """The estate now: a plan file's, or the applied revision's, re-read as it changes."""

    def __init__(self, plan: Plan | None) -> None:
        self.fixed = plan is not None
        self.revision = 0
        self.estate = Estate.from_plan(plan) if plan is not None else Estate([])

    def __call__(self) -> Estate:
        return self.estate

    async def load(self, nc: Client) -> None:
        from snsq2nats.bridge.follow import read_applied

        if self.fixed:
            return
        applied = await read_applied(nc)
        if applied is None:
            raise SnsqError(
                "no plan is applied on this NATS server: the gateway has no queues to serve",
                where="the snsq2nats_revision bucket",
                hint="run `snsq2nats apply`, or pass --plan FILE",
            )
        if applied.revision != self.revision:
            self.estate = Estate.from_plan(applied.plan)
            self.revision = applied.revision
            log.info("serving revision %d: %d queues", applied.revision, len(self.estate.queues))

    async def follow(self, nc: Client) -> None:
        while not self.fixed:
            await asyncio.sleep(FOLLOW_EVERY)
            try:
                await self.load(nc)
            except SnsqError as exc:
                log.warning("the applied revision cannot be read now: %s", exc.one_line())


async def serve(
    nats: NatsOptions,
    settings: GatewaySettings,
    authenticator: Authenticator,
    plan: Plan | None,
    stop: asyncio.Event,
    on_listening: Callable[[str], None] = lambda url: None,
    *,
    keys: GatewayKeys | None = None,
) -> None:
    """Serve until `stop` is set. With `keys`, each request runs on NATS as its access key's
    identity (one connection per identity); without, on the gateway's own connection."""
    from aiohttp import web

    from snsq2nats.jetstream.connect import connect_nats

    context = settings.ssl_context()
    if settings.handle_secret is None:
        log.warning(
            "no receipt-handle secret given: only this process accepts its handles; give every "
            "replica the same SNSQ2NATS_GATEWAY_SECRET"
        )
    nc = await connect_nats(nats, name="snsq2nats gateway")
    follower: asyncio.Task[None] | None = None
    identities = IdentityConnections(keys, nats) if keys is not None else None
    link: NatsLink = PerIdentity(identities) if identities is not None else SharedConnection(nc)
    try:
        source = EstateSource(plan)
        await source.load(nc)
        gateway = Gateway(
            SqsActions(source, HandleSigner(settings.handle_secret)),
            authenticator,
            link,
            public_url=settings.public_url,
        )
        follower = asyncio.create_task(source.follow(nc))
        runner = web.AppRunner(gateway.app(), shutdown_timeout=STOP_GRACE, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, settings.host, settings.port, ssl_context=context)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise UsageError(
                f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}",
                hint="choose another --listen address or stop what holds it",
            ) from None
        host, port = runner.addresses[0][:2]
        scheme = "https" if context else "http"
        gateway.ready = True
        on_listening(f"{scheme}://{host}:{port}")
        await stop.wait()
        # Not ready first (a load balancer stops sending), then no new connections, then the
        # requests in flight finish: cleanup waits for them up to STOP_GRACE.
        gateway.ready = False
        await runner.cleanup()
    finally:
        if follower is not None:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
        if identities is not None:
            await identities.close()
        with contextlib.suppress(Exception):
            await nc.drain()
