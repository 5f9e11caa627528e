"""The pull-loop toolkit: how every NATS-side runner consumes a durable JetStream consumer.

The NATS → AWS relays, the DLQ mover and the filter router all read a durable pull consumer
that `apply` created, settle each message explicitly (ack, NAK with a delay, TERM with a
reason) and publish to JetStream with retries. The pieces live here so the runners share them
without importing one another.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from snsq2nats.bridge.context import BridgeContext, RouteMetrics, backoff
from snsq2nats.bridge.replies import Replies
from snsq2nats.errors import NatsConnectError, SnsqError
from snsq2nats.jetstream import wire
from snsq2nats.jetstream.api import (
    ERR_CONSUMER_NOT_FOUND,
    ERR_STREAM_NOT_FOUND,
    JetStreamApiError,
    api,
)
from snsq2nats.jetstream.operations import CONSUMER_INFO, CONSUMER_NEXT
from snsq2nats.plan.model import Route

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription

__all__ = [
    "PullFailed",
    "PullSource",
    "ack",
    "ack_confirmed",
    "consumer_info",
    "describe",
    "in_progress",
    "nak",
    "nak_delay",
    "publish_with_retry",
    "require_consumer",
    "route_binding",
    "term_with_reason",
]

log = logging.getLogger(__name__)

# Attempts at one JetStream publish before the caller leaves its source message unsettled.
PUBLISH_ATTEMPTS = 5
NAK_DELAY_BASE = 1.0
NAK_DELAY_CAP = 60.0
ACK_ATTEMPTS = 3
_ACK = b"+ACK"


async def term_with_reason(nc: Client, msg: Msg, reason: str) -> None:
    """`+TERM <reason>`: nats-py's `term()` sends no reason, and the reason is what an operator
    reads in the MSG_TERMINATED advisory (server ≥ 2.10.4)."""
    if not msg.reply:
        return
    text = " ".join(reason.split())[:512]
    await nc.publish(msg.reply, b"+TERM " + text.encode("utf-8", "replace"))
    wire.mark_acked(msg)  # a later ack() on this message must fail loudly


async def nak(msg: Msg, delay: float | None = None) -> None:
    """NAK, swallowing connection errors: an unacknowledged message comes back after ack_wait
    anyway, so a NAK that cannot be sent changes timing only."""
    with contextlib.suppress(Exception):
        await msg.nak(delay=delay)


async def in_progress(msg: Msg) -> None:
    """Keep `msg` ours for another ack_wait; a failure only means it may be redelivered."""
    with contextlib.suppress(Exception):
        await msg.in_progress()


def nak_delay(msg: Msg) -> float:
    """Redelivery delay growing with the delivery count, so a failing message is retried ever
    more slowly until `max_deliver` (and the DLQ mover, when the queue has one) takes over."""
    try:
        delivered = int(msg.metadata.num_delivered)
    except Exception:
        delivered = 1
    return min(NAK_DELAY_CAP, NAK_DELAY_BASE * 2.0 ** min(max(0, delivered - 1), 30))


def describe(msg: Msg) -> str:
    """`<stream>#<seq> (<subject>)` for log lines."""
    try:
        meta = msg.metadata
        return f"{meta.stream}#{meta.sequence.stream} ({msg.subject})"
    except Exception:
        return str(msg.subject)


async def ack(msg: Msg, timeout: float) -> bool:
    """Acknowledge and wait for the server to confirm, retrying briefly.

    Confirmed acks matter here: an ack lost on the wire means a redelivery and, on a standard
    SQS queue, a second copy. Acks are idempotent, so retrying is safe.
    """
    for attempt in range(ACK_ATTEMPTS):
        try:
            await msg.ack_sync(timeout=timeout)
            return True
        except Exception:
            if attempt + 1 < ACK_ATTEMPTS:
                await asyncio.sleep(backoff(attempt, base=0.1, cap=1.0))
    return False


async def ack_confirmed(
    replies: Replies,
    msgs: Sequence[Msg],
    metrics: RouteMetrics,
    *,
    timeout: float,
    standalone: bool = False,
) -> None:
    """`ack` for many messages at once: the acks go out together with one reply subject on
    `replies`' inbox and the batch counts as acknowledged once the server answered every one
    within `timeout`. Otherwise all of them are sent again (an ack of an acknowledged message
    is answered too); what is still unconfirmed after that is counted as errors.

    `standalone`: the consumer lives on a server outside any cluster, so it never changes
    leader and takes the acks of one write in order; the answer to the last ack then covers
    the batch. A clustered consumer answers each ack: a leader change in the middle of a batch
    can drop the acks before it while the new leader answers the last one.
    """
    waiting = [m for m in msgs if m.reply]
    if not waiting:
        return
    subjects = [m.reply for m in waiting]
    for attempt in range(ACK_ATTEMPTS):
        # A retry asks for every answer: a short count is no time to be clever.
        last_only = standalone and attempt == 0
        if await replies.confirm(subjects, _ACK, timeout, last_only=last_only):
            for msg in waiting:
                wire.mark_acked(msg)  # as `ack_sync` would
            return
        if attempt + 1 < ACK_ATTEMPTS:
            await asyncio.sleep(backoff(attempt, base=0.1, cap=1.0))
    metrics.error(len(waiting))


FINISH_POLL = 0.5
"""How often a route switched on at a topic's finish looks for its consumer."""


