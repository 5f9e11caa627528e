"""The bridge's NATS connections when the plan puts each AWS account in a NATS account of its own
(`accounts: {nats: per-account}`, `plan.accounts`).

A NATS account sees only its own streams, so one connection cannot relay every route: each
route's relay works over a connection to the NATS account holding the route's stream, made with
that account's bridge identity (`auth --format jwt` writes one per account:
`creds/<account>/snsq2nats-bridge.creds`). The bridge's own connection, the one its NATS
options name, stays in the home account (`plan.accounts.HOME`), which holds what no AWS account
owns: the fleet's heartbeats and leases, the cutover state and the applied revision. That
connection is the one every bridge already has, so a fleet member finds its fleet, its leases
and the plan the same way whatever the plan's accounts.

Connections to the other accounts are opened on demand, when a route of the account starts on
this fleet member, and closed when its last route there stops: a member holds none for an
account it runs no routes in. A one-account plan never gets here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

from snsq2nats.aws.arns import parse_arn
from snsq2nats.errors import UsageError
from snsq2nats.plan.accounts import HOME
from snsq2nats.plan.model import Plan, Route

if TYPE_CHECKING:
    from nats.aio.client import Client

    from snsq2nats.bridge.context import BridgeContext
    from snsq2nats.jetstream.connect import NatsOptions

log = logging.getLogger(__name__)

CLOSE_TIMEOUT = 5.0
"""An account's connection's drain once its last route here stopped (the routes are done)."""

Connect = Callable[["NatsOptions", str], Awaitable["Client"]]
"""Opens one account's connection (options, connection name); the session's own kind."""
Runner = Callable[["BridgeContext", Route], Awaitable[None]]


def _holder(plan: Plan, stream: str | None) -> str | None:
    if stream is None:
        return None
    return next((a.name for a in plan.nats_accounts if stream in a.streams), None)


def route_account(plan: Plan, route: Route) -> str:
    """The NATS account a route's relay works in: the one holding its stream (the queue's for
    a queue's routes, the topic's for a topic's), else its AWS resource's account's."""
    held = _holder(plan, route.stream)
    if held is not None:
        return held
    try:
        aws = parse_arn(route.aws_arn).account
    except ValueError:
        return HOME
    return next((a.name for a in plan.nats_accounts if aws and a.aws_account == aws), HOME)


def target_account(plan: Plan, route: Route) -> str | None:
    """The NATS account a route publishes into when it is not the one it reads from: a filter
    router whose topic is in one account and whose subscribed queue is in another."""
    target = _holder(plan, route.target_stream)
    return target if target is not None and target != route_account(plan, route) else None


def route_accounts(plan: Plan, route: Route) -> set[str]:
    """Every NATS account a route's relay needs a connection to."""
    target = target_account(plan, route)
    return {route_account(plan, route), *([target] if target else [])}


class AccountConnections:
    """The connections to the NATS accounts other than the home one, each opened when its first
    route here starts (`acquire`) and closed when its last one stops (`release`)."""

    def __init__(
        self,
        plan: Callable[[], Plan],
        home: Client,
        options: Mapping[str, NatsOptions],
        connect: Connect,
    ) -> None:
        # Read each time a route starts: a later applied revision may bring new routes.
        self._plan = plan
        self._home = home
        self._options = dict(options)
        self._connect = connect
        self._open: dict[str, Client] = {}
        self._users: dict[str, int] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def account_of(self, route: Route) -> str:
        return route_account(self._plan(), route)

    async def acquire(self, route: Route) -> tuple[str, Client]:
        """The account `route` relays in and the connection to it, opened when it is the
        account's first route here."""
        account = self.account_of(route)
        return account, await self._hold(account, route)

    async def _hold(self, account: str, route: Route) -> Client:
        if account == HOME:
            return self._home
        options = self._options.get(account)
        if options is None:
            raise UsageError(
                f"{route.name}: no bridge credentials for NATS account {account} (it was not in "
                "the plan when the bridge started)",
                hint="run `snsq2nats auth --plan PLAN --format jwt -o DIR` for the applied plan "
                "and restart the bridge with --grants DIR",
            )
        lock = self._locks.setdefault(account, asyncio.Lock())
        async with lock:
            nc = self._open.get(account)
            if nc is None:
                nc = await self._connect(options, f"snsq2nats bridge {account}")
                self._open[account] = nc
                log.info("NATS account %s: connected with its bridge identity", account)
            self._users[account] = self._users.get(account, 0) + 1
            return nc

    async def release(self, account: str) -> None:
        """A route of `account` no longer relays: close the connection if it was the last."""
        if account == HOME or account not in self._users:
            return
        async with self._locks.setdefault(account, asyncio.Lock()):
            self._users[account] -= 1
            if self._users[account] > 0:
                return
            del self._users[account]
            nc = self._open.pop(account, None)
        if nc is not None:
            log.info("NATS account %s: no route here any more, connection closed", account)
            await close_connection(nc)

    async def close(self) -> None:
        """Close every account's connection (the bridge's end)."""
        held, self._open, self._users = list(self._open.values()), {}, {}
        await asyncio.gather(*(close_connection(nc) for nc in held))

    def wrap(self, runner: Runner) -> Runner:
        """`runner` over its route's account's connection, held while it runs (and, for a
        route publishing into another account, that account's as `ctx.target_nc`)."""

        async def run(ctx: BridgeContext, route: Route) -> None:
            account, ctx.nc = await self.acquire(route)
            held = [account]
            try:
                target = target_account(self._plan(), route)
                if target is not None:
                    ctx.target_nc = await self._hold(target, route)
                    held.append(target)
                await runner(ctx, route)
            finally:
                for name in held:
                    await asyncio.shield(self.release(name))

        return run


async def close_connection(nc: Client, timeout: float = CLOSE_TIMEOUT) -> None:
    """Drain a connection when it is up (bounded: the server may go away meanwhile)."""
    if nc.is_connected:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.drain(), timeout)
    if not nc.is_closed:
        with contextlib.suppress(Exception):
            await nc.close()
