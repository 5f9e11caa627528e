"""The SQS data plane over JetStream: each action takes the request as the JSON protocol shapes
it (the Query protocol is read into the same shape) and returns the response's fields.

A queue is its stream and its worker durable (the one native NATS workers bind to), so gateway
clients and NATS workers share one backlog. Sending publishes where NATS producers publish,
with attributes as the bridge's header contract writes them (`bridge.codec`); receiving pulls
from the durable; a receipt handle seals the delivery's ack subject; deleting acks it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from snsq2nats.bridge.codec import (
    AWS_MESSAGE_ID_HEADER,
    DEDUP_HEADER,
    GROUP_HEADER,
    MAX_SQS_ATTRIBUTES,
    MSG_ID_HEADER,
    Attribute,
    attributes_to_headers,
    headers_to_attributes,
)
from snsq2nats.errors import GatewayError, SnsqError
from snsq2nats.filterpolicy import encode_token
from snsq2nats.gateway.attributes import Wording, checked_attributes
from snsq2nats.gateway.checksums import md5_of_attributes, md5_of_body
from snsq2nats.gateway.estate import Estate, GatewayQueue
from snsq2nats.gateway.handles import ExpiredHandle, HandleSigner, InvalidHandle, Receipt
from snsq2nats.gateway.pull import pull
from snsq2nats.jetstream.api import api, get_message
from snsq2nats.jetstream.operations import CONSUMER_INFO, STREAM_INFO, STREAM_PURGE
from snsq2nats.plan.names import SCHEDULE_TOKEN

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg

NON_EXISTENT_QUEUE = "AWS.SimpleQueueService.NonExistentQueue"
INVALID_PARAMETER = "InvalidParameterValue"
MISSING_PARAMETER = "MissingParameter"
HANDLE_INVALID = "ReceiptHandleIsInvalid"
UNSUPPORTED = "AWS.SimpleQueueService.UnsupportedOperation"
MAX_WAIT_SECONDS = 20
MAX_RECEIVE = 10
MAX_DELAY = 900
SCHEDULE_HEADER = "Nats-Schedule"
SCHEDULE_TARGET_HEADER = "Nats-Schedule-Target"
PARTITION_SWEEP = 0.2
"""Seconds between a long poll's sweeps over a partitioned queue's durables."""
ACK_TIMEOUT = 5.0
ERR_MESSAGE_TOO_LARGE = 10054
ERR_HEADERS_TOO_LARGE = 10097
"""JetStream's 64 KiB limit on a message's header block, where the attributes travel."""

_AWS_ID_RE = re.compile(r"^[\x21-\x7e]{1,128}$")
# What SQS accepts in a body: #x9 | #xA | #xD | #x20-#xD7FF | #xE000-#xFFFD | #x10000-#x10FFFF.
_INVALID_BODY_RE = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_SYSTEM_ATTRIBUTES = (
    "SenderId",
    "SentTimestamp",
    "ApproximateReceiveCount",
    "ApproximateFirstReceiveTimestamp",
    "MessageGroupId",
    "MessageDeduplicationId",
    "SequenceNumber",
)


def missing(name: str) -> GatewayError:
    return GatewayError(
        MISSING_PARAMETER, f"The request must contain the parameter {name}.", status=400
    )


def invalid(message: str) -> GatewayError:
    return GatewayError(INVALID_PARAMETER, message)


def no_queue() -> GatewayError:
    return GatewayError(NON_EXISTENT_QUEUE, "The specified queue does not exist.")


def invalid_handle(handle: str) -> GatewayError:
    return GatewayError(
        HANDLE_INVALID, f'The input receipt handle "{handle}" is not a valid receipt handle.'
    )


@dataclass(frozen=True)
class Call:
    """One request, as the actions see it: who, what, and where clients reach the gateway."""

    nc: Client
    params: Mapping[str, Any]
    base_url: str
    """`http(s)://host:port` that queue URLs are built on."""
    sender: str
    """The SenderId SQS would report: the caller's access key id."""


