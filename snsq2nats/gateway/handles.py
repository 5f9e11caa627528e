"""Receipt handles: opaque to clients, unforgeable, and good on any replica.

A handle carries what any replica needs to settle the delivery — the JetStream ack subject
(`$JS.ACK.<stream>.<durable>.<delivered>.<stream seq>.<consumer seq>.<ts>.<pending>`) — plus
the queue it was received from and when, sealed with an HMAC-SHA256 over a secret every replica
of one deployment shares (`--handle-secret` / `SNSQ2NATS_GATEWAY_SECRET`). A client can neither
read a handle into another queue's ack subject nor make one up: anything that does not verify
is `ReceiptHandleIsInvalid`, as SQS answers a handle it never issued.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

HANDLE_LIFETIME = 12 * 3600
"""Seconds a handle is honoured: SQS's longest visibility timeout, after which SQS calls a
handle expired too."""
_MAC_BYTES = 20


@dataclass(frozen=True)
class Receipt:
    queue: str
    """`<account>/<name>`: a handle only works on the queue it came from."""
    reply: str
    """The JetStream ack subject of the delivery."""
    issued_ms: int

    @property
    def stream_sequence(self) -> int:
        return int(self.reply.split(".")[-4])

    @property
    def delivered(self) -> int:
        return int(self.reply.split(".")[-5])


class InvalidHandle(ValueError):
    """Not a handle this deployment issued (malformed, forged, or for another queue)."""


class ExpiredHandle(ValueError):
    pass


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class HandleSigner:
    def __init__(self, secret: str | None) -> None:
        """`secret` None: a random one, so only this process accepts its handles (one replica,
        tests); every replica behind one load balancer must be given the same secret."""
        self.shared = secret is not None
        material = secret.encode("utf-8") if secret is not None else secrets.token_bytes(32)
        self._key = hashlib.sha256(b"snsq2nats gateway receipt handle\0" + material).digest()

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:_MAC_BYTES]

    def issue(self, queue: str, reply: str, now: float | None = None) -> str:
        issued = int((time.time() if now is None else now) * 1000)
        payload = json.dumps([queue, reply, issued], separators=(",", ":")).encode()
        return f"{_b64(payload)}.{_b64(self._mac(payload))}"

    def open(self, handle: str, queue: str, now: float | None = None) -> Receipt:
        """The receipt `handle` carries for `queue`; InvalidHandle or ExpiredHandle."""
        try:
            encoded, mac = handle.split(".")
            payload = _unb64(encoded)
            valid = hmac.compare_digest(self._mac(payload), _unb64(mac))
        except (ValueError, TypeError):
            raise InvalidHandle(handle) from None
        if not valid:
            raise InvalidHandle(handle)
        try:
            owner, reply, issued = json.loads(payload)
            receipt = Receipt(str(owner), str(reply), int(issued))
            receipt.stream_sequence  # noqa: B018 - a sealed but unreadable subject is a bug, not a client's
        except (ValueError, TypeError, IndexError):
            raise InvalidHandle(handle) from None
        if receipt.queue != queue:
            raise InvalidHandle(handle)
        current = time.time() if now is None else now
        if current * 1000 - receipt.issued_ms > HANDLE_LIFETIME * 1000:
            raise ExpiredHandle(handle)
        return receipt
