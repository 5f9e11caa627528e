"""The exact handover of a topic's fan-out from the SNS relay to stream sources.

`cutover finish TOPIC` and `apply` of a plan that moves a fan-out from SNS to sources both do
it, once every bridge has stopped the topic's nats-to-sns relay. The relay's consumer then says
where SNS's share ends: every message up to its ack floor N went to SNS, and nothing after the
last one it delivered, D. Between them lie messages handed to a relay and never acknowledged —
by a member that stopped before sending them (a pull answered into an inbox already gone) or
was killed between SNS's answer and its ack — while later ones were sent and acknowledged. SNS
may or may not have those, and it has every acknowledged one after them: sources starting at
N + 1 would deliver the acknowledged ones twice, sources starting at D + 1 alone would lose the
unsent ones.

So each queue's new source starts at D + 1, and each message of (N, D] the source would carry
and SNS may lack (below) is copied into the queue stream first, under the id the SNS path's
copy of it carries (`codec.topic_copy`): whichever copy arrives second inside the queue
stream's duplicate window is dropped. A filter router, whose copies carry that id anyway,
starts at N + 1.

Copying all of (N, D] is exact only where SNS's copies reach the queue stream: a queue whose
consumers are on NATS (its sqs-to-nats relay names them by that id). `apply` may hand over
while a queue's consumers are still on AWS; there SNS's copy goes straight to SQS and the
stream's copy follows through the nats-to-sqs relay, and SQS has no duplicate window. So the
relay records, per PublishBatch SNS accepted and before acknowledging those messages, the
stream sequences it sent in the ledger (`plan.buckets.SENT_LEDGER`, one awaited publish per
batch), and the handover copies only the messages of (N, D] the ledger does not name: each
acknowledged one is named (its record was written before its ack), a held one (handed to a
member, never sent, never acknowledged) is not, and neither is anything a graceful stop gave
back. Exact for both kinds of queue, with one at-least-once window left: a member killed
between SNS's answer and its record (or a record the ledger would not take: the relay warns
and acknowledges anyway, since holding the ack back would resend it for certain) leaves a
message SNS has unnamed, and a queue whose consumers are on AWS gets it twice (on NATS the
stream's duplicate window still keeps one).

Without the ledger stream (a plan applied before it existed) every message of (N, D] is
copied, as before the ledger: `RelayCut.ledger` is False, and apply and cutover say so. A
bridge too old to write records leaves what it sent unnamed, so that is copied too.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from snsq2nats.bridge.codec import CANARY_HEADER, ORIGIN_HEADER, topic_copy
from snsq2nats.jetstream.api import (
    ERR_NO_MESSAGE,
    ERR_STREAM_NOT_FOUND,
    JetStreamApiError,
    api,
    get_message,
)
from snsq2nats.jetstream.operations import CONSUMER_DELETE, CONSUMER_INFO, MSG_GET, STREAM_INFO
from snsq2nats.jetstream.spec import StreamSource
from snsq2nats.jetstream.subjects import subject_in
from snsq2nats.plan.buckets import SENT_LEDGER, sent_subject
from snsq2nats.plan.model import Plan
from snsq2nats.plan.routes import TO_SNS_CONSUMER

if TYPE_CHECKING:
    from nats.aio.client import Client

log = logging.getLogger(__name__)

PUBLISH_ATTEMPTS = 5
CLOCK_MARGIN = timedelta(minutes=5)
"""How far before its first in-doubt message the ledger is read: a record is written after the
message it names, but by the ledger's leader, whose clock may lag the topic stream's."""


@dataclass(frozen=True)
class RelayCut:
    """Where a topic's stopped SNS relay left the topic stream."""

    topic_stream: str
    acked: int
    """N: every message up to here went to SNS."""
    delivered: int
    """D: no message after this one did."""
    copied: int = 0
    """Copies of (N, D] written into queue streams by this handover."""
    recorded: int = 0
    """Messages of (N, D] the ledger names as accepted by SNS: not copied."""
    ledger: bool = True
    """False: no ledger to read, so every message of (N, D] was copied."""

    @property
    def source_start(self) -> int:
        return self.delivered + 1

    @property
    def router_start(self) -> int:
        return self.acked + 1

    @property
    def in_doubt(self) -> range:
        return range(self.acked + 1, self.delivered + 1)

    def to_json(self) -> dict[str, int | bool]:
        return {
            "acked": self.acked,
            "delivered": self.delivered,
            "source_start": self.source_start,
            "copied": self.copied,
            "recorded": self.recorded,
            "ledger": self.ledger,
        }