class SqsActions:
    def __init__(self, estate: Callable[[], Estate], signer: HandleSigner) -> None:
        self.estate = estate
        self.signer = signer
        self._turn = 0

    # -- naming ------------------------------------------------------------------------------

    def queue_of(self, params: Mapping[str, Any]) -> GatewayQueue:
        url = params.get("QueueUrl")
        if not url:
            raise missing("QueueUrl")
        queue = self.estate().by_url(str(url))
        if queue is None:
            raise no_queue()
        return queue

    async def get_queue_url(self, call: Call) -> dict[str, Any]:
        name = call.params.get("QueueName")
        if not name:
            raise missing("QueueName")
        queue = self.estate().by_name(str(name), call.params.get("QueueOwnerAWSAccountId"))
        if queue is None:
            raise no_queue()
        return {"QueueUrl": queue.url(call.base_url)}

    async def list_queues(self, call: Call) -> dict[str, Any]:
        prefix = str(call.params.get("QueueNamePrefix") or "")
        urls = [q.url(call.base_url) for q in self.estate().queues if q.name.startswith(prefix)]
        limit = call.params.get("MaxResults")
        start = _int(call.params.get("NextToken") or 0, "NextToken") if limit else 0
        if limit is not None:
            size = _int(limit, "MaxResults")
            if not 1 <= size <= 1000:
                raise invalid(
                    f"Value {size} for parameter MaxResults is invalid. "
                    "Reason: MaxResults must be an integer between 1 and 1000."
                )
            page = urls[start : start + size]
            out: dict[str, Any] = {"QueueUrls": page} if page else {}
            if start + size < len(urls):
                out["NextToken"] = str(start + size)
            return out
        # SQS answers at most 1,000 URLs when no page size is asked for.
        return {"QueueUrls": urls[:1000]} if urls else {}

    # -- sending -----------------------------------------------------------------------------

    async def send_message(self, call: Call) -> dict[str, Any]:
        queue = self.queue_of(call.params)
        return await self._send(call, queue, call.params)

    async def _send(
        self, call: Call, queue: GatewayQueue, entry: Mapping[str, Any]
    ) -> dict[str, Any]:
        body = entry.get("MessageBody")
        if body is None or body == "":
            raise missing("MessageBody")
        body = str(body)
        if _INVALID_BODY_RE.search(body):
            raise GatewayError(
                "InvalidMessageContents",
                "Invalid characters found. Valid unicode characters are #x9 | #xA | #xD | "
                "#x20 to #xD7FF | #xE000 to #xFFFD | #x10000 to #x10FFFF",
            )
        attributes = parse_attributes(entry.get("MessageAttributes"))
        size = len(body.encode("utf-8")) + attributes_size(attributes)
        if size > queue.max_message_size:
            raise invalid(
                "One or more parameters are invalid. Reason: Message must be shorter than "
                f"{queue.max_message_size} bytes."
            )
        delay = self._delay(queue, entry.get("DelaySeconds"))
        message_id = str(uuid.uuid4())
        headers = attributes_to_headers(attributes)
        headers[AWS_MESSAGE_ID_HEADER] = message_id
        subject = queue.subject_base
        if queue.fifo:
            group = entry.get("MessageGroupId")
            if not group:
                raise missing("MessageGroupId")
            group = _aws_id(str(group), "MessageGroupId")
            dedup = entry.get("MessageDeduplicationId")
            if dedup:
                dedup = _aws_id(str(dedup), "MessageDeduplicationId")
            elif queue.content_based_deduplication:
                dedup = hashlib.sha256(body.encode("utf-8")).hexdigest()
            else:
                raise invalid(
                    "The queue should either have ContentBasedDeduplication enabled or "
                    "MessageDeduplicationId provided explicitly"
                )
            headers[GROUP_HEADER] = group
            headers[DEDUP_HEADER] = dedup
            headers[MSG_ID_HEADER] = dedup
            subject = f"{subject}.{encode_token(group)}"
        else:
            # A retried publish (lost PubAck) stays one message: same id, inside the window.
            headers[MSG_ID_HEADER] = message_id
        if delay:
            # A message schedule: the stream holds it under the schedule token and publishes
            # it to the queue's subject when the delay ends (how the plan maps DelaySeconds).
            at = datetime.now(UTC) + timedelta(seconds=delay)
            headers[SCHEDULE_HEADER] = "@at " + at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            headers[SCHEDULE_TARGET_HEADER] = subject
            subject = f"{queue.subject_base}.{SCHEDULE_TOKEN}.{message_id}"
        ack = await publish(call.nc, queue, subject, body.encode("utf-8"), headers)
        if queue.fifo and ack.duplicate:
            # SQS answers a duplicate with the original's id: the stored message carries it.
            message_id = await _stored_message_id(call.nc, queue.stream, ack.seq) or message_id
        out: dict[str, Any] = {"MessageId": message_id, "MD5OfMessageBody": md5_of_body(body)}
        md5 = md5_of_attributes(attributes)
        if md5 is not None:
            out["MD5OfMessageAttributes"] = md5
        if queue.fifo:
            out["SequenceNumber"] = _sequence_number(ack.seq)
        return out

    def _delay(self, queue: GatewayQueue, value: Any) -> int:
        """Seconds the message waits: its own DelaySeconds, else the queue's."""
        if value is None:
            return queue.delay_seconds if queue.schedules else 0
        seconds = _int(value, "DelaySeconds")
        if not 0 <= seconds <= MAX_DELAY:
            raise invalid(
                f"Value {seconds} for parameter DelaySeconds is invalid. "
                f"Reason: DelaySeconds must be >= 0 and <= {MAX_DELAY}"
            )
        if seconds and queue.fifo:
            raise invalid(
                f"Value {seconds} for parameter DelaySeconds is invalid. Reason: The request "
                "include parameter that is not valid for this queue type"
            )
        if seconds and not queue.schedules:
            # Ignoring it would deliver early: say why it cannot be kept.
            raise GatewayError(
                UNSUPPORTED,
                "DelaySeconds is not served for this queue: its stream takes no message "
                "schedules (the plan maps delays to schedules only for queues with a "
                "DelaySeconds, on nats-server 2.12+, without topic sources).",
            )
        return seconds

    # -- receiving ---------------------------------------------------------------------------

    async def receive_message(self, call: Call) -> dict[str, Any]:
        params = call.params
        queue = self.queue_of(params)
        count = _int(params.get("MaxNumberOfMessages", 1), "MaxNumberOfMessages")
        if not 1 <= count <= MAX_RECEIVE:
            raise invalid(
                f"Value {count} for parameter MaxNumberOfMessages is invalid. "
                "Reason: Must be between 1 and 10, if provided."
            )
        wait = _int(params.get("WaitTimeSeconds", queue.receive_wait_seconds), "WaitTimeSeconds")
        if not 0 <= wait <= MAX_WAIT_SECONDS:
            raise invalid(
                f"Value {wait} for parameter WaitTimeSeconds is invalid. "
                "Reason: Must be >= 0 and <= 20, if provided."
            )
        names = _names(params.get("MessageAttributeNames"))
        system = _system_names(
            [
                *_names(params.get("AttributeNames")),
                *_names(params.get("MessageSystemAttributeNames")),
            ]
        )
        visibility = params.get("VisibilityTimeout")
        if visibility is not None:
            visibility = _visibility(visibility)
        msgs = await self._pull(call.nc, queue, count, float(wait))
        if visibility is not None and visibility != queue.visibility_timeout:
            for msg in msgs:
                await call.nc.publish(str(msg.reply), nak_payload(visibility))
        now = int(time.time() * 1000)
        return (
            {"Messages": [self._message(call, queue, m, names, system, now) for m in msgs]}
            if msgs
            else {}
        )

    async def _pull(self, nc: Client, queue: GatewayQueue, count: int, wait: float) -> list[Msg]:
        # Never more than a durable may have in flight: a larger request would be held by the
        # server until it expires (a FIFO queue's durable takes one message at a time).
        batch = max(1, min(count, queue.max_in_flight))
        durables = queue.durables
        if len(durables) == 1:
            return await pull(nc, queue.stream, durables[0], batch, wait)
        # Partitions: a sweep takes what each has now, in turn (starting one further each
        # receive, so no partition waits on another); a long poll sweeps again until a message
        # comes or the wait ends. Waiting on one partition alone would miss the others', and
        # waiting on all at once would leave pending requests that deliver to nobody.
        self._turn = (self._turn + 1) % len(durables)
        turn = [*durables[self._turn :], *durables[: self._turn]]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        got: list[Msg] = []
        while True:
            for durable in turn:
                got += await pull(nc, queue.stream, durable, min(batch, count - len(got)), 0)
                if len(got) >= count:
                    return got
            remaining = deadline - loop.time()
            if got or remaining <= 0:
                return got
            await asyncio.sleep(min(PARTITION_SWEEP, remaining))

    def _message(
        self,
        call: Call,
        queue: GatewayQueue,
        msg: Msg,
        names: Sequence[str],
        system: Sequence[str],
        now: int,
    ) -> dict[str, Any]:
        headers = msg.headers or {}
        body = (msg.data or b"").decode("utf-8", "replace")
        meta = msg.metadata
        message_id = headers.get(AWS_MESSAGE_ID_HEADER) or str(
            uuid.uuid5(uuid.NAMESPACE_URL, f"nats:{meta.stream}:{meta.sequence.stream}")
        )
        out: dict[str, Any] = {
            "MessageId": message_id,
            "ReceiptHandle": self.signer.issue(_queue_key(queue), str(msg.reply), now / 1000),
            "MD5OfBody": md5_of_body(body),
            "Body": body,
        }
        if system:
            sent = int(meta.timestamp.timestamp() * 1000) if meta.timestamp else now
            values = {
                "SenderId": call.sender,
                "SentTimestamp": str(sent),
                "ApproximateReceiveCount": str(meta.num_delivered or 1),
                # JetStream keeps no first-delivery time: a first delivery is now; a redelivery
                # reports its send time, the earliest it can have been.
                "ApproximateFirstReceiveTimestamp": str(
                    now if (meta.num_delivered or 1) <= 1 else sent
                ),
            }
            if queue.fifo:
                values["MessageGroupId"] = headers.get(GROUP_HEADER, "")
                values["MessageDeduplicationId"] = headers.get(DEDUP_HEADER) or headers.get(
                    MSG_ID_HEADER, ""
                )
                values["SequenceNumber"] = _sequence_number(meta.sequence.stream)
            out["Attributes"] = {k: v for k, v in values.items() if k in system}
        if names:
            attributes = {
                n: a for n, a in headers_to_attributes(headers).items() if _selected(n, names)
            }
            if attributes:
                out["MessageAttributes"] = {n: _json_attribute(a) for n, a in attributes.items()}
                out["MD5OfMessageAttributes"] = md5_of_attributes(attributes)
        return out

    # -- settling ----------------------------------------------------------------------------

    def receipt(self, queue: GatewayQueue, handle: Any) -> Receipt:
        if not handle:
            raise missing("ReceiptHandle")
        try:
            return self.signer.open(str(handle), _queue_key(queue))
        except InvalidHandle:
            raise invalid_handle(str(handle)) from None
        except ExpiredHandle:
            raise invalid(
                f"Value {handle} for parameter ReceiptHandle is invalid. "
                "Reason: The receipt handle has expired."
            ) from None

    async def delete_message(self, call: Call) -> dict[str, Any]:
        queue = self.queue_of(call.params)
        receipt = self.receipt(queue, call.params.get("ReceiptHandle"))
        await settle(call.nc, receipt, b"+ACK")
        return {}

    async def change_message_visibility(self, call: Call) -> dict[str, Any]:
        queue = self.queue_of(call.params)
        await self._change(call, queue, call.params)
        return {}

    async def _change(self, call: Call, queue: GatewayQueue, entry: Mapping[str, Any]) -> None:
        """A delayed NAK: the delivery stays pending (its handle still deletes it) and comes
        back exactly `VisibilityTimeout` seconds from now, shorter or longer than the ack wait,
        whichever replica settles it and whether or not this one is still running."""
        receipt = self.receipt(queue, entry.get("ReceiptHandle"))
        if entry.get("VisibilityTimeout") is None:
            raise missing("VisibilityTimeout")
        seconds = _visibility(entry["VisibilityTimeout"])
        try:
            stored = await get_message(call.nc, queue.stream, receipt.stream_sequence)
        except SnsqError:
            stored = None  # an identity that may not read the stream: the NAK still does it
        else:
            if stored is None:
                raise invalid(
                    f"Value {entry.get('ReceiptHandle')} for parameter ReceiptHandle is invalid. "
                    "Reason: Message does not exist or is not available for visibility timeout "
                    "change."
                )
        await settle(call.nc, receipt, nak_payload(seconds))

    # -- batches -----------------------------------------------------------------------------

    async def send_message_batch(self, call: Call) -> dict[str, Any]:
        queue = self.queue_of(call.params)
        entries = _batch(call.params, "SendMessageBatchRequestEntry")
        total = sum(len(str(e.get("MessageBody", "")).encode()) for e in entries) + sum(
            attributes_size(_lenient_attributes(e.get("MessageAttributes"))) for e in entries
        )
        if total > queue.max_message_size:
            raise GatewayError(
                "AWS.SimpleQueueService.BatchRequestTooLong",
                f"Batch requests cannot be longer than {queue.max_message_size} bytes. "
                f"You have sent {total} bytes.",
            )

        async def one(entry: Mapping[str, Any]) -> dict[str, Any]:
            return await self._send(call, queue, entry)

        # FIFO: in the order given, as SQS stores a batch's messages of one group.
        return await _run_batch(entries, one, concurrent=not queue.fifo)

    async def delete_message_batch(self, call: Call) -> dict[str, Any]:
        queue = self.queue_of(call.params)
        entries = _batch(call.params, "DeleteMessageBatchRequestEntry")

        async def one(entry: Mapping[str, Any]) -> dict[str, Any]:
            receipt = self.receipt(queue, entry.get("ReceiptHandle"))
            await settle(call.nc, receipt, b"+ACK")
            return {}

        return await _run_batch(entries, one, concurrent=True)

    async def change_message_visibility_batch(self, call: Call) -> dict[str, Any]:
        queue = self.queue_of(call.params)
        entries = _batch(call.params, "ChangeMessageVisibilityBatchRequestEntry")

        async def one(entry: Mapping[str, Any]) -> dict[str, Any]:
            await self._change(call, queue, entry)
            return {}

        return await _run_batch(entries, one, concurrent=True)

    # -- the queue ---------------------------------------------------------------------------

    async def get_queue_attributes(self, call: Call) -> dict[str, Any]:
        queue = self.queue_of(call.params)
        wanted = _names(call.params.get("AttributeNames"))
        for name in wanted:
            if name != "All" and name not in QUEUE_ATTRIBUTES:
                raise GatewayError("InvalidAttributeName", f"Unknown Attribute {name}.")
        names = list(QUEUE_ATTRIBUTES) if "All" in wanted else wanted
        if not names:
            return {}
        values: dict[str, str] = {
            "QueueArn": queue.arn,
            "VisibilityTimeout": str(queue.visibility_timeout),
            "MaximumMessageSize": str(queue.max_message_size),
            "MessageRetentionPeriod": str(queue.retention_seconds),
            "ReceiveMessageWaitTimeSeconds": str(queue.receive_wait_seconds),
            "DelaySeconds": str(queue.delay_seconds),
        }
        values.update(queue.recorded)
        if queue.fifo:
            values["FifoQueue"] = "true"
            values["ContentBasedDeduplication"] = str(queue.content_based_deduplication).lower()
        if {"CreatedTimestamp", "LastModifiedTimestamp", DELAYED} & set(names):
            values.update(await _stream_attributes(call.nc, queue, delayed=DELAYED in names))
        if any(n.startswith("Approximate") for n in names):
            waiting = in_flight = 0
            for durable in queue.durables:
                info = await api(
                    call.nc, CONSUMER_INFO.subject(stream=queue.stream, consumer=durable)
                )
                waiting += int(info.get("num_pending") or 0)
                in_flight += int(info.get("num_ack_pending") or 0)
            values["ApproximateNumberOfMessages"] = str(waiting)
            values["ApproximateNumberOfMessagesNotVisible"] = str(in_flight)
        return {"Attributes": {n: values[n] for n in names if n in values}}

    async def purge_queue(self, call: Call) -> dict[str, Any]:
        """Every message of the queue's stream goes, in flight or not, as SQS purges."""
        queue = self.queue_of(call.params)
        await api(call.nc, STREAM_PURGE.subject(stream=queue.stream), {})
        return {}


