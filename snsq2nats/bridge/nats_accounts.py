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


def route_account(plan: Plan, route: Route) -> str:
    """The NATS account a route's relay works in: the one holding its stream (the queue's for
    a queue's routes, the topic's for a topic's), else its AWS resource's account's."""
    for account in plan.nats_accounts:
        if route.stream is not None and route.stream in account.streams:
            return account.name
    try:
        aws = parse_arn(route.aws_arn).account
    except ValueError:
        return HOME
    return next((a.name for a in plan.nats_accounts if aws and a.aws_account == aws), HOME)


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

    @property
    def open_accounts(self) -> list[str]:
        """The accounts this process holds a connection to now."""
        return sorted(self._open)

    def account_of(self, route: Route) -> str:
        return route_account(self._plan(), route)

    async def acquire(self, route: Route) -> tuple[str, Client]:
        """The account `route` relays in and the connection to it, opened when it is the
        account's first route here."""
        account = self.account_of(route)
        if account == HOME:
            return account, self._home
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
            return account, nc

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
        """`runner` over its route's account's connection, held while it runs."""

        async def run(ctx: BridgeContext, route: Route) -> None:
            account, ctx.nc = await self.acquire(route)
            try:
                await runner(ctx, route)
            finally:
                await asyncio.shield(self.release(account))

        return run


async def close_connection(nc: Client, timeout: float = CLOSE_TIMEOUT) -> None:
    """Drain a connection when it is up (bounded: the server may go away meanwhile)."""
    if nc.is_connected:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.drain(), timeout)
    if not nc.is_closed:
        with contextlib.suppress(Exception):
            await nc.close()
