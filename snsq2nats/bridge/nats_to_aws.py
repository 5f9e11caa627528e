"""NATS → AWS: relay a route's durable pull consumer into an SQS queue or an SNS topic.

The one rule: a JetStream message is acknowledged only after AWS accepted *its* entry of a
batch call. Anything else either stays unacknowledged (redelivered after `ack_wait`), is NAKed
(with a growing delay once in-process retries are used up, so a dead endpoint never turns into
a tight redelivery loop and `max_deliver` still counts), or is TERMed with a reason when AWS
will never take it (more than 10 attributes on SQS, oversize, a body that is not text, an
entry AWS refuses as the sender's fault). A workqueue stream (every queue stream) deletes a
TERMed message, so when the plan has a dlq-mover route for the same consumer the message is
first copied to that DLQ; the TERM reason, the log line and the error metric say why.

Batches of up to 10 entries (and at most the call's byte budget) go out concurrently on
"lanes"; FIFO routes use a single lane so each message group reaches AWS in stream order.

The pull-loop helpers at the top (`PullSource`, `publish_with_retry`, `term_with_reason`, …)
are shared with the DLQ mover and the filter router, which consume JetStream the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import random
import re
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from snsq2nats.bridge.codec import (
    CANARY_HEADER,
    DEDUP_HEADER,
    GROUP_HEADER,
    MAX_SQS_ATTRIBUTES,
    MSG_ID_HEADER,
    ORIGIN_ATTRIBUTE,
    ORIGIN_HEADER,
    headers_to_aws,
)
from snsq2nats.bridge.context import BridgeContext, RouteMetrics
from snsq2nats.bridge.replies import Replies
from snsq2nats.errors import NatsConnectError, SnsqError
from snsq2nats.filterpolicy import decode_token
from snsq2nats.jetstream.api import (
    API_PREFIX,
    ERR_CONSUMER_NOT_FOUND,
    ERR_STREAM_NOT_FOUND,
    JetStreamApiError,
    api,
)
from snsq2nats.jetstream.subjects import subject_in
from snsq2nats.plan.model import Route

__all__ = [
    "FETCH_WAIT",
    "PullSource",
    "backoff_delay",
    "publish_with_retry",
    "run_nats_to_sns",
    "run_nats_to_sqs",
    "sleep_unless_stopping",
    "subject_in",
    "term_with_reason",
]

# How long one pull request waits on the server for messages. An empty fetch is the normal
# idle state, so this bounds both the idle request rate and how long a stop takes to notice.
FETCH_WAIT = 2.0
# Re-check the consumer after this much idle time: a pull subscription can go silent after a
# server restart without raising anything (nats.py #504).
IDLE_RECHECK = 30.0
# JetStream publish (PubAck) timeout; nats-py futures may never resolve, so we always bound.
PUBLISH_TIMEOUT = 5.0
# In-process attempts at one batch before its failures are NAKed with a delay.
MAX_ATTEMPTS = 5
BACKOFF_BASE = 0.2
BACKOFF_CAP = 10.0
NAK_DELAY_BASE = 1.0
NAK_DELAY_CAP = 60.0
BATCH_ENTRIES = 10
_ENTRY_IDS = tuple(f"m{i}" for i in range(BATCH_ENTRIES))
SQS_MAX_BYTES = 1_048_576  # per message and per SendMessageBatch request
SNS_MAX_BYTES = 262_144  # per message and per PublishBatch request
ACK_ATTEMPTS = 3
ACK_TIMEOUT = 2.0
_ACK = b"+ACK"

# AWS error codes that mean "slow down / try again", whatever the service.
_THROTTLE_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "SlowDown",
        "KMSThrottlingException",
        "ServiceUnavailable",
        "InternalError",
        "InternalFailure",
    }
)
# Batch-level errors caused by the content of some entry: the batch is split so the entry that
# AWS refuses fails alone and the others still go through.
_ENTRY_FAULT_CODES = frozenset(
    {
        "InvalidParameterValue",
        "InvalidParameter",
        "InvalidParameterException",
        "ParameterValueInvalid",
        "InvalidMessageContents",
        "InvalidAttributeName",
        "InvalidAttributeValue",
        "BatchRequestTooLong",
        "AWS.SimpleQueueService.BatchRequestTooLong",
        "MissingParameter",
        "ValidationError",
        "ValidationException",
    }
)
_MISSING_CODES = frozenset(
    {
        "AWS.SimpleQueueService.NonExistentQueue",
        "QueueDoesNotExist",
        "NonExistentQueue",
        "NotFound",
        "NotFoundException",
    }
)

_ATTRIBUTE_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,256}$")
# MessageGroupId / MessageDeduplicationId: 1–128 printable ASCII characters.
_AWS_ID_RE = re.compile(r"^[\x21-\x7e]{1,128}$")


# --------------------------------------------------------------------------------------------
# Shared pull-consumer helpers
# --------------------------------------------------------------------------------------------


def backoff_delay(attempt: int, *, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP) -> float:
    """Capped exponential backoff with jitter (half fixed, half random).

    The random half spreads several bridge processes hitting the same throttled endpoint; the
    fixed half keeps the delay from collapsing to ~0 the way full jitter can.
    """
    delay = min(cap, base * 2.0 ** min(max(0, attempt), 30))
    return delay / 2 + random.uniform(0, delay / 2)


async def sleep_unless_stopping(ctx: BridgeContext, seconds: float) -> bool:
    """Sleep, waking early when the bridge stops; True if it is stopping."""
    if seconds > 0 and not ctx.stopping.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ctx.stopping.wait(), timeout=seconds)
    return ctx.stopping.is_set()


async def term_with_reason(nc: Any, msg: Any, reason: str) -> None:
    """`+TERM <reason>`: nats-py's `term()` sends no reason, and the reason is what an operator
    reads in the MSG_TERMINATED advisory (server ≥ 2.10.4)."""
    if not msg.reply:
        return
    text = " ".join(reason.split())[:512]
    await nc.publish(msg.reply, b"+TERM " + text.encode("utf-8", "replace"))
    msg._ackd = True  # nats-py's own flag: a later ack() on this message must fail loudly


async def nak(msg: Any, delay: float | None = None) -> None:
    """NAK, swallowing connection errors: an unacknowledged message comes back after ack_wait
    anyway, so a NAK that cannot be sent changes timing only."""
    with contextlib.suppress(Exception):
        await msg.nak(delay=delay)


def nak_delay(msg: Any) -> float:
    """Redelivery delay growing with the delivery count, so a failing message is retried ever
    more slowly until `max_deliver` (and the DLQ mover, when the queue has one) takes over."""
    try:
        delivered = int(msg.metadata.num_delivered)
    except Exception:
        delivered = 1
    return min(NAK_DELAY_CAP, NAK_DELAY_BASE * 2.0 ** min(max(0, delivered - 1), 30))


async def ack(msg: Any) -> bool:
    """Acknowledge and wait for the server to confirm, retrying briefly.

    Confirmed acks matter here: an ack lost on the wire means a redelivery and, on a standard
    SQS queue, a second copy. Acks are idempotent, so retrying is safe.
    """
    for attempt in range(ACK_ATTEMPTS):
        try:
            await msg.ack_sync(timeout=2.0)
            return True
        except Exception:
            if attempt + 1 < ACK_ATTEMPTS:
                await asyncio.sleep(backoff_delay(attempt, base=0.1, cap=1.0))
    return False


async def ack_all(msgs: Sequence[Any], metrics: RouteMetrics) -> None:
    results = await asyncio.gather(*(ack(m) for m in msgs))
    failed = sum(1 for ok in results if not ok)
    if failed:
        metrics.error(failed)


async def ack_confirmed(
    replies: Replies, msgs: Sequence[Any], metrics: RouteMetrics, *, standalone: bool = False
) -> None:
    """`ack_all` for many messages at once: the acks go out together with one reply subject on
    `replies`' inbox and the batch counts as acknowledged once the server answered every one.
    Otherwise all of them are sent again (an ack of an acknowledged message is answered too).

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
        if await replies.confirm(subjects, _ACK, ACK_TIMEOUT, last_only=last_only):
            for msg in waiting:
                msg._ackd = True  # nats-py's own flag, as `ack_sync` sets it
            return
        if attempt + 1 < ACK_ATTEMPTS:
            await asyncio.sleep(backoff_delay(attempt, base=0.1, cap=1.0))
    metrics.error(len(waiting))


