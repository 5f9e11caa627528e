"""SigV4 for the lean SQS transport: botocore's algorithm, for the one request shape it sends.

botocore's `SigV4Auth` is generic: per request it parses the URL a few times, collects the
headers into a case-insensitive map, sorts them, and derives the signing key with four HMACs.
The lean transport's requests all have one shape (a POST of a JSON body to the endpoint's
root, no query, the same five or six signed headers), so what does not change between
requests is worked out once per client, and the signing key once per day and credentials.

The result is byte for byte what `SigV4Auth.add_auth` gives the same request at the same
instant (tests/test_aws_lean.py compares them, across a day change and new credentials): the
fixed parts come from botocore's own functions, the clock is botocore's
(`botocore.auth.get_current_datetime`), the payload is always hashed (botocore hashes it over
plain HTTP and, with no operation turning it off, over HTTPS too).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import botocore.auth

if TYPE_CHECKING:
    from botocore.credentials import ReadOnlyCredentials

_ALGORITHM = "AWS4-HMAC-SHA256"
CONTENT_TYPE = "application/x-amz-json-1.0"
_TOKEN = "x-amz-security-token"
# The signed headers in botocore's (sorted) order; `headers` writes them in this order.
_SIGNED = ("content-type", "host", "x-amz-date", _TOKEN, "x-amz-target", "x-amzn-query-mode")
if list(_SIGNED) != sorted(_SIGNED):  # pragma: no cover
    raise AssertionError("the signed headers must be listed sorted")


def _trim(value: str) -> str:
    """A header value as it enters the canonical request (SigV4's Trimall, botocore's)."""
    return " ".join(value.split())


class JsonRequestSigner:
    """Signs the lean transport's requests to one endpoint, region and service."""

    def __init__(self, url: str, region: str, service: str) -> None:
        # botocore's own path and query canonicalisation (private helpers of its signer).
        probe: Any = botocore.auth.SigV4Auth(None, service, region)  # type: ignore[arg-type]
        parts = urlsplit(url)
        path = probe._normalize_url_path(parts.path)
        query = probe._canonical_query_string_url(parts)
        host = _trim(botocore.auth._host_from_url(url))  # type: ignore[attr-defined]
        self._region = region
        self._service = service
        self._head = f"POST\n{path}\n{query}\ncontent-type:{CONTENT_TYPE}\nhost:{host}\n"
        self._signed = ";".join(n for n in _SIGNED if n != _TOKEN)
        self._signed_with_token = ";".join(_SIGNED)
        # (day, secret key) -> the derived key: one derivation per day and credentials.
        self._key_for: tuple[str, str] | None = None
        self._key = b""

    def _signing_key(self, day: str, secret: str) -> bytes:
        if self._key_for != (day, secret):
            key = hmac.digest(f"AWS4{secret}".encode(), day.encode(), "sha256")
            key = hmac.digest(key, self._region.encode(), "sha256")
            key = hmac.digest(key, self._service.encode(), "sha256")
            self._key = hmac.digest(key, b"aws4_request", "sha256")
            self._key_for = (day, secret)
        return self._key

    def headers(self, target: str, body: bytes, credentials: ReadOnlyCredentials) -> dict[str, str]:
        """The request's headers, `Authorization` included, for `X-Amz-Target: target`."""
        # Looked up per call, as botocore does: the clock a test pins is botocore's.
        auth: Any = botocore.auth
        stamp = auth.get_current_datetime().strftime(auth.SIGV4_TIMESTAMP)
        day = stamp[:8]
        token = credentials.token
        # The canonical headers in `_SIGNED` order (content-type and host are in `_head`).
        if token:
            canonical = (
                f"{self._head}x-amz-date:{stamp}\n{_TOKEN}:{_trim(token)}\n"
                f"x-amz-target:{_trim(target)}\nx-amzn-query-mode:true\n\n"
                f"{self._signed_with_token}\n{hashlib.sha256(body).hexdigest()}"
            )
            signed = self._signed_with_token
        else:
            canonical = (
                f"{self._head}x-amz-date:{stamp}\n"
                f"x-amz-target:{_trim(target)}\nx-amzn-query-mode:true\n\n"
                f"{self._signed}\n{hashlib.sha256(body).hexdigest()}"
            )
            signed = self._signed
        scope = f"{day}/{self._region}/{self._service}/aws4_request"
        to_sign = (
            f"{_ALGORITHM}\n{stamp}\n{scope}\n"
            f"{hashlib.sha256(canonical.encode('utf-8')).hexdigest()}"
        )
        key = self._signing_key(day, str(credentials.secret_key))
        signature = hmac.digest(key, to_sign.encode("utf-8"), "sha256").hex()
        headers = {
            "content-type": CONTENT_TYPE,
            "x-amz-target": target,
            "x-amzn-query-mode": "true",
            "x-amz-date": stamp,
        }
        if token:
            headers[_TOKEN] = token
        headers["authorization"] = (
            f"{_ALGORITHM} Credential={credentials.access_key}/{scope}, "
            f"SignedHeaders={signed}, Signature={signature}"
        )
        return headers
