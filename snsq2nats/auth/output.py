"""Everything `snsq2nats auth` writes for one format, in one call: the grants record, then the
server config and contexts (config, jwt) or the nsc script (nsc), and the gateway's access keys
(every format)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from snsq2nats.auth.config import Mode, Written, write_auth, write_contexts, write_private
from snsq2nats.auth.identities import Identity
from snsq2nats.auth.jwt import nsc_script, write_jwt
from snsq2nats.auth.keys import absolute, write_gateway_keys
from snsq2nats.auth.record import RECORD, Merged, record_text
from snsq2nats.errors import UsageError
from snsq2nats.gateway.keys import NatsCredential
from snsq2nats.plan.model import Plan

Format = Literal["config", "jwt", "nsc"]


@dataclass
class AuthWritten:
    """What was written where (paths only: the secrets stay in their 0600 files)."""

    fmt: Format
    directory: Path
    record: Path
    # config: the authorization block; jwt: the operator-mode server config; nsc: the script.
    main: Path
    keys: Path
    """`gateway-keys.json`: the SigV4 key pair of every identity (0600)."""


def context_url(given: str | None, default: str) -> str:
    """Every cluster URL given, comma-separated as natscli takes them (`default` when none)."""
    url = ",".join(u.strip() for u in (given or default).split(",") if u.strip())
    if not url:
        raise UsageError("--server is empty", hint="give the NATS URL(s) the identities use")
    return url


def write_identities(
    generated: list[Identity],
    directory: Path,
    *,
    fmt: Format,
    credentials: Mode,
    tls_user: str,
    url: str,
    iam: bool = False,
    merged: dict[str, Merged] | None = None,
    plan: Plan | None = None,
) -> AuthWritten:
    """Write `generated` into `directory` as `fmt` says, with the grants record `apply` checks
    later plans against (permissions and these options, no secrets); `iam`: generated with
    `--iam`, `merged` the identities that merged (see `record.merged_identities`)."""
    options = ["--format", fmt] if fmt != "config" else ["--credentials", credentials]
    options += ["--iam"] if iam else []
    options += ["--tls-user", tls_user] if fmt == "config" and credentials == "tls" else []
    options += ["--url", url] if fmt != "nsc" and url else []
    record = directory / RECORD
    write_private(record, record_text(generated, options, merged))
    if fmt == "nsc":
        script = directory / "nsc.sh"
        write_private(script, nsc_script(generated))
        script.chmod(0o700)  # run by its owner, readable by no one else
        # nsc holds the seeds: the gateway reads each identity's creds file where the
        # operator exports it (`nsc generate creds`), beside the other formats' creds.
        expected = {
            i.name: NatsCredential("creds", creds=absolute(directory / "creds" / f"{i.name}.creds"))
            for i in generated
        }
        keys = write_gateway_keys(generated, directory, expected, url)
        return AuthWritten(fmt, directory, record, script, keys)
    if fmt == "jwt":
        accounts = (plan.nats_accounts, plan.crossings) if plan is not None else ([], [])
        jwt = write_jwt(generated, directory, *accounts)
        creds = {name: {"creds": str(path)} for name, path in jwt.creds.items()}
        write_contexts(generated, directory, url, creds)
        nats = {name: NatsCredential("creds", creds=absolute(p)) for name, p in jwt.creds.items()}
        keys = write_gateway_keys(generated, directory, nats, url)
        return AuthWritten(fmt, directory, record, jwt.server_config, keys)
    tls_names = {i.name: tls_user.format(name=i.name) for i in generated}
    written = write_auth(
        generated,
        directory,
        mode=credentials,
        url=url,
        tls_names=tls_names if credentials == "tls" else None,
    )
    keys = write_gateway_keys(generated, directory, _config_credentials(written, tls_names), url)
    return AuthWritten(fmt, directory, record, written.config, keys)


def _config_credentials(written: Written, tls_names: dict[str, str]) -> dict[str, NatsCredential]:
    """How each identity of `--format config` connects: its password file or nkey seed, or
    (mutual TLS) the certificate its context names."""
    out: dict[str, NatsCredential] = {}
    for name, context in written.contexts.items():
        secret = written.secrets.get(name)
        if secret is None:
            out[name] = NatsCredential("tls", user=tls_names[name], context=absolute(context))
        elif secret.suffix == ".nk":
            out[name] = NatsCredential("nkey", nkey=absolute(secret))
        else:
            out[name] = NatsCredential("password", user=name, password_file=absolute(secret))
    return out
