"""Many requests in flight on one inbox: PubAcks for pipelined publishes, confirmed acks.

nats-py's `request` (which `js.publish` and `msg.ack_sync` use) costs, per message, a random
token read from the OS, a wait task and a timer; at thousands of messages a second on a busy
interpreter those syscalls and tasks are most of what the bridge spends. Here every request of a
batch is published at once with a counter token on one wildcard reply subscription, and the
caller waits for all the replies together with a single timeout. A reply that does not come in
time (a reconnect, a leader election) leaves its future unresolved: the caller retries, which is
safe because every publish carries a `Nats-Msg-Id` and acks are idempotent.

A connected client gets a batch as one write of protocol lines built here, byte for byte what
nats-py's `publish` would queue (the header rules included); anything `publish` would refuse,
and every request while disconnected, goes through `publish` itself. The write goes through
`wire`, the one module that touches nats-py's internals; without them, `publish` does it all.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from snsq2nats.jetstream import wire

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription

EXPECTED_STREAM_HEADER = "Nats-Expected-Stream"
_STATUS_HEADER = "Status"
_NO_RESPONDERS = "503"


class NoResponders(Exception):
    """Nobody listens on the subject: no stream (or no leader yet) for a publish."""


class Replies:
    """Request/reply over one wildcard inbox subscription, for batches of requests."""

    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self.prefix = ""
        self._sub: Subscription | None = None
        self._waiting: dict[str, asyncio.Future[Msg]] = {}
        self._token_of: dict[int, str] = {}
        # id(future) → the gather waiting for it: [futures still unanswered, its waiter]. One
        # wake-up per batch rather than a done-callback scheduled for every reply.
        self._watch: dict[int, list[Any]] = {}
        self._tokens = itertools.count(1)
        # confirm()'s batches: token → [answers still due, waiter, a refusal came]. One reply
        # subject per batch, so an answer costs a counter decrement, not a future.
        self._counts: dict[str, list[Any]] = {}
        self._starting = asyncio.Lock()

    async def start(self) -> Replies:
        async with self._starting:
            if self._sub is None:
                prefix = self.nc.new_inbox()
                self._sub = await self.nc.subscribe(f"{prefix}.*", cb=self._on_reply)
                self.prefix = prefix
        return self

    async def close(self) -> None:
        sub, self._sub = self._sub, None
        for future in self._waiting.values():
            future.cancel()
        self._waiting.clear()
        self._token_of.clear()
        for count in self._counts.values():
            if not count[1].done():
                count[1].set_result(None)
        self._counts.clear()
        for group in self._watch.values():
            if not group[1].done():
                group[1].set_result(None)
        self._watch.clear()
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _on_reply(self, msg: Msg) -> None:
        token = msg.subject[len(self.prefix) + 1 :]
        count = self._counts.get(token)
        if count is not None:
            headers = msg.headers
            if headers and headers.get(_STATUS_HEADER) == _NO_RESPONDERS:
                count[2] = True  # nobody took that request: the batch is not confirmed
            count[0] -= 1
            if (count[0] <= 0 or count[2]) and not count[1].done():
                count[1].set_result(None)
            return
        future = self._waiting.pop(token, None)
        if future is not None:
            self._token_of.pop(id(future), None)
            if not future.done():
                future.set_result(msg)
            group = self._watch.pop(id(future), None)
            if group is not None:
                group[0] -= 1
                if group[0] <= 0 and not group[1].done():
                    group[1].set_result(None)

    async def send(
        self, subject: str, payload: bytes, headers: Mapping[str, str] | None = None
    ) -> asyncio.Future[Msg]:
        """Publish one request; the future gets the reply (or never resolves: see `gather`)."""
        if self._sub is None:
            await self.start()
        token = str(next(self._tokens))
        future: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()
        self._waiting[token] = future
        self._token_of[id(future)] = token
        try:
            await self.nc.publish(
                subject,
                payload,
                reply=f"{self.prefix}.{token}",
                headers=dict(headers) if headers else None,
            )
        except BaseException:
            self._waiting.pop(token, None)
            self._token_of.pop(id(future), None)
            raise
        return future

    async def send_many(
        self, requests: Sequence[tuple[str, bytes, Mapping[str, str] | None]]
    ) -> list[asyncio.Future[Msg] | BaseException]:
        """`send` for a batch, in order, as one write: per request its future, or the error
        that kept it from going out (a closed connection, a header nats-py would refuse)."""
        if self._sub is None:
            await self.start()
        if not self._can_write_raw():
            return [await self._send_or_error(*request) for request in requests]
        loop = asyncio.get_running_loop()
        max_payload = int(self.nc.max_payload)
        out: list[asyncio.Future[Msg] | BaseException] = []
        chunk: list[bytes] = []
        for subject, payload, headers in requests:
            block = _header_block(headers) if headers else b""
            if block is None or len(block) + len(payload) > max_payload:
                # nats-py's own publish raises the precise error; the batch keeps its order.
                await self._write(chunk)
                chunk = []
                out.append(await self._send_or_error(subject, payload, headers))
                continue
            token = str(next(self._tokens))
            future: asyncio.Future[Msg] = loop.create_future()
            self._waiting[token] = future
            self._token_of[id(future)] = token
            reply = f"{self.prefix}.{token}"
            if block:
                line = f"HPUB {subject} {reply} {len(block)} {len(block) + len(payload)}\r\n"
                chunk.append(line.encode() + block + payload + b"\r\n")
            else:
                chunk.append(
                    f"PUB {subject} {reply} {len(payload)}\r\n".encode() + payload + b"\r\n"
                )
            out.append(future)
        try:
            await self._write(chunk)
        except Exception as exc:
            for index, item in enumerate(out):
                if isinstance(item, asyncio.Future) and not item.done():
                    self._forget(item)
                    out[index] = exc
        return out

    async def _send_or_error(
        self, subject: str, payload: bytes, headers: Mapping[str, str] | None
    ) -> asyncio.Future[Msg] | BaseException:
        try:
            return await self.send(subject, payload, headers)
        except Exception as exc:
            return exc

    def _forget(self, future: asyncio.Future[Msg]) -> None:
        token = self._token_of.pop(id(future), None)
        if token is not None:
            self._waiting.pop(token, None)

    async def _write(self, chunk: list[bytes]) -> None:
        """Queue protocol lines the way nats-py's `publish` queues its own, in one piece."""
        if chunk:
            await wire.write_raw(self.nc, b"".join(chunk))

    async def confirm(
        self, subjects: Sequence[str], payload: bytes, timeout: float, *, last_only: bool = False
    ) -> bool:
        """Send `payload` to every subject with one shared reply subject; True when every
        request was answered within `timeout` and none found nobody listening.

        For requests whose answer says nothing but "done" (acks): a short count does not tell
        which request went unanswered, so the caller retries them all, which must be harmless.

        `last_only` asks for an answer to the last request alone, for a receiver that takes the
        batch in order from one connection (see `ack_confirmed`). It needs the whole batch in a
        single write: a connection that breaks loses a suffix of what was written, so an answer
        to the last request means the others arrived. Without that (a client that lacks the
        internals for it) every request is answered as usual.
        """
        if self._sub is None:
            await self.start()
        single_write = self._can_write_raw()
        last_only = last_only and single_write and len(subjects) > 1
        token = f"c{next(self._tokens)}"
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        count: list[Any] = [1 if last_only else len(subjects), waiter, False]
        self._counts[token] = count
        reply = f"{self.prefix}.{token}"
        try:
            if single_write:
                await self._write_all(subjects, payload, reply, last_only=last_only)
            else:
                for subject in subjects:
                    await self.nc.publish(subject, payload, reply=reply)
            if count[0] > 0 and not count[2]:
                await asyncio.wait([waiter], timeout=timeout)
        except Exception:  # a closed connection: not confirmed, the caller retries
            return False
        finally:
            self._counts.pop(token, None)
        return count[0] <= 0 and not count[2]

    def _can_write_raw(self) -> bool:
        return wire.can_write_raw(self.nc)

    async def _write_all(
        self, subjects: Sequence[str], payload: bytes, reply: str, *, last_only: bool
    ) -> None:
        """The batch's PUB lines in one write. nats-py's `publish` re-validates and re-encodes
        every subject (a tenth of the relay's time at 10,000 acks a second); these subjects come
        from the server, so the lines are built here and queued the way `publish` queues them.
        Only for a connected client: while disconnected `publish` decides between buffering
        and raising."""
        body = f"{len(payload)}\r\n".encode() + payload + b"\r\n"
        answered = f" {reply} ".encode() + body
        unanswered = b" " + body
        lines = [
            b"PUB " + subject.encode() + (unanswered if last_only else answered)
            for subject in subjects
        ]
        if last_only:
            lines[-1] = b"PUB " + subjects[-1].encode() + answered
        await self._write(lines)

    async def gather(
        self, futures: Sequence[asyncio.Future[Msg]], timeout: float
    ) -> list[Msg | BaseException]:
        """Each future's reply, or the exception instead: TimeoutError for those that did not
        answer within `timeout` (they are forgotten, so a late reply is simply dropped)."""
        pending = [f for f in futures if not f.done()]
        if pending:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            group: list[Any] = [len(pending), waiter]
            for future in pending:
                self._watch[id(future)] = group
            try:
                await asyncio.wait([waiter], timeout=timeout)
            finally:
                for future in pending:
                    self._watch.pop(id(future), None)
        results: list[Msg | BaseException] = []
        for future in futures:
            if not future.done():
                future.cancel()
                token = self._token_of.pop(id(future), None)
                if token is not None:
                    self._waiting.pop(token, None)
                results.append(TimeoutError("no reply in time"))
            elif future.cancelled():
                results.append(TimeoutError("request abandoned"))
            elif (exc := future.exception()) is not None:
                results.append(exc)
            else:
                results.append(future.result())
        return results