DELAYED = "ApproximateNumberOfMessagesDelayed"


async def _stream_attributes(nc: Client, queue: GatewayQueue, *, delayed: bool) -> dict[str, str]:
    """What the queue's stream tells: its creation time (both timestamps: the plan changes a
    queue by updating its stream, which JetStream does not date) and, asked for, the delayed
    messages, which wait under the schedule token until the server publishes them."""
    pattern = f"{queue.subject_base}.{SCHEDULE_TOKEN}.>"
    count, offset = 0, 0
    while True:
        request = {"subjects_filter": pattern, "offset": offset} if delayed else None
        info = await api(nc, STREAM_INFO.subject(stream=queue.stream), request)
        subjects = (info.get("state") or {}).get("subjects") or {}
        count += sum(int(n) for n in subjects.values())
        offset += len(subjects)
        # The server pages a long subject list; each delayed message has its own subject.
        if not subjects or offset >= int(info.get("total") or 0):
            break
    created = str(info.get("created") or "")
    out = {"CreatedTimestamp": _epoch(created), "LastModifiedTimestamp": _epoch(created)}
    if delayed:
        out[DELAYED] = str(count if queue.schedules else 0)
    return out


def _epoch(stamp: str) -> str:
    """JetStream's RFC 3339 time (nanoseconds, UTC) as SQS's epoch seconds."""
    try:
        whole = re.sub(r"\.\d+", "", stamp).replace("Z", "+00:00")
        return str(int(datetime.fromisoformat(whole).timestamp()))
    except ValueError:
        return "0"


