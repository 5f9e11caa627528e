"""Operator/JWT mode: the identities as user JWTs in one JetStream-enabled account, or (a plan
with `accounts: {nats: per-account}`) in one NATS account per AWS account.

An operator signs a system account and the application account (JetStream enabled); the
account signs one user JWT per identity, carrying that identity's publish and subscribe allow
lists. Each user gets a creds file (JWT + seed, mode 0600); the server gets an operator block
with a MEMORY resolver preloaded with both accounts. Seeds already on disk are reused, so a
re-run re-signs permissions without changing any application's credentials.

Per account, each account's JetStream limits come from the plan (`plan.accounts`: its streams,
its consumers and the sources reading its streams, storage from `max_bytes`), and each
cross-account edge adds its exports to the origin account and its imports to the queue's. An
identity of a queue or topic lives in that resource's account; the admin, the bridge and the
principals get one user per account (`creds/<account>/<name>.creds`; the home account's at
`creds/<name>.creds`), each with the same grants, which only ever reach its own account.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from snsq2nats.auth.config import HEADER, write_private
from snsq2nats.auth.identities import Identity
from snsq2nats.aws.arns import parse_arn
from snsq2nats.plan.model import Crossing, NatsAccount

ACCOUNT = "SNSQ2NATS"
SYSTEM = "SYS"
_HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}
_UNLIMITED = -1


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _compact(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Key:
    public: str
    seed: str

    def sign(self, data: bytes) -> bytes:
        import nkeys

        pair = nkeys.from_seed(self.seed.encode())
        try:
            signed: bytes = pair.sign(data)
            return signed
        finally:
            pair.wipe()


def new_key(role: str) -> Key:
    """A fresh key pair of one role: OPERATOR, ACCOUNT or USER."""
    import nkeys

    seed = nkeys.encode_seed(os.urandom(32), getattr(nkeys, f"PREFIX_BYTE_{role}"))
    return _key(seed.decode())


def _key(seed: str) -> Key:
    import nkeys

    pair = nkeys.from_seed(seed.encode())
    try:
        return Key(public=pair.public_key.decode(), seed=seed)
    finally:
        pair.wipe()


def load_or_create_key(path: Path, role: str) -> Key:
    """The key whose seed is in `path`, or a new one written there (0600)."""
    if path.exists():
        return _key(path.read_text().strip())
    key = new_key(role)
    write_private(path, key.seed + "\n")
    return key


def sign_jwt(issuer: Key, subject: str, name: str, claims: dict[str, Any]) -> str:
    standard: dict[str, Any] = {
        "iat": int(time.time()),
        "iss": issuer.public,
        "name": name,
        "sub": subject,
    }
    # The jti identifies the JWT: a hash of its standard claims (SHA-512/256 where available).
    try:
        digest = hashlib.new("sha512_256", _compact(standard)).digest()
    except ValueError:
        digest = hashlib.sha256(_compact(standard)).digest()
    jti = base64.b32encode(digest).rstrip(b"=").decode()
    body = {"jti": jti, **standard, "nats": {**claims, "version": 2}}
    signing_input = f"{_b64url(_compact(_HEADER))}.{_b64url(_compact(body))}"
    return f"{signing_input}.{_b64url(issuer.sign(signing_input.encode()))}"


def account_claims(*, jetstream: bool) -> dict[str, Any]:
    limits: dict[str, Any] = {
        key: _UNLIMITED for key in ("subs", "data", "payload", "imports", "exports", "conn", "leaf")
    }
    limits["wildcards"] = True
    if jetstream:
        limits |= {k: _UNLIMITED for k in ("mem_storage", "disk_storage", "streams", "consumer")}
    return {"type": "account", "limits": limits}


def sized_account_claims(
    account: NatsAccount, exports: list[dict[str, Any]], imports: list[dict[str, Any]]
) -> dict[str, Any]:
    """A per-account plan's account: JetStream limited to what the plan puts there."""
    claims = account_claims(jetstream=True)
    claims["limits"] |= {
        "streams": account.max_streams,
        "consumer": account.max_consumers,
        "disk_storage": account.disk_storage,
        "mem_storage": account.memory_storage,
    }
    if exports:
        claims["exports"] = exports
    if imports:
        claims["imports"] = imports
    return claims


