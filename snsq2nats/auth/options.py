"""Which `auth` options each format reads, so one it would ignore is refused, not dropped.

`--credentials` and `--tls-user` shape `--format config` only: a JWT's user authenticates
with the nkey in its creds file, and nsc makes its own. Passing them with another format (or
`--tls-user` without certificate-mapped users) would silently produce something other than
what was asked for.
"""

from __future__ import annotations

from typing import Final

from snsq2nats.errors import UsageError

DEFAULT_CREDENTIALS: Final = "password"
DEFAULT_TLS_USER = "{name}"


def check_options(fmt: str, credentials: str | None, tls_user: str | None) -> None:
    """Refuse an option `fmt` ignores; `credentials`/`tls_user` are None when not given."""
    if fmt != "config":
        given = [
            flag
            for flag, value in (("--credentials", credentials), ("--tls-user", tls_user))
            if value is not None
        ]
        if given:
            raise UsageError(
                f"{' and '.join(given)} only {'apply' if len(given) > 1 else 'applies'} to "
                f"--format config, not --format {fmt}",
                hint="JWT users authenticate with the nkey in their creds file and nsc makes "
                "its own: drop the option, or use --format config",
            )
    elif tls_user is not None and (credentials or DEFAULT_CREDENTIALS) != "tls":
        raise UsageError(
            "--tls-user only applies with --credentials tls",
            hint="it names the certificate each identity maps to; passwords and nkeys have none",
        )


def check_plan_format(fmt: str, per_account: bool) -> None:
    """A plan with `accounts: {nats: per-account}` has several NATS accounts: only operator
    mode (`--format jwt`) creates accounts, with their exports and imports."""
    if per_account and fmt != "jwt":
        raise UsageError(
            f"the plan puts each AWS account in its own NATS account (accounts: {{nats: "
            f"per-account}}), which --format {fmt} cannot express",
            hint="use --format jwt (operator mode creates the accounts, their JetStream limits "
            "and the exports/imports of each cross-account edge), or plan with `nats: one`",
        )