async def consumer_info(ctx: BridgeContext, stream: str, consumer: str) -> dict[str, Any]:
    return await api(ctx.nc, f"{API_PREFIX}.CONSUMER.INFO.{stream}.{consumer}")


async def require_consumer(ctx: BridgeContext, route: Route, stream: str, consumer: str) -> None:
    """Fail clearly when the durable the route binds to does not exist: the bridge never creates
    consumers (apply does), because a consumer made here would miss the plan's settings.

    An API that does not answer (a leader election, a reconnect) is waited out instead.
    """
    attempt = 0
    while True:
        try:
            await consumer_info(ctx, stream, consumer)
            return
        except JetStreamApiError as exc:
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
        ctx.log(f"{route.name}: cannot check {stream}/{consumer} yet ({transient}); retrying")
        if await sleep_unless_stopping(ctx, backoff_delay(attempt)):
            return


def route_binding(route: Route) -> tuple[str, str]:
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
        self._sub: Any = None
        self._inbox = ""
        self._requests = 0
        self._buffer: deque[Any] = deque()
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

    async def _on_msg(self, msg: Any) -> None:
        status = msg.headers.get("Status") if msg.headers else None
        if status is None:
            self._buffer.append(msg)
            if len(self._buffer) < self._want:
                return
        elif status != "100" and msg.subject.rpartition(".")[2] == self._current:
            # 100 is a heartbeat; the end of an earlier request that returned early is moot.
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

    def _take(self, batch: int) -> list[Any]:
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
            f"{API_PREFIX}.CONSUMER.MSG.NEXT.{self.stream}.{self.consumer}",
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

    async def fetch(self, batch: int, wait: float = FETCH_WAIT) -> list[Any]:
        if self._buffer:
            return self._take(batch)
        try:
            if self._sub is None or self._reconnect_count() != self._reconnects:
                await self._bind()
            # What is there now, without waiting; if nothing, wait up to `wait` for more.
            await self._request(batch, wait, no_wait=True)
            if not self._buffer:
                await self._request(batch, wait, no_wait=False)
            if not self._buffer:
                raise TimeoutError("idle")
        except TimeoutError:
            # Normal idle. Once in a while make sure the consumer is still there and the
            # subscription still gets answers; a failed check re-binds on the next call.
            if time.monotonic() - self._idle_since > IDLE_RECHECK:
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
        self.ctx.log(
            f"{self.route.name}: pull from {self.stream}/{self.consumer} failed "
            f"({type(exc).__name__}: {exc}); re-subscribing"
        )
        await self.close()
        await sleep_unless_stopping(self.ctx, backoff_delay(self._failures))


