"""NATS → AWS: the relay from a route's durable pull consumer into SQS or SNS.

The runners (`nats_to_sqs`, `nats_to_sns`) each bring a `Target`: how to resolve the AWS
destination, build an entry and send a batch. Everything else is here and shared.

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

A target with a ledger (SNS: `Target.ledger_subject`) has each accepted batch's stream
sequences recorded there, one awaited publish per batch, between AWS's answer and the ack: a
later fan-out handover learns which in-doubt messages SNS already has (`bridge.fanout_handover`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from snsq2nats.aws.errors import MISSING_CODES, error_code, is_entry_fault
from snsq2nats.bridge.codec import (
    CANARY_HEADER,
    DEDUP_HEADER,
    GROUP_HEADER,
    MSG_ID_HEADER,
    ORIGIN_ATTRIBUTE,
    ORIGIN_HEADER,
    headers_to_aws,
)
from snsq2nats.bridge.context import BridgeContext, backoff
from snsq2nats.bridge.dlq import copy_to_dlq
from snsq2nats.bridge.pull import (
    PullSource,
    ack_confirmed,
    describe,
    in_progress,
    nak,
    nak_delay,
    require_consumer,
    route_binding,
    term_with_reason,
)
from snsq2nats.bridge.replies import NoResponders, Replies, check_pub_ack
from snsq2nats.errors import SnsqError
from snsq2nats.filterpolicy import decode_token
from snsq2nats.jetstream.subjects import subject_in
from snsq2nats.plan.buckets import SENT_LEDGER
from snsq2nats.plan.model import Route

if TYPE_CHECKING:
    from nats.aio.msg import Msg

log = logging.getLogger(__name__)

# In-process attempts at one batch before its failures are NAKed with a delay.
MAX_ATTEMPTS = 5
# Attempts at one ledger record before the batch is acknowledged without it.
RECORD_ATTEMPTS = 3
BATCH_ENTRIES = 10
_ENTRY_IDS = tuple(f"m{i}" for i in range(BATCH_ENTRIES))
SQS_MAX_BYTES = 1_048_576  # per message and per SendMessageBatch request
SNS_MAX_BYTES = 262_144  # per message and per PublishBatch request

_ATTRIBUTE_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,256}$")
# MessageGroupId / MessageDeduplicationId: 1–128 printable ASCII characters.
_AWS_ID_RE = re.compile(r"^[\x21-\x7e]{1,128}$")


KEEP_DELAY = 900.0
"""Seconds before a message AWS refused (and that has no DLQ to go to) is offered again."""


class Rejected(Exception):
    """This message can never be delivered to the target; the reason goes into the TERM."""


@dataclass(slots=True)
class Item:
    msg: Msg
    entry: dict[str, Any]
    size: int
    fetched: float


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


def _group_id(msg: Msg) -> str:
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


def _dedup_id(msg: Msg) -> str:
    headers = msg.headers or {}
    value = headers.get(DEDUP_HEADER) or headers.get(MSG_ID_HEADER)
    if not value:
        meta = msg.metadata
        value = f"{meta.stream}:{meta.sequence.stream}"
    return _aws_id(value, "dedup")


_PLAIN_ORIGIN = {"DataType": "String", "StringValue": "nats"}


class Target:
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

    def origin_attribute(self, msg: Msg) -> dict[str, str]:
        """Where the message came from, for the sqs-to-nats route that may meet it again. A
        queue's own message is plain `nats`: it reaches SQS once."""
        # Shared by every entry: read, never changed, by the batch call.
        return _PLAIN_ORIGIN

    def body_field(self) -> str:
        raise NotImplementedError

    def ledger_subject(self) -> str | None:
        """Where the stream sequences AWS accepted are recorded before their ack (None: not
        recorded; a queue's copy reaches SQS once whatever happens to the relay)."""
        return None

    async def call(self, entries: list[dict[str, Any]]) -> dict[str, Any]:
        raise NotImplementedError

    def build(self, msg: Msg, fetched: float) -> Item:
        entries = headers_to_aws(msg.headers, self.route.number_attributes)
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
        return Item(msg, entry, size, fetched)

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
                if error_code(exc) in MISSING_CODES:
                    raise SnsqError(
                        f"{self.kind} target {self.route.aws_arn} does not exist",
                        where=f"route {self.route.name}",
                        hint="create it (or re-plan without this route) and start the bridge again",
                    ) from None
                self.ctx.route_metrics(self.route).error()
                log.warning("%s: cannot resolve %s: %s", self.route.name, self.route.aws_arn, exc)
                if await self.ctx.pause(backoff(attempt)):
                    return False
                attempt += 1


