"""The gateway's access keys: one SigV4 key pair per identity `auth` generated.

`snsq2nats auth` writes `gateway-keys.json` (mode 0600) into its output directory, in every
`--format`. Each entry names an access key id, its secret access key, the identity it stands
for, that identity's inbox prefix and how the identity connects to NATS — as a path to the
credential `auth` wrote for the format (a password file, an nkey seed, a creds file; for
certificate-mapped users the natscli context that carries the certificate), never the NATS
secret itself, so rotating it there is picked up without rewriting the keys.

Entry point: `load_keys(path)` returns `GatewayKeys`, a mapping from access key id to
`GatewayKey`, which `sigv4.SigV4Authenticator` takes as is. Regenerating (`auth` after a
re-plan) keeps the key of every identity that still exists, so applications keep their
`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` across re-plans; a removed identity's key goes.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from snsq2nats.errors import SnsqError

__all__ = [
    "KEYS_FILE",
    "GatewayKey",
    "GatewayKeys",
    "NatsCredential",
    "keys_text",
    "load_keys",
    "new_key",
]

KEYS_FILE = "gateway-keys.json"
FORMAT_VERSION = 1
ACCESS_KEY_PREFIX = "AKSQ"
# Access key ids look like AWS's (20 characters of A-Z and 2-7) so SDKs and tools that check
# their shape accept them; the secret has AWS's length (40).
_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"

CredentialKind = Literal["password", "nkey", "creds", "tls"]


@dataclass(frozen=True)
class NatsCredential:
    """How one identity connects to NATS: paths to the files `auth` wrote, no secret."""

    kind: CredentialKind
    user: str | None = None
    """password: the NATS user name; tls: the certificate identity it maps to."""
    password_file: str | None = None
    nkey: str | None = None
    creds: str | None = None
    context: str | None = None
    """tls: the identity's natscli context, whose `cert`/`key`/`ca` the gateway presents."""

    def to_json(self) -> dict[str, str]:
        fields = {
            "kind": self.kind,
            "user": self.user,
            "password_file": self.password_file,
            "nkey": self.nkey,
            "creds": self.creds,
            "context": self.context,
        }
        return {name: value for name, value in fields.items() if value is not None}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> NatsCredential:
        kind = raw["kind"]
        if kind not in ("password", "nkey", "creds", "tls"):
            raise ValueError(f"unknown credential kind {kind!r}")
        return cls(
            kind=kind,
            user=_optional(raw, "user"),
            password_file=_optional(raw, "password_file"),
            nkey=_optional(raw, "nkey"),
            creds=_optional(raw, "creds"),
            context=_optional(raw, "context"),
        )


def _optional(raw: Mapping[str, Any], name: str) -> str | None:
    value = raw.get(name)
    return None if value is None else str(value)


@dataclass(frozen=True)
class GatewayKey:
    access_key_id: str
    secret: str = field(repr=False)
    identity: str
    inbox_prefix: str
    nats: NatsCredential


class GatewayKeys(Mapping[str, GatewayKey]):
    """The keys of one `gateway-keys.json`, by access key id (what SigV4 looks up)."""

    def __init__(self, keys: list[GatewayKey], *, path: Path | None = None, url: str = "") -> None:
        self._by_id = {k.access_key_id: k for k in keys}
        self._by_identity = {k.identity: k for k in keys}
        self.path = path
        self.url = url
        """The NATS URL(s) `auth` was given (comma-separated): the gateway's default server."""

    def __getitem__(self, access_key_id: str) -> GatewayKey:
        return self._by_id[access_key_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_id)

    def __len__(self) -> int:
        return len(self._by_id)

    def for_identity(self, identity: str) -> GatewayKey | None:
        return self._by_identity.get(identity)

    def __repr__(self) -> str:
        return f"GatewayKeys({len(self)} keys from {self.path})"


def new_key(identity: str, inbox_prefix: str, nats: NatsCredential) -> GatewayKey:
    """A fresh random key pair for `identity`."""
    suffix = "".join(secrets.choice(_ID_ALPHABET) for _ in range(20 - len(ACCESS_KEY_PREFIX)))
    return GatewayKey(
        access_key_id=ACCESS_KEY_PREFIX + suffix,
        secret=secrets.token_urlsafe(30),
        identity=identity,
        inbox_prefix=inbox_prefix,
        nats=nats,
    )


def keys_text(keys: list[GatewayKey], url: str) -> str:
    """The file's text (write it with mode 0600: it holds every secret access key)."""
    body = {
        "format_version": FORMAT_VERSION,
        "generated_by": "snsq2nats auth",
        "about": "SigV4 access keys for `snsq2nats gateway`, one per identity; secret: keep "
        "this file 0600 and hand each application only its own key",
        "url": url,
        "keys": [
            {
                "access_key_id": k.access_key_id,
                "secret_access_key": k.secret,
                "identity": k.identity,
                "inbox_prefix": k.inbox_prefix,
                "nats": k.nats.to_json(),
            }
            for k in keys
        ],
    }
    return json.dumps(body, indent=2) + "\n"


def load_keys(path: Path) -> GatewayKeys:
    """The keys in `path` (the file, or the `auth` output directory holding it)."""
    if path.is_dir():
        path = path / KEYS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SnsqError(
            "no gateway access keys",
            where=str(path),
            hint="run `snsq2nats auth` (it writes gateway-keys.json into its output directory)",
        ) from None
    except OSError as exc:
        raise SnsqError(
            f"cannot read the gateway access keys: {exc.strerror}",
            where=str(path),
            hint="the file is 0600: run the gateway as the user that ran `snsq2nats auth`",
        ) from None
    try:
        body: Any = json.loads(text)
        if body.get("format_version") != FORMAT_VERSION:
            raise ValueError("unknown format_version")
        keys = [
            GatewayKey(
                access_key_id=str(entry["access_key_id"]),
                secret=str(entry["secret_access_key"]),
                identity=str(entry["identity"]),
                inbox_prefix=str(entry["inbox_prefix"]),
                nats=NatsCredential.from_json(entry["nats"]),
            )
            for entry in body["keys"]
        ]
    except (ValueError, KeyError, TypeError, AttributeError):
        # Never the parser's text: it may quote a line of the file, i.e. a secret.
        raise SnsqError(
            "the gateway access keys file is not one `snsq2nats auth` wrote",
            where=str(path),
            hint="restore it from a backup, or remove it and re-run `snsq2nats auth`, which "
            "then issues new keys to every identity",
        ) from None
    return GatewayKeys(keys, path=path, url=str(body.get("url") or ""))