@dataclass(frozen=True)
class CopyTarget:
    """A queue stream that sources the topic: where a copy goes and what the source selects."""

    stream: str
    subject: str
    fifo: bool
    filters: tuple[str, ...]


async def read_cut(nc: Client, topic_stream: str) -> RelayCut:
    """The relay consumer's floors, read once no bridge runs it (they no longer move)."""
    info = await api(nc, CONSUMER_INFO.subject(stream=topic_stream, consumer=TO_SNS_CONSUMER))
    acked = int((info.get("ack_floor") or {}).get("stream_seq") or 0)
    delivered = max(acked, int((info.get("delivered") or {}).get("stream_seq") or 0))
    if delivered > acked:
        log.info(
            "%s: messages %d to %d were handed to an SNS relay without all being acknowledged: "
            "copied under their SNS ids, the queue streams keep one of each",
            topic_stream,
            acked + 1,
            delivered,
        )
    return RelayCut(topic_stream, acked, delivered)


def source_filters(source: StreamSource) -> list[str]:
    """The subjects a stream source selects (one filter, or several as transforms)."""
    if source.filter_subject:
        return [source.filter_subject]
    return [t.src for t in source.subject_transforms or []]


def copy_target(plan: Plan, queue_stream: str, filters: Sequence[str]) -> CopyTarget:
    """The queue whose stream is `queue_stream`, as the SNS path's copies reach it: on the
    subject its sqs-to-nats relay publishes to."""
    relay = next(
        (r for r in plan.candidate_routes if r.kind == "sqs-to-nats" and r.stream == queue_stream),
        None,
    )
    if relay is None or not relay.subject:
        raise ValueError(f"no queue of the plan writes to stream {queue_stream}")
    return CopyTarget(queue_stream, relay.subject, relay.fifo, tuple(filters))


async def carry_in_doubt(
    nc: Client,
    cut: RelayCut,
    relay_subjects: Sequence[str],
    targets: Sequence[CopyTarget],
    *,
    route: str,
    ledger: Client | None = None,
) -> RelayCut:
    """Copy each message of the cut's (N, D] that SNS did not accept (the ledger does not name
    it; all of them without a ledger) into each target whose source selects it, as the relay
    would have sent it: NATS-published (in `relay_subjects`, not AWS-relayed), never a canary.
    Returns the cut with the number of copies written and of messages the ledger named.

    `ledger`: the connection to the account holding the ledger, the home one, when `nc` is
    another's (the topic's own in a per-account plan); None: `nc`'s."""
    if not targets or not cut.in_doubt:
        return cut
    since = await _first_published(nc, cut.topic_stream, cut.in_doubt)
    sent = await read_sent(ledger or nc, cut.topic_stream, since - CLOCK_MARGIN if since else None)
    if sent is None:
        log.warning(
            "%s: no ledger %s of what SNS accepted: every message of %d to %d is copied",
            cut.topic_stream,
            SENT_LEDGER,
            cut.acked + 1,
            cut.delivered,
        )
    copied = recorded = 0
    for seq in cut.in_doubt:
        if sent is not None and seq in sent:
            recorded += 1  # SNS has it and delivers it to every queue itself
            continue
        message = await get_message(nc, cut.topic_stream, seq)
        if message is None or CANARY_HEADER in message.headers:
            continue
        if (message.headers.get(ORIGIN_HEADER) or "").lower() == "aws":
            continue  # SNS delivered it to every queue itself
        if relay_subjects and not subject_in(message.subject, relay_subjects):
            continue
        for target in targets:
            if not subject_in(message.subject, target.filters):
                continue
            subject, headers = topic_copy(
                message.headers, cut.topic_stream, seq, route, target.subject, fifo=target.fifo
            )
            await _publish(nc, subject, message.data, headers, target.stream)
            copied += 1
    return RelayCut(
        cut.topic_stream,
        cut.acked,
        cut.delivered,
        cut.copied + copied,
        cut.recorded + recorded,
        sent is not None,
    )


