"""The DLQ mover: what SQS does after maxReceiveCount, for a queue that now lives in JetStream.

JetStream stops redelivering a message after the consumer's `max_deliver` and announces it on
`$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.<stream>.<consumer>`, but it leaves the message
where it is. Advisories are plain core-NATS messages, so the plan captures them in a stream
(`snsq2nats_advisories`) with one durable consumer per dlq-mover route: advisories raised while
no bridge runs are waiting when one starts.

Per advisory: read the message by sequence, publish it to the dead-letter queue's subject with
its headers plus where it came from and why, wait for the PubAck, delete the original, then
acknowledge the advisory. Every step is safe to repeat after a crash at any point: the copy's
`Nats-Msg-Id` is `dlq:<stream>:<seq>` (the DLQ stream drops a second copy inside its duplicate
window), deleting a deleted message is "not found", and a message already gone means the
advisory was handled before, so it is simply acknowledged.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from snsq2nats.bridge.codec import GROUP_HEADER, MSG_ID_HEADER
from snsq2nats.bridge.context import BridgeContext, backoff
from snsq2nats.bridge.pull import (
    PullSource,
    ack,
    nak,
    publish_with_retry,
    require_consumer,
    route_binding,
)
from snsq2nats.errors import SnsqError
from snsq2nats.filterpolicy import encode_token
from snsq2nats.jetstream.api import (
    ERR_NO_MESSAGE,
    ERR_STREAM_NOT_FOUND,
    JetStreamApiError,
    api,
    get_message,
    parse_header_block,
)
from snsq2nats.jetstream.operations import MSG_DELETE
from snsq2nats.plan.model import Route
from snsq2nats.plan.routes import ADVISORY_STREAM, DLQ_CONSUMER_PREFIX

if TYPE_CHECKING:
    from nats.aio.msg import Msg

__all__ = [
    "ADVISORY_STREAM",
    "advisory_consumer_name",
    "advisory_stream_name",
    "copy_to_dlq",
    "parse_header_block",
    "run_dlq_mover",
]

DLQ_SOURCE_STREAM = "Snsq2nats-Dlq-Source-Stream"
DLQ_SOURCE_SUBJECT = "Snsq2nats-Dlq-Source-Subject"
DLQ_SOURCE_SEQ = "Snsq2nats-Dlq-Source-Seq"
DLQ_DELIVERIES = "Snsq2nats-Dlq-Deliveries"
DLQ_REASON = "Snsq2nats-Dlq-Reason"
DLQ_SOURCE_MSG_ID = "Snsq2nats-Dlq-Source-Msg-Id"

# "no message found": deleted already (by us before a crash, by retention, or by hand).
log = logging.getLogger(__name__)

ADVISORY_BATCH = 10
PUBLISH_ATTEMPTS = 3


def advisory_consumer_name(route: Route) -> str:
    """The durable advisory consumer of a dlq-mover route: the plan's, else one derived from
    the source stream (one dlq-mover per queue stream; stream names are valid in names)."""
    if route.advisory_consumer:
        return route.advisory_consumer
    stream, _ = route_binding(route)
    return DLQ_CONSUMER_PREFIX + stream


def advisory_stream_name(route: Route) -> str:
    return route.advisory_stream or ADVISORY_STREAM


class _Mover:
    def __init__(self, ctx: BridgeContext, route: Route) -> None:
        self.ctx = ctx
        self.route = route
        self.metrics = ctx.route_metrics(route)
        self.stream, self.consumer = route_binding(route)
        if not route.subject:
            raise SnsqError(
                "the dlq-mover route names no dead-letter subject",
                where=f"route {route.name}",
                hint="re-run `snsq2nats plan`",
            )
        self.subject = route.subject
        self.advisories = PullSource(
            ctx, route, advisory_stream_name(route), advisory_consumer_name(route)
        )

    async def run(self) -> None:
        await require_consumer(
            self.ctx, self.route, self.advisories.stream, self.advisories.consumer
        )
        try:
            while not self.ctx.stopping.is_set():
                msgs = await self.advisories.fetch(ADVISORY_BATCH)
                for index, advisory in enumerate(msgs):
                    if self.ctx.stopping.is_set():
                        # Not started: give them back for the next run or another bridge.
                        for rest in msgs[index:]:
                            await nak(rest)
                        break
                    await self._handle(advisory)
        finally:
            await self.advisories.close()

    async def _handle(self, advisory: Msg) -> None:
        try:
            event = json.loads(advisory.data)
            stream = str(event["stream"])
            seq = int(event["stream_seq"])
            deliveries = int(event.get("deliveries") or 0)
        except (ValueError, KeyError, TypeError):
            # Not an advisory we can act on; keeping it would block nothing but fill the log.
            self.metrics.error()
            log.warning("%s: ignoring malformed advisory %r", self.route.name, advisory.data[:200])
            await ack(advisory, self.ctx.timings.ack_timeout)
            return
        reason = _reason(event)
        self.metrics.in_flight += 1
        try:
            moved = await self._move(stream, seq, deliveries, reason)
        except Exception as exc:
            moved = None
            self.metrics.error()
            log.warning("%s: moving %s#%s failed: %s", self.route.name, stream, seq, exc)
        finally:
            self.metrics.in_flight -= 1
        if moved is None:
            # Try again later: the advisory stays ours until then, the message stays put.
            await nak(advisory, backoff(3, cap=30.0))
            return
        if await ack(advisory, self.ctx.timings.ack_timeout):
            if moved:
                self.metrics.delivered(1, moved)
                self.ctx.count_and_check_limit()
            else:
                self.metrics.skipped += 1

    async def _move(self, stream: str, seq: int, deliveries: int, reason: str) -> int | None:
        """Move one message; its size if moved, 0 if it was already gone, None to retry."""
        try:
            message = await get_message(self.ctx.nc, stream, seq)
        except JetStreamApiError as exc:
            if exc.err_code == ERR_STREAM_NOT_FOUND:
                return 0
            raise
        if message is None:
            return 0
        data = message.data
        published = await copy_to_dlq(
            self.ctx,
            self.route,
            source_stream=stream,
            seq=seq,
            subject=message.subject,
            data=data,
            original=message.headers,
            deliveries=deliveries,
            reason=reason,
        )
        if not published:
            return None
        try:
            await api(
                self.ctx.nc,
                MSG_DELETE.subject(stream=stream),
                {"seq": seq, "no_erase": True},
            )
        except JetStreamApiError as exc:
            if exc.err_code not in (ERR_NO_MESSAGE, ERR_STREAM_NOT_FOUND):
                raise
        return len(data)


async def copy_to_dlq(
    ctx: BridgeContext,
    route: Route,
    *,
    source_stream: str,
    seq: int,
    subject: str,
    data: bytes,
    original: Mapping[str, str],
    deliveries: int,
    reason: str,
) -> bool:
    """Publish the dead-letter copy of `source_stream#seq` for a dlq-mover `route`; True once
    the DLQ stream has it. Also used by the NATS → AWS relay before it TERMs a message AWS
    refuses, because a workqueue stream deletes a TERMed message."""
    # Server-interpreted headers (Nats-Expected-*, Nats-Rollup, Nats-TTL, …) would act again on
    # the copy; only the original id is worth keeping, as a plain header.
    headers = {k: v for k, v in original.items() if not k.lower().startswith("nats-")}
    if MSG_ID_HEADER in original:
        headers[DLQ_SOURCE_MSG_ID] = original[MSG_ID_HEADER]
    headers.update(
        {
            DLQ_SOURCE_STREAM: source_stream,
            DLQ_SOURCE_SUBJECT: subject,
            DLQ_SOURCE_SEQ: str(seq),
            DLQ_DELIVERIES: str(deliveries),
            DLQ_REASON: " ".join(reason.split())[:1024],
            MSG_ID_HEADER: f"dlq:{source_stream}:{seq}",
        }
    )
    return await publish_with_retry(
        ctx,
        _dlq_subject(route, original, subject),
        data,
        headers,
        stream=route.target_stream,
        attempts=PUBLISH_ATTEMPTS,
    )


def _dlq_subject(route: Route, headers: Mapping[str, str], source_subject: str) -> str:
    if not route.subject:
        raise SnsqError("the dlq-mover route names no dead-letter subject", where=route.name)
    if not route.fifo:
        return route.subject
    group = headers.get(GROUP_HEADER)
    # FIFO queue subjects end in the group token; reuse it as is (already encoded).
    token = encode_token(group) if group else source_subject.rsplit(".", 1)[-1]
    return f"{route.subject}.{token}"


def _reason(event: dict[str, Any]) -> str:
    kind = str(event.get("type") or "")
    if kind.endswith(".terminated"):
        detail = str(event.get("reason") or "").strip()
        return f"terminated: {detail}" if detail else "terminated"
    return "max_deliver"


async def run_dlq_mover(ctx: BridgeContext, route: Route) -> None:
    """Move messages past `max_deliver` on route.stream/route.consumer to the DLQ subject."""
    mover = _Mover(ctx, route)
    attempt = 0
    while not ctx.stopping.is_set():
        try:
            await mover.run()
            return
        except SnsqError:
            raise
        except Exception as exc:  # keep moving after a surprise; the advisory is still ours
            attempt += 1
            ctx.route_metrics(route).error()
            log.error("%s: DLQ mover error (%r); restarting", route.name, exc)
            if await ctx.pause(backoff(attempt)):
                return
