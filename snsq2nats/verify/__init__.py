"""`verify`: prove the applied estate carries messages, one canary per path, and leave no trace.

For every queue, a canary goes to its publish subject and comes back through its durable pull
consumer (the seed's "one big burger" round trip). For every topic with a stream, canaries are
published so that each exactly-filtered subscription should see one, plus one that no filter
selects; each subscribed queue must receive exactly the canaries its stream source lets through.

Safety comes first, because verify runs against live estates:
* a consumer holding messages (or with workers pulling) is never fetched from: a canary would
  queue behind real work or go to a real worker, so that check is skipped and says why;
* a real message fetched by accident (it arrived after the check) is NAKed at once, without a
  delay, and the queue is left alone;
* we only ever bind to the existing durables: work-queue streams allow one unfiltered consumer,
  so creating our own would either fail or steal.
Canaries that stay in a stream (topic streams keep messages; a stray canary in a queue) are
deleted by sequence, and a final sweep confirms no canary of this run is left anywhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from snsq2nats.bridge.codec import CANARY_HEADER
from snsq2nats.errors import SnsqError
from snsq2nats.plan.model import Plan, Resource
from snsq2nats.verify.canary import CANARY_TOKEN, CanaryRun, CheckResult, Outcome, is_canary
from snsq2nats.verify.cleanup import cleanup
from snsq2nats.verify.queues import check_queue
from snsq2nats.verify.topics import check_topic

__all__ = [
    "CANARY_HEADER",
    "CANARY_TOKEN",
    "CheckResult",
    "Outcome",
    "is_canary",
    "verify_plan",
]


async def verify_plan(
    nc: Any,
    plan: Plan,
    *,
    timeout: float = 5.0,
    on_progress: Callable[[int, int | None], None] | None = None,
) -> list[CheckResult]:
    """Check every queue and topic of `plan` on the connected server with canaries.

    Returns one result per check; `on_progress(n, total)` is called as resources finish.
    """
    run = CanaryRun(nc, plan, timeout, on_progress)
    queues = [
        r
        for r in plan.resources
        if r.kind == "sqs-queue" and r.stream is not None and r.consumer is not None
    ]
    topics = [r for r in plan.resources if r.kind == "sns-topic"]
    total = len(queues) + len(topics) + 1
    for spec in plan.streams:
        state = await run.stream_state(spec.name)
        if state is not None:
            st = state.get("state") or {}
            run.before[spec.name] = {
                "messages": int(st.get("messages") or 0),
                "last_seq": int(st.get("last_seq") or 0),
            }
    results: list[CheckResult] = []
    try:
        # Queues are independent of each other, so their round trips run concurrently.
        async def one_queue(queue: Resource) -> list[CheckResult]:
            try:
                return await check_queue(run, queue)
            except SnsqError as exc:
                return [CheckResult(queue.name, "round trip", "failed", exc.what)]
            finally:
                run.tick(total)

        for batch in await asyncio.gather(*(one_queue(q) for q in queues)):
            results.extend(batch)
        # Topics share queues (one queue may subscribe to several), so one at a time.
        for topic in topics:
            try:
                results.extend(await check_topic(run, topic))
            except SnsqError as exc:
                results.append(CheckResult(topic.name, "fan-out", "failed", exc.what))
            run.tick(total)
    finally:
        results.append(await cleanup(run))
        run.tick(total)
    return results


def result_counts(results: list[CheckResult]) -> dict[str, int]:
    return {k: sum(1 for r in results if r.result == k) for k in ("ok", "failed", "skipped")}
