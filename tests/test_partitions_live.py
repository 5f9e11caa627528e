"""FIFO partitions on a real nats-server (and moto for the bridge): the server places each group
where the plan says, order within a group holds under parallel workers that NAK at random,
groups really run in parallel, verify/status/apply handle the partition durables, and the
NATS → SQS relay keeps each group's order into an SQS FIFO queue while reading every partition.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml

from snsq2nats.apply import ApplyError, apply_plan
from snsq2nats.bridge.context import BridgeContext
from snsq2nats.bridge.dlq import run_dlq_mover
from snsq2nats.bridge.nats_to_sqs import run_nats_to_sqs
from snsq2nats.jetstream.api import api
from snsq2nats.jetstream.state import read_live
from snsq2nats.jetstream.subjects import partition_of
from snsq2nats.plan.model import Plan
from snsq2nats.plan.pipeline import assemble_plan, worker_durables
from snsq2nats.plan.rules import load_rules
from snsq2nats.status import collect, durables_backlog
from snsq2nats.verify import verify_plan
from tests.fixtures.aws import AwsEndpoint
from tests.fixtures.bridge import FAST
from tests.fixtures.wait import until
from tests.test_mapping import case_inventory

STREAM = "sqsfifo_jobs"
BASE = "sqsfifo.jobs"


def mapping(tmp_path: Path, partitions: int, **override: Any) -> Path:
    path = tmp_path / f"partitions-{partitions}.yaml"
    body = {"overrides": [{"match": "jobs.fifo", "partitions": partitions, **override}]}
    path.write_text(yaml.safe_dump(body), encoding="utf-8")
    return path


async def plan_for(nc: Any, rules: Path, **queue: Any) -> Plan:
    queues = [{"name": "jobs.fifo", **queue}]
    if "redrive_policy" in queue:
        queues.append({"name": "jobs-dlq.fifo"})
    live = await read_live(nc)
    return assemble_plan(
        case_inventory({"queues": queues}), load_rules([rules]), live, server=live.server
    )


async def applied(nc: Any, rules: Path, **queue: Any) -> Plan:
    plan = await plan_for(nc, rules, **queue)
    result = await apply_plan(nc, plan, allow_destructive=False)
    assert result.ok, result.error
    again = await plan_for(nc, rules, **queue)
    assert [c for c in again.changes if c.action != "noop"] == []
    return plan


def groups_covering(partitions: int, per_partition: int) -> list[str]:
    """Group names that put `per_partition` groups in every partition (by the server's hash)."""
    chosen: dict[int, list[str]] = defaultdict(list)
    k = 0
    while min((len(chosen[p]) for p in range(partitions)), default=0) < per_partition:
        group = f"g{k}"
        k += 1
        bucket = chosen[partition_of(group, partitions)]
        if len(bucket) < per_partition:
            bucket.append(group)
    return [g for p in range(partitions) for g in chosen[p]]


async def stored_subjects(nc: Any) -> dict[str, int]:
    info = await api(nc, f"$JS.API.STREAM.INFO.{STREAM}", {"subjects_filter": ">"})
    return dict((info.get("state") or {}).get("subjects") or {})


async def test_the_server_partitions_as_planned_and_status_sums_the_partitions(
    nc: Any, js: Any, tmp_path: Path
) -> None:
    plan = await applied(nc, mapping(tmp_path, 4))
    groups = [f"order-{i}" for i in range(40)]
    for group in groups:
        await js.publish(f"{BASE}.{group}", group.encode())
    stored = await stored_subjects(nc)
    expected = {f"{BASE}.{partition_of(g, 4)}.{g}": 1 for g in groups}
    assert stored == expected
    for group in groups:
        (binding,) = worker_durables(plan, "jobs.fifo", [f"MessageGroupId={group}"])
        assert binding == (STREAM, f"jobs-p{partition_of(group, 4)}")
    backlog = await durables_backlog(nc, STREAM, [f"jobs-p{i}" for i in range(4)])
    assert backlog.exists
    assert backlog.pending == 40
    counts = [sum(1 for g in groups if partition_of(g, 4) == p) for p in range(4)]
    assert backlog.by_partition == counts
    assert all(counts)


async def test_verify_sends_a_canary_through_every_partition(nc: Any, tmp_path: Path) -> None:
    """One round trip per partition durable, and (the queue is delayed) a schedule whose
    released message the transform puts in partition 0, where verify collects it."""
    plan = await applied(nc, mapping(tmp_path, 3), delay_seconds=5)
    assert next(s for s in plan.streams if s.name == STREAM).allow_msg_schedules
    results = await verify_plan(nc, plan, timeout=5)
    trips = [r for r in results if r.resource == "jobs.fifo" and r.check.startswith("round")]
    assert [r.result for r in trips] == ["ok"] * 3, trips
    (delayed,) = [r for r in results if r.resource == "jobs.fifo" and "delayed" in r.check]
    assert delayed.result == "ok", delayed.detail
    assert "jobs-p0" in delayed.detail
    for partition in range(3):
        (trip,) = [r for r in trips if f"(partition {partition} of 3)" in r.check]
        assert f"via jobs-p{partition}" in trip.detail
    (cleanup,) = [r for r in results if r.check == "no canary left behind"]
    assert cleanup.result == "ok", cleanup.detail
    assert await stored_subjects(nc) == {}


async def test_a_partition_change_waits_for_a_drained_queue(
    nc: Any, js: Any, tmp_path: Path
) -> None:
    """4 → 2 partitions with messages stored: the plan replaces the stream and apply refuses
    without --allow-destructive, naming the loss; drained, the replace leaves 2 durables."""
    await applied(nc, mapping(tmp_path, 4))
    for i in range(6):
        await js.publish(f"{BASE}.g{i}", b"x")
    plan = await plan_for(nc, mapping(tmp_path, 2))
    (stream,) = [c for c in plan.changes if c.type == "stream" and c.name == STREAM]
    assert stream.action == "replace"
    assert "the partitions change" in stream.reason and "6 messages" in stream.reason
    with pytest.raises(ApplyError, match="would lose 6 messages"):
        await apply_plan(nc, plan, allow_destructive=False)
    # The workers drain the queue: one fetch per partition durable until nothing is left.
    for i in range(4):
        sub = await js.pull_subscribe_bind(f"jobs-p{i}", stream=STREAM)
        while (await durables_backlog(nc, STREAM, [f"jobs-p{i}"])).total:
            for msg in await sub.fetch(1, timeout=5):
                await msg.ack_sync()
        await sub.unsubscribe()
    plan = await plan_for(nc, mapping(tmp_path, 2))
    result = await apply_plan(nc, plan, allow_destructive=True)
    assert result.ok, result.error
    live = await read_live(nc)
    assert sorted(live.streams[STREAM].consumers) == ["jobs-p0", "jobs-p1"]
    assert "{{partition(2,1)}}" in live.streams[STREAM].config["subject_transform"]["dest"]
    again = await plan_for(nc, mapping(tmp_path, 2))
    assert [c for c in again.changes if c.action != "noop"] == []


async def test_group_order_holds_under_parallel_workers_with_redeliveries(
    nc: Any, js: Any, tmp_path: Path
) -> None:
    """One worker per partition durable; each NAKs a random third of its deliveries. Every
    group's messages are acknowledged in publish order, each group only ever comes through its
    own partition's durable, and messages of different groups are in flight at the same time:
    every worker holds its first message until all of them hold one (a barrier no single
    consumer with one message in flight could ever pass)."""
    partitions, per_group = 4, 12
    plan = await applied(nc, mapping(tmp_path, partitions))
    groups = groups_covering(partitions, per_partition=2)
    for i in range(per_group):
        for group in groups:
            await js.publish(f"{BASE}.{group}", f"{group}:{i}".encode())
    total = len(groups) * per_group

    acked: dict[str, list[int]] = defaultdict(list)
    seen_by: dict[str, set[str]] = defaultdict(set)
    in_flight: set[str] = set()
    most_in_flight = 0
    naks = 0
    barrier = asyncio.Barrier(partitions)
    rng = random.Random(11)

    async def worker(durable: str) -> None:
        nonlocal most_in_flight, naks
        sub = await js.pull_subscribe_bind(durable, stream=STREAM)
        first = True
        try:
            while sum(len(v) for v in acked.values()) < total:
                try:
                    msgs = await sub.fetch(1, timeout=1)
                except TimeoutError:
                    continue
                for msg in msgs:
                    group, index = msg.data.decode().split(":")
                    seen_by[group].add(durable)
                    in_flight.add(group)
                    most_in_flight = max(most_in_flight, len(in_flight))
                    if first:
                        first = False
                        await asyncio.wait_for(barrier.wait(), timeout=30)
                    else:
                        await asyncio.sleep(0)  # let the other workers run between deliveries
                    in_flight.discard(group)
                    if rng.random() < 1 / 3:
                        naks += 1
                        await msg.nak()
                    else:
                        acked[group].append(int(index))
                        await msg.ack_sync()
        finally:
            await sub.unsubscribe()

    durables = plan.resources[0].durables
    assert durables == [f"jobs-p{i}" for i in range(partitions)]
    await asyncio.wait_for(asyncio.gather(*(worker(d) for d in durables)), timeout=120)

    assert most_in_flight >= partitions
    assert naks > 0
    for group in groups:
        assert acked[group] == list(range(per_group)), group
        (only,) = seen_by[group]
        assert only == f"jobs-p{partition_of(group, partitions)}"
    assert (await durables_backlog(nc, STREAM, durables)).total == 0


def sqs_fifo(aws: AwsEndpoint, name: str) -> str:
    sqs = aws.client("sqs")
    url: str = sqs.create_queue(
        QueueName=name, Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "false"}
    )["QueueUrl"]
    return url