async def publish_with_retry(
    ctx: BridgeContext,
    subject: str,
    data: bytes,
    headers: Mapping[str, str],
    *,
    stream: str | None = None,
    attempts: int = MAX_ATTEMPTS,
) -> bool:
    """Publish to JetStream and wait for the PubAck; True once the stream has the message.

    Every attempt carries the same headers, hence the same `Nats-Msg-Id`, so a publish that
    timed out but did land is deduplicated by the stream. False when the attempts are used up
    or the bridge is stopping; the caller then leaves its source message unacknowledged.
    """
    js = ctx.nc.jetstream()
    for attempt in range(attempts):
        try:
            await asyncio.wait_for(
                js.publish(
                    subject, data, timeout=PUBLISH_TIMEOUT, stream=stream, headers=dict(headers)
                ),
                timeout=PUBLISH_TIMEOUT + 1.0,
            )
            return True
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            ctx.log(f"publish to {subject} failed ({type(exc).__name__}: {exc})")
            if attempt + 1 >= attempts or await sleep_unless_stopping(ctx, backoff_delay(attempt)):
                return False
    return False


# --------------------------------------------------------------------------------------------
# AWS targets
# --------------------------------------------------------------------------------------------


KEEP_DELAY = 900.0
"""Seconds before a message AWS refused (and that has no DLQ to go to) is offered again."""


class Rejected(Exception):
    """This message can never be delivered to the target; the reason goes into the TERM."""


