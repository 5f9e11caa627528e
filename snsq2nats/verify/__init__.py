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
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from snsq2nats.aws.arns import subscription_topic
from snsq2nats.errors import SnsqError
from snsq2nats.plan.headers import CANARY_HEADER
from snsq2nats.plan.model import Plan, Resource
from snsq2nats.verify.canary import CANARY_TOKEN, CanaryRun, CheckResult, Outcome, is_canary
from snsq2nats.verify.cleanup import cleanup
from snsq2nats.verify.queues import check_queue
from snsq2nats.verify.topics import check_topic

if TYPE_CHECKING:
    from nats.aio.client import Client

T = TypeVar("T")

__all__ = [
    "CANARY_HEADER",
    "CANARY_TOKEN",
    "CheckResult",
    "Outcome",
    "is_canary",
    "verify_plan",
]


# Checks in flight at once: each holds a pull subscription and waits up to `timeout`, so 10,000
# queues run as waves of this many rather than 10,000 subscriptions on one connection at once.
CONCURRENCY = 32


def spread(items: list[T], n: int) -> list[T]:
    """`n` of `items`, evenly spaced and always the same ones: a sample that covers the whole
    sorted list (every prefix, team and region) instead of its first names."""
    if n >= len(items):
        return list(items)
    if n <= 0:
        return []
    return [items[(i * len(items)) // n] for i in range(n)]


def _sampled(
    queues: list[Resource], topics: list[Resource], sample: int | None
) -> tuple[list[Resource], list[Resource]]:
    """Queues and topics in proportion, at least one of each kind the plan has."""
    total = len(queues) + len(topics)
    if sample is None or sample >= total:
        return queues, topics
    n_topics = min(len(topics), max(1 if topics else 0, round(sample * len(topics) / total)))
    n_queues = min(len(queues), max(1 if queues else 0, sample - n_topics))
    return spread(queues, n_queues), spread(topics, n_topics)


def _topic_waves(
    plan: Plan, topics: list[Resource]
) -> tuple[list[list[int]], dict[str, list[Resource]]]:
    """Topics in waves that share no queue stream (a queue subscribed to two topics would see
    both topics' canaries at once), and each topic's subscriptions, indexed once."""
    of_topic: dict[str, list[Resource]] = {}
    for r in plan.resources:
        if r.kind == "sns-subscription":
            of_topic.setdefault(subscription_topic(r.source_arn), []).append(r)
    waves: list[list[int]] = []
    used: list[set[str]] = []
    for i, topic in enumerate(topics):
        streams = {s.stream for s in of_topic.get(topic.source_arn, []) if s.stream}
        for wave, taken in zip(waves, used, strict=True):
            if not streams & taken:
                wave.append(i)
                taken |= streams
                break
        else:
            waves.append([i])
            used.append(set(streams))
    return waves, of_topic


async def verify_plan(
    nc: Client,
    plan: Plan,
    *,
    timeout: float = 5.0,
    on_progress: Callable[[int, int | None], None] | None = None,
    sample: int | None = None,
    concurrency: int = CONCURRENCY,
    accounts: Mapping[str, Client] | None = None,
) -> list[CheckResult]:
    """Check every queue and topic of `plan` on the connected server with canaries (or an
    evenly spread `sample` of them), `concurrency` checks at a time.

    `accounts`: in a per-account plan, the connection to each NATS account other than the home
    one (`nc`'s), by name: each canary is published, received and cleaned up in the account
    holding its stream (a topic's canaries cross into other accounts' queues on their own).
    Returns one result per check; `on_progress(n, total)` is called as resources finish.
    """
    from snsq2nats.jetstream.state import stream_infos

    run = CanaryRun(nc, plan, timeout, on_progress, accounts)
    queues = [
        r
        for r in plan.resources
        if r.kind == "sqs-queue" and r.stream is not None and r.consumer is not None
    ]
    topics = [r for r in plan.resources if r.kind == "sns-topic"]
    queues, topics = _sampled(queues, topics, sample)
    total = len(queues) + len(topics) + 1
    # One paged listing for the state before: an INFO per stream is 20,000 round trips.
    infos: dict[str, dict[str, Any]] = {}
    for conn in run.connections:
        infos.update(await stream_infos(conn, timeout=timeout))
    for spec in plan.streams:
        info = infos.get(spec.name)
        if info is not None:
            st = info.get("state") or {}
            run.before[spec.name] = {
                "messages": int(st.get("messages") or 0),
                "last_seq": int(st.get("last_seq") or 0),
            }
    del infos
    gate = asyncio.Semaphore(max(1, concurrency))
    results: list[CheckResult] = []
    try:
        # Queues are independent of each other, so their round trips run concurrently.
        async def one_queue(queue: Resource) -> list[CheckResult]:
            async with gate:
                try:
                    return await check_queue(run, queue)
                except SnsqError as exc:
                    return [CheckResult(queue.name, "round trip", "failed", exc.what)]
                finally:
                    run.tick(total)

        for batch in await asyncio.gather(*(one_queue(q) for q in queues)):
            results.extend(batch)

        async def one_topic(topic: Resource, subs: list[Resource]) -> list[CheckResult]:
            async with gate:
                try:
                    return await check_topic(run, topic, subs)
                except SnsqError as exc:
                    return [CheckResult(topic.name, "fan-out", "failed", exc.what)]
                finally:
                    run.tick(total)

        # Topics that share a queue run one after another; the others side by side.
        waves, of_topic = _topic_waves(plan, topics)
        by_topic: dict[int, list[CheckResult]] = {}
        for wave in waves:
            done = await asyncio.gather(
                *(one_topic(topics[i], of_topic.get(topics[i].source_arn, [])) for i in wave)
            )
            by_topic.update(zip(wave, done, strict=True))
        for i in range(len(topics)):
            results.extend(by_topic[i])
    finally:
        results.append(await cleanup(run, concurrency=concurrency))
        run.tick(total)
    return results


def result_counts(results: list[CheckResult]) -> dict[str, int]:
    return {k: sum(1 for r in results if r.result == k) for k in ("ok", "failed", "skipped")}
