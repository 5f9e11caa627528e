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
is copied into the queue stream first, under the id the SNS path's copy of it carries
(`codec.topic_copy`): whichever copy arrives second inside the queue stream's duplicate window
is dropped. A filter router, whose copies carry that id anyway, starts at N + 1.

That holds where SNS's copies reach the queue stream: a queue whose consumers are on NATS
(its sqs-to-nats relay names them by that id). `apply` may hand over while a queue's consumers
are still on AWS; there SNS's copy goes straight to SQS and the stream's copy follows through
the nats-to-sqs relay, and SQS has no duplicate window: every acknowledged message of (N, D]
reaches such a queue twice (reproduced: one held message, 39 duplicates in each queue). Only
the messages of (N, D] never acknowledged may be missing from SNS, but the relay consumer's
state says how many there are, not which.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from snsq2nats.bridge.codec import CANARY_HEADER, ORIGIN_HEADER, topic_copy
from snsq2nats.jetstream.api import api, get_message
from snsq2nats.jetstream.operations import CONSUMER_INFO
from snsq2nats.jetstream.spec import StreamSource
from snsq2nats.jetstream.subjects import subject_in
from snsq2nats.plan.model import Plan
from snsq2nats.plan.routes import TO_SNS_CONSUMER

if TYPE_CHECKING:
    from nats.aio.client import Client

log = logging.getLogger(__name__)

PUBLISH_ATTEMPTS = 5


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

    @property
    def source_start(self) -> int:
        return self.delivered + 1

    @property
    def router_start(self) -> int:
        return self.acked + 1

    @property
    def in_doubt(self) -> range:
        return range(self.acked + 1, self.delivered + 1)

    def to_json(self) -> dict[str, int]:
        return {
            "acked": self.acked,
            "delivered": self.delivered,
            "source_start": self.source_start,
            "copied": self.copied,
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
) -> RelayCut:
    """Copy each message of the cut's (N, D] into each target whose source selects it, as the
    relay would have sent it: NATS-published (in `relay_subjects`, not AWS-relayed), never a
    canary. Returns the cut with the number of copies written."""
    copied = 0
    if not targets:
        return cut
    for seq in cut.in_doubt:
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
    return RelayCut(cut.topic_stream, cut.acked, cut.delivered, cut.copied + copied)


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
