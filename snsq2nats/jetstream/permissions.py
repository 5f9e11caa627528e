"""Permission refusals, told apart from timeouts.

A server refusing a publish or a subscription sends `-ERR 'Permissions Violation …'` and keeps
the connection open; the request behind it would simply time out. Every connection snsq2nats
opens records those refusals here, so a JetStream request fails at once with the subject and
the identity that lack the permission instead of "the API did not answer".
"""

from __future__ import annotations

import asyncio
import weakref
from collections import deque

VIOLATION = "permissions violation"
_REGISTRY: weakref.WeakKeyDictionary[object, Denials] = weakref.WeakKeyDictionary()


class Denials:
    """The permission violations the server reported on one connection, newest last."""

    def __init__(self, identity: str, inbox_prefix: str) -> None:
        self.identity = identity
        self.inbox_prefix = inbox_prefix
        self.messages: deque[str] = deque(maxlen=256)
        self._changed = asyncio.Event()

    def record(self, message: str) -> bool:
        """Keep `message` if it is a permission violation; True when it was one."""
        if VIOLATION not in message.lower():
            return False
        self.messages.append(message)
        # Wake everyone waiting for the next refusal, then start a fresh event for the next.
        self._changed.set()
        self._changed = asyncio.Event()
        return True

    async def next(self) -> None:
        await self._changed.wait()

    def blocking(self, subject: str) -> str | None:
        """What the server refused that stops a request on `subject`: its publish, or the
        subscription its reply needs (the connection's inbox)."""
        wanted = f'publish to "{subject.lower()}"'
        inbox = self.inbox_prefix.lower()
        for message in reversed(self.messages):
            text = message.lower()
            if wanted in text:
                return f'publish to "{subject}"'
            if "subscription to" in text and f'"{inbox}.' in text:
                return f"subscribe to its inbox {self.inbox_prefix}.>"
        return None


def refused(message: str) -> str:
    """What a violation message says was refused: `publish to "SUBJECT"` (the server's case)."""
    at = message.lower().find(VIOLATION)
    what = message[at + len(VIOLATION) :] if at >= 0 else message
    return what.strip(" '\"").removeprefix("for ").rstrip("'")


def watch(connection: object, denials: Denials) -> None:
    _REGISTRY[connection] = denials


def denials_of(connection: object) -> Denials | None:
    return _REGISTRY.get(connection)
