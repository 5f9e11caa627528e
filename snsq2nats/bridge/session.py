"""One bridge run: AWS clients, a NATS connection that never gives up, the routes, a view.

The CLI's `bridge` command and `snsq2nats demo` both run the bridge through here. What the
bridge has to say goes to the `snsq2nats.bridge` loggers and what it shows to the caller's
`View` (`report.live.LiveView`); the caller decides where both go.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from snsq2nats.aws.accounts import RouteAccounts, async_session, no_credentials_hint
from snsq2nats.aws.arns import parse_arn
from snsq2nats.aws.clients import async_clients
from snsq2nats.bridge.context import MAX_AWS_CALLS, RelaySettings
from snsq2nats.bridge.nats_accounts import (
    AccountConnections,
    close_connection,
    route_account,
    route_accounts,
)
from snsq2nats.errors import UsageError
from snsq2nats.plan.accounts import HOME
from snsq2nats.plan.model import Plan, Route

if TYPE_CHECKING:
    from nats.aio.client import Client

    from snsq2nats.aws.clients import AsyncClients
    from snsq2nats.bridge.context import BridgeContext
    from snsq2nats.jetstream.connect import NatsOptions

log = logging.getLogger(__name__)

# The NATS connection's own drain at the very end (the routes are done by then).
CLOSE_TIMEOUT = 5.0

# A long poll waits up to 20 s: a read timeout under that would cut idle polls off.
READ_TIMEOUT = 40
# Connections for the calls other than long polls (sends, deletes, visibility changes): as many
# as may be out at once.
CALL_CONNECTIONS = MAX_AWS_CALLS


def aws_connections(routes: int, pollers: int) -> int:
    """A connection for every poller of every route (a long poll holds its own for the whole
    wait), and CALL_CONNECTIONS that no poll can take for the sends, deletes and the rest.
    Only what is in use is open: an idle route holds one."""
    return max(1, pollers) * routes + CALL_CONNECTIONS


def _allow_open_files(wanted: int) -> None:
    """Raise the soft limit on open files towards `wanted` (within the hard limit): a socket
    per long poll, and a soft limit of 1,024 is common."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        if target > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        if target < wanted:
            log.warning("open files limited to %d: busy routes may want up to %d", target, wanted)


class NoCredentials(Exception):
    """A route's AWS account is not the base credentials' and no account option covers it."""


class AccountPool:
    """The bridge's AWS clients: one SQS/SNS pair per AWS account × region the routes live in,
    never one per route. The base credentials' account uses them directly; another account's
    pair acts through its profile or its assumed role (`aws.accounts.RouteAccounts`), the role
    assumed on the first call, once for all of the account's regions, and again before the keys
    expire."""

    def __init__(
        self,
        stack: contextlib.AsyncExitStack,
        endpoint_url: str | None,
        accounts: RouteAccounts,
        base_account: str | None,
        region: str | None,
    ) -> None:
        self._stack = stack
        self._endpoint_url = endpoint_url
        self._accounts = accounts
        self._base_account = base_account
        self._region = region
        self._sessions: dict[str, Any] = {}
        self._clients: dict[tuple[str, str | None], AsyncClients] = {}
        self._unopened: set[tuple[str, str | None]] = set()
        self.missing: dict[str, list[str]] = {}
        """Accounts without credentials, with the names of their routes."""

    def place(self, route: Route) -> tuple[str, str | None]:
        """Whose clients a route uses: its account ("" for the base credentials') and region
        (`--region` when given, else where its ARN says)."""
        parts = parse_arn(route.aws_arn)
        # No base account asked (`_needs_accounts`): every route is the base credentials'.
        base = self._base_account is None or parts.account in ("", self._base_account)
        account = "" if base else parts.account
        return account, self._region or parts.region or None

    async def open(self, routes: list[Route], pollers: int) -> None:
        """Open the clients `routes` need (no call to AWS yet), noting the accounts that have
        no credentials instead of failing: their routes alone cannot run."""
        wanted: dict[tuple[str, str | None], int] = {}
        for route in routes:
            account, region = self.place(route)
            if account and self._accounts.source(account) is None:
                self.missing.setdefault(account, []).append(route.name)
                continue
            wanted[(account, region)] = wanted.get((account, region), 0) + 1
        for (account, region), count in wanted.items():
            session = None
            if account:
                if account not in self._sessions:
                    source = self._accounts.source(account)
                    assert source is not None  # checked above
                    self._sessions[account] = await async_session(
                        source, self._endpoint_url, region
                    )
                session = self._sessions[account]
            self._clients[(account, region)] = await self._stack.enter_async_context(
                async_clients(
                    region,
                    self._endpoint_url,
                    aws_connections(count, pollers),
                    read_timeout=READ_TIMEOUT,
                    session=session,
                )
            )

    def runnable(self, route: Route) -> bool:
        """Whether the route's clients exist. A route a later revision brings in an account or
        region no route had at the start has none (they are opened before relaying starts):
        said once, it waits for a restart."""
        place = self.place(route)
        if place in self._clients:
            return True
        if place[0] not in self.missing and place not in self._unopened:
            self._unopened.add(place)
            log.error(
                "%s: no AWS clients for account %s in %s (it was not in the plan when the "
                "bridge started): restart the bridge to relay it",
                route.name,
                place[0] or "of the base credentials",
                place[1] or "the default region",
            )
        return False

    def clients(self, route: Route) -> tuple[Any, Any]:
        place = self.place(route)
        found = self._clients.get(place)
        if found is None:
            raise NoCredentials(f"{route.name}: no AWS clients for account {place[0] or 'base'}")
        return found.sqs, found.sns

    def first(self) -> AsyncClients | None:
        return next(iter(self._clients.values()), None)