@dataclass(slots=True)
class _Item:
    msg: Any
    entry: dict[str, Any]
    size: int
    fetched: float


def _error_code(exc: BaseException) -> tuple[str, int]:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        error = response.get("Error") or {}
        meta = response.get("ResponseMetadata") or {}
        return str(error.get("Code") or ""), int(meta.get("HTTPStatusCode") or 0)
    return "", 0


def _entry_fault(exc: BaseException) -> bool:
    code, status = _error_code(exc)
    return code in _ENTRY_FAULT_CODES and 400 <= status < 500


def _value_size(entry: Mapping[str, Any]) -> int:
    """What AWS counts toward the message size for an attribute besides its name."""
    value = entry.get("StringValue")
    size = len(entry["BinaryValue"]) if value is None else _utf8_len(value)
    return _utf8_len(entry["DataType"]) + size


def _utf8_len(text: str) -> int:
    # isascii() reads a flag CPython keeps on every string: no encoding on the common path.
    return len(text) if text.isascii() else len(text.encode("utf-8"))


@functools.lru_cache(maxsize=4096)
def _valid_attribute_name(name: str) -> bool:
    """Per name, once: the same few header names come with every message."""
    return not (
        not _ATTRIBUTE_NAME_RE.match(name)
        or name.startswith(".")
        or name.endswith(".")
        or ".." in name
        or name.lower().startswith(("aws.", "amazon."))
    )


def _name_size(name: str) -> int:
    """The name's size toward the message size, once it is known to be a valid name (ASCII)."""
    if _valid_attribute_name(name):
        return len(name)
    raise Rejected(
        f"header {name!r} cannot be an AWS message attribute name "
        "([A-Za-z0-9_.-], ≤256 characters, no AWS./Amazon. prefix, no leading, trailing "
        "or double dots)"
    )


def _body_text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise Rejected("the body is not UTF-8 text; SQS and SNS carry text bodies") from None


def _aws_id(value: str, what: str) -> str:
    """A value usable as MessageGroupId / MessageDeduplicationId."""
    if _AWS_ID_RE.match(value):
        return value
    if what == "dedup":
        # Only equality matters for deduplication, so an unusable id is replaced by its hash
        # (same input, same id) instead of failing the message.
        return "sha256-" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
    raise Rejected(
        f"MessageGroupId {value!r} is not 1-128 printable ASCII characters, as AWS requires"
    )


def _group_id(msg: Any) -> str:
    headers = msg.headers or {}
    value = headers.get(GROUP_HEADER)
    if not value:
        # FIFO queue subjects end in the encoded group token (`sqsfifo.orders.<group>`).
        token = str(msg.subject).rsplit(".", 1)[-1]
        try:
            value = decode_token(token)
        except ValueError:
            value = token
    if not value:
        raise Rejected(
            f"no message group: set header {GROUP_HEADER} or publish to a subject ending in "
            "the group token"
        )
    return _aws_id(value, "group")


def _dedup_id(msg: Any) -> str:
    headers = msg.headers or {}
    value = headers.get(DEDUP_HEADER) or headers.get(MSG_ID_HEADER)
    if not value:
        meta = msg.metadata
        value = f"{meta.stream}:{meta.sequence.stream}"
    return _aws_id(value, "dedup")


_PLAIN_ORIGIN = {"DataType": "String", "StringValue": "nats"}


