"""Connection settings and connect helpers for the two ends of a migration.

NATS settings follow natscli's conventions so an operator's existing `nats` setup works as is:
`--server` / `NATS_URL`, `--context` / `NATS_CONTEXT` (natscli context files) and the
`NATS_*` credential variables.  Precedence is flags, then environment, then the context file,
then the default local server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import socket
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from snsq2nats.errors import NatsConnectError, NatsRefusedError, UsageError
from snsq2nats.jetstream.permissions import Denials, watch

if TYPE_CHECKING:
    from nats.aio.client import Client

__all__ = [
    "DEFAULT_NATS_URL",
    "NatsOptions",
    "connect_nats",
    "context_dir",
    "redact_url",
]

log = logging.getLogger(__name__)

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
DEFAULT_INBOX_PREFIX = "_INBOX"

# Environment variables natscli honours, mapped to our field names.
_ENV_FIELDS: dict[str, str] = {
    "creds": "NATS_CREDS",
    "nkey": "NATS_NKEY",
    "user": "NATS_USER",
    "password": "NATS_PASSWORD",
    "token": "NATS_TOKEN",
    "cert": "NATS_CERT",
    "key": "NATS_KEY",
    "ca": "NATS_CA",
    # A user whose permissions allow only its own inbox (as `snsq2nats auth` generates) needs
    # its replies there: natscli contexts carry it as `inbox_prefix`.
    "inbox_prefix": "NATS_INBOX_PREFIX",
}
_PATH_FIELDS = ("creds", "nkey", "cert", "key", "ca")
_SECRET_FIELDS = ("password", "token")

_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")

_CONNECT_HINT = (
    "check --server / NATS_URL (or the context's url) and that nats-server is running "
    "and reachable; for TLS servers check NATS_CA / NATS_CERT / NATS_KEY"
)
_AUTH_HINT = (
    "check the credentials given by NATS_USER / NATS_PASSWORD, NATS_TOKEN, NATS_CREDS, "
    "NATS_NKEY or the NATS context"
)
_TLS_HINT = (
    "check NATS_CA (the CA that signed the server certificate), NATS_CERT / NATS_KEY "
    "(a client certificate, if the server requires one) and that the URL host matches the "
    "server certificate"
)


def redact_url(url: str) -> str:
    """Drop any `user:password@` or `token@` part of a server URL."""
    url = url.strip()
    match = _SCHEME_RE.match(url)
    scheme = match.group(0) if match else ""
    rest = url[len(scheme) :]
    # The last '@' rather than the first: a password may itself contain an unescaped '@',
    # and leaking half a password is as bad as leaking all of it.
    if "@" in rest:
        rest = rest.rsplit("@", 1)[1]
    return scheme + rest


def context_dir(config_home: Path | None = None, env: Mapping[str, str] | None = None) -> Path:
    """Where natscli keeps contexts: `$XDG_CONFIG_HOME/nats` or `~/.config/nats`."""
    if config_home is None:
        environ = os.environ if env is None else env
        xdg = environ.get("XDG_CONFIG_HOME")
        config_home = Path(xdg) if xdg else Path.home() / ".config"
    return config_home / "nats"


def _split_urls(value: str) -> list[str]:
    return [u.strip() for u in value.split(",") if u.strip()]


def _expand(path: str) -> str:
    return os.path.expanduser(path)


@dataclass(frozen=True)
class NatsOptions:
    """Everything needed to open a NATS connection; secrets never appear in repr()."""

    servers: list[str] = field(default_factory=lambda: [DEFAULT_NATS_URL])
    context: str | None = None
    creds: str | None = None
    nkey: str | None = None  # path to an nkey seed file, as in natscli
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    cert: str | None = None
    key: str | None = None
    ca: str | None = None
    inbox_prefix: str | None = None
    tls_first: bool = False
    connect_timeout: float = 5.0

    def __repr__(self) -> str:
        parts = [f"servers={[redact_url(s) for s in self.servers]!r}"]
        for f in fields(self):
            if f.name == "servers":
                continue
            value = getattr(self, f.name)
            if f.name in _SECRET_FIELDS:
                if value is not None:
                    parts.append(f"{f.name}=<set>")
            elif value not in (None, False) or f.name == "connect_timeout":
                parts.append(f"{f.name}={value!r}")
        return f"NatsOptions({', '.join(parts)})"

    __str__ = __repr__

    @property
    def identity(self) -> str:
        """Who this connection is, for messages (never a secret)."""
        if self.user:
            return f"user {self.user}"
        if self.creds:
            return f"creds {Path(self.creds).name}"
        if self.nkey:
            return f"nkey {Path(self.nkey).name}"
        if self.cert:
            return f"certificate {Path(self.cert).name}"
        if self.context:
            return f"context {self.context}"
        return "this connection"

    @property
    def redacted_servers(self) -> str:
        return ", ".join(redact_url(s) for s in self.servers)

    @property
    def uses_tls(self) -> bool:
        return bool(
            self.ca
            or self.cert
            or self.tls_first
            or any(s.strip().lower().startswith(("tls://", "wss://")) for s in self.servers)
        )

    @classmethod
    def resolve(
        cls,
        server: str | None = None,
        context: str | None = None,
        env: Mapping[str, str] | None = None,
        config_home: Path | None = None,
    ) -> NatsOptions:
        """Combine flags, environment and a natscli context the way natscli does.

        `config_home` stands for `$XDG_CONFIG_HOME`: contexts are read from its `nats/` folder.
        """
        environ: Mapping[str, str] = os.environ if env is None else env
        ctx_ref = context or environ.get("NATS_CONTEXT") or None
        base = context_dir(config_home, environ)
        if ctx_ref is None:
            ctx_ref = _selected_context(base)
        ctx_name: str | None = None
        ctx: dict[str, Any] = {}
        if ctx_ref is not None:
            ctx_name, ctx = _load_context(ctx_ref, base, environ)

        values: dict[str, Any] = {}
        servers_value = server or environ.get("NATS_URL") or ctx.get("url")
        servers = _split_urls(str(servers_value)) if servers_value else []
        values["servers"] = servers or [DEFAULT_NATS_URL]
        for name, var in _ENV_FIELDS.items():
            value = environ.get(var) or ctx.get(name) or None
            if value is not None and name in _PATH_FIELDS:
                value = _expand(str(value))
            values[name] = value
        values["tls_first"] = bool(ctx.get("tls_first", False))
        values["context"] = ctx_name
        return cls(**values)

    def without_secrets(self) -> NatsOptions:
        """A copy safe to store in reports: secrets removed, URLs redacted."""
        return replace(
            self,
            servers=[redact_url(s) for s in self.servers],
            password=None,
            token=None,
        )

    def secrets(self) -> list[str]:
        """Values that must never appear in any message."""
        out = [v for v in (self.password, self.token) if v]
        for s in self.servers:
            match = _SCHEME_RE.match(s)
            rest = s[match.end() :] if match else s
            if "@" in rest:
                userinfo = rest.rsplit("@", 1)[0]
                out.extend(p for p in userinfo.split(":", 1) if len(p) >= 3)
        return out


def _selected_context(base: Path) -> str | None:
    marker = base / "context.txt"
    try:
        name = marker.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UsageError(
            f"cannot read the selected NATS context: {exc.strerror}",
            where=str(marker),
            hint="fix the file's permissions or pass --context",
        ) from None
    return name or None


def _looks_like_path(ref: str) -> bool:
    return ref.endswith(".json") or os.sep in ref or (os.altsep is not None and os.altsep in ref)


def _load_context(ref: str, base: Path, environ: Mapping[str, str]) -> tuple[str, dict[str, Any]]:
    if _looks_like_path(ref):
        path = Path(_expand(ref))
        name = path.stem
        missing_hint = "pass the path of an existing natscli context JSON file"
    else:
        path = base / "context" / f"{ref}.json"
        name = ref
        missing_hint = (
            f"list the available contexts with `nats context ls` or `ls {base / 'context'}`, "
            "select one with --context NAME or NATS_CONTEXT, or pass a path to a context file"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(
            f"NATS context {ref!r} not found", where=str(path), hint=missing_hint
        ) from None
    except OSError as exc:
        raise UsageError(
            f"cannot read NATS context {ref!r}: {exc.strerror}",
            where=str(path),
            hint="check the file's permissions",
        ) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"NATS context {ref!r} is not valid JSON ({exc.msg}, line {exc.lineno} "
            f"column {exc.colno})",
            where=str(path),
            hint="fix the file, or recreate it with `nats context save`",
        ) from None
    if not isinstance(data, dict):
        raise UsageError(
            f"NATS context {ref!r} is not a JSON object",
            where=str(path),
            hint="fix the file, or recreate it with `nats context save`",
        )
    ctx: dict[str, Any] = {}
    for key in (
        "url",
        "user",
        "password",
        "token",
        "creds",
        "nkey",
        "cert",
        "key",
        "ca",
        "inbox_prefix",
    ):
        value = data.get(key)
        if isinstance(value, str) and value:
            ctx[key] = _deref(value, key, path, environ)
    ctx["tls_first"] = bool(data.get("tls_first", False))
    return name, ctx


def _deref(value: str, key: str, path: Path, environ: Mapping[str, str]) -> str:
    """Resolve the secret references newer natscli versions accept in context fields."""
    if value.startswith("env://"):
        var = value[len("env://") :]
        resolved = environ.get(var)
        if resolved is None:
            raise UsageError(
                f"NATS context field {key!r} refers to environment variable {var}, "
                "which is not set",
                where=str(path),
                hint=f"export {var} or change the context",
            )
        return resolved
    if value.startswith("file://"):
        file_path = _expand(value[len("file://") :])
        if key in _PATH_FIELDS:
            return file_path
        try:
            return Path(file_path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise UsageError(
                f"cannot read NATS context field {key!r} from {file_path}: {exc.strerror}",
                where=str(path),
                hint="check the referenced file",
            ) from None
    if re.match(r"^(op|nsc|data):", value) and key in (*_SECRET_FIELDS, *_PATH_FIELDS):
        scheme = value.split(":", 1)[0]
        raise UsageError(
            f"NATS context field {key!r} uses a {scheme}: reference, which snsq2nats "
            "cannot resolve",
            where=str(path),
            hint="use a plain value, a file path, file:// or env:// in the context, or set "
            "the matching NATS_* environment variable",
        )
    return value


def _require_file(opts: NatsOptions, name: str, var: str) -> str | None:
    value: str | None = getattr(opts, name)
    if value is None:
        return None
    if not Path(value).is_file():
        raise UsageError(
            f"the {name} file for NATS does not exist",
            where=value,
            hint=f"check {var}, the --context file's {name!r} field, or the path",
        )
    return value


def _tls_context(opts: NatsOptions) -> ssl.SSLContext | None:
    if not opts.uses_tls:
        return None
    ca = _require_file(opts, "ca", "NATS_CA")
    cert = _require_file(opts, "cert", "NATS_CERT")
    key = _require_file(opts, "key", "NATS_KEY")
    if (cert is None) != (key is None):
        raise UsageError(
            "a client certificate needs both a certificate and a key",
            where=cert or key,
            hint="set both NATS_CERT and NATS_KEY (or both cert and key in the context)",
        )
    # Without a CA the system trust store applies, which is what a publicly signed server needs.
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    if cert is not None and key is not None:
        try:
            ctx.load_cert_chain(cert, key)
        except ssl.SSLError as exc:
            raise UsageError(
                f"cannot load the NATS client certificate: {exc.reason or exc}",
                where=f"{cert}, {key}",
                hint="NATS_CERT must be a PEM certificate and NATS_KEY its matching private key",
            ) from None
    return ctx


class _QuietCallbacks:
    """nats-py callbacks that stay silent while connecting and remember the last error.

    nats-py's default error callback logs every failed attempt with a traceback; during the
    initial connect those errors are ours to summarise in one line.  After connecting, errors
    go to the caller's callback if given, otherwise to our logger without the traceback.
    """

    def __init__(
        self,
        secrets: list[str],
        user_error_cb: Callable[[Exception], Awaitable[None]] | None,
        denials: Denials,
    ) -> None:
        self.denials = denials
        self.client: Client | None = None
        self.connecting = True
        self.last_error: BaseException | None = None
        self._secrets = secrets
        self._user_error_cb = user_error_cb

    async def error_cb(self, exc: Exception) -> None:
        if self.connecting:
            self.last_error = exc
            return
        client = self.client
        if client is not None and (client.is_closed or client.is_draining):
            return  # a TLS connection being closed can report its own shutdown: not news
        refused = self.denials.record(str(exc))
        if self._user_error_cb is not None:
            await self._user_error_cb(exc)
            return
        if not refused:  # a refusal is reported by the request it stopped, with its subject
            log.warning("NATS connection error: %s", _scrub(_describe(exc), self._secrets))

    async def noop(self) -> None:
        return None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host name: {exc.strerror}"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _scrub(text: str, secrets: list[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _is_auth_error(exc: BaseException) -> bool:
    text = str(exc).lower()
    name = type(exc).__name__
    return (
        name == "AuthorizationError"
        or "authorization violation" in text
        or "authentication" in text
        or "user authentication expired" in text
    )


def _is_tls_error(exc: BaseException, opts: NatsOptions) -> bool:
    if isinstance(exc, ssl.SSLError):
        return True
    # With TLS 1.3 the client finishes its side of the handshake before the server checks the
    # client certificate, so a rejected (or missing) certificate often surfaces as the server
    # simply dropping the connection.  A refused TCP connect is a different error type.
    if opts.uses_tls and isinstance(
        exc, ConnectionResetError | BrokenPipeError | ConnectionAbortedError | EOFError
    ):
        return True
    text = str(exc).lower()
    return "tls" in text or "ssl" in text or "certificate" in text


def _tls_problem(exc: BaseException, opts: NatsOptions) -> str:
    reason = (exc.reason or "") if isinstance(exc, ssl.SSLError) else ""
    reason = reason.upper()
    if "CERTIFICATE_REQUIRED" in reason or (not reason and opts.cert is None):
        return "the server requires a client certificate and none was given"
    if "VERIFY_FAILED" in reason:
        return "the server's certificate could not be verified against the trusted CA"
    if "UNKNOWN_CA" in reason or "BAD_CERTIFICATE" in reason or not reason:
        return "the server did not accept the client certificate"
    if "WRONG_VERSION_NUMBER" in reason or "RECORD_LAYER" in reason:
        return "the server does not speak TLS on this port (or expects TLS first)"
    return f"TLS error {reason}"


def _classify(exc: BaseException | None, opts: NatsOptions) -> NatsConnectError:
    where = opts.redacted_servers
    secrets = opts.secrets()
    if exc is not None and _is_auth_error(exc):
        return NatsRefusedError(
            "NATS server refused the credentials (authorization violation)",
            where=where,
            hint=_AUTH_HINT,
        )
    if exc is not None and _is_tls_error(exc, opts):
        problem = _scrub(_tls_problem(exc, opts), secrets)
        return NatsRefusedError(
            f"TLS connection to NATS failed: {problem}",
            where=where,
            hint=_TLS_HINT,
        )
    detail = f" ({_scrub(_describe(exc), secrets)})" if exc is not None else ""
    return NatsConnectError(
        f"cannot connect to NATS{detail}",
        where=where,
        hint=_CONNECT_HINT,
    )


class _TlsEofNoise(logging.Filter):
    """nats-py answers a TLS peer's EOF the plain-socket way, and asyncio then warns on every
    closed TLS connection: harmless, and noise in every command's output."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "eof_received() has no effect when using ssl" not in record.getMessage()