def receive_all(sqs: Any, url: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    empty = 0
    while empty < 2:
        got = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=0,
            VisibilityTimeout=300,
            MessageSystemAttributeNames=["All"],
        ).get("Messages", [])
        empty = 0 if got else empty + 1
        out.extend(got)
        if got:
            sqs.delete_message_batch(
                QueueUrl=url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)
                ],
            )
    return out


async def test_nats_to_sqs_relays_every_partition_keeping_each_groups_order(
    nc: Any, js: Any, aws: AwsEndpoint, tmp_path: Path
) -> None:
    """Producers on NATS, consumers still on SQS: the route reads all three partition durables
    (one relay each, one message in flight each) and every group arrives in the SQS FIFO queue
    complete, once, in publish order."""
    url = sqs_fifo(aws, "jobs.fifo")
    plan = await applied(nc, mapping(tmp_path, 3, cutover={"producers": "nats"}))
    (route,) = plan.routes
    assert route.kind == "nats-to-sqs" and route.durables == ["jobs-p0", "jobs-p1", "jobs-p2"]
    groups = groups_covering(3, per_partition=2)
    per_group = 8
    for i in range(per_group):
        for group in groups:
            await js.publish(f"{BASE}.{group}", f"{group}:{i}".encode())

    # Before the relay runs, status counts the backlog of every partition durable.
    (before,) = await collect(nc, lambda _region: aws.client("sqs"), plan, [route])
    assert not before.drained
    assert before.nats is not None and before.nats.pending == len(groups) * per_group
    assert before.nats.by_partition == [2 * per_group] * 3
    assert f"(by partition: p0 {2 * per_group}, p1 {2 * per_group}" in before.reason

    ctx = BridgeContext(
        plan=plan, nc=nc, sqs=aws.client("sqs"), sns=aws.client("sns"), timings=FAST
    )
    task = asyncio.create_task(run_nats_to_sqs(ctx, route))

    async def relayed() -> bool:
        if task.done():
            task.result()
            raise AssertionError("the relay stopped before the queue was drained")
        return (await durables_backlog(nc, STREAM, route.durables)).total == 0

    try:
        await until(relayed, timeout=60, what="every partition relayed")
    finally:
        ctx.stopping.set()
        await asyncio.wait_for(task, timeout=15)

    got = receive_all(aws.client("sqs"), url)
    by_group: dict[str, list[int]] = defaultdict(list)
    for message in got:
        group, index = message["Body"].split(":")
        assert message["Attributes"]["MessageGroupId"] == group
        by_group[group].append(int(index))
    assert dict(by_group) == {g: list(range(per_group)) for g in groups}
    # Each partition durable did its share: the relay read all of them, not just one.
    for durable in route.durables:
        info = await api(nc, f"$JS.API.CONSUMER.INFO.{STREAM}.{durable}")
        assert info["delivered"]["consumer_seq"] >= 2 * per_group, durable
    assert ctx.route_metrics(route).messages == len(groups) * per_group
    (after,) = await collect(nc, lambda _region: aws.client("sqs"), plan, [route])
    assert after.drained and after.reason == "nothing pending on NATS"


