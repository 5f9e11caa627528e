"""One NATS connection per identity: the gateway acts on NATS as the request's principal.

Entry point: `IdentityConnections(keys, base)`; `await conns.connection(principal.identity)`
(or `.jetstream(…)`) returns that identity's connection, opened on first use with the
credential `auth` wrote for it (`keys.NatsCredential`) and reused by every later request of the
identity; `await conns.close()` (or `async with`) closes them all on stop. Because each
connection authenticates as the identity, the server enforces the identity's grants: a
producer key can publish its queue's subjects and nothing else, through the gateway as
directly.

`base` holds what every identity shares: the server URL(s) (default: the URL `auth` was given,
in the key file), the CA to trust and TLS-first. Credentials never come from it: a gateway
that connected as anyone but the request's identity would widen every key's permissions.
`publish` sends with a PubAck and fails at once with `PermissionDeniedError` when the server
refuses the subject to the identity, instead of waiting out a timeout.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from snsq2nats.errors import GatewayError, PermissionDeniedError, SnsqError, UsageError
from snsq2nats.gateway.keys import GatewayKey, GatewayKeys
from snsq2nats.jetstream.connect import DEFAULT_NATS_URL, NatsOptions, connect_nats
from snsq2nats.jetstream.permissions import denials_of

if TYPE_CHECKING:
    from nats.aio.client import Client

__all__ = ["IdentityConnections", "IdentityJetStream", "identity_options", "publish"]

log = logging.getLogger(__name__)

UNAVAILABLE = "ServiceUnavailable"


def identity_options(key: GatewayKey, base: NatsOptions) -> NatsOptions:
    """The connection options of `key`'s identity: `base`'s servers and trust, the identity's
    own credential and inbox prefix. UsageError when its credential file is missing."""
    nats = key.nats
    options = replace(
        base,
        context=None,
        creds=None,
        nkey=None,
        user=None,
        password=None,
        token=None,
        inbox_prefix=key.inbox_prefix,
    )
    if nats.kind == "password":
        password = _read_secret(nats.password_file, key.identity, "password file")
        return replace(options, user=nats.user or key.identity, password=password)
    if nats.kind == "nkey":
        return replace(options, nkey=_existing(nats.nkey, key.identity, "nkey seed"))
    if nats.kind == "creds":
        return replace(options, creds=_existing(nats.creds, key.identity, "creds file"))
    return _certificate_options(options, key)


def _existing(path: str | None, identity: str, what: str) -> str:
    if not path or not Path(path).is_file():
        raise UsageError(
            f"the {what} of identity {identity} does not exist",
            where=path,
            hint="run `snsq2nats auth` again with the same options (with --format nsc, export "
            "each identity's creds there: nsc generate creds)",
        )
    return path


def _read_secret(path: str | None, identity: str, what: str) -> str:
    try:
        return Path(_existing(path, identity, what)).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise UsageError(
            f"cannot read the {what} of identity {identity}: {exc.strerror}",
            where=path,
            hint="run the gateway as the user that ran `snsq2nats auth` (secrets are 0600)",
        ) from None


def _certificate_options(options: NatsOptions, key: GatewayKey) -> NatsOptions:
    """A certificate-mapped identity presents its own client certificate: the one its natscli
    context names (`auth` writes none: the operator's PKI issues them)."""
    context: Mapping[str, Any] = {}
    if key.nats.context and Path(key.nats.context).is_file():
        try:
            loaded = json.loads(Path(key.nats.context).read_text(encoding="utf-8"))
            context = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError):
            context = {}
    cert, private = context.get("cert"), context.get("key")
    if not isinstance(cert, str) or not isinstance(private, str):
        raise UsageError(
            f"identity {key.identity} authenticates with a client certificate "
            f"({key.nats.user}) and its context names none",
            where=key.nats.context,
            hint="put the certificate issued for it into the context's cert and key fields",
        )
    ca = context.get("ca")
    return replace(options, cert=cert, key=private, ca=ca if isinstance(ca, str) else options.ca)


