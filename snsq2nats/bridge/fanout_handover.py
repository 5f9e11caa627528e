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

So `apply` copies only those (`carry_unacked`): once no bridge pulls from the relay, the
messages it holds unacknowledged are redelivered when their ack wait runs out, and nothing
else is. Capping the retired consumer's `max_ack_pending` at the count it holds keeps it from
handing out anything after D meanwhile; a pull on it then returns exactly the unacknowledged
ones, which are copied (each once, under its SNS id) and never acknowledged: the consumer is
deleted once the sources are written (`retire_relay`). The cost is a wait of up to the relay's
ack wait. A message SNS accepted whose ack was lost with its member is still copied: that is
the at-least-once of any relay crash, not the handover's. Should the relay not give back as
many as it holds within the wait (another client still holding one, a redelivery limit
reached), the whole of (N, D] is copied: nothing is lost, and a queue whose consumers are on
AWS may see copies twice, which apply says.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from snsq2nats.bridge.codec import CANARY_HEADER, ORIGIN_HEADER, topic_copy
from snsq2nats.jetstream.api import StoredMessage, api, delete_consumer, get_message
from snsq2nats.jetstream.operations import CONSUMER_CREATE, CONSUMER_INFO
from snsq2nats.jetstream.spec import StreamSource
from snsq2nats.jetstream.subjects import subject_in
from snsq2nats.plan.model import Plan
from snsq2nats.plan.routes import TO_SNS_CONSUMER

if TYPE_CHECKING:
    from nats.aio.client import Client

log = logging.getLogger(__name__)

PUBLISH_ATTEMPTS = 5
REDELIVERY_MARGIN = 15.0
"""Seconds past the relay's ack wait that `carry_unacked` waits for its redeliveries (a busy
server's timers, the pull's own round trips)."""
PULL_EXPIRES = 2.0


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
    if not targets:
        return cut

    async def stored() -> list[StoredMessage]:
        out = []
        for seq in cut.in_doubt:
            message = await get_message(nc, cut.topic_stream, seq)
            if message is not None:
                out.append(message)
        return out

    return await _carry(nc, cut, await stored(), relay_subjects, targets, route=route)


async def carry_unacked(
    nc: Client,
    cut: RelayCut,
    relay_subjects: Sequence[str],
    targets: Sequence[CopyTarget],
    *,
    route: str,
    on_note: Callable[[str], None] | None = None,
) -> RelayCut:
    """Copy into each target only the messages of (N, D] the retired relay never acknowledged
    (read back as its redeliveries; see the module's docstring), or all of (N, D] should it not
    give them all back within its ack wait. Call it once no bridge pulls from the relay."""
    if not targets or cut.delivered <= cut.acked:
        return cut
    note = on_note or (lambda _text: None)
    subject = CONSUMER_INFO.subject(stream=cut.topic_stream, consumer=TO_SNS_CONSUMER)
    info = await api(nc, subject)
    holding = int(info.get("num_ack_pending") or 0)
    if not holding:
        return cut  # every message it was handed was acknowledged: SNS has each one
    config = dict(info.get("config") or {})
    ack_wait = float(config.get("ack_wait") or 30_000_000_000) / 1e9
    backoff = [float(b) / 1e9 for b in config.get("backoff") or []]
    wait = max([ack_wait, *backoff]) + REDELIVERY_MARGIN
    note(
        f"{cut.topic_stream}: the SNS relay holds {holding} unacknowledged message(s) of "
        f"{cut.acked + 1}..{cut.delivered}; waiting up to {wait:.0f}s (its ack wait) for them "
        "to come back, so that only they are copied into the queues"
    )
    # Held at what it holds, the retired consumer hands out its redeliveries and nothing new.
    config["max_ack_pending"] = holding
    await api(
        nc,
        CONSUMER_CREATE.subject(stream=cut.topic_stream, consumer=TO_SNS_CONSUMER),
        {"stream_name": cut.topic_stream, "config": config, "action": "update"},
    )
    unacked = await _redeliveries(nc, cut, holding, wait)
    if len(unacked) < holding:
        log.warning(
            "%s: the SNS relay gave back %d of the %d message(s) it holds within %.0fs",
            cut.topic_stream,
            len(unacked),
            holding,
            wait,
        )
        note(
            f"{cut.topic_stream}: the SNS relay gave back {len(unacked)} of its {holding} "
            f"unacknowledged message(s) within {wait:.0f}s; copying all of "
            f"{cut.acked + 1}..{cut.delivered} instead (nothing is lost; a queue whose "
            "consumers are still on AWS may receive some of them twice)"
        )
        return await carry_in_doubt(nc, cut, relay_subjects, targets, route=route)
    return await _carry(nc, cut, unacked, relay_subjects, targets, route=route)


async def _redeliveries(
    nc: Client, cut: RelayCut, holding: int, wait: float
) -> list[StoredMessage]:
    """Pull the retired relay's redeliveries (never acknowledged) until `holding` distinct ones
    of (N, D] came back or `wait` seconds passed."""
    from nats.errors import TimeoutError as NatsTimeout

    sub = await nc.jetstream().pull_subscribe_bind(TO_SNS_CONSUMER, cut.topic_stream)
    got: dict[int, StoredMessage] = {}
    deadline = time.monotonic() + wait
    try:
        while len(got) < holding and time.monotonic() < deadline:
            try:
                messages = await sub.fetch(holding - len(got), timeout=PULL_EXPIRES)
            except (NatsTimeout, TimeoutError):
                continue
            for m in messages:
                seq = int(m.metadata.sequence.stream)
                if seq in cut.in_doubt:
                    got[seq] = StoredMessage(seq, m.subject, m.data, dict(m.headers or {}))
    finally:
        await sub.unsubscribe()
    return [got[seq] for seq in sorted(got)]


async def retire_relay(nc: Client, topic_stream: str) -> None:
    """Delete the topic's SNS relay consumer once its fan-out runs through sources: what it
    still holds was copied (`carry_unacked`), and no plan runs it any more."""
    await delete_consumer(nc, topic_stream, TO_SNS_CONSUMER, missing_ok=True)


async def _carry(
    nc: Client,
    cut: RelayCut,
    messages: Iterable[StoredMessage],
    relay_subjects: Sequence[str],
    targets: Sequence[CopyTarget],
    *,
    route: str,
) -> RelayCut:
    copied = 0
    for message in messages:
        if CANARY_HEADER in message.headers:
            continue
        if (message.headers.get(ORIGIN_HEADER) or "").lower() == "aws":
            continue  # SNS delivered it to every queue itself
        if relay_subjects and not subject_in(message.subject, relay_subjects):
            continue
        for target in targets:
            if not subject_in(message.subject, target.filters):
                continue
            subject, headers = topic_copy(
                message.headers,
                cut.topic_stream,
                message.seq,
                route,
                target.subject,
                fifo=target.fifo,
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