async def test_dlq_mover_moves_from_any_partition_durable(
    nc: Any, js: Any, aws: AwsEndpoint, tmp_path: Path
) -> None:
    """maxReceiveCount 1 on a partitioned queue: a message given up on by partition 2's durable
    reaches the dead-letter queue's stream through the one mover of the queue."""
    redrive = {
        "dead_letter_target_arn": "arn:aws:sqs:us-east-1:123456789012:jobs-dlq.fifo",
        "max_receive_count": 1,
    }
    plan = await applied(nc, mapping(tmp_path, 3), redrive_policy=redrive)
    (route,) = [r for r in plan.routes if r.kind == "dlq-mover"]
    group = next(g for g in groups_covering(3, 1) if partition_of(g, 3) == 2)
    await js.publish(f"{BASE}.{group}", b"poison")
    sub = await js.pull_subscribe_bind("jobs-p2", stream=STREAM)

    async def given_up() -> bool:
        # The server raises the advisory when it would deliver again: keep asking, keep NAKing.
        try:
            for msg in await sub.fetch(1, timeout=0.5):
                await msg.nak()
        except TimeoutError:
            pass
        info = await api(nc, "$JS.API.STREAM.INFO.snsq2nats_advisories")
        return bool(info["state"]["messages"])

    try:
        await until(given_up, timeout=30, what="the MAX_DELIVERIES advisory of jobs-p2")
    finally:
        await sub.unsubscribe()

    ctx = BridgeContext(
        plan=plan, nc=nc, sqs=aws.client("sqs"), sns=aws.client("sns"), timings=FAST
    )
    task = asyncio.create_task(run_dlq_mover(ctx, route))

    async def moved() -> bool:
        if task.done():
            task.result()
            raise AssertionError("the mover stopped")
        info = await api(nc, "$JS.API.STREAM.INFO.sqsfifo_jobs-dlq", {"subjects_filter": ">"})
        return bool((info.get("state") or {}).get("subjects"))

    try:
        await until(moved, timeout=30, what="the dead letter moved")
    finally:
        ctx.stopping.set()
        await asyncio.wait_for(task, timeout=15)
    info = await api(nc, "$JS.API.STREAM.INFO.sqsfifo_jobs-dlq", {"subjects_filter": ">"})
    assert info["state"]["subjects"] == {f"sqsfifo.jobs-dlq.{group}": 1}
    assert await stored_subjects(nc) == {}