QUEUE_ATTRIBUTES = (
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
    "VisibilityTimeout",
    "MaximumMessageSize",
    "MessageRetentionPeriod",
    "ReceiveMessageWaitTimeSeconds",
    "DelaySeconds",
    "QueueArn",
    "FifoQueue",
    "ContentBasedDeduplication",
    "CreatedTimestamp",
    "LastModifiedTimestamp",
    "Policy",
    "RedrivePolicy",
    "RedriveAllowPolicy",
    "KmsMasterKeyId",
    "KmsDataKeyReusePeriodSeconds",
    "SqsManagedSseEnabled",
    "DeduplicationScope",
    "FifoThroughputLimit",
)
"""What SQS knows (asking for any other is InvalidAttributeName); those the plan does not say
are left out of the answer, as SQS leaves out what a queue does not have."""
MAX_VISIBILITY = 43_200
_BATCH_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
MAX_BATCH = 10


def nak_payload(seconds: int) -> bytes:
    if seconds <= 0:
        return b"-NAK"
    return b'-NAK {"delay": %d}' % (seconds * 1_000_000_000)


def _visibility(value: Any) -> int:
    seconds = _int(value, "VisibilityTimeout")
    if not 0 <= seconds <= MAX_VISIBILITY:
        raise invalid(
            f"Value {seconds} for parameter VisibilityTimeout is invalid. "
            f"Reason: Must be >= 0 and <= {MAX_VISIBILITY}, if provided."
        )
    return seconds