def crossing_grants(
    crossings: list[Crossing], keys: dict[str, Key]
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[dict[str, Any]]]]:
    """Each account's exports and imports (JWT claim form, each subject once) for the edges."""
    exports: dict[str, list[dict[str, Any]]] = {}
    imports: dict[str, list[dict[str, Any]]] = {}
    for crossing in crossings:
        if crossing.how != "stream-source":
            continue
        origin = keys[crossing.from_account].public
        for grant in crossing.exports:
            claim = {"name": grant.subject, "subject": grant.subject, "type": grant.type}
            if claim not in exports.setdefault(crossing.from_account, []):
                exports[crossing.from_account].append(claim)
        for grant in crossing.imports:
            claim = {
                "name": f"{crossing.from_account} {grant.subject}",
                "subject": grant.subject,
                "account": origin,
                "type": grant.type,
            }
            if grant.local_subject:
                claim["local_subject"] = grant.local_subject
            if claim not in imports.setdefault(crossing.to_account, []):
                imports[crossing.to_account].append(claim)
    return exports, imports


def user_claims(identity: Identity) -> dict[str, Any]:
    return {
        "type": "user",
        "pub": {"allow": list(identity.publish)},
        "sub": {"allow": list(identity.subscribe)},
        "subs": _UNLIMITED,
        "data": _UNLIMITED,
        "payload": _UNLIMITED,
    }


def creds_text(user_jwt: str, seed: str) -> str:
    """The decorated creds format nsc writes and every NATS client reads."""
    return (
        f"-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n"
        "NKEYs are sensitive and should be treated as secrets.\n\n"
        f"-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n"
        "*************************************************************\n"
    )


@dataclass
class JwtWritten:
    server_config: Path
    settings: dict[str, Any]
    """The server config's settings as data (to embed in a larger config)."""
    creds: dict[str, Path]
    accounts: dict[str, dict[str, Path]] | None = None
    """Per-account plans: each NATS account's creds files by identity."""


def _home_of(identity: Identity, accounts: list[NatsAccount]) -> str | None:
    """The NATS account an identity of a queue or topic lives in (None: every account)."""
    if identity.serves is None:
        return None
    try:
        aws = parse_arn(identity.serves).account
    except ValueError:
        return None
    return next((a.name for a in accounts if a.aws_account == aws), None)