async def test_sqs_to_nats_publishes_unpartitioned_and_the_transform_places_it(
    nc: Any, aws: AwsEndpoint, tmp_path: Path
) -> None:
    """Consumers on NATS, producers still on SQS: the relay publishes to `<base>.<group>` as for
    any FIFO queue and the stream stores each group in its partition, in SQS's group order."""
    from snsq2nats.bridge.sqs_to_nats import run_sqs_to_nats

    url = sqs_fifo(aws, "jobs.fifo")
    plan = await applied(nc, mapping(tmp_path, 4, cutover={"consumers": "nats"}))
    (route,) = plan.routes
    assert route.kind == "sqs-to-nats"
    sqs = aws.client("sqs")
    groups = ["a", "b", "c", "d", "e", "f/1"]
    for i in range(3):
        for group in groups:
            sqs.send_message(
                QueueUrl=url,
                MessageBody=f"{group}:{i}",
                MessageGroupId=group,
                MessageDeduplicationId=f"{group}-{i}",
            )
    ctx = BridgeContext(
        plan=plan,
        nc=nc,
        sqs=aws.client("sqs"),
        sns=aws.client("sns"),
        timings=FAST,
        wait_time_seconds=1,
    )
    task = asyncio.create_task(run_sqs_to_nats(ctx, route))
    from snsq2nats.filterpolicy import encode_token

    # Each partition's workers run alongside the relay: a FIFO queue's message leaves SQS (and
    # its group's next one comes) once NATS processed it (bridge.fifo_handover).
    by_group: dict[str, list[str]] = defaultdict(list)
    seen: dict[str, int] = defaultdict(int)

    async def worker(partition: int) -> None:
        sub = await nc.jetstream().pull_subscribe_bind(f"jobs-p{partition}", stream=STREAM)
        try:
            while not ctx.stopping.is_set():
                try:
                    msgs = await sub.fetch(1, timeout=0.5)
                except Exception:
                    continue
                for msg in msgs:
                    group = msg.data.decode().split(":")[0]
                    assert partition_of(encode_token(group), 4) == partition
                    seen[msg.subject] += 1
                    by_group[group].append(msg.data.decode())
                    await msg.ack_sync()
        finally:
            await sub.unsubscribe()

    workers = [asyncio.create_task(worker(p)) for p in range(4)]

    def arrived() -> bool:
        if task.done():
            task.result()
            raise AssertionError("the relay stopped")
        return sum(seen.values()) == len(groups) * 3

    try:
        await until(arrived, timeout=60, what="every SQS message processed from its partition")
    finally:
        ctx.stopping.set()
        await asyncio.wait_for(task, timeout=15)
        await asyncio.gather(*workers)
    expected = {f"{BASE}.{partition_of(encode_token(g), 4)}.{encode_token(g)}": 3 for g in groups}
    assert dict(seen) == expected
    # Each partition's workers see its groups in SQS's order.
    assert dict(by_group) == {g: [f"{g}:{i}" for i in range(3)] for g in groups}