async def consumer_info(ctx: BridgeContext, stream: str, consumer: str) -> dict[str, Any]:
    return await api(ctx.nc, CONSUMER_INFO.subject(stream=stream, consumer=consumer))


async def require_consumer(ctx: BridgeContext, route: Route, stream: str, consumer: str) -> None:
    """Fail clearly when the durable the route binds to does not exist: the bridge never creates
    consumers (apply does), because a consumer made here would miss the plan's settings.

    An API that does not answer (a leader election, a reconnect) is waited out instead.
    """
    attempt = 0
    announced = False
    while True:
        try:
            await consumer_info(ctx, stream, consumer)
            return
        except JetStreamApiError as exc:
            if exc.err_code == ERR_CONSUMER_NOT_FOUND and route.at_finish:
                # `cutover finish` creates it once the bridges confirmed the switch (at the SNS
                # relay's ack floor + 1): waiting for it is this route's normal start, not a
                # failure that would make the member unready and hold that confirmation back.
                if not announced:
                    log.info("%s: waiting for the finish switch to create %s", route.name, consumer)
                    announced = True
                if await ctx.pause(FINISH_POLL):
                    return
                continue
            if exc.err_code in (ERR_CONSUMER_NOT_FOUND, ERR_STREAM_NOT_FOUND):
                raise SnsqError(
                    f"consumer {consumer!r} on stream {stream!r} does not exist: run "
                    "`snsq2nats apply` with the plan first",
                    where=f"route {route.name}",
                    hint="the bridge only binds to the consumers the plan creates, never its own",
                ) from None
            if exc.err_code is not None:
                raise
            transient: Exception = exc
        except NatsConnectError as exc:
            transient = exc
        attempt += 1
        ctx.route_metrics(route).error()
        log.warning(
            "%s: cannot check %s/%s yet (%s); retrying", route.name, stream, consumer, transient
        )
        if await ctx.pause(backoff(attempt)):
            return


def route_binding(route: Route) -> tuple[str, str]:
    """The (stream, durable consumer) a NATS-side route reads from."""
    if not route.stream or not route.consumer:
        raise SnsqError(
            "the route names no stream/consumer to read from",
            where=f"route {route.name}",
            hint="re-run `snsq2nats plan` and `apply`; bridge routes carry their consumer",
        )
    return route.stream, route.consumer


class PullFailed(Exception):
    """The server answered a pull request with an error status (consumer deleted, no leader)."""


