"""The admin's connections to every NATS account of a per-account plan, for the commands that
read or write streams in each (`status`, `verify`): the NATS options given connect to the home
account, and each other account is reached with the admin creds `auth --format jwt` wrote
there (`creds/<account>/snsq2nats-admin.creds`), found as `apply --grants` finds them."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from snsq2nats.errors import UsageError

if TYPE_CHECKING:
    from nats.aio.client import Client

    from snsq2nats.cli.options import NatsInputs
    from snsq2nats.jetstream.connect import NatsOptions
    from snsq2nats.plan.model import Plan

ADMIN = "snsq2nats-admin"


def grants_option_help(command: str) -> str:
    return (
        "A plan with `accounts: {nats: per-account}`: the directory `snsq2nats auth --format "
        f"jwt` wrote (or its grants.json); {command} reads each NATS account's streams with "
        "its creds/<account>/snsq2nats-admin.creds, the NATS options connect to the home "
        "account. Default: beside the --context file auth wrote, else ./nats-auth. "
        "Env: SNSQ2NATS_GRANTS."
    )


def admin_options(
    plan: Plan, nats: NatsInputs, given: Path | None, command: str, *, before: str = ""
) -> dict[str, NatsOptions]:
    """The connection options of each NATS account but the home one: the servers and TLS
    settings of the NATS options given, the account's admin creds. Empty for a plan in one
    NATS account; refuses, naming what is missing, when auth's output is not found (`before`:
    what to do instead when nothing exists yet, added to the hint)."""
    if not plan.nats_accounts:
        return {}
    from snsq2nats.auth.identities import inbox_prefix
    from snsq2nats.auth.record import find_record
    from snsq2nats.plan.accounts import HOME, admin_credentials

    hint = f"run `snsq2nats auth --plan PLAN --format jwt -o DIR`, then {command} with --grants DIR"
    record = find_record(given, nats.context)
    if record is None:
        raise UsageError(
            f"the plan puts each AWS account in its own NATS account: {command} reads each "
            "account's streams with that account's admin credentials, and found no `auth` "
            "output to take them from",
            hint=hint + before,
        )
    files = {
        account: path
        for account, path in admin_credentials(plan, record.path.parent).items()
        if account != HOME
    }
    missing = sorted(f"{account} ({path})" for account, path in files.items() if not path.is_file())
    if missing:
        raise UsageError(
            f"no admin credentials for NATS account(s) {', '.join(missing)}",
            hint=hint + " (run auth again if the plan gained an account)",
        )
    return {
        account: dataclasses.replace(
            nats.options,
            creds=str(path),
            nkey=None,
            user=None,
            password=None,
            token=None,
            inbox_prefix=inbox_prefix(ADMIN),
        )
        for account, path in files.items()
    }


@contextlib.asynccontextmanager
async def connected(options: dict[str, NatsOptions], name: str) -> AsyncIterator[dict[str, Client]]:
    """A connection to each account of `options`, closed on the way out."""
    from snsq2nats.jetstream.connect import connect_nats

    opened: dict[str, Client] = {}
    try:
        for account, account_options in sorted(options.items()):
            opened[account] = await connect_nats(account_options, name=f"{name} {account}")
        yield opened
    finally:
        for nc in opened.values():
            with contextlib.suppress(Exception):
                await nc.close()