def _batch(params: Mapping[str, Any], what: str) -> list[Mapping[str, Any]]:
    entries = params.get("Entries")
    if not entries:
        raise GatewayError(
            "AWS.SimpleQueueService.EmptyBatchRequest",
            f"There should be at least one {what} in the request.",
        )
    if not isinstance(entries, list) or not all(isinstance(e, Mapping) for e in entries):
        raise invalid("The request has an invalid Entries parameter.")
    if len(entries) > MAX_BATCH:
        raise GatewayError(
            "AWS.SimpleQueueService.TooManyEntriesInBatchRequest",
            f"Maximum number of entries per request are {MAX_BATCH}. You have sent {len(entries)}.",
        )
    seen: set[str] = set()
    for entry in entries:
        entry_id = str(entry.get("Id") or "")
        if not _BATCH_ID_RE.match(entry_id):
            raise GatewayError(
                "AWS.SimpleQueueService.InvalidBatchEntryId",
                "A batch entry id can only contain alphanumeric characters, hyphens and "
                "underscores. It can be at most 80 letters long.",
            )
        if entry_id in seen:
            raise GatewayError(
                "AWS.SimpleQueueService.BatchEntryIdsNotDistinct", f"Id {entry_id} repeated."
            )
        seen.add(entry_id)
    return list(entries)