def _quiet_tls_eof() -> None:
    noise = logging.getLogger("asyncio")
    if not any(isinstance(f, _TlsEofNoise) for f in noise.filters):
        noise.addFilter(_TlsEofNoise())


async def connect_nats(opts: NatsOptions, *, name: str = "snsq2nats", **extra: Any) -> Client:
    """Open a NATS connection, or raise NatsConnectError / UsageError with a one-line reason.

    The initial connect is bounded: each server is tried at most twice and the whole attempt
    is capped, so an unreachable server fails in seconds rather than after nats-py's default of
    60 reconnect attempts.  Once connected, reconnect behaviour reverts to nats-py's defaults
    (or the `allow_reconnect`, `max_reconnect_attempts`, `reconnect_time_wait` given in
    `extra`), which a long-running bridge needs.

    Returns a connected `nats.aio.client.Client`.
    """
    from nats.aio.client import Client
    from nats.errors import NoServersError

    tls = _tls_context(opts)
    creds = _require_file(opts, "creds", "NATS_CREDS")
    nkey = _require_file(opts, "nkey", "NATS_NKEY")

    later = {
        "allow_reconnect": extra.pop("allow_reconnect", True),
        "max_reconnect_attempts": extra.pop("max_reconnect_attempts", 60),
        "reconnect_time_wait": extra.pop("reconnect_time_wait", 2),
    }
    if opts.uses_tls:
        _quiet_tls_eof()
    denials = Denials(opts.identity, opts.inbox_prefix or DEFAULT_INBOX_PREFIX)
    callbacks = _QuietCallbacks(opts.secrets(), extra.pop("error_cb", None), denials)
    kwargs: dict[str, Any] = {
        "servers": list(opts.servers),
        "name": name,
        "connect_timeout": opts.connect_timeout,
        # nats-py retries refused TCP connects inside server selection even with reconnects
        # disabled; one retry per server and a short wait keep the initial connect fast.
        "allow_reconnect": False,
        "max_reconnect_attempts": 1,
        "reconnect_time_wait": 0.2,
        "error_cb": callbacks.error_cb,
        "disconnected_cb": extra.pop("disconnected_cb", callbacks.noop),
        "closed_cb": extra.pop("closed_cb", callbacks.noop),
    }
    if tls is not None:
        kwargs["tls"] = tls
        kwargs["tls_handshake_first"] = opts.tls_first
    if opts.user is not None:
        kwargs["user"] = opts.user
        kwargs["password"] = opts.password or ""
    if opts.token is not None:
        kwargs["token"] = opts.token
    if opts.inbox_prefix:
        kwargs["inbox_prefix"] = opts.inbox_prefix
    # natscli's order: user/password wins over creds, creds over a bare nkey.
    if creds is not None and opts.user is None:
        kwargs["user_credentials"] = creds
    elif nkey is not None and opts.user is None:
        kwargs["nkeys_seed"] = nkey
    kwargs.update(extra)

    nc = Client()
    # A blackholed address costs connect_timeout per attempt; cap the total so one dead server
    # fails in about connect_timeout, while a cluster list still gets to try a second server.
    deadline = opts.connect_timeout * min(len(opts.servers), 2) + 1.0
    failure: BaseException | None = None
    try:
        async with asyncio.timeout(deadline):
            await nc.connect(**kwargs)
    except NoServersError:
        failure = callbacks.last_error
    except TimeoutError as exc:
        failure = callbacks.last_error or exc
    except (OSError, ssl.SSLError) as exc:
        failure = exc
    except Exception as exc:
        module = type(exc).__module__
        if module.startswith("nkeys"):
            await _discard(nc)
            # Never include the exception text: it is about the seed itself.
            raise UsageError(
                "the NATS nkey seed or credentials file is not valid",
                where=nkey or creds,
                hint="check NATS_NKEY / NATS_CREDS (or the context's nkey / creds)",
            ) from None
        # nats-py signals auth and protocol failures with its own Error hierarchy.
        if module.startswith("nats"):
            failure = exc
        else:
            raise
    if failure is not None or not nc.is_connected:
        await _discard(nc)
        raise _classify(failure, opts) from None

    callbacks.connecting = False
    callbacks.client = nc
    watch(nc, denials)
    nc.options.update(later)
    return nc


async def _discard(nc: Client) -> None:
    """Release a client whose initial connect failed.

    After a failed TLS upgrade, asyncio's StreamWriter.wait_closed() never returns (the socket
    is already gone but the stream protocol is never told), so nats-py's close() would hang;
    bounding it is the only portable way out.
    """
    with contextlib.suppress(Exception, TimeoutError):
        await asyncio.wait_for(nc.close(), timeout=0.5)


# --- AWS ---