def _needs_accounts(routes: list[Route], accounts: RouteAccounts) -> bool:
    """Whether the routes' accounts must be told apart: always when account options are
    given, else only when the routes span several accounts (one account's plan is bridged with
    the base credentials, as it always was, without asking STS whose they are)."""
    return accounts.given or len({parse_arn(r.aws_arn).account for r in routes}) > 1


class View(Protocol):
    async def show(self, ctx: BridgeContext) -> None:
        """Show progress until `ctx.stopping` is set."""

    def final(self, ctx: BridgeContext) -> None:
        """Show the outcome, once every route has drained."""


async def bridge_session(
    nats: NatsOptions,
    plan: Plan,
    routes: list[Route],
    *,
    regions: tuple[str, ...],
    endpoint_url: str | None,
    settings: RelaySettings,
    duration: float | None,
    metrics_port: int | None,
    cleanup: bool,
    metrics_host: str | None = None,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[], None] | None = None,
    view: View | None = None,
    lease_ttl: float | None = None,
    select: Callable[[list[Route]], list[Route]] | None = None,
    drain_timeout: float | None = None,
    nats_grace: float | None = None,
    plan_revision: int = 0,
    accounts: RouteAccounts | None = None,
    nats_accounts: Mapping[str, NatsOptions] | None = None,
) -> None:
    """Run the routes until a signal, --duration, --max-messages, or `stop` (for embedders).

    The process is a member of the bridge fleet (`bridge.fleet`): it runs the routes it holds
    the lease of, all of them when it is alone. `on_ready` runs once the clients and the
    connection exist, just before relaying starts (the CLI freezes the heap there).

    With `select` (and a plan that lists its candidate routes) the bridge follows the live
    cutover state (`bridge.follow`): it runs the candidates the recorded state needs that
    `select` keeps, and switches when a move is recorded; `routes` are then only checked.

    A stop drains for `drain_timeout` at most (`nats_grace` once NATS is gone; defaults in
    `runtime.run_bridge`) and raises `runtime.DrainIncomplete`, having logged what was left
    undelivered, when cut short.

    It follows the applied revision too (`plan_revision`: the one `plan` is, 0 for a plan
    file when none is recorded): an `apply` switches its routes without a restart.

    Each route's AWS calls act in its own account (`accounts`: how the accounts other than the
    base credentials' are reached); a route whose account has none is not run, said once per
    account, and the others run.

    A plan that puts each AWS account in its own NATS account (`plan.nats_accounts`) has each
    route relayed over a connection to its stream's account, with that account's options in
    `nats_accounts` (`auth.bridge.account_options`), opened when the account's first route
    starts here (`bridge.nats_accounts`); `nats` is then the home account's, which holds the
    fleet's buckets.
    """
    from snsq2nats.aws.clients import caller_account
    from snsq2nats.bridge.context import BridgeContext
    from snsq2nats.bridge.fleet import DEFAULT_LEASE_TTL, Fleet, open_bucket
    from snsq2nats.bridge.follow import CutoverFollower
    from snsq2nats.bridge.metrics import DEFAULT_METRICS_HOST, serve_metrics
    from snsq2nats.bridge.runtime import DRAIN_TIMEOUT, NATS_GRACE, DrainIncomplete, run_bridge
    from snsq2nats.bridge.sns_to_nats import cleanup_sns_to_nats
    from snsq2nats.errors import NatsConnectError
    from snsq2nats.jetstream.connect import connect_nats
    from snsq2nats.jetstream.state import stream_names

    accounts = accounts or RouteAccounts()
    elsewhere = _other_nats_accounts(plan, routes)
    if elsewhere and nats_accounts is None:
        raise UsageError(
            "the plan puts each AWS account in its own NATS account, and the bridge was given "
            f"no credentials for {', '.join(elsewhere)}",
            hint="give --grants the directory `snsq2nats auth --plan PLAN --format jwt -o DIR` "
            "wrote for this plan",
        )
    # The routes' own region unless told otherwise: the ARNs say where the resources live.
    region = regions[0] if regions else None
    connections = aws_connections(len(routes), settings.pollers)
    _allow_open_files(connections + 100)

    closing = False

    async def disconnected() -> None:
        if not closing:
            log.warning("NATS disconnected: reconnecting")

    async def reconnected() -> None:
        log.info("NATS reconnected")

    # A bridge outlives server restarts: reconnect for ever, never give up on the connection.
    nc = await connect_nats(
        nats,
        name="snsq2nats bridge",
        allow_reconnect=True,
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        disconnected_cb=disconnected,
        reconnected_cb=reconnected,
    )

    async def connect_account(options: NatsOptions, name: str) -> Client:
        async def account_disconnected() -> None:
            if not closing:
                log.warning("NATS disconnected (%s): reconnecting", name)

        async def account_reconnected() -> None:
            log.info("NATS reconnected (%s)", name)

        return await connect_nats(
            options,
            name=name,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=1,
            disconnected_cb=account_disconnected,
            reconnected_cb=account_reconnected,
        )

    clients = contextlib.AsyncExitStack()
    try:
        base_account = None
        if _needs_accounts(routes, accounts):
            base_region = region or parse_arn(routes[0].aws_arn).region or None
            base_account = await caller_account(base_region, endpoint_url)
        pool = AccountPool(clients, endpoint_url, accounts, base_account, region)
        await pool.open(routes, settings.pollers)
    except BaseException:
        await clients.aclose()
        await nc.close()
        raise
    for account, names in pool.missing.items():
        log.error(
            "AWS account %s has no credentials: its route(s) %s do not run; %s",
            account,
            ", ".join(names),
            no_credentials_hint(account),
        )
    aws = pool.first()
    ctx = BridgeContext.tuned(
        settings,
        plan=plan,
        nc=nc,
        sqs=aws.sqs if aws is not None else None,
        sns=aws.sns if aws is not None else None,
    )
    ctx.clients_for = pool.clients
    if nats_accounts is not None and plan.nats_accounts:
        ctx.nats_accounts = AccountConnections(lambda: ctx.plan, nc, nats_accounts, connect_account)
    for route in routes:
        account = pool.place(route)[0]
        if account in pool.missing:
            why = f"no credentials for AWS account {account}"
            ctx.route_metrics(route).status = f"not available: {why}"
    routes = [r for r in routes if pool.runnable(r)]
    if select is not None:
        chosen = select

        def select_runnable(candidates: list[Route]) -> list[Route]:
            return [r for r in chosen(candidates) if pool.runnable(r)]

        select = select_runnable
    server = None
    try:
        # Another NATS account's streams are seen over its own connection, made only once a
        # route there starts (a missing one is then its runner's error, retried).
        here = [r for r in routes if not plan.nats_accounts or route_account(plan, r) == HOME]
        missing = sorted({r.stream for r in here if r.stream} - await stream_names(nc))
        if missing:
            raise NatsConnectError(
                f"stream(s) {', '.join(missing)} do not exist",
                where=nats.redacted_servers,
                hint="run `snsq2nats apply` with this plan before bridging",
            )
        if cleanup:
            for route in routes:
                if not await _cleanup(ctx, route, cleanup_sns_to_nats):
                    log.info("%s: no bridge queue %s", route.name, route.bridge_queue)
            return
        await open_bucket(nc, nats.redacted_servers)
        follower = None
        if select is not None and plan.candidate_routes:
            follower = CutoverFollower(nc, plan, select, plan_revision)
            routes = await follower.start(nats.redacted_servers)
            ctx.plan = follower.plan
        fleet = Fleet(nc, routes, lease_ttl=lease_ttl or DEFAULT_LEASE_TTL)
        if metrics_port is not None:
            host = metrics_host or DEFAULT_METRICS_HOST
            server = await serve_metrics(ctx, metrics_port, host, fleet=fleet)
            log.info("metrics on %s:%d/metrics", host, server.sockets[0].getsockname()[1])
        log.info(
            "fleet member %s: %d candidate route(s): %s",
            fleet.member,
            len(routes),
            ", ".join(r.name for r in routes),
        )
        if on_ready is not None:
            on_ready()
        showing = asyncio.create_task(view.show(ctx)) if view is not None else None
        relay_stop = asyncio.create_task(_forward(stop, ctx.stopping)) if stop else None
        following = (
            asyncio.create_task(follower.follow(fleet, ctx.stopping, ctx), name="cutover-follow")
            if follower is not None
            else None
        )
        try:
            await run_bridge(
                ctx,
                routes,
                duration=duration,
                coordinator=fleet,
                drain_timeout=DRAIN_TIMEOUT if drain_timeout is None else drain_timeout,
                nats_grace=NATS_GRACE if nats_grace is None else nats_grace,
            )
        except DrainIncomplete:
            if view is not None:
                view.final(ctx)  # the table as the drain left it, above the error
            raise
        finally:
            ctx.stopping.set()
            if relay_stop is not None:
                relay_stop.cancel()
            if following is not None:
                following.cancel()
                await asyncio.gather(following, return_exceptions=True)
            if follower is not None:
                await follower.close()
            if showing is not None:
                await showing
        if view is not None:
            view.final(ctx)
    finally:
        if server is not None:
            server.close()
        closing = True
        if ctx.nats_accounts is not None:
            await ctx.nats_accounts.close()
        await _close_nats(nc)
        await clients.aclose()


async def _close_nats(nc: Client) -> None:
    """Drain the connection when it is up (bounded: the server may go away meanwhile)."""
    await close_connection(nc, CLOSE_TIMEOUT)


def _other_nats_accounts(plan: Plan, routes: list[Route]) -> list[str]:
    """The NATS accounts besides the home one that `routes` read or publish in (none: one
    account)."""
    if not plan.nats_accounts:
        return []
    return sorted(set().union(*(route_accounts(plan, r) for r in routes)) - {HOME})


async def _cleanup(
    ctx: BridgeContext, route: Route, cleanup: Callable[[BridgeContext, Route], Any]
) -> bool:
    """`--cleanup` of one topic's bridge queue, over its NATS account's connection."""
    child = ctx.for_route(route)
    if ctx.nats_accounts is None:
        return bool(await cleanup(child, route))
    account, child.nc = await ctx.nats_accounts.acquire(route)
    try:
        return bool(await cleanup(child, route))
    finally:
        await ctx.nats_accounts.release(account)


async def _forward(source: asyncio.Event, target: asyncio.Event) -> None:
    await source.wait()
    target.set()