# What nats-py's `publish` accepts as a header name, and how it cleans a value.
_HEADER_NAME_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VALUE_NEWLINES = str.maketrans({"\r": " ", "\n": " "})


@functools.lru_cache(maxsize=4096)
def _header_name(name: str) -> bytes | None:
    stripped = name.strip()
    if not stripped:
        return b""
    return stripped.encode() if _HEADER_NAME_RE.fullmatch(stripped) else None


def _header_block(headers: Mapping[str, str]) -> bytes | None:
    """The header block nats-py's `publish` would write, or None where it would raise."""
    parts = [b"NATS/1.0\r\n"]
    for name, value in headers.items():
        encoded = _header_name(name)
        if encoded is None:
            return None
        if encoded:
            parts.append(
                encoded + b": " + value.strip().translate(_VALUE_NEWLINES).encode() + b"\r\n"
            )
    parts.append(b"\r\n")
    return b"".join(parts)


def check_pub_ack(reply: Msg) -> None:
    """Raise what `js.publish` would have raised if the reply is not a PubAck."""
    headers = getattr(reply, "headers", None)
    if headers and headers.get(_STATUS_HEADER) == _NO_RESPONDERS:
        raise NoResponders("no responders: the stream is not available")
    data = reply.data or b""
    if b'"error"' not in data:
        return  # `{"stream":…,"seq":…}`: nothing in it is needed, so no JSON parse per message
    answer = json.loads(data)
    if isinstance(answer, dict) and "error" in answer:
        from nats.js.errors import APIError

        raise APIError.from_error(answer["error"])
