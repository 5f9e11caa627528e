"""FIFO order across a consumers move: an SQS message leaves SQS once NATS has processed it.

While a FIFO queue's consumers move to NATS its old AWS workers may still be receiving, and the
sqs-to-nats relay is one more competing consumer of the SQS queue. If the relay deleted a
message as soon as the stream stored it, SQS would unlock the message group and could hand the
group's next message to an old AWS worker while the NATS worker has not yet processed the one
before it: one group processed on both sides at once, out of order.

So for a FIFO queue the relay keeps each message it stored in flight in SQS (its visibility
extended, see `aws_to_nats.Relay.keep_invisible`) until the queue's durable has acknowledged
it: SQS keeps the group locked exactly as long as a worker of either side holds one of its
messages. "Acknowledged" is read from the work-queue stream itself: an acknowledged message is
removed from it (so is one the DLQ mover moved away), which one STREAM.INFO with
`deleted_details` answers for every message a batch waits on, whichever partition durable
delivers it.

What it costs: one STREAM.INFO per waiting batch every `POLL` seconds, a visibility extension
per half visibility timeout while NATS processes, and a delete that comes after processing
rather than after the PubAck. Throughput is unchanged: the durable delivers a group one message
at a time anyway. A bridge told to stop deletes what the stream stored without waiting (never
hands a received message back: receive counts lead to DLQs); a bridge killed while holding
leaves its messages to come back after their visibility, stored in the stream already, so a
group's message may then be processed on both sides (at least once, never lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from snsq2nats.jetstream.api import api

if TYPE_CHECKING:
    from nats.aio.client import Client

log = logging.getLogger(__name__)

POLL = 0.2
"""Seconds between two reads of the stream while a batch waits on its workers."""
MAX_HOLD = 11 * 3600.0
"""SQS refuses to extend a message's visibility beyond 12 hours from its receive: past that it
would come back and be received again (a receive count toward the DLQ). A message NATS workers
have not processed in 11 hours is deleted (it is in the stream) and its group unlocked."""


def pub_ack_seq(reply: Any) -> int | None:
    """The stream sequence a PubAck names (also a duplicate's: the original's)."""
    try:
        seq = json.loads(reply.data or b"{}").get("seq")
    except (ValueError, AttributeError):
        return None
    return int(seq) if isinstance(seq, int) else None


async def processed(nc: Client, stream: str, seqs: Collection[int]) -> set[int]:
    """Which of `seqs` the work-queue `stream` no longer holds (acknowledged, or moved). A
    stream of another retention keeps what was acknowledged, so it cannot tell: all of them
    (the relay then deletes after the PubAck, as for a standard queue)."""
    info = await api(nc, f"$JS.API.STREAM.INFO.{stream}", {"deleted_details": True}, 5.0)
    if (info.get("config") or {}).get("retention") != "workqueue":
        return set(seqs)
    state = info.get("state") or {}
    first = int(state.get("first_seq") or 0)
    last = int(state.get("last_seq") or 0)
    deleted = set(state.get("deleted") or [])
    return {s for s in seqs if s < first or s > last or s in deleted}


async def until_processed(
    nc: Client,
    stream: str,
    seqs: Collection[int],
    stopping: asyncio.Event,
    max_hold: float = MAX_HOLD,
) -> bool:
    """Wait until the stream's durable processed every one of `seqs`; False when stopping
    first or after `max_hold` seconds (the caller then deletes anyway: the stream holds them)."""
    waiting = set(seqs)
    deadline = asyncio.get_running_loop().time() + max_hold
    while waiting:
        if stopping.is_set():
            return False
        if asyncio.get_running_loop().time() > deadline:
            log.warning(
                "%s: %d message(s) not processed on NATS in %.0fs: deleted from SQS, their "
                "groups unlocked",
                stream,
                len(waiting),
                max_hold,
            )
            return False
        try:
            waiting -= await processed(nc, stream, waiting)
        except Exception as exc:  # a leader election: read again
            log.debug("%s: reading what was processed failed (%s); retrying", stream, exc)
        if waiting:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), POLL)
    return True
