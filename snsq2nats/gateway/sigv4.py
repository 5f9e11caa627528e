"""AWS Signature Version 4, verified: every gateway request is signed with a key `auth` issued.

Entry point: `SigV4Authenticator(keys).authenticate(method, path, query, headers, body)`
returns a `SigV4Principal` (the `Principal` plus the credential scope's region and service:
the server routes `sqs` and `sns` by it) or raises `GatewayAuthError` with AWS's code.

Both forms the SDKs send are accepted: the `Authorization: AWS4-HMAC-SHA256 …` header and a
presigned URL (`X-Amz-Algorithm`, `X-Amz-Credential`, … in the query). The canonical request
is rebuilt exactly as AWS defines it for every service but S3: the path normalised (dot
segments and repeated slashes removed) and percent-encoded once more, the query decoded and
re-encoded with RFC 3986's unreserved set and sorted, the signed headers' values trimmed with
inner runs of spaces collapsed, and the payload's SHA-256 (or `UNSIGNED-PAYLOAD` where the
client declared it in `x-amz-content-sha256`). Signatures are compared in constant time; a
request dated more than 15 minutes from the gateway's clock is refused, as AWS does, so a
captured request cannot be replayed later.

No message this module raises holds a secret, a signature or a derived key: the request's
own date and the access key id are the most it names.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Protocol
from urllib.parse import quote, unquote

from snsq2nats.errors import GatewayAuthError
from snsq2nats.gateway.principal import Principal

__all__ = [
    "ALGORITHM",
    "MAX_SKEW",
    "SigV4Authenticator",
    "SigV4Principal",
    "SigningKey",
    "credential_service",
]

ALGORITHM = "AWS4-HMAC-SHA256"
TERMINATOR = "aws4_request"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
MAX_SKEW = timedelta(minutes=15)
MAX_EXPIRES = 7 * 24 * 3600  # a presigned URL lives a week at most, as in AWS
_AMZ_DATE = "%Y%m%dT%H%M%SZ"
_UNRESERVED = "-_.~"

MISSING = "MissingAuthenticationToken"
INCOMPLETE = "IncompleteSignature"
UNKNOWN_KEY = "InvalidClientTokenId"
MISMATCH = "SignatureDoesNotMatch"
EXPIRED = "RequestExpired"

_MISMATCH_TEXT = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. "
    "Consult the service documentation for details."
)


class SigningKey(Protocol):
    """What the verifier needs of one access key (`keys.GatewayKey` is one)."""

    @property
    def identity(self) -> str: ...

    @property
    def secret(self) -> str: ...


@dataclass(frozen=True)
class SigV4Principal(Principal):
    region: str
    service: str
    """The credential scope's service (`sqs`, `sns`): which API the request is for."""


@dataclass(frozen=True)
class _Signed:
    """What the client claims: the parts of its signature, from the header or the query."""

    access_key_id: str
    scope_date: str
    region: str
    service: str
    signed_headers: list[str]
    signature: str
    request_time: datetime
    amz_date: str
    expires: int | None
    """Seconds a presigned URL is valid; None for header auth."""


def credential_service(query: str, headers: Mapping[str, str]) -> str | None:
    """The service a request's credential scope names (`sqs`, `sns`), unverified; None when it
    carries no SigV4 credential. For routing before (or without) verification; `authenticate`
    returns the verified one."""
    lowered = {k.lower(): v for k, v in headers.items()}
    authorization = lowered.get("authorization", "")
    if authorization.startswith(ALGORITHM):
        credential = _components(authorization[len(ALGORITHM) :]).get("Credential")
    else:
        credential = dict(_query_list(query)).get("X-Amz-Credential")
    parts = (credential or "").split("/")
    return parts[3] if len(parts) == 5 else None