async def _run_batch(
    entries: Sequence[Mapping[str, Any]],
    one: Callable[[Mapping[str, Any]], Awaitable[dict[str, Any]]],
    *,
    concurrent: bool,
) -> dict[str, Any]:
    """Each entry on its own: a failure of one is a `Failed` entry, not a failed request
    (except a fault of the gateway's side, which fails the request: retrying it is safe)."""

    async def settled(entry: Mapping[str, Any]) -> dict[str, Any]:
        try:
            return {"Id": str(entry["Id"]), **await one(entry)}
        except GatewayError as exc:
            if not exc.sender:
                raise
            return {
                "Id": str(entry["Id"]),
                "SenderFault": True,
                "Code": exc.code,
                "Message": exc.message,
                "failed": True,
            }

    if concurrent:
        results = list(await asyncio.gather(*(settled(e) for e in entries)))
    else:
        results = [await settled(e) for e in entries]
    ok = [r for r in results if not r.get("failed")]
    failed = [{k: v for k, v in r.items() if k != "failed"} for r in results if r.get("failed")]
    return {"Successful": ok, "Failed": failed}


def _lenient_attributes(raw: Any) -> dict[str, Attribute]:
    """For sizing a batch before each entry is checked on its own."""
    try:
        return parse_attributes(raw)
    except GatewayError:
        return {}


