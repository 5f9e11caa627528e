"""Who sent a request: the seam between the HTTP front (protocols, actions) and its verifier.

The server is handed an `Authenticator`; the SigV4 verifier over the keys `auth` generates is
the production one. The server never reads keys itself, so tests and replicas swap verifiers
without patching.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Principal:
    access_key_id: str
    identity: str
    """The name of the identity `auth` generated (the NATS user the gateway acts as)."""


class Authenticator(Protocol):
    def authenticate(
        self,
        method: str,
        path: str,
        query: str,
        headers: Mapping[str, str],
        body: bytes,
    ) -> Principal:
        """The request's principal, or raise `GatewayAuthError` with AWS's code for the failure
        (`MissingAuthenticationToken`, `IncompleteSignature`, `InvalidClientTokenId`,
        `SignatureDoesNotMatch`, `RequestExpired`). `headers` are case-insensitive in meaning;
        implementations lower-case names before use."""
        ...