# --------------------------------------------------------------------------------------------
# The relay
# --------------------------------------------------------------------------------------------


class Lanes:
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


class Relay:
    def __init__(self, ctx: BridgeContext, route: Route, target: Target) -> None:
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
        # The ledger lives in the home account with the fleet's buckets; in a per-account plan
        # the route's own connection is another account's, where no ledger is.
        self.ledger = self.replies if ctx.home_nc is ctx.nc else Replies(ctx.home_nc)
        self.dlq_route: Route | None = None
        for other in ctx.plan.routes:
            # A partitioned queue's relay reads one partition durable; its mover watches them all.
            if other.kind == "dlq-mover" and other.stream == stream and consumer in other.durables:
                self.dlq_route = other
        self.pause_until = 0.0
        self.route_failures = 0
        self.ledger_warned = False

    async def run(self) -> None:
        await require_consumer(self.ctx, self.route, self.source.stream, self.source.consumer)
        if not await self.target.prepare_with_retry():
            return
        lanes = Lanes(1 if self.target.fifo else max(1, self.ctx.max_in_flight // BATCH_ENTRIES))
        try:
            while not self.ctx.stopping.is_set():
                wait = self.pause_until - time.monotonic()
                if wait > 0 and await self.ctx.pause(wait):
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
            if self.ledger is not self.replies:
                await self.ledger.close()

    async def _prepare(self, msgs: list[Msg]) -> list[Item]:
        items: list[Item] = []
        skipped: list[Msg] = []
        fetched = time.monotonic()
        for msg in msgs:
            headers = msg.headers or {}
            origin = headers.get(ORIGIN_HEADER)
            if origin is not None and origin.lower() == "aws" and self.route.kind != "nats-to-sqs":
                # Came from AWS into the topic stream: relaying it back would loop. A queue's
                # stream holds what sqs-to-nats relayed while its consumers were on NATS; moved
                # back to AWS, that backlog is theirs (the two relays never run together).
                skipped.append(msg)
                continue
            if CANARY_HEADER in headers:
                # verify's canaries test NATS's own wiring; AWS consumers must never see one.
                skipped.append(msg)
                continue
            if self.relay_subjects and not subject_in(msg.subject, self.relay_subjects):
                # Outside the topic's NATS-origin space (the `aws.` relay space): SNS delivered
                # those to its subscribers itself.
                skipped.append(msg)
                continue
            try:
                items.append(self.target.build(msg, fetched))
            except Rejected as exc:
                await self._reject(msg, str(exc))
        if skipped:
            self.metrics.skipped += len(skipped)
            await ack_confirmed(
                self.replies,
                skipped,
                self.metrics,
                timeout=self.ctx.timings.ack_timeout,
                standalone=self.source.standalone,
            )
        return items

    def _batches(self, items: list[Item]) -> list[list[Item]]:
        batches: list[list[Item]] = []
        current: list[Item] = []
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

    async def _reject(self, msg: Msg, reason: str) -> None:
        """A message AWS will never take: copied to the queue's DLQ and TERMed when there is
        one; otherwise kept (NAKed for KEEP_DELAY) and reported on every attempt, because a
        work-queue stream deletes a TERMed message and the order would be gone."""
        self.metrics.error()
        meta = describe(msg)
        if self.dlq_route is not None:
            if not await self._copy_to_dlq(msg, reason):
                # Never TERM what we could not keep: try again later instead.
                log.warning("%s: cannot copy %s to the DLQ; NAK", self.route.name, meta)
                await nak(msg, nak_delay(msg))
                return
            reason = f"{reason} (copied to {self.dlq_route.subject})"
        elif self.route.kind == "nats-to-sqs":
            log.warning(
                "%s: %s refuses %s: %s; kept on NATS (retried every %gs) — fix or remove it by "
                "hand",
                self.route.name,
                self.target.kind,
                meta,
                reason,
                KEEP_DELAY,
            )
            await nak(msg, KEEP_DELAY)
            return
        log.warning("%s: TERM %s: %s", self.route.name, meta, reason)
        with contextlib.suppress(Exception):
            await term_with_reason(self.ctx.nc, msg, f"snsq2nats {self.route.name}: {reason}")

    async def _copy_to_dlq(self, msg: Msg, reason: str) -> bool:
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
            log.warning("%s: DLQ copy failed: %r", self.route.name, exc)
            return False

    async def _deliver_batch(self, batch: list[Item], lanes: Lanes) -> None:
        try:
            await self._deliver(batch)
        except Exception as exc:  # a bug must not strand messages: leave them to redelivery
            self.metrics.error()
            log.error("%s: batch failed unexpectedly: %r", self.route.name, exc)
            await asyncio.gather(*(nak(i.msg) for i in batch))
        finally:
            self.metrics.in_flight -= len(batch)
            lanes.give()

    async def _deliver(self, batch: list[Item]) -> None:
        pending = batch
        attempt = 0
        while pending:
            accepted, retry, rejected = await self._send(pending)
            if accepted:
                await self._record(accepted)
                await ack_confirmed(
                    self.replies,
                    [i.msg for i in accepted],
                    self.metrics,
                    timeout=self.ctx.timings.ack_timeout,
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
            await asyncio.gather(*(in_progress(i.msg) for i in pending))
            if await self.ctx.pause(backoff(attempt)):
                await self._give_back(pending, delayed=False)
                return

    async def _record(self, accepted: list[Item]) -> None:
        """Record the accepted batch's sequences in the target's ledger, before the ack.

        Never holds the ack back: the messages are at AWS already, and leaving them
        unacknowledged would send them again for certain. A record that cannot be written
        costs a duplicate only if a fan-out handover later finds the message in doubt (it then
        copies it, as it copies every message of a relay that keeps no ledger)."""
        subject = self.target.ledger_subject()
        if subject is None:
            return
        payload = json.dumps(
            [int(item.msg.metadata.sequence.stream) for item in accepted], separators=(",", ":")
        ).encode()
        problem = ""
        for _ in range(RECORD_ATTEMPTS):
            try:
                future = await self.ledger.send(
                    subject, payload, {"Nats-Expected-Stream": SENT_LEDGER}
                )
                (reply,) = await self.ledger.gather([future], self.ctx.timings.publish_timeout)
                if isinstance(reply, BaseException):
                    raise reply
                check_pub_ack(reply)
                return
            except NoResponders:
                problem = f"no stream {SENT_LEDGER} (run snsq2nats apply with this version)"
                break
            except Exception as exc:
                problem = f"{type(exc).__name__}: {exc}"
        self.metrics.error()
        if not self.ledger_warned:
            self.ledger_warned = True
            log.warning(
                "%s: cannot record what %s accepted in %s: %s; a fan-out handover copies such "
                "messages to the topic's queues again",
                self.route.name,
                self.target.kind,
                subject,
                problem,
            )

    async def _give_back(self, items: list[Item], *, delayed: bool) -> None:
        if delayed:
            # The endpoint keeps failing: slow the whole route down as well, not only these.
            self.route_failures += 1
            self.pause_until = time.monotonic() + backoff(self.route_failures, cap=30.0)
        await asyncio.gather(*(nak(i.msg, nak_delay(i.msg) if delayed else None) for i in items))

    async def _send(
        self, items: list[Item]
    ) -> tuple[list[Item], list[Item], list[tuple[Item, str]]]:
        """One batch call: (accepted, to retry, rejected with reason)."""
        entries = []
        for entry_id, sent in zip(_ENTRY_IDS, items, strict=False):
            sent.entry["Id"] = entry_id  # ids only need to be unique within a call
            entries.append(sent.entry)
        try:
            response = await self.target.call(entries)
        except Exception as exc:
            if is_entry_fault(exc):
                if len(items) == 1:
                    code = error_code(exc)
                    return [], [], [(items[0], f"{self.target.kind} refused it: {code}: {exc}")]
                # The call names no culprit: send each entry alone so only it fails.
                return await self._send_each(items)
            self.metrics.error()
            log.warning("%s: %s batch call failed: %s", self.route.name, self.target.kind, exc)
            return [], items, []
        by_id = dict(zip(_ENTRY_IDS, items, strict=False))
        accepted = [by_id[s["Id"]] for s in response.get("Successful") or [] if s["Id"] in by_id]
        retry: list[Item] = []
        rejected: list[tuple[Item, str]] = []
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
        self, items: list[Item]
    ) -> tuple[list[Item], list[Item], list[tuple[Item, str]]]:
        accepted: list[Item] = []
        retry: list[Item] = []
        rejected: list[tuple[Item, str]] = []
        # Sequential, so a FIFO group keeps its order.
        for item in items:
            a, r, x = await self._send([item])
            accepted += a
            retry += r
            rejected += x
        return accepted, retry, rejected


async def run_relay(
    ctx: BridgeContext, route: Route, make: Callable[[BridgeContext, Route], Target]
) -> None:
    """Relay the route's durable consumer into the target `make` builds for it."""
    await Relay(ctx, route, make(ctx, route)).run()