async def _first_published(nc: Client, stream: str, seqs: range) -> datetime | None:
    """When the first message of `seqs` still in the stream was published (None: none is, or
    the server's time cannot be read)."""
    for seq in seqs:
        try:
            response = await api(nc, MSG_GET.subject(stream=stream), {"seq": seq}, 5.0)
        except JetStreamApiError as exc:
            if exc.err_code == ERR_NO_MESSAGE:
                continue
            raise
        return _parse_time(str((response.get("message") or {}).get("time") or ""))
    return None


def _parse_time(text: str) -> datetime | None:
    """The server's RFC 3339 time (nanoseconds, `Z`), to the microsecond."""
    head, _, fraction = text.removesuffix("Z").partition(".")
    try:
        moment = datetime.fromisoformat(head)
    except ValueError:
        return None
    digits = "".join(c for c in fraction if c.isdigit())[:6]
    micros = int(digits.ljust(6, "0")) if digits else 0
    return moment.replace(microsecond=micros, tzinfo=moment.tzinfo or UTC)


async def read_sent(nc: Client, topic_stream: str, since: datetime | None) -> set[int] | None:
    """The sequences of `topic_stream` its SNS relay recorded as accepted by SNS (records
    written from `since` on; all without it), or None when its relay kept no ledger: no
    ledger stream, or not one record of this topic in it (a bridge older than the ledger, or
    a ledger this very apply created).

    One filtered consumer of its own, which says up front how many records there are, so the
    read knows when it has them all; deleted afterwards."""
    from nats.errors import TimeoutError as NatsTimeout
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
    from nats.js.errors import NotFoundError

    try:
        await api(
            nc,
            MSG_GET.subject(stream=SENT_LEDGER),
            {"last_by_subj": sent_subject(topic_stream)},
            5.0,
        )
    except JetStreamApiError as err:
        if err.err_code in (ERR_STREAM_NOT_FOUND, ERR_NO_MESSAGE):
            return None
        raise
    js = nc.jetstream()
    config = ConsumerConfig(
        deliver_policy=DeliverPolicy.BY_START_TIME if since else DeliverPolicy.ALL,
        opt_start_time=since,
        ack_policy=AckPolicy.NONE,
        inactive_threshold=30.0,
        mem_storage=True,
    )
    try:
        sub = await js.pull_subscribe(sent_subject(topic_stream), stream=SENT_LEDGER, config=config)
    except NotFoundError:
        # The stream or the new consumer: only a missing stream means "no ledger".
        try:
            await api(nc, STREAM_INFO.subject(stream=SENT_LEDGER), None, 5.0)
        except JetStreamApiError as err:
            if err.err_code == ERR_STREAM_NOT_FOUND:
                return None
        raise
    sent: set[int] = set()
    try:
        left = (await sub.consumer_info()).num_pending or 0
        silent = 0
        # A record that expired meanwhile never comes: an unread one only costs a copy more.
        while left > 0 and silent < 3:
            try:
                msgs = await sub.fetch(min(left, 256), timeout=5.0)
            except (TimeoutError, NatsTimeout):
                silent += 1
                continue
            silent = 0
            for msg in msgs:
                left = msg.metadata.num_pending
                sent.update(_record(msg.data))
    finally:
        try:
            name = (await sub.consumer_info()).name
            await sub.unsubscribe()
            await api(nc, CONSUMER_DELETE.subject(stream=SENT_LEDGER, consumer=name), None, 5.0)
        except Exception:
            await sub.unsubscribe()
    return sent


def _record(data: bytes | None) -> list[int]:
    """A ledger record: a JSON list of stream sequences (anything else names none)."""
    try:
        value = json.loads(data or b"")
    except ValueError:
        return []
    if not isinstance(value, list):
        return []
    return [int(v) for v in value if isinstance(v, int)]


async def _publish(
    nc: Client, subject: str, data: bytes, headers: dict[str, str], stream: str
) -> None:
    """Publish and wait for the PubAck; a retry carries the same id, so it cannot double."""
    from nats.errors import TimeoutError as NatsTimeout
    from nats.js.errors import NoStreamResponseError

    js = nc.jetstream()
    for attempt in range(PUBLISH_ATTEMPTS):
        try:
            await js.publish(subject, data, headers=headers, stream=stream, timeout=5.0)
            return
        except (NatsTimeout, NoStreamResponseError, TimeoutError):
            if attempt + 1 == PUBLISH_ATTEMPTS:
                raise
            await asyncio.sleep(0.5 * (attempt + 1))
