"""How an application's workers read the plan's durables (`snsq2nats subject --durable`).

Pure: a plan and durables in, advice out.
"""

from __future__ import annotations

from snsq2nats.plan.model import Plan

FETCH_ONE_WAIT = 0.5
"""Seconds a worker of a one-in-flight durable waits in one fetch: short, since the server
answers a fetch of 1 as soon as the message is there."""


def fetch_advice(plan: Plan, durables: list[tuple[str, str]]) -> str | None:
    """How a worker pulls from these durables so that it is not throttled by its own batch.

    A durable with max_ack_pending 1 (a FIFO queue) delivers one message and nothing more
    until it is acknowledged: a `fetch(10, timeout=5)` then returns that one message only
    when its 5 s run out, one message per fetch timeout. None for a durable where batches help.
    """
    specs = {(c.stream_name, c.durable_name): c for c in plan.consumers}
    limits = sorted({specs[d].max_ack_pending for d in durables if d in specs})
    if not limits or limits[-1] > 10:
        return None
    most = limits[-1]
    what = "one message" if most == 1 else f"{most} messages"
    advice = (
        f"these durables deliver {what} at a time (max_ack_pending {most}): fetch {most} with a "
        f"short wait (nats-py: `fetch({most}, timeout={FETCH_ONE_WAIT})`) and ack before the "
        "next fetch; a larger batch only returns when its timeout runs out"
    )
    if len(durables) > 1:
        advice += (
            f"; for parallelism, pull from each of the {len(durables)} durables (one worker "
            "per durable, or a pool pulling from every one)"
        )
    return advice
