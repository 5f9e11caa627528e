"""The gateway's access keys, written beside the identities (`gateway-keys.json`, 0600).

One SigV4 key pair per identity, in every `--format`: the gateway verifies requests with it and
acts on NATS as that identity, so NATS enforces the identity's grants through the gateway too.
A re-run keeps the key of every identity that still exists (applications keep their AWS
credentials across re-plans), issues keys to new identities and drops removed ones. The file
format and its reader live in `gateway.keys`; nothing here prints a key.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from snsq2nats.auth.config import write_private
from snsq2nats.auth.identities import Identity
from snsq2nats.gateway.keys import (
    KEYS_FILE,
    GatewayKey,
    NatsCredential,
    keys_text,
    load_keys,
    new_key,
)


def write_gateway_keys(
    identities: list[Identity],
    directory: Path,
    credentials: Mapping[str, NatsCredential],
    url: str,
) -> Path:
    """Write `directory/gateway-keys.json`: a key per identity, existing ones kept.

    `credentials` says how each identity connects to NATS in the format just written."""
    path = directory / KEYS_FILE
    existing = load_keys(path) if path.exists() else None
    keys: list[GatewayKey] = []
    for identity in identities:
        nats = credentials[identity.name]
        kept = existing.for_identity(identity.name) if existing is not None else None
        if kept is not None:
            keys.append(
                GatewayKey(
                    access_key_id=kept.access_key_id,
                    secret=kept.secret,
                    identity=identity.name,
                    inbox_prefix=identity.inbox_prefix,
                    nats=nats,
                )
            )
        else:
            keys.append(new_key(identity.name, identity.inbox_prefix, nats))
    write_private(path, keys_text(keys, url))
    return path


def absolute(path: Path) -> str:
    """Paths in the key file are absolute: the gateway runs from any directory."""
    return str(path.expanduser().absolute())