def write_jwt(
    identities: list[Identity],
    directory: Path,
    accounts: list[NatsAccount] | None = None,
    crossings: list[Crossing] | None = None,
) -> JwtWritten:
    """Write `snsq2nats-jwt.conf` (operator, system account, MEMORY resolver preload) and one
    creds file per identity under `directory`; seeds live in `directory/secrets`. With
    `accounts` (a per-account plan), one NATS account each, linked by `crossings`."""
    if accounts:
        return _write_per_account(identities, directory, accounts, crossings or [])
    secrets = directory / "secrets"
    operator = load_or_create_key(secrets / "operator.nk", "OPERATOR")
    system = load_or_create_key(secrets / "account-sys.nk", "ACCOUNT")
    account = load_or_create_key(secrets / "account-snsq2nats.nk", "ACCOUNT")
    operator_jwt = sign_jwt(
        operator,
        operator.public,
        "snsq2nats",
        {"type": "operator", "system_account": system.public},
    )
    system_jwt = sign_jwt(operator, system.public, SYSTEM, account_claims(jetstream=False))
    account_jwt = sign_jwt(operator, account.public, ACCOUNT, account_claims(jetstream=True))
    creds: dict[str, Path] = {}
    longest = 0
    for identity in identities:
        user = load_or_create_key(secrets / f"{identity.name}.nk", "USER")
        user_jwt = sign_jwt(account, user.public, identity.name, user_claims(identity))
        longest = max(longest, len(user_jwt))
        path = directory / "creds" / f"{identity.name}.creds"
        write_private(path, creds_text(user_jwt, user.seed))
        creds[identity.name] = path
    settings: dict[str, Any] = {
        "operator": operator_jwt,
        "system_account": system.public,
        "resolver": "MEMORY",
        "resolver_preload": {system.public: system_jwt, account.public: account_jwt},
        # A client sends its JWT in the CONNECT line: the server's default limit (4 KiB) is
        # smaller than the JWT of an identity with many grants (the admin, the bridge).
        "max_control_line": max(4096, (longest + 4096 + 1023) // 1024 * 1024),
    }
    config = directory / "snsq2nats-jwt.conf"
    body = "".join(f"{key}: {json.dumps(value, indent=2)}\n" for key, value in settings.items())
    write_private(config, f"{HEADER}\n{body}")
    return JwtWritten(config, settings, creds)


def _write_per_account(
    identities: list[Identity],
    directory: Path,
    accounts: list[NatsAccount],
    crossings: list[Crossing],
) -> JwtWritten:
    secrets = directory / "secrets"
    operator = load_or_create_key(secrets / "operator.nk", "OPERATOR")
    system = load_or_create_key(secrets / "account-sys.nk", "ACCOUNT")
    keys = {
        a.name: load_or_create_key(secrets / f"account-{a.name.lower()}.nk", "ACCOUNT")
        for a in accounts
    }
    operator_jwt = sign_jwt(
        operator,
        operator.public,
        "snsq2nats",
        {"type": "operator", "system_account": system.public},
    )
    exports, imports = crossing_grants(crossings, keys)
    preload = {
        system.public: sign_jwt(operator, system.public, SYSTEM, account_claims(jetstream=False))
    }
    for held in accounts:
        claims = sized_account_claims(held, exports.get(held.name, []), imports.get(held.name, []))
        preload[keys[held.name].public] = sign_jwt(
            operator, keys[held.name].public, held.name, claims
        )
    creds: dict[str, Path] = {}
    per_account: dict[str, dict[str, Path]] = {a.name: {} for a in accounts}
    longest = 0
    for identity in identities:
        home = _home_of(identity, accounts)
        for account in [home] if home else [a.name for a in accounts]:
            # The home account's users (or a served identity's) keep the one-account paths.
            flat = account in (home, ACCOUNT)
            seed_file = identity.name if flat else f"{account}/{identity.name}"
            user = load_or_create_key(secrets / f"{seed_file}.nk", "USER")
            user_jwt = sign_jwt(keys[account], user.public, identity.name, user_claims(identity))
            longest = max(longest, len(user_jwt))
            path = directory / "creds" / f"{seed_file}.creds"
            write_private(path, creds_text(user_jwt, user.seed))
            per_account[account][identity.name] = path
            if flat or identity.name not in creds:
                creds[identity.name] = path
    settings: dict[str, Any] = {
        "operator": operator_jwt,
        "system_account": system.public,
        "resolver": "MEMORY",
        "resolver_preload": preload,
        "max_control_line": max(4096, (longest + 4096 + 1023) // 1024 * 1024),
    }
    config = directory / "snsq2nats-jwt.conf"
    body = "".join(f"{key}: {json.dumps(value, indent=2)}\n" for key, value in settings.items())
    write_private(config, f"{HEADER}\n{body}")
    return JwtWritten(config, settings, creds, per_account)


# nsc's own flags (nsc add operator|account|user, nsc edit account); checked in the tests
# against nsc's documented flag set, since nsc itself is not installable here.
def nsc_script(identities: list[Identity], *, operator: str = "snsq2nats") -> str:
    lines = [
        "#!/bin/sh",
        HEADER,
        "# The same account and users for teams that manage their operator with nsc.",
        "# Run it against an nsc environment whose operator you sign with; then push the account",
        "# (nsc push -A) or regenerate the server's resolver config (nsc generate config).",
        "set -eu",
        f"OPERATOR=${{OPERATOR:-{operator}}}",
        'nsc select operator "$OPERATOR"',
        f"nsc add account --name {ACCOUNT}",
        f"nsc edit account --name {ACCOUNT} --js-enable 1",
    ]
    for identity in identities:
        lines.append(
            f"nsc add user --account {ACCOUNT} --name {shlex.quote(identity.name)}"
            f" --allow-pub {shlex.quote(','.join(identity.publish))}"
            f" --allow-sub {shlex.quote(','.join(identity.subscribe))}"
        )
    return "\n".join(lines) + "\n"
