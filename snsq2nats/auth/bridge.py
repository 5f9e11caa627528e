"""The bridge's identity in each NATS account of a per-account plan: where `auth --format jwt`
wrote its creds, and the connection options the bridge opens each account with."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path

from snsq2nats.auth.identities import inbox_prefix
from snsq2nats.bridge.nats_accounts import route_accounts
from snsq2nats.errors import UsageError
from snsq2nats.jetstream.connect import NatsOptions
from snsq2nats.plan.accounts import HOME, admin_credentials
from snsq2nats.plan.model import Plan, Route

BRIDGE = "snsq2nats-bridge"
"""The bridge identity (`identities.bridge_identity`): one user of that name per account."""


def bridge_credentials(plan: Plan, auth_dir: Path) -> dict[str, Path]:
    """Each NATS account's bridge creds file under the directory `auth --format jwt` wrote
    (`creds/<account>/snsq2nats-bridge.creds`; the home account's `creds/snsq2nats-bridge.creds`,
    the file the bridge's own context names)."""
    return admin_credentials(plan, auth_dir, BRIDGE)


def account_options(
    plan: Plan, routes: Iterable[Route], base: NatsOptions, auth_dir: Path
) -> dict[str, NatsOptions]:
    """The connection options of every NATS account other than the home one that `routes` read
    from or publish into: the servers and TLS settings of `base`, the account's bridge creds
    from `auth_dir`. Refuses, naming each account and its file, when a creds file is missing."""
    files = bridge_credentials(plan, auth_dir)
    wanted = sorted(set().union(*(route_accounts(plan, r) for r in routes)) - {HOME})
    missing = [a for a in wanted if a not in files or not files[a].is_file()]
    if missing:
        where = ", ".join(f"{a} ({files.get(a, auth_dir / 'creds' / a)})" for a in missing)
        raise UsageError(
            f"no bridge credentials for NATS account(s) {where}: the plan puts each AWS account "
            f"in its own NATS account, and the bridge relays each route with its account's "
            f"{BRIDGE} user",
            hint="give --grants the directory `snsq2nats auth --plan PLAN --format jwt -o DIR` "
            "wrote for this plan (run it again if the plan gained an account)",
        )
    return {
        account: dataclasses.replace(
            base,
            context=None,
            creds=str(files[account]),
            nkey=None,
            user=None,
            password=None,
            token=None,
            inbox_prefix=inbox_prefix(BRIDGE),
        )
        for account in wanted
    }