async def publish(
    nc: Client, queue: GatewayQueue, subject: str, data: bytes, headers: dict[str, str]
) -> Any:
    """The PubAck of one message stored in the queue's stream, or the SQS error for why not."""
    from nats.errors import MaxPayloadError, NoRespondersError, TimeoutError
    from nats.js.errors import APIError

    # The server checks max_payload on body and headers together and closes the connection of
    # a client that exceeds it (nats-py checks the body alone): refuse it here instead.
    max_payload = int(nc.max_payload or 0)
    if max_payload and len(data) + header_block_size(headers) > max_payload:
        raise invalid(_MAX_PAYLOAD_REASON) from None
    try:
        return await nc.jetstream().publish(subject, data, stream=queue.stream, headers=headers)
    except APIError as exc:
        if exc.err_code == ERR_MESSAGE_TOO_LARGE:
            # The plan leaves the stream room for the headers: only a mapping's lower
            # max_msg_size gets here. Retrying cannot help, so not ServiceUnavailable.
            raise invalid(
                "One or more parameters are invalid. Reason: Message must be shorter than "
                f"{queue.max_message_size} bytes."
            ) from None
        if exc.err_code == ERR_HEADERS_TOO_LARGE:
            # A message SQS would take: its attributes are too large for JetStream's headers.
            raise invalid(
                "One or more parameters are invalid. Reason: the message attributes take more "
                "than the 64 KiB of headers JetStream stores with a message; move the larger "
                "values into the body."
            ) from None
        raise unavailable(f"JetStream refused the message ({exc.description})") from None
    except MaxPayloadError:
        raise invalid(_MAX_PAYLOAD_REASON) from None
    except (TimeoutError, NoRespondersError):
        raise unavailable("JetStream did not confirm the message in time") from None


# Above the server's max_payload, which the plan's MaximumMessageSize verdict says to raise.
_MAX_PAYLOAD_REASON = (
    "One or more parameters are invalid. Reason: the message is larger than the NATS server's "
    "max_payload; its operator must raise max_payload (see the plan's MaximumMessageSize "
    "verdict)."
)


def header_block_size(headers: Mapping[str, str]) -> int:
    """The bytes of the NATS header block nats-py sends for `headers` (`NATS/1.0`, one
    `Name: value` line each, a blank line): what the server counts with the body."""
    if not headers:
        return 0
    lines = sum(len(k.encode()) + len(v.encode()) + 4 for k, v in headers.items())
    return len(b"NATS/1.0\r\n") + lines + 2


def unavailable(why: str) -> GatewayError:
    return GatewayError(
        "ServiceUnavailable", f"{why}; retry the request.", status=503, sender=False
    )


