"""Receiving from a queue's durable as SQS's ReceiveMessage does: return as soon as any
message is there, wait up to the long-poll time when none is, never more than asked for.

Each receive pulls on its own inbox with requests that always end in a status the server sends
(`no_wait` requests end in 404/408, an `expires` request in 408), so a receive knows when the
server has finished handing it messages: none is delivered to an inbox nobody reads any more,
where it would sit out its ack wait unseen.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg

_END_GRACE = 5.0
"""Seconds past a long poll's expiry to wait for the server's closing status."""


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
        await _request(nc, subject, reply, {"batch": batch, "no_wait": True})
        await _collect(inbox, got, batch, _END_GRACE)
        if got or wait <= 0:
            return got
        await _request(nc, subject, reply, {"batch": 1, "expires": int(wait * 1e9)})
        await _collect(inbox, got, 1, wait + _END_GRACE)
        if got and batch > 1:
            await _request(nc, subject, reply, {"batch": batch - 1, "no_wait": True})
            await _collect(inbox, got, batch, _END_GRACE)
        return got
    finally:
        await sub.unsubscribe()


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
