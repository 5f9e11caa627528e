"""AWS → NATS: relay an SQS queue (`sqs-to-nats`) or an SNS topic (`sns-to-nats`) into JetStream.

The one rule that matters: a message is deleted from SQS only after JetStream acknowledged it.
Every publish carries `Nats-Msg-Id` (the SQS MessageId, or the FIFO deduplication id), so a
message received twice — after a crash, a kill -9, a lost PubAck, an expired visibility, or by
a second bridge process — is stored once: the stream's duplicate window absorbs the redelivery.

Each route's pollers adapt to its queue: an idle queue holds one long poll (the floor of one
request per wait time), and every full batch received adds a poller, up to `--pollers`; an extra
poller that finds the queue empty stops again. A poller long-polls, hands the batch to a task
that publishes all its messages at once (pipelined; the in-flight total is bounded per route)
and goes back to polling. The backlog metric is only asked of AWS while the queue is busy: an
empty long poll already says it is zero. While a batch's publishes are slow its messages are
kept invisible (ChangeMessageVisibilityBatch at half the visibility timeout), so nobody else
receives them meanwhile.

Stopping (SIGINT, SIGTERM, the fleet handing the route to another member) never hands a
received message back: SQS counts every receive toward the queue's `maxReceiveCount`, and a
message handed back at each of a few stops is moved to the DLQ. What a poll returns, even
during a stop, is relayed and deleted; the drain ends when it is. A long poll cannot be
shortened once sent, and cancelling it client-side does not cancel it in SQS: the request
lives on server-side for its wait and takes the next messages that arrive, counted as
received, invisible until their visibility timeout passes. So:

- a queue with a redrive policy is long-polled for `REDRIVE_POLL_WAIT` (2 s) at most, and a
  stop waits for its polls to return: no receive is ever lost, at the price of a request every
  2 s (instead of one per 20 s) while such a queue is idle;
- any other queue keeps 20 s long polls; on stop, a poll on a queue that was idle is
  cancelled at once, and a poll on a busy queue (it returns as soon as messages arrive) gets
  `STOP_GRACE` to come back first. What a cancelled poll took in SQS reappears after the
  visibility timeout: a delay, and one more receive on a queue that has no DLQ to move it to.

A drain that cannot finish (NATS unreachable) is cut short by the runtime: what is still in
hand is left invisible and returns after its visibility timeout, never before.

An SNS topic is relayed through an SQS queue the bridge owns (see `sns_to_nats`). The runners
are `sqs_to_nats` and `sns_to_nats`; the relay they share is here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from snsq2nats.aws.arns import parse_arn
from snsq2nats.aws.errors import error_code, is_throttle
from snsq2nats.bridge.codec import (
    AWS_MESSAGE_ID_HEADER,
    DEDUP_HEADER,
    GROUP_HEADER,
    MSG_ID_HEADER,
    ORIGIN_ATTRIBUTE,
    ORIGIN_HEADER,
    ROUTE_HEADER,
    Attribute,
    attributes_to_headers,
    string_attributes,
)
from snsq2nats.bridge.context import BridgeContext, RouteMetrics, backoff
from snsq2nats.bridge.fifo_handover import pub_ack_seq, until_processed
from snsq2nats.bridge.replies import EXPECTED_STREAM_HEADER, Replies, check_pub_ack
from snsq2nats.filterpolicy import encode_token, subject_for
from snsq2nats.plan.model import Route

log = logging.getLogger(__name__)

MAX_BATCH = 10
SNS_TOPIC_HEADER = "Snsq2nats-Sns-Topic-Arn"
SNS_MESSAGE_ID_HEADER = "Snsq2nats-Sns-Message-Id"
SNS_SUBJECT_HEADER = "Snsq2nats-Sns-Subject"


# The longest poll on a queue with a redrive policy: a stop waits for it (see above).
REDRIVE_POLL_WAIT = 2
# How long a stop waits for a poll on a busy queue without a redrive policy before cancelling.
STOP_GRACE = 1.0


class PublishGaveUp(Exception):
    """A message JetStream refused for good (too big, no stream): SQS redelivers it later."""


async def has_redrive_policy(ctx: BridgeContext, queue_url: str) -> bool:
    """Whether SQS moves the queue's messages to a DLQ after some number of receives. When
    the attribute cannot be read, assume it does: the safe side is the shorter poll."""
    try:
        reply = await ctx.call_aws(
            ctx.sqs.get_queue_attributes, QueueUrl=queue_url, AttributeNames=["RedrivePolicy"]
        )
    except Exception as exc:
        log.warning("%s: cannot read the redrive policy (%s): polling briefly", queue_url, exc)
        return True
    return bool((reply.get("Attributes") or {}).get("RedrivePolicy"))


async def queue_url_for(ctx: BridgeContext, arn: str) -> str:
    queue = parse_arn(arn)
    reply = await ctx.call_aws(
        ctx.sqs.get_queue_url, QueueName=queue.resource, QueueOwnerAWSAccountId=queue.account
    )
    return str(reply["QueueUrl"])


# --- one received message --------------------------------------------------------------------


@dataclass
class Relayed:
    """What a received SQS message becomes on NATS (or `drop` when it must not be relayed)."""

    subject: str
    payload: bytes
    headers: dict[str, str]
    msg_id: str
    drop: bool = False


def _sns_envelope(body: str) -> dict[str, Any] | None:
    """The SNS notification a non-raw subscription wraps a message in, if `body` is one."""
    if not body.startswith("{") or '"Notification"' not in body:
        return None
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    if (
        isinstance(doc, dict)
        and doc.get("Type") == "Notification"
        and "TopicArn" in doc
        and "Message" in doc
        and "MessageId" in doc
    ):
        return doc
    return None


def parse_origin(value: str | bytes | None) -> tuple[str, int] | None:
    """`nats:<topic stream>:<seq>` → (stream, seq); None for anything else.

    The NATS → SNS relay stamps every message it hands SNS with where it came from, so that the
    copy SNS delivers back into a queue can be matched against that queue's own NATS path.
    """
    text = value.decode() if isinstance(value, bytes) else value
    if not text or not text.startswith("nats:"):
        return None
    stream, _, seq = text[len("nats:") :].rpartition(":")
    return (stream, int(seq)) if stream and seq.isdigit() else None


def convert(route: Route, message: dict[str, Any]) -> Relayed:
    """The NATS message for one SQS message: subject, body, headers and deduplication id."""
    body = str(message.get("Body", ""))
    attributes = {
        name: Attribute.from_sqs(raw)
        for name, raw in (message.get("MessageAttributes") or {}).items()
    }
    system = message.get("Attributes") or {}
    extra: dict[str, str] = {}
    envelope = _sns_envelope(body) if not attributes else None
    if envelope is not None:
        # A non-raw subscription: NATS consumers get the raw message, as the mapping promises,
        # with the attributes SNS put in the envelope.
        body = str(envelope["Message"])
        attributes = {
            name: Attribute.from_sns_envelope(raw)
            for name, raw in (envelope.get("MessageAttributes") or {}).items()
            if isinstance(raw, dict)
        }
        extra[SNS_TOPIC_HEADER] = str(envelope["TopicArn"])
        extra[SNS_MESSAGE_ID_HEADER] = str(envelope["MessageId"])
        if envelope.get("Subject"):
            extra[SNS_SUBJECT_HEADER] = str(envelope["Subject"]).replace("\n", " ")
    origin_attr = attributes.pop(ORIGIN_ATTRIBUTE, None)
    origin = parse_origin(origin_attr.value if origin_attr else None)
    message_id = str(message["MessageId"])
    msg_id = message_id
    drop = False
    if origin is not None:
        # A topic message published on NATS that SNS handed back. In the topic's own bridge
        # queue it is the echo of the nats-to-sns relay: the topic stream has the original. In
        # a queue it is that queue's one copy (the topic fans out through SNS, or nats-to-sqs
        # relayed it while the consumers were on AWS), relayed under the same id on any path.
        stream, seq = origin
        drop = route.kind == "sns-to-nats" and stream == route.stream
        msg_id = f"{stream}:{seq}"
    headers = attributes_to_headers(attributes)
    headers.update(extra)
    headers[ORIGIN_HEADER] = "aws"
    headers[ROUTE_HEADER] = route.name
    headers[AWS_MESSAGE_ID_HEADER] = message_id
    base = route.subject or ""
    if route.kind == "sns-to-nats":
        subject = subject_for(string_attributes(attributes), route.subject_tokens, base)
    else:
        subject = base
    group = system.get("MessageGroupId")
    dedup = system.get("MessageDeduplicationId")
    if route.fifo:
        if group is not None:
            headers[GROUP_HEADER] = str(group)
            if route.kind == "sqs-to-nats":
                subject = f"{base}.{encode_token(str(group))}"
        if dedup:
            headers[DEDUP_HEADER] = str(dedup)
            if origin is None:
                # A NATS topic message keeps `<stream>:<seq>`: the filter router's copy of
                # it carries that id, whatever deduplication id SNS handed SQS.
                msg_id = str(dedup)
    headers[MSG_ID_HEADER] = msg_id
    return Relayed(subject, body.encode("utf-8"), headers, msg_id, drop)


# --- the relay -------------------------------------------------------------------------------


def _refused(exc: BaseException) -> bool:
    """JetStream refused a publish for good (too big, wrong stream): retrying cannot help.
    No leader (503), a server error, a timeout or a lost connection are retried."""
    from nats.js.errors import APIError, ServiceUnavailableError

    if isinstance(exc, ServiceUnavailableError) or not isinstance(exc, APIError):
        return False
    return exc.code is None or exc.code < 500


@dataclass
class _Pending:
    message: dict[str, Any]
    received: float
    done: bool = False
    seq: int | None = None
    """The stream sequence of its PubAck (recorded for FIFO queues only, see `ordered`)."""


@dataclass
class Relay:
    """One route's pollers, publishes and deletes against one SQS queue."""

    ctx: BridgeContext
    route: Route
    queue_url: str
    until_empty: bool = False
    metrics: RouteMetrics = field(init=False)
    permits: asyncio.Semaphore = field(init=False)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    pollers: set[asyncio.Task[None]] = field(default_factory=set)
    idle: bool = True
    """The last receive found the queue empty (so far: nothing received, nothing to ask AWS)."""
    lag_task: asyncio.Task[None] | None = None
    """Reads the backlog from a full batch on until the queue is empty again; none while idle
    (no wake-ups per idle route)."""
    replies: Replies = field(init=False)
    redrive: bool = True
    """The queue has a redrive policy: its polls are short and never cancelled (read at start)."""
    receiving: dict[asyncio.Task[None], bool] = field(default_factory=dict)
    """Pollers waiting for a receive to return, and whether the queue was idle when it went out."""
    ordered: bool = field(init=False)

    def __post_init__(self) -> None:
        # A FIFO queue's messages leave SQS once NATS processed them (`fifo_handover`).
        self.ordered = self.route.kind == "sqs-to-nats" and self.route.fifo
        self.metrics = self.ctx.route_metrics(self.route)
        self.permits = asyncio.Semaphore(max(self.ctx.max_in_flight, MAX_BATCH))
        self.replies = Replies(self.ctx.nc)

    def log(self, line: str) -> None:
        log.warning("%s: %s", self.route.name, line)

    async def run(self) -> None:
        self.redrive = self.until_empty or await has_redrive_policy(self.ctx, self.queue_url)
        await self.replies.start()
        self._add_poller(scout=True)
        stopped = asyncio.ensure_future(self.ctx.stopping.wait())
        try:
            # Pollers come and go with the backlog: wait until none is left running.
            while running := [task for task in self.pollers if not task.done()]:
                if stopped.done():
                    await asyncio.wait(running)
                else:
                    await asyncio.wait([*running, stopped], return_when=asyncio.FIRST_COMPLETED)
                    if stopped.done():
                        self._cut_polls()
                for task in self.pollers:
                    failure = task.exception() if task.done() and not task.cancelled() else None
                    if failure is not None:
                        raise failure
            # Drain: the batches received finish (publish, delete) before returning.
            while self.tasks:
                await asyncio.gather(*list(self.tasks), return_exceptions=True)
        finally:
            stopped.cancel()
            left = [*self.pollers, *self.tasks]
            if self.lag_task is not None:
                left.append(self.lag_task)
            for task in left:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*left, return_exceptions=True)
            await self.replies.close()

    def _cut_polls(self) -> None:
        """Stopping: end the long polls that would only delay the stop (see the module doc).
        A poll on a redrive queue is never cut: it returns within REDRIVE_POLL_WAIT."""
        if self.redrive:
            return
        loop = asyncio.get_running_loop()
        idle = [task for task, was_idle in self.receiving.items() if was_idle]
        for task in idle:
            task.cancel()
        if idle:
            log.debug("%s: stopping: cancelled %d idle long poll(s)", self.route.name, len(idle))
        for task, was_idle in self.receiving.items():
            if not was_idle:
                loop.call_later(STOP_GRACE, self._cut_if_still_polling, task)

    def _cut_if_still_polling(self, task: asyncio.Task[None]) -> None:
        if task in self.receiving:
            task.cancel()

    def _add_poller(self, *, scout: bool = False) -> None:
        """The scout polls for as long as the route runs; extra pollers while there is work."""
        if not scout and len(self.pollers) >= max(1, self.ctx.pollers):
            return
        task = asyncio.create_task(self.poll(scout=scout))
        self.pollers.add(task)
        task.add_done_callback(self._poller_done)

    def _poller_done(self, task: asyncio.Task[None]) -> None:
        # A poller that failed stays in the set: run() must see its exception.
        if task.cancelled() or task.exception() is None:
            self.pollers.discard(task)

    # -- polling

    async def poll(self, *, scout: bool = True) -> None:
        attempt = 0
        while not self.ctx.stopping.is_set():
            # Reserve room for a full batch first: in-flight work stays bounded.
            for _ in range(MAX_BATCH):
                await self.permits.acquire()
            if self.ctx.stopping.is_set():  # while waiting for room: receive nothing more
                self._release(MAX_BATCH)
                return
            task = asyncio.current_task()
            assert task is not None
            self.receiving[task] = self.idle
            try:
                messages = await self.receive()
                attempt = 0
            except asyncio.CancelledError:
                # Cut by a stop (`_cut_polls`), or the route cancelled: nothing was in hand.
                self._release(MAX_BATCH)
                raise
            except Exception as exc:
                self._release(MAX_BATCH)
                attempt += 1
                self.metrics.error()
                delay = backoff(attempt, base=0.5, cap=20.0)
                kind = "throttled" if is_throttle(exc) else "receive failed"
                code = error_code(exc) or type(exc).__name__
                self.log(f"{kind} ({code}: {exc}); retry in {delay:.1f}s")
                await self.ctx.pause(delay)
                continue
            finally:
                self.receiving.pop(task, None)
            self._release(MAX_BATCH - len(messages))
            self.idle = not messages
            if len(messages) == MAX_BATCH and (self.lag_task is None or self.lag_task.done()):
                # A full batch: a backlog is likely, worth reading. A few messages now and
                # then are not one: a message to each of thousands of idle queues at once
                # must not become a backlog read from each every few seconds.
                self.lag_task = asyncio.create_task(self.watch_lag())
            if not messages:
                self.metrics.lag = 0
                if not scout:
                    return  # the queue ran dry: the scout's single long poll is enough
                if self.until_empty and await self.queue_empty():
                    return
                continue
            if len(messages) == MAX_BATCH and not self.ctx.stopping.is_set():
                self._add_poller()  # a full batch: there is likely more waiting
            # Relayed even when received during a stop: handing them back would count a
            # receive toward the DLQ for nothing.
            handling = asyncio.create_task(self.handle(messages))
            self.tasks.add(handling)
            handling.add_done_callback(self.tasks.discard)

    def _release(self, count: int) -> None:
        for _ in range(count):
            self.permits.release()

    async def receive(self) -> list[dict[str, Any]]:
        wait = self.ctx.wait_time_seconds
        if self.redrive:
            wait = min(wait, REDRIVE_POLL_WAIT)
        reply = await self.ctx.call_aws(
            self.ctx.sqs.receive_message,
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=MAX_BATCH,
            WaitTimeSeconds=wait,
            VisibilityTimeout=self.ctx.visibility_timeout,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["All"],
        )
        return list(reply.get("Messages") or [])

    async def queue_empty(self) -> bool:
        reply = await self.ctx.call_aws(
            self.ctx.sqs.get_queue_attributes,
            QueueUrl=self.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )
        attrs = reply.get("Attributes", {})
        return all(int(attrs.get(k, "0")) == 0 for k in attrs)

    async def watch_lag(self) -> None:
        """The queue's backlog for the view and the metrics while it is busy; a failure here
        is only cosmetic. It ends when the queue goes idle (an empty long poll already said
        the backlog is zero) and the next full batch received starts it again."""
        while not self.ctx.stopping.is_set() and not self.idle:
            with contextlib.suppress(Exception):
                reply = await self.ctx.call_aws(
                    self.ctx.sqs.get_queue_attributes,
                    QueueUrl=self.queue_url,
                    AttributeNames=["ApproximateNumberOfMessages"],
                )
                self.metrics.lag = int(reply["Attributes"]["ApproximateNumberOfMessages"])
            await self.ctx.pause(self.ctx.timings.lag_interval)

    # -- one batch

    async def handle(self, messages: list[dict[str, Any]]) -> None:
        received = time.monotonic()
        pending = [_Pending(m, received) for m in messages]
        self.metrics.in_flight += len(pending)
        keeper = asyncio.create_task(self.keep_invisible(pending))
        try:
            results = await self.deliver(pending)
            # Refused for good: left alone, so SQS redelivers it and its redrive policy applies.
            done = [p for p, ok in zip(pending, results, strict=True) if ok is True]
            if self.ordered:
                await self._until_processed(done)
            for p in done:
                p.done = True
            keeper.cancel()
            await self.delete([p.message for p in done])
        finally:
            keeper.cancel()
            self.metrics.in_flight -= len(pending)
            self._release(len(pending))
        self.ctx.count_and_check_limit()

    async def deliver(self, pending: list[_Pending]) -> list[bool | BaseException]:
        """Publish a batch until JetStream acknowledged each message: True for those that may
        be deleted, else why not (PublishGaveUp: refused for good).

        All publishes of a batch go out at once, in receive order (FIFO groups keep their
        order), and their PubAcks are awaited together under one timeout. The ones without a
        PubAck are republished with the same `Nats-Msg-Id`, which JetStream deduplicates, for
        as long as it takes: during a stop too (the runtime bounds a drain and cancels it).
        """
        results: list[bool | BaseException] = [True] * len(pending)
        relayed: dict[int, Relayed] = {}
        for i, item in enumerate(pending):
            try:
                converted = convert(self.route, item.message)
            except Exception as exc:
                self.metrics.error()
                self.log(f"cannot convert message {item.message.get('MessageId')}: {exc}")
                results[i] = PublishGaveUp(str(exc))
                continue
            if converted.drop:
                self.metrics.skipped += 1
                continue
            if self.route.stream:
                converted.headers[EXPECTED_STREAM_HEADER] = self.route.stream
            relayed[i] = converted
        waiting = list(relayed)
        attempt = 0
        while waiting:
            failures = await self.publish(waiting, relayed, pending)
            retry = []
            for i, why in failures:
                if _refused(why):
                    self.metrics.error()
                    self.log(
                        f"JetStream refused {relayed[i].msg_id} on {relayed[i].subject}: {why}"
                    )
                    results[i] = PublishGaveUp(str(why))
                else:
                    retry.append(i)
            if not retry:
                break
            if attempt == 0 or attempt % 10 == 0:
                first = relayed[retry[0]].msg_id
                self.log(
                    f"{len(retry)} publish(es) not acknowledged, e.g. {first} "
                    f"({failures[0][1]!r}); retrying"
                )
            attempt += 1
            self.metrics.error(len(retry))
            # Not `ctx.pause`: a drain keeps retrying what it received.
            await asyncio.sleep(backoff(attempt, base=0.1, cap=2.0))
            waiting = retry
        return results

    async def publish(
        self, indexes: list[int], relayed: Mapping[int, Relayed], pending: list[_Pending]
    ) -> list[tuple[int, BaseException]]:
        """One attempt at publishing `indexes`: the ones that failed, with the reason."""
        failures: list[tuple[int, BaseException]] = []
        sent: list[int] = []
        futures = []
        requests = [(relayed[i].subject, relayed[i].payload, relayed[i].headers) for i in indexes]
        for i, future in zip(indexes, await self.replies.send_many(requests), strict=True):
            if isinstance(future, BaseException):  # closed or draining connection
                failures.append((i, future))
            else:
                futures.append(future)
                sent.append(i)
        answers = await self.replies.gather(futures, self.ctx.timings.publish_timeout)
        count = size = 0
        received = 0.0
        for i, answer in zip(sent, answers, strict=True):
            if not isinstance(answer, BaseException):
                try:
                    check_pub_ack(answer)
                except Exception as exc:
                    answer = exc
                else:
                    if self.ordered:
                        pending[i].seq = pub_ack_seq(answer)
                    count += 1
                    size += len(relayed[i].payload)
                    received = pending[i].received  # one batch: received together
                    continue
            failures.append((i, answer))
        if count:
            # One record per batch rather than per message.
            self.metrics.delivered(count, size, time.monotonic() - received)
        failures.sort(key=lambda failure: failure[0])
        return failures

    async def _until_processed(self, done: list[_Pending]) -> None:
        """FIFO: keep `done` in flight in SQS (its group locked) until the durable acked it."""
        seqs = [p.seq for p in done if p.seq is not None]
        if seqs and self.route.stream:
            await until_processed(self.ctx.nc, self.route.stream, seqs, self.ctx.stopping)

    async def keep_invisible(self, pending: list[_Pending]) -> None:
        """Extend visibility before half of it passes, while any publish is outstanding."""
        interval = max(self.ctx.visibility_timeout / 2.0, 0.5)
        while True:
            await asyncio.sleep(interval)
            handles = [p.message["ReceiptHandle"] for p in pending if not p.done]
            if not handles:
                return
            await self.set_visibility(handles, self.ctx.visibility_timeout)

    async def set_visibility(self, handles: list[str], seconds: int) -> None:
        for start in range(0, len(handles), MAX_BATCH):
            entries = [
                {"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": seconds}
                for i, h in enumerate(handles[start : start + MAX_BATCH])
            ]
            try:
                await self.ctx.call_aws(
                    self.ctx.sqs.change_message_visibility_batch,
                    QueueUrl=self.queue_url,
                    Entries=entries,
                )
            except Exception as exc:
                # Only timing is at stake: the message reappears when its visibility ends.
                self.metrics.error()
                self.log(f"cannot change visibility: {exc}")

    async def delete(self, messages: list[dict[str, Any]]) -> None:
        """Delete what JetStream stored; Failed[] entries are retried, never forgotten silently."""
        for start in range(0, len(messages), MAX_BATCH):
            entries = [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                for i, m in enumerate(messages[start : start + MAX_BATCH])
            ]
            attempt = 0
            while entries:
                try:
                    reply = await self.ctx.call_aws(
                        self.ctx.sqs.delete_message_batch, QueueUrl=self.queue_url, Entries=entries
                    )
                    failed = {f["Id"]: f for f in reply.get("Failed") or []}
                except Exception as exc:
                    failed = {e["Id"]: {"Code": error_code(exc) or str(exc)} for e in entries}
                if not failed:
                    break
                attempt += 1
                self.metrics.error(len(failed))
                if attempt >= 5:
                    # The message comes back after its visibility; the dedup window absorbs it.
                    self.log(f"delete failed for {len(failed)} message(s): {list(failed.values())}")
                    break
                entries = [e for e in entries if e["Id"] in failed]
                # Not `ctx.pause`: what JetStream stored is deleted during a drain too.
                await asyncio.sleep(backoff(attempt, base=0.2, cap=5.0))