class IdentityConnections:
    """The gateway's NATS connections, one per identity, opened lazily and reused."""

    def __init__(
        self,
        keys: GatewayKeys,
        base: NatsOptions | None = None,
        *,
        name: str = "snsq2nats-gateway",
    ) -> None:
        if base is None:
            servers = [u.strip() for u in keys.url.split(",") if u.strip()]
            base = NatsOptions(servers=servers or [DEFAULT_NATS_URL])
        self._keys = keys
        self._base = base
        self._name = name
        self._open: dict[str, asyncio.Task[Any]] = {}
        self._jetstreams: dict[str, IdentityJetStream] = {}
        self._closed = False

    async def connection(self, identity: str) -> Any:
        """`identity`'s connected nats-py client. GatewayError (503, the server's fault) when
        it cannot be opened; the reason is logged, without secrets."""
        if self._closed:
            raise GatewayError(UNAVAILABLE, "the gateway is stopping", status=503, sender=False)
        task = self._open.get(identity)
        if task is not None and task.done():
            failed = task.cancelled() or task.exception() is not None
            if failed or task.result().is_closed:
                # Reconnects were exhausted or the connect failed: a later request retries.
                task = None
        if task is None:
            task = asyncio.ensure_future(self._connect(identity))
            self._open[identity] = task
        try:
            return await asyncio.shield(task)
        except SnsqError as exc:
            log.warning("gateway: no NATS connection as %s: %s", identity, exc.one_line())
            raise GatewayError(
                UNAVAILABLE,
                f"the gateway cannot reach NATS as identity {identity}; try again later",
                status=503,
                sender=False,
            ) from None

    async def jetstream(self, identity: str) -> IdentityJetStream:
        """`identity`'s JetStream access, as `sns.handle_sns` takes it (one per connection)."""
        nc = await self.connection(identity)
        access = self._jetstreams.get(identity)
        if access is None or access.nc is not nc:
            access = self._jetstreams[identity] = IdentityJetStream(nc)
        return access

    async def _connect(self, identity: str) -> Any:
        key = self._keys.for_identity(identity)
        if key is None:
            raise UsageError(f"no access key for identity {identity}", hint="run `snsq2nats auth`")
        options = identity_options(key, self._base)
        # Retry for as long as the gateway runs: a NATS restart must not need a gateway restart.
        return await connect_nats(
            options, name=f"{self._name}:{identity}", max_reconnect_attempts=-1
        )

    @property
    def identities(self) -> list[str]:
        """The identities with an open (or opening) connection."""
        return sorted(self._open)

    async def close(self) -> None:
        """Drain and close every connection (pending publishes flushed first)."""
        self._closed = True
        tasks, self._open, self._jetstreams = list(self._open.values()), {}, {}
        for task in tasks:
            if not task.done():
                task.cancel()
        for task in tasks:
            try:
                nc = await task
            except (asyncio.CancelledError, Exception):
                continue
            if not nc.is_closed:
                try:
                    await nc.drain()
                except Exception:
                    await nc.close()

    async def __aenter__(self) -> IdentityConnections:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class IdentityJetStream:
    """One identity's connection and its JetStream context: nats-py's `publish`, failing at
    once on a permission refusal; `publish_core` for subjects no stream captures; anything
    else is the JetStream context's own (`pull_subscribe_bind`, `stream_info`, …)."""

    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self.js = nc.jetstream()

    async def publish(
        self,
        subject: str,
        payload: bytes = b"",
        timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        return await publish(
            self.nc, subject, payload, headers=headers, timeout=timeout or 10.0, js=self.js
        )

    async def publish_core(
        self, subject: str, payload: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> None:
        await self.nc.publish(subject, payload, headers=dict(headers) if headers else None)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.js, name)


async def publish(
    nc: Client,
    subject: str,
    payload: bytes,
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
    js: Any = None,
) -> Any:
    """Publish into JetStream and return the PubAck; `PermissionDeniedError` at once when the
    server refuses the subject (or the reply inbox) to this connection's identity."""
    js = js or nc.jetstream()
    sending = asyncio.ensure_future(
        js.publish(subject, payload, timeout=timeout, headers=dict(headers) if headers else None)
    )
    denials = denials_of(nc)
    try:
        while denials is not None:
            refusal = asyncio.ensure_future(denials.next())
            done, _ = await asyncio.wait({sending, refusal}, return_when=asyncio.FIRST_COMPLETED)
            refusal.cancel()
            if sending in done:
                break
            what = denials.blocking(subject)
            if what is not None:
                raise PermissionDeniedError(
                    f"permission denied: {denials.identity} may not {what}",
                    where=subject,
                    hint="the access key's identity lacks this grant: use the key of the "
                    "identity `snsq2nats auth` made for it",
                )
        return await sending
    finally:
        if not sending.done():
            sending.cancel()
