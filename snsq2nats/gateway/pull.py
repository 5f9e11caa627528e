"""Receiving from a queue's durable as SQS's ReceiveMessage does: return as soon as any
message is there, wait up to the long-poll time when none is, never more than asked for.

Each receive pulls on its own inbox with requests that always end — a full batch, or a status
the server sends by the request's `expires` at the latest — and listens until they do, so no
message is delivered to an inbox nobody reads any more, where it would sit out its ack wait
unseen. (A request without `expires` on a durable at its max_ack_pending stays pending at the
server indefinitely, measured on nats-server 2.12: a later receive's message would go to it.)

A receive asks for what is there now (`no_wait`, ended by a 404 once the durable has nothing
more), then long-polls for one message, then takes what else is there now.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg

NOW = 0.1
"""Seconds a `no_wait` request may be held by the server when the durable is at its
max_ack_pending (otherwise it ends at once): how long a receive waits for "what is there now"."""
_END_GRACE = 5.0
"""Seconds past a request's expiry to wait for the server's closing status before giving up
(a connection lost meanwhile)."""


def _next_subject(stream: str, durable: str) -> str:
    return f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"


def is_delivery(msg: Msg) -> bool:
    return bool(msg.reply) and msg.reply.startswith("$JS.ACK.")


async def pull(nc: Client, stream: str, durable: str, batch: int, wait: float) -> list[Msg]:
    """Up to `batch` messages of `durable`; waits up to `wait` seconds for the first."""
    inbox: asyncio.Queue[Msg] = asyncio.Queue()

    async def on_msg(msg: Msg) -> None:
        inbox.put_nowait(msg)

    reply = nc.new_inbox()
    sub = await nc.subscribe(reply, cb=on_msg)
    subject = _next_subject(stream, durable)
    got: list[Msg] = []
    try:
        await _now(nc, subject, reply, inbox, got, batch)
        if got or wait <= 0:
            return got
        await _request(nc, subject, reply, {"batch": 1, "expires": int(wait * 1e9)})
        await _collect(inbox, got, 1, wait + _END_GRACE)
        if got and batch > 1:
            await _now(nc, subject, reply, inbox, got, batch)
        return got
    finally:
        await sub.unsubscribe()


async def _now(
    nc: Client, subject: str, reply: str, inbox: asyncio.Queue[Msg], got: list[Msg], batch: int
) -> None:
    body: dict[str, object] = {
        "batch": batch - len(got),
        "no_wait": True,
        "expires": int(NOW * 1e9),
    }
    await _request(nc, subject, reply, body)
    await _collect(inbox, got, batch, NOW + _END_GRACE)


async def _request(nc: Client, subject: str, reply: str, body: dict[str, object]) -> None:
    await nc.publish(subject, json.dumps(body).encode(), reply=reply)


async def _collect(inbox: asyncio.Queue[Msg], got: list[Msg], until: int, timeout: float) -> None:
    """Deliveries into `got` until it holds `until` or the request's closing status comes."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(got) < until:
        remaining = deadline - loop.time()
        if remaining <= 0:
            return
        try:
            msg = await asyncio.wait_for(inbox.get(), remaining)
        except TimeoutError:
            return
        if not is_delivery(msg):
            return
        got.append(msg)