class _Target:
    """One AWS destination: how to build an entry and send a batch."""

    kind = ""
    max_bytes = SQS_MAX_BYTES
    fifo = False
    max_attributes: int | None = None

    def __init__(self, ctx: BridgeContext, route: Route) -> None:
        self.ctx = ctx
        self.route = route

    async def prepare(self) -> None:
        raise NotImplementedError

    def origin_attribute(self, msg: Any) -> dict[str, str]:
        """Where the message came from, for the sqs-to-nats route that may meet it again.

        A topic message names its topic stream and sequence (`nats:<stream>:<seq>`): SNS hands
        a copy to every subscribed queue, and a queue already fed by a source from that stream
        must drop the copy. A queue's own message is plain `nats`: it reaches SQS once.
        """
        if self.kind == "SNS":
            origin = f"nats:{self.route.stream}:{msg.metadata.sequence.stream}"
            return {"DataType": "String", "StringValue": origin}
        # Shared by every entry: read, never changed, by the batch call.
        return _PLAIN_ORIGIN

    def body_field(self) -> str:
        raise NotImplementedError

    async def call(self, entries: list[dict[str, Any]]) -> dict[str, Any]:
        raise NotImplementedError

    def build(self, msg: Any, fetched: float) -> _Item:
        entries = headers_to_aws(msg.headers)
        entries[ORIGIN_ATTRIBUTE] = self.origin_attribute(msg)
        if self.max_attributes is not None and len(entries) > self.max_attributes:
            raise Rejected(
                f"{len(entries)} message attributes (including {ORIGIN_ATTRIBUTE}); "
                f"{self.kind} allows at most {self.max_attributes}: " + ", ".join(sorted(entries))
            )
        data = msg.data or b""
        body = _body_text(data)
        size = len(data)
        for name, attribute in entries.items():
            size += _name_size(name) + _value_size(attribute)
        if size > self.max_bytes:
            raise Rejected(
                f"message of {size} bytes (body and attributes) exceeds the {self.kind} "
                f"limit of {self.max_bytes} bytes"
            )
        entry: dict[str, Any] = {self.body_field(): body, "MessageAttributes": entries}
        if self.fifo:
            entry["MessageGroupId"] = _group_id(msg)
            entry["MessageDeduplicationId"] = _dedup_id(msg)
        return _Item(msg, entry, size, fetched)

    async def prepare_with_retry(self) -> bool:
        """Resolve the target, retrying transient failures; False if stopped meanwhile."""
        attempt = 0
        while True:
            try:
                await self.prepare()
                return True
            except SnsqError:
                raise
            except Exception as exc:
                code, _ = _error_code(exc)
                if code in _MISSING_CODES:
                    raise SnsqError(
                        f"{self.kind} target {self.route.aws_arn} does not exist",
                        where=f"route {self.route.name}",
                        hint="create it (or re-plan without this route) and start the bridge again",
                    ) from None
                self.ctx.route_metrics(self.route).error()
                self.ctx.log(f"{self.route.name}: cannot resolve {self.route.aws_arn}: {exc}")
                if await sleep_unless_stopping(self.ctx, backoff_delay(attempt)):
                    return False
                attempt += 1