class SigV4Authenticator:
    """The gateway's `Authenticator`: SigV4 over the access keys `auth` generated.

    `keys` maps access key ids to their identity and secret; `now` is the gateway's clock
    (UTC), for the 15-minute skew and presigned expiry."""

    def __init__(
        self,
        keys: Mapping[str, SigningKey],
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._keys = keys
        self._now = now

    def authenticate(
        self,
        method: str,
        path: str,
        query: str,
        headers: Mapping[str, str],
        body: bytes,
    ) -> SigV4Principal:
        """Verify one request. `path` is the request target's path as sent (still
        percent-encoded, as aiohttp's `raw_path` without the query), `query` the raw query
        string; header names in any case."""
        path, _, in_path = path.partition("?")
        query = query or in_path
        lowered = _lowered(headers)
        pairs = _query_list(query)
        presigned = any(name == "X-Amz-Algorithm" for name, _ in pairs)
        authorization = lowered.get("authorization")
        if authorization is not None and presigned:
            raise GatewayAuthError(
                INCOMPLETE,
                "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter "
                "or the Authorization header may be present",
            )
        if authorization is not None:
            signed = _from_header(authorization, lowered)
            canonical_pairs = pairs
        elif presigned:
            signed = _from_query(dict(pairs))
            canonical_pairs = [(n, v) for n, v in pairs if n != "X-Amz-Signature"]
        else:
            raise GatewayAuthError(MISSING, "Request is missing Authentication Token")

        self._check_time(signed)
        key = self._keys.get(signed.access_key_id)
        if key is None:
            raise GatewayAuthError(
                UNKNOWN_KEY, "The security token included in the request is invalid."
            )
        declared = lowered.get("x-amz-content-sha256") or dict(pairs).get("X-Amz-Content-Sha256")
        payload = _payload_hash((declared or "").strip(), body)
        canonical = "\n".join(
            [
                method.upper(),
                canonical_uri(path),
                canonical_query(canonical_pairs),
                "".join(f"{h}:{lowered.get(h, '')}\n" for h in signed.signed_headers),
                ";".join(signed.signed_headers),
                payload,
            ]
        )
        scope = f"{signed.scope_date}/{signed.region}/{signed.service}/{TERMINATOR}"
        to_sign = "\n".join(
            [ALGORITHM, signed.amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
        )
        expected = hmac.new(
            signing_key(key.secret, signed.scope_date, signed.region, signed.service),
            to_sign.encode(),
            hashlib.sha256,
        ).hexdigest()
        if not hmac.compare_digest(expected.encode(), signed.signature.lower().encode()):
            raise GatewayAuthError(MISMATCH, _MISMATCH_TEXT)
        return SigV4Principal(
            access_key_id=signed.access_key_id,
            identity=key.identity,
            region=signed.region,
            service=signed.service,
        )

    def _check_time(self, signed: _Signed) -> None:
        now = self._now().astimezone(UTC)
        shown = signed.request_time.strftime(_AMZ_DATE)
        if signed.expires is not None:
            if now > signed.request_time + timedelta(seconds=signed.expires):
                raise GatewayAuthError(EXPIRED, "Request has expired")
            if signed.request_time - now > MAX_SKEW:
                raise GatewayAuthError(
                    EXPIRED,
                    f"Signature not yet current: {shown} is still later than "
                    f"{(now + MAX_SKEW).strftime(_AMZ_DATE)} "
                    f"({now.strftime(_AMZ_DATE)} + 15 min.)",
                )
            return
        if now - signed.request_time > MAX_SKEW:
            raise GatewayAuthError(
                EXPIRED,
                f"Signature expired: {shown} is now earlier than "
                f"{(now - MAX_SKEW).strftime(_AMZ_DATE)} ({now.strftime(_AMZ_DATE)} - 15 min.)",
            )
        if signed.request_time - now > MAX_SKEW:
            raise GatewayAuthError(
                EXPIRED,
                f"Signature not yet current: {shown} is still later than "
                f"{(now + MAX_SKEW).strftime(_AMZ_DATE)} ({now.strftime(_AMZ_DATE)} + 15 min.)",
            )


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """The derived key: HMAC chain over the scope, starting from `AWS4` + the secret."""
    key = hmac.new(f"AWS4{secret}".encode(), date.encode(), hashlib.sha256).digest()
    for part in (region, service, TERMINATOR):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def canonical_uri(raw_path: str) -> str:
    """AWS's canonical URI for every service but S3: dot segments and empty segments removed,
    then the (already encoded) path percent-encoded once more, as the SDKs sign it."""
    segments: list[str] = []
    for segment in raw_path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if segments:
                segments.pop()
            continue
        segments.append(segment)
    normal = "/" + "/".join(segments)
    if raw_path.endswith("/") and segments:
        normal += "/"
    return quote(normal, safe="/~")


def canonical_query(pairs: list[tuple[str, str]]) -> str:
    """Each name and value percent-encoded with only RFC 3986's unreserved characters left
    bare, sorted by name, then value."""
    encoded = sorted((_encode(n), _encode(v)) for n, v in pairs)
    return "&".join(f"{n}={v}" for n, v in encoded)


def _encode(text: str) -> str:
    return quote(text, safe=_UNRESERVED)


def _query_list(query: str) -> list[tuple[str, str]]:
    """The decoded name/value pairs of a raw query string (`+` is a literal plus: SigV4
    clients encode a space as %20)."""
    out = []
    for part in query.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        out.append((unquote(name), unquote(value)))
    return out


def _lowered(headers: Mapping[str, str]) -> dict[str, str]:
    """Header names lower-cased, values trimmed with inner runs of spaces collapsed; a header
    sent more than once (a multidict's repeated items) joined with commas, as SigV4 signs it."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        key, text = name.lower(), " ".join(value.split())
        out[key] = f"{out[key]},{text}" if key in out else text
    return out


def _components(text: str) -> dict[str, str]:
    """`Credential=…, SignedHeaders=…, Signature=…` as a dict (separators as AWS accepts:
    commas, with or without spaces)."""
    out: dict[str, str] = {}
    for part in text.replace(",", " ").split():
        name, sep, value = part.partition("=")
        if sep:
            out[name] = value
    return out


def _parse_credential(credential: str, *, where: str) -> tuple[str, str, str, str]:
    parts = credential.split("/")
    if len(parts) != 5 or not all(parts):
        raise GatewayAuthError(
            INCOMPLETE,
            f"{where}: Credential must have exactly five slash-separated parts: "
            "<access key id>/<YYYYMMDD>/<region>/<service>/aws4_request",
        )
    access_key_id, date, region, service, terminator = parts
    if terminator != TERMINATOR:
        raise GatewayAuthError(
            MISMATCH,
            f"Credential should be scoped with a valid terminator: '{TERMINATOR}', "
            f"not '{terminator}'.",
        )
    if len(date) != 8 or not date.isdigit():
        raise GatewayAuthError(
            INCOMPLETE, f"{where}: the credential scope's date must be YYYYMMDD, not '{date}'"
        )
    return access_key_id, date, region, service


def _parse_amz_date(text: str, *, where: str) -> datetime:
    try:
        return datetime.strptime(text, _AMZ_DATE).replace(tzinfo=UTC)
    except ValueError:
        raise GatewayAuthError(
            INCOMPLETE,
            f"{where} must be in ISO-8601 basic format (YYYYMMDD'T'HHMMSS'Z'), got '{text}'",
        ) from None


def _signed_header_list(text: str, *, where: str) -> list[str]:
    names = [h for h in text.split(";") if h]
    if not names:
        raise GatewayAuthError(INCOMPLETE, f"{where} requires a non-empty SignedHeaders list")
    if "host" not in names:
        raise GatewayAuthError(
            MISMATCH, "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization."
        )
    return [h.lower() for h in names]


def _check_scope_date(date: str, request_time: datetime) -> None:
    if date != request_time.strftime("%Y%m%d"):
        raise GatewayAuthError(
            MISMATCH,
            f"Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date "
            f"from HTTP: '{date}' != '{request_time.strftime('%Y%m%d')}', from "
            f"'{request_time.strftime(_AMZ_DATE)}'.",
        )


def _from_header(authorization: str, headers: Mapping[str, str]) -> _Signed:
    algorithm, _, rest = authorization.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise GatewayAuthError(
            INCOMPLETE,
            f"Unsupported AWS 'algorithm': only {ALGORITHM} (Signature Version 4) is accepted",
        )
    parts = _components(rest)
    missing = [p for p in ("Credential", "SignedHeaders", "Signature") if not parts.get(p)]
    if missing:
        raise GatewayAuthError(
            INCOMPLETE,
            " ".join(f"Authorization header requires '{p}' parameter." for p in missing),
        )
    access_key_id, date, region, service = _parse_credential(
        parts["Credential"], where="Authorization header"
    )
    signed_headers = _signed_header_list(parts["SignedHeaders"], where="Authorization header")
    if "x-amz-date" in headers:
        amz_date = headers["x-amz-date"].strip()
        request_time = _parse_amz_date(amz_date, where="X-Amz-Date")
    elif "date" in headers:
        try:
            request_time = parsedate_to_datetime(headers["date"]).astimezone(UTC)
        except (TypeError, ValueError):
            raise GatewayAuthError(
                INCOMPLETE, "the Date header is not an HTTP date (RFC 7231)"
            ) from None
        # The string to sign carries the date as SigV4 formats it, whichever header held it.
        amz_date = request_time.strftime(_AMZ_DATE)
    else:
        raise GatewayAuthError(
            INCOMPLETE,
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
        )
    _check_scope_date(date, request_time)
    return _Signed(
        access_key_id=access_key_id,
        scope_date=date,
        region=region,
        service=service,
        signed_headers=signed_headers,
        signature=parts["Signature"],
        request_time=request_time,
        amz_date=amz_date,
        expires=None,
    )


def _from_query(params: Mapping[str, str]) -> _Signed:
    if params.get("X-Amz-Algorithm") != ALGORITHM:
        raise GatewayAuthError(
            INCOMPLETE,
            f"X-Amz-Algorithm only accepts {ALGORITHM} (Signature Version 4)",
        )
    needed = ("X-Amz-Credential", "X-Amz-Date", "X-Amz-SignedHeaders", "X-Amz-Signature")
    missing = [p for p in needed if not params.get(p)]
    if missing:
        raise GatewayAuthError(
            INCOMPLETE,
            " ".join(f"AWS query-string parameters must include '{p}'." for p in missing),
        )
    access_key_id, date, region, service = _parse_credential(
        params["X-Amz-Credential"], where="X-Amz-Credential"
    )
    signed_headers = _signed_header_list(params["X-Amz-SignedHeaders"], where="X-Amz-SignedHeaders")
    amz_date = params["X-Amz-Date"]
    request_time = _parse_amz_date(amz_date, where="X-Amz-Date")
    _check_scope_date(date, request_time)
    expires_text = params.get("X-Amz-Expires", str(MAX_EXPIRES))
    if not expires_text.isdigit() or int(expires_text) > MAX_EXPIRES:
        raise GatewayAuthError(
            INCOMPLETE,
            f"X-Amz-Expires must be a whole number of seconds from 0 to {MAX_EXPIRES}",
        )
    return _Signed(
        access_key_id=access_key_id,
        scope_date=date,
        region=region,
        service=service,
        signed_headers=signed_headers,
        signature=params["X-Amz-Signature"],
        request_time=request_time,
        amz_date=amz_date,
        expires=int(expires_text),
    )


def _payload_hash(declared: str, body: bytes) -> str:
    """The canonical request's last line: the body's SHA-256, unless the client declared
    `UNSIGNED-PAYLOAD` in `x-amz-content-sha256` (header, or query for a presigned URL). A
    declared hash must be the body's: a signature over a hash is none over a body that does
    not have it."""
    if declared == UNSIGNED_PAYLOAD:
        return UNSIGNED_PAYLOAD
    actual = hashlib.sha256(body).hexdigest()
    if declared and declared.lower() != actual:
        raise GatewayAuthError(
            MISMATCH,
            "The provided 'x-amz-content-sha256' header does not match what was computed.",
        )
    return actual
