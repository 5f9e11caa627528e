"""Queue checks: a canary round trip through each queue's durable, and its delayed delivery.

A partitioned FIFO queue gets one round trip per partition: each canary is published like any
message (to `<base>.<group>`) with a group chosen to hash into that partition, and must come
back through that partition's durable, which proves the stream's transform and the durable's
filter agree with each other (and with where `subject --durable` says a group goes).
"""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta

from snsq2nats.filterpolicy import encode_token
from snsq2nats.jetstream.spec import StreamSpec
from snsq2nats.jetstream.subjects import partition_of
from snsq2nats.plan.model import Resource
from snsq2nats.plan.names import SCHEDULE_TOKEN
from snsq2nats.plan.pipeline import GROUP_ATTRIBUTE, publish_subject
from snsq2nats.verify.canary import (
    CANARY_GROUP,
    SCHEDULE_DELAY,
    Canary,
    CanaryRun,
    CheckResult,
    Collected,
    ms,
)


def canary_group(partition: int, partitions: int) -> str:
    """A canary message group that the stream's transform puts in `partition`."""
    for k in itertools.count():
        group = f"{CANARY_GROUP}-{k}"
        if partition_of(encode_token(group), partitions) == partition:
            return group
    raise AssertionError("unreachable")  # pragma: no cover


def _stored(subject: str, partition: int) -> str:
    """`<base>.<group>` as a partitioned stream stores it: `<base>.<partition>.<group>`."""
    base, group = subject.rsplit(".", 1)
    return f"{base}.{partition}.{group}"


async def check_queue(run: CanaryRun, queue: Resource) -> list[CheckResult]:
    assert queue.stream is not None and queue.consumer is not None
    if len(queue.durables) > 1:
        return await _check_partitions(run, queue)
    name = queue.name
    info = await run.consumer_info(queue.stream, queue.consumer)
    if isinstance(info, str):
        return [CheckResult(name, "round trip", "failed", info)]
    busy = run.busy(info)
    if busy:
        return [CheckResult(name, "round trip", "skipped", busy)]
    fifo = (queue.publish_subject or "").endswith(f".<{GROUP_ATTRIBUTE}>")
    attrs = [f"{GROUP_ATTRIBUTE}={CANARY_GROUP}"] if fifo else []
    subject = publish_subject(run.plan, queue.source_arn, attrs)
    results = [await _round_trip(run, queue, subject)]
    spec = run.specs.get(queue.stream)
    if spec is not None and spec.allow_msg_schedules and results[0].result == "ok":
        results.append(await _scheduled(run, queue, spec, subject))
    return results


async def _check_partitions(run: CanaryRun, queue: Resource) -> list[CheckResult]:
    assert queue.stream is not None
    durables = queue.durables
    n = len(durables)
    results: list[CheckResult] = []
    trips = []
    for partition, durable in enumerate(durables):
        label = f"round trip (partition {partition} of {n})"
        info = await run.consumer_info(queue.stream, durable)
        if isinstance(info, str):
            results.append(CheckResult(queue.name, label, "failed", info))
            continue
        busy = run.busy(info)
        if busy:
            results.append(CheckResult(queue.name, label, "skipped", busy))
            continue
        group = canary_group(partition, n)
        subject = publish_subject(run.plan, queue.source_arn, [f"{GROUP_ATTRIBUTE}={group}"])
        trips.append(_round_trip(run, queue, subject, durable=durable, partition=partition))
    # Partitions are independent durables: their round trips run at once, like queues do.
    results.extend(await asyncio.gather(*trips))
    results.sort(key=lambda r: r.check)
    spec = run.specs.get(queue.stream)
    if spec is not None and spec.allow_msg_schedules and all(r.result == "ok" for r in results):
        target = publish_subject(
            run.plan, queue.source_arn, [f"{GROUP_ATTRIBUTE}={canary_group(0, n)}"]
        )
        run.touch(queue.stream, _stored(target, 0))
        results.append(await _scheduled(run, queue, spec, target))
    return results


async def _round_trip(
    run: CanaryRun,
    queue: Resource,
    subject: str,
    *,
    durable: str | None = None,
    partition: int | None = None,
) -> CheckResult:
    assert queue.stream is not None and queue.consumer is not None
    durable = durable or queue.consumer
    check = f"round trip via {subject}"
    if partition is not None:
        check += f" (partition {partition} of {len(queue.durables)})"
    canary = run.new_canary(subject)
    if partition is not None:
        # Stored under its partition's subject: the final sweep must look there.
        run.touch(queue.stream, _stored(subject, partition))
    error = await run.publish(canary, queue.stream)
    if error:
        return CheckResult(queue.name, check, "failed", error)
    got = await run.collect(queue.stream, durable, {canary.id}, run.timeout)
    return _judge_arrival(run, queue.name, check, canary, got, durable)


def _judge_arrival(
    run: CanaryRun, name: str, check: str, canary: Canary, got: Collected, consumer: str
) -> CheckResult:
    if got.foreign:
        return CheckResult(
            name,
            check,
            "skipped",
            "a real message arrived during the check: released at once (NAK), queue left "
            "to its workers; not verified",
        )
    if got.error:
        return CheckResult(name, check, "failed", got.error)
    if canary.id not in got.arrived:
        return CheckResult(
            name,
            check,
            "failed",
            f"canary stored in {canary.stream} but not received through durable "
            f"{consumer} within {run.timeout:g}s",
        )
    latency = got.arrived[canary.id] - canary.published_at
    return CheckResult(name, check, "ok", f"received and acked via {consumer}", ms(latency))


async def _scheduled(run: CanaryRun, queue: Resource, spec: StreamSpec, target: str) -> CheckResult:
    assert queue.stream is not None and queue.consumer is not None
    check = f"delayed delivery ({SCHEDULE_DELAY:g}s schedule)"
    live = await run.stream_state(queue.stream)
    if live is None or not (live.get("config") or {}).get("allow_msg_schedules"):
        return CheckResult(
            queue.name,
            check,
            "failed",
            f"stream {queue.stream} does not allow message schedules (needs nats-server "
            "2.12+ and an applied plan)",
        )
    pattern = next(s for s in spec.subjects if f".{SCHEDULE_TOKEN}." in s)
    canary = run.new_canary("")
    canary.subject = pattern.replace("*", canary.id)
    at = datetime.now(UTC) + timedelta(seconds=SCHEDULE_DELAY)
    run.touch(queue.stream, target)
    error = await run.publish(
        canary,
        queue.stream,
        {
            "Nats-Schedule": "@at " + at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "Nats-Schedule-Target": target,
        },
    )
    if error:
        return CheckResult(queue.name, check, "failed", error)
    got = await run.collect(queue.stream, queue.consumer, {canary.id}, run.timeout + SCHEDULE_DELAY)
    result = _judge_arrival(run, queue.name, check, canary, got, queue.consumer)
    if result.result == "ok" and result.latency_ms is not None:
        if result.latency_ms < SCHEDULE_DELAY * 1000 * 0.9:
            result.result = "failed"
            result.detail = f"arrived after {result.latency_ms:g} ms, before the delay"
        else:
            result.detail = f"arrived after the delay via {queue.consumer}, acked"
    return result