class _SqsTarget(_Target):
    kind = "SQS"
    max_bytes = SQS_MAX_BYTES
    max_attributes = MAX_SQS_ATTRIBUTES

    def __init__(self, ctx: BridgeContext, route: Route) -> None:
        super().__init__(ctx, route)
        self.queue_url = ""

    async def prepare(self) -> None:
        parts = self.route.aws_arn.split(":")
        if len(parts) < 6 or parts[2] != "sqs":
            raise SnsqError(
                f"{self.route.aws_arn!r} is not an SQS queue ARN", where=f"route {self.route.name}"
            )
        account, name = parts[4], parts[5]
        response = await self.ctx.call_aws(
            self.ctx.sqs.get_queue_url, QueueName=name, QueueOwnerAWSAccountId=account
        )
        self.queue_url = str(response["QueueUrl"])
        # The queue's real type decides the entry shape: a plan that disagrees would otherwise
        # turn every message into an AWS validation error (and a TERM).
        attrs = await self.ctx.call_aws(
            self.ctx.sqs.get_queue_attributes,
            QueueUrl=self.queue_url,
            AttributeNames=["FifoQueue"],
        )
        self.fifo = (attrs.get("Attributes") or {}).get("FifoQueue") == "true"

    def body_field(self) -> str:
        return "MessageBody"

    async def call(self, entries: list[dict[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = await self.ctx.call_aws(
            self.ctx.sqs.send_message_batch, QueueUrl=self.queue_url, Entries=entries
        )
        return result


class _SnsTarget(_Target):
    kind = "SNS"
    max_bytes = SNS_MAX_BYTES

    async def prepare(self) -> None:
        response = await self.ctx.call_aws(
            self.ctx.sns.get_topic_attributes, TopicArn=self.route.aws_arn
        )
        self.fifo = (response.get("Attributes") or {}).get("FifoTopic") == "true"

    def body_field(self) -> str:
        return "Message"

    async def call(self, entries: list[dict[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = await self.ctx.call_aws(
            self.ctx.sns.publish_batch,
            TopicArn=self.route.aws_arn,
            PublishBatchRequestEntries=entries,
        )
        return result


# --------------------------------------------------------------------------------------------
# The relay
# --------------------------------------------------------------------------------------------


class _Lanes:
    """Bounded concurrency for batch calls that also tells the fetch loop how many are free,
    so it never fetches more than it can hand to AWS right away (fetched messages age toward
    their ack_wait while they wait)."""

    def __init__(self, count: int) -> None:
        self.free = count
        self._changed = asyncio.Event()

    async def wait_free(self) -> int:
        while self.free <= 0:
            self._changed.clear()
            await self._changed.wait()
        return self.free

    def take(self) -> None:
        self.free -= 1

    def give(self) -> None:
        self.free += 1
        self._changed.set()


class _Relay:
    def __init__(self, ctx: BridgeContext, route: Route, target: _Target) -> None:
        self.ctx = ctx
        self.route = route
        self.target = target
        self.metrics = ctx.route_metrics(route)
        stream, consumer = route_binding(route)
        self.source = PullSource(ctx, route, stream, consumer)
        # A queue's stream also holds copies sourced from topic streams, which SNS delivers to
        # the queue on its own; only the route's own subjects are relayed (for nats-to-sns the
        # consumer filter already selects them; checking again costs nothing).
        self.relay_subjects: tuple[str, ...] = tuple(route.relay_subjects)
        self.tasks: set[asyncio.Task[None]] = set()
        self.replies = Replies(ctx.nc)
        self.dlq_route: Route | None = None
        for other in ctx.plan.routes:
            if other.kind == "dlq-mover" and (other.stream, other.consumer) == (stream, consumer):
                self.dlq_route = other
        self.pause_until = 0.0
        self.route_failures = 0

    async def run(self) -> None:
        await require_consumer(self.ctx, self.route, self.source.stream, self.source.consumer)
        if not await self.target.prepare_with_retry():
            return
        lanes = _Lanes(1 if self.target.fifo else max(1, self.ctx.max_in_flight // BATCH_ENTRIES))
        try:
            while not self.ctx.stopping.is_set():
                wait = self.pause_until - time.monotonic()
                if wait > 0 and await sleep_unless_stopping(self.ctx, wait):
                    break
                free = await lanes.wait_free()
                if self.ctx.stopping.is_set():
                    break
                msgs = await self.source.fetch(min(free, 10) * BATCH_ENTRIES)
                if not msgs:
                    continue
                if self.ctx.stopping.is_set():
                    # Fetched but not sent: hand them back at once for another bridge.
                    await asyncio.gather(*(nak(m) for m in msgs))
                    break
                items = await self._prepare(msgs)
                batches = self._batches(items)
                for index, batch in enumerate(batches):
                    await lanes.wait_free()
                    if self.ctx.stopping.is_set():
                        # Stopped while waiting for a lane: what was not sent goes back now.
                        rest = [item.msg for b in batches[index:] for item in b]
                        await asyncio.gather(*(nak(m) for m in rest))
                        break
                    lanes.take()
                    self.metrics.in_flight += len(batch)
                    task = asyncio.create_task(self._deliver_batch(batch, lanes))
                    self.tasks.add(task)
                    task.add_done_callback(self.tasks.discard)
        finally:
            # Drain: batches already at AWS finish (ack what was accepted, NAK the rest).
            if self.tasks:
                await asyncio.gather(*self.tasks, return_exceptions=True)
            await self.source.close()
            await self.replies.close()

    async def _prepare(self, msgs: list[Any]) -> list[_Item]:
        items: list[_Item] = []
        skipped: list[Any] = []
        fetched = time.monotonic()
        for msg in msgs:
            headers = msg.headers or {}
            origin = headers.get(ORIGIN_HEADER)
            if origin is not None and origin.lower() == "aws":
                # Came from AWS through the other direction: relaying it back would loop.
                skipped.append(msg)
                continue
            if CANARY_HEADER in headers:
                # verify's canaries test NATS's own wiring; AWS consumers must never see one.
                skipped.append(msg)
                continue
            if self.relay_subjects and not subject_in(msg.subject, self.relay_subjects):
                # A copy that arrived through a topic stream source; SNS delivers it to the
                # queue itself, so relaying it would make a second copy.
                skipped.append(msg)
                continue
            try:
                items.append(self.target.build(msg, fetched))
            except Rejected as exc:
                await self._reject(msg, str(exc))
        if skipped:
            self.metrics.skipped += len(skipped)
            await ack_confirmed(
                self.replies, skipped, self.metrics, standalone=self.source.standalone
            )
        return items

    def _batches(self, items: list[_Item]) -> list[list[_Item]]:
        batches: list[list[_Item]] = []
        current: list[_Item] = []
        size = 0
        for item in items:
            if current and (
                len(current) >= BATCH_ENTRIES or size + item.size > self.target.max_bytes
            ):
                batches.append(current)
                current, size = [], 0
            current.append(item)
            size += item.size
        if current:
            batches.append(current)
        return batches

    async def _reject(self, msg: Any, reason: str) -> None:
        """A message AWS will never take: copied to the queue's DLQ and TERMed when there is
        one; otherwise kept (NAKed for KEEP_DELAY) and reported on every attempt, because a
        work-queue stream deletes a TERMed message and the order would be gone."""
        self.metrics.error()
        meta = _describe(msg)
        if self.dlq_route is not None:
            if not await self._copy_to_dlq(msg, reason):
                # Never TERM what we could not keep: try again later instead.
                self.ctx.log(f"{self.route.name}: cannot copy {meta} to the DLQ; NAK")
                await nak(msg, nak_delay(msg))
                return
            reason = f"{reason} (copied to {self.dlq_route.subject})"
        elif self.route.kind == "nats-to-sqs":
            self.ctx.log(
                f"{self.route.name}: {self.target.kind} refuses {meta}: {reason}; kept on NATS "
                f"(retried every {KEEP_DELAY:g}s) — fix or remove it by hand"
            )
            await nak(msg, KEEP_DELAY)
            return
        self.ctx.log(f"{self.route.name}: TERM {meta}: {reason}")
        with contextlib.suppress(Exception):
            await term_with_reason(self.ctx.nc, msg, f"snsq2nats {self.route.name}: {reason}")

    async def _copy_to_dlq(self, msg: Any, reason: str) -> bool:
        from snsq2nats.bridge.dlq import copy_to_dlq  # dlq builds on this module's helpers

        assert self.dlq_route is not None
        meta = msg.metadata
        try:
            return await copy_to_dlq(
                self.ctx,
                self.dlq_route,
                source_stream=meta.stream,
                seq=int(meta.sequence.stream),
                subject=str(msg.subject),
                data=msg.data or b"",
                original=dict(msg.headers or {}),
                deliveries=int(meta.num_delivered),
                reason=f"rejected by {self.target.kind}: {reason}",
            )
        except Exception as exc:
            self.ctx.log(f"{self.route.name}: DLQ copy failed: {exc!r}")
            return False

    async def _deliver_batch(self, batch: list[_Item], lanes: _Lanes) -> None:
        try:
            await self._deliver(batch)
        except Exception as exc:  # a bug must not strand messages: leave them to redelivery
            self.metrics.error()
            self.ctx.log(f"{self.route.name}: batch failed unexpectedly: {exc!r}")
            await asyncio.gather(*(nak(i.msg) for i in batch))
        finally:
            self.metrics.in_flight -= len(batch)
            lanes.give()

    async def _deliver(self, batch: list[_Item]) -> None:
        pending = batch
        attempt = 0
        while pending:
            accepted, retry, rejected = await self._send(pending)
            if accepted:
                await ack_confirmed(
                    self.replies,
                    [i.msg for i in accepted],
                    self.metrics,
                    standalone=self.source.standalone,
                )
                # One record per batch: its entries were fetched together.
                self.metrics.delivered(
                    len(accepted),
                    sum(item.size for item in accepted),
                    time.monotonic() - min(item.fetched for item in accepted),
                )
                self.ctx.count_and_check_limit()
            for item, reason in rejected:
                await self._reject(item.msg, reason)
            pending = retry
            if not pending:
                self.route_failures = 0
                return
            attempt += 1
            if attempt >= MAX_ATTEMPTS or self.ctx.stopping.is_set():
                await self._give_back(pending, delayed=not self.ctx.stopping.is_set())
                return
            # Keep the messages ours while we wait, so ack_wait does not hand them to another
            # bridge mid-retry (that would send them twice).
            await asyncio.gather(*(_in_progress(i.msg) for i in pending))
            if await sleep_unless_stopping(self.ctx, backoff_delay(attempt)):
                await self._give_back(pending, delayed=False)
                return

    async def _give_back(self, items: list[_Item], *, delayed: bool) -> None:
        if delayed:
            # The endpoint keeps failing: slow the whole route down as well, not only these.
            self.route_failures += 1
            self.pause_until = time.monotonic() + backoff_delay(self.route_failures, cap=30.0)
        await asyncio.gather(*(nak(i.msg, nak_delay(i.msg) if delayed else None) for i in items))

    async def _send(
        self, items: list[_Item]
    ) -> tuple[list[_Item], list[_Item], list[tuple[_Item, str]]]:
        """One batch call: (accepted, to retry, rejected with reason)."""
        entries = []
        for entry_id, sent in zip(_ENTRY_IDS, items, strict=False):
            sent.entry["Id"] = entry_id  # ids only need to be unique within a call
            entries.append(sent.entry)
        try:
            response = await self.target.call(entries)
        except Exception as exc:
            if _entry_fault(exc):
                if len(items) == 1:
                    code, _ = _error_code(exc)
                    return [], [], [(items[0], f"{self.target.kind} refused it: {code}: {exc}")]
                # The call names no culprit: send each entry alone so only it fails.
                return await self._send_each(items)
            self.metrics.error()
            self.ctx.log(f"{self.route.name}: {self.target.kind} batch call failed: {exc}")
            return [], items, []
        by_id = dict(zip(_ENTRY_IDS, items, strict=False))
        accepted = [by_id[s["Id"]] for s in response.get("Successful") or [] if s["Id"] in by_id]
        retry: list[_Item] = []
        rejected: list[tuple[_Item, str]] = []
        answered = {id(i) for i in accepted}
        for failure in response.get("Failed") or []:
            item = by_id.get(str(failure.get("Id")))
            if item is None:
                continue
            answered.add(id(item))
            reason = f"{failure.get('Code')}: {failure.get('Message')}"
            if failure.get("SenderFault"):
                rejected.append((item, f"{self.target.kind} refused it: {reason}"))
            else:
                self.metrics.error()
                retry.append(item)
        # An entry AWS did not mention was not accepted: retry it (dedup ids cover FIFO).
        retry.extend(i for i in items if id(i) not in answered)
        return accepted, retry, rejected

    async def _send_each(
        self, items: list[_Item]
    ) -> tuple[list[_Item], list[_Item], list[tuple[_Item, str]]]:
        accepted: list[_Item] = []
        retry: list[_Item] = []
        rejected: list[tuple[_Item, str]] = []
        # Sequential, so a FIFO group keeps its order.
        for item in items:
            a, r, x = await self._send([item])
            accepted += a
            retry += r
            rejected += x
        return accepted, retry, rejected


async def _in_progress(msg: Any) -> None:
    with contextlib.suppress(Exception):
        await msg.in_progress()


def _describe(msg: Any) -> str:
    try:
        meta = msg.metadata
        return f"{meta.stream}#{meta.sequence.stream} ({msg.subject})"
    except Exception:
        return str(msg.subject)


async def _run(ctx: BridgeContext, route: Route, make: Callable[..., _Target]) -> None:
    await _Relay(ctx, route, make(ctx, route)).run()


async def run_nats_to_sqs(ctx: BridgeContext, route: Route) -> None:
    """Relay the route's durable consumer into the SQS queue `route.aws_arn`."""
    await _run(ctx, route, _SqsTarget)


async def run_nats_to_sns(ctx: BridgeContext, route: Route) -> None:
    """Relay the route's durable consumer into the SNS topic `route.aws_arn` (PublishBatch)."""
    await _run(ctx, route, _SnsTarget)