async def settle(nc: Client, receipt: Receipt, verb: bytes) -> None:
    """Send `verb` to the delivery's ack subject and wait for the server to take it.

    An ack the server confirms is final; one it does not confirm within ACK_TIMEOUT (the
    message was already acked, or the connection dropped) is answered as SQS answers a second
    delete of the same handle: done. A lost ack only means a redelivery after the ack wait."""
    from nats.errors import NoRespondersError, TimeoutError

    with contextlib.suppress(TimeoutError, NoRespondersError):
        await nc.request(receipt.reply, verb, timeout=ACK_TIMEOUT)


def _queue_key(queue: GatewayQueue) -> str:
    return f"{queue.account}/{queue.name}"


def _sequence_number(seq: int) -> str:
    # SQS sequence numbers are 20-digit strings; a stream sequence keeps their order.
    return f"{seq:020d}"


async def _stored_message_id(nc: Client, stream: str, seq: int) -> str | None:
    try:
        stored = await get_message(nc, stream, seq)
    except SnsqError:
        return None
    return stored.headers.get(AWS_MESSAGE_ID_HEADER) if stored else None


def _int(value: Any, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise invalid(f"Value {value} for parameter {name} is invalid.") from None


def _aws_id(value: str, name: str) -> str:
    if not _AWS_ID_RE.match(value):
        raise invalid(
            f"Value {value} for parameter {name} is invalid. Reason: {name} can only include "
            "alphanumeric and punctuation characters. 1 to 128 in length."
        )
    return value


def _names(value: Any) -> list[str]:
    if not value:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def _system_names(names: Sequence[str]) -> list[str]:
    if "All" in names:
        return list(_SYSTEM_ATTRIBUTES)
    return [n for n in _SYSTEM_ATTRIBUTES if n in names]


def _selected(name: str, wanted: Sequence[str]) -> bool:
    for pattern in wanted:
        if pattern in ("All", ".*") or pattern == name:
            return True
        if pattern.endswith(".*") and name.startswith(pattern[:-1]):
            return True
    return False


def _json_attribute(attribute: Attribute) -> dict[str, Any]:
    if attribute.is_binary:
        value = attribute.value
        raw = value if isinstance(value, bytes) else value.encode()
        return {"DataType": attribute.data_type, "BinaryValue": base64.b64encode(raw).decode()}
    value = attribute.value
    text = value.decode("utf-8") if isinstance(value, bytes) else value
    return {"DataType": attribute.data_type, "StringValue": text}


_WORDS = Wording(
    bad_name="Message attribute name '{name}' is invalid.",
    no_value="The message attribute '{name}' must contain non-empty message attribute value.",
    no_type="The message attribute '{name}' must contain non-empty message attribute type.",
    bad_type="The type of message attribute '{name}' is invalid. You must use only the following "
    "supported type prefixes: Binary, Number, String.",
    no_binary="The message attribute '{name}' with type 'Binary' must use field 'Binary'.",
    bad_binary="The message attribute '{name}' has an invalid binary value.",
    empty="The message attribute '{name}' must contain non-empty message attribute value for "
    "message attribute type '{kind}'.",
    not_number="Can't cast the value of message attribute '{name}' to a number.",
    not_array=None,
)
"""SQS's words for the attribute checks both services make."""


def parse_attributes(raw: Any) -> dict[str, Attribute]:
    """MessageAttributes as the JSON protocol carries them (BinaryValue base64), validated as
    SQS validates them."""
    if not raw:
        return {}
    if not isinstance(raw, Mapping):
        raise invalid("The request has an invalid MessageAttributes parameter.")
    if len(raw) > MAX_SQS_ATTRIBUTES:
        raise invalid(
            f"Number of message attributes [{len(raw)}] exceeds the allowed maximum "
            f"[{MAX_SQS_ATTRIBUTES}]."
        )
    return checked_attributes(raw, _WORDS, invalid)


def attributes_size(attributes: Mapping[str, Attribute]) -> int:
    """What SQS counts toward the message size: each name, data type and value."""
    size = 0
    for name, attribute in attributes.items():
        value = attribute.value
        size += len(name.encode()) + len(attribute.data_type.encode())
        size += len(value) if isinstance(value, bytes) else len(value.encode("utf-8"))
    return size