class PullSource:
    """A durable pull consumer that keeps working across server restarts.

    `fetch` returns an empty list when idle or after a recoverable error (having slept a
    backoff), so callers loop on it without special cases. The subscription is re-created after
    the client reconnected, after fetch errors, and when a long idle period's consumer check
    fails, because pull subscriptions can stop receiving after a restart (nats.py #504).

    Pull requests are made here rather than with nats-py's `fetch`, which spends a task (named
    with a fresh uuid4, a system call) on every message; here messages land in a buffer from a
    subscription callback. Each request has its own reply subject under the inbox, so a status
    reply (no messages, request expired, error) is matched to the request it ends. A request
    may deliver after `fetch` returned; those messages wait in the buffer for the next call,
    and are handed back (NAK) if the source closes first.
    """

    def __init__(self, ctx: BridgeContext, route: Route, stream: str, consumer: str) -> None:
        self.ctx = ctx
        self.route = route
        self.stream = stream
        self.consumer = consumer
        self._sub: Subscription | None = None
        self._inbox = ""
        self._requests = 0
        self._buffer: deque[Msg] = deque()
        self._current = ""  # the reply token of the request being waited for
        self._ended: str | None = None  # the status that ended it
        self._arrived = asyncio.Event()
        # How many buffered messages end the current wait: waking the waiter for each message
        # of a 100-message batch (an asyncio.wait_for each time) costs more than the messages.
        self._want = 1
        self._reconnects = -1
        # The consumer's info names no cluster: see `ack_confirmed`.
        self.standalone = False
        self._failures = 0
        self._idle_since = time.monotonic()

    async def _bind(self) -> None:
        await self.close()
        self._reconnects = self._reconnect_count()
        # Looked up on every (re)bind: a reconnect may land on another server.
        info = await consumer_info(self.ctx, self.stream, self.consumer)
        self.standalone = "cluster" not in info
        inbox = self.ctx.nc.new_inbox()
        self._sub = await self.ctx.nc.subscribe(f"{inbox}.*", cb=self._on_msg)
        self._inbox = inbox
        self._idle_since = time.monotonic()

    def _reconnect_count(self) -> int:
        stats = getattr(self.ctx.nc, "stats", None) or {}
        return int(stats.get("reconnects", 0))

    async def _on_msg(self, msg: Msg) -> None:
        status = msg.headers.get("Status") if msg.headers else None
        if status is None:
            self._buffer.append(msg)
            if len(self._buffer) < self._want:
                return
        elif status != "100" and msg.subject.rpartition(".")[2] == self._current:
            # 100 is a heartbeat; the end of an earlier request that returned early is moot.
            assert msg.headers is not None
            self._ended = f"{status} {msg.headers.get('Description', '')}".strip()
        self._arrived.set()

    async def close(self) -> None:
        sub, self._sub = self._sub, None
        left = list(self._buffer)
        self._buffer.clear()
        self._current, self._ended = "", None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        # Delivered to us but never handed out: give them back now rather than at ack_wait.
        await asyncio.gather(*(nak(m) for m in left))

    def _end(self) -> str | None:
        return self._ended  # read through a call: the callback changes it meanwhile

    def _take(self, batch: int) -> list[Msg]:
        return [self._buffer.popleft() for _ in range(min(batch, len(self._buffer)))]

    async def _request(self, batch: int, wait: float, *, no_wait: bool) -> None:
        """Ask for up to `batch` messages; return once some arrived (all of them for a
        `no_wait` request), the request ended, or `wait` passed."""
        self._requests += 1
        token = self._current = str(self._requests)
        self._ended = None
        request: dict[str, Any] = {"batch": batch}
        if no_wait:
            request["no_wait"] = True
        else:
            request["expires"] = int(wait * 1e9)
        self._arrived.clear()
        self._want = batch if no_wait else 1
        await self.ctx.nc.publish(
            CONSUMER_NEXT.subject(stream=self.stream, consumer=self.consumer),
            json.dumps(request).encode(),
            reply=f"{self._inbox}.{token}",
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait + (0.0 if no_wait else 0.5)
        while (ended := self._end()) is None:
            if self._buffer and (not no_wait or len(self._buffer) >= batch):
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"no answer to a pull from {self.stream}/{self.consumer}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)
            self._arrived.clear()
        # 404 no messages, 408 request expired: normal ends. Anything else is an error (409
        # consumer deleted or leadership change, 503 no responders), unless messages came.
        if not ended.startswith(("404", "408")) and not self._buffer:
            raise PullFailed(ended)

    async def fetch(self, batch: int, wait: float | None = None) -> list[Msg]:
        """Up to `batch` messages, waiting up to `wait` (the context's `fetch_wait`) for any."""
        if self._buffer:
            return self._take(batch)
        timings = self.ctx.timings
        try:
            if self._sub is None or self._reconnect_count() != self._reconnects:
                await self._bind()
            # What is there now, without waiting; if nothing, wait up to `wait` for more.
            wait = timings.fetch_wait if wait is None else wait
            await self._request(batch, wait, no_wait=True)
            if not self._buffer:
                await self._request(batch, wait, no_wait=False)
            if not self._buffer:
                raise TimeoutError("idle")
        except TimeoutError:
            # Normal idle. Once in a while make sure the consumer is still there and the
            # subscription still gets answers; a failed check re-binds on the next call.
            if time.monotonic() - self._idle_since > timings.idle_recheck:
                self._idle_since = time.monotonic()
                try:
                    await self._bind()  # reads the consumer's info before subscribing again
                except Exception as exc:
                    await self._failed(exc)
            return []
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._failed(exc)
            return []
        self._failures = 0
        self._idle_since = time.monotonic()
        return self._take(batch)

    async def _failed(self, exc: BaseException) -> None:
        self._failures += 1
        self.ctx.route_metrics(self.route).error()
        log.warning(
            "%s: pull from %s/%s failed (%s: %s); re-subscribing",
            self.route.name,
            self.stream,
            self.consumer,
            type(exc).__name__,
            exc,
        )
        await self.close()
        await self.ctx.pause(backoff(self._failures))


async def publish_with_retry(
    ctx: BridgeContext,
    subject: str,
    data: bytes,
    headers: Mapping[str, str],
    *,
    stream: str | None = None,
    attempts: int = PUBLISH_ATTEMPTS,
    nc: Client | None = None,
) -> bool:
    """Publish to JetStream and wait for the PubAck; True once the stream has the message
    (over `nc` when the stream is in another NATS account than `ctx.nc`).

    Every attempt carries the same headers, hence the same `Nats-Msg-Id`, so a publish that
    timed out but did land is deduplicated by the stream. False when the attempts are used up
    or the bridge is stopping; the caller then leaves its source message unacknowledged.
    """
    js = (nc or ctx.nc).jetstream()
    timeout = ctx.timings.publish_timeout
    for attempt in range(attempts):
        try:
            await asyncio.wait_for(
                js.publish(subject, data, timeout=timeout, stream=stream, headers=dict(headers)),
                timeout=timeout + 1.0,
            )
            return True
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("publish to %s failed (%s: %s)", subject, type(exc).__name__, exc)
            if attempt + 1 >= attempts or await ctx.pause(backoff(attempt)):
                return False
    return False
