"""FIFO throughput vs partitions: one FIFO queue's messages processed by one worker per
partition durable, each message taking `WORK_SECONDS` (an asyncio sleep standing in for the
worker's processing), for partitions 1, 4 and 16 in one run.

For each N: a fresh stream planned and applied the way `apply` does it (`partitions: N` in a
mapping, so the stream's subject transform and the N durables are the plan's own), `GROUPS`
message groups × `PER_GROUP` messages published group-interleaved before the clock starts, then
N workers (one per durable, one message in flight each, as the plan sets max_ack_pending 1)
fetch, work and ack until every message is acked. Throughput is messages over the time from
the workers' start to the last ack. Per-group order is checked on every ack.

Ratios are against partitions=1 of the same run. The ceiling for N partitions is not N but
`GROUPS / (groups in the fullest partition)`: a partition works through its groups one message
at a time, and the server's hash does not spread groups perfectly (`hash_ceiling` rows). The
target is 0.8 of that ceiling (~N× while N is well below the group count).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from snsq2nats.apply import apply_plan
from snsq2nats.demo.nats_server import NatsServer
from snsq2nats.inventory import Inventory, Queue
from snsq2nats.jetstream.connect import NatsOptions, connect_nats
from snsq2nats.jetstream.state import read_live
from snsq2nats.jetstream.subjects import partition_of
from snsq2nats.plan.pipeline import assemble_plan
from snsq2nats.plan.rules import load_rules

PARTITIONS = (1, 4, 16)
GROUPS = 200
PER_GROUP = 5
WORK_SECONDS = 0.020
EFFICIENCY = 0.8
ACCOUNT = "123456789012"
REGION = "us-east-1"


def _inventory(name: str) -> Inventory:
    return Inventory(
        generated_at="2026-01-01T00:00:00+00:00",
        regions=[REGION],
        queues=[
            Queue(
                arn=f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}",
                name=name,
                url=f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{name}",
                region=REGION,
                account=ACCOUNT,
                fifo=True,
            )
        ],
    )


async def _apply(nc: Any, name: str, partitions: int, workdir: Path) -> tuple[str, list[str]]:
    mapping = workdir / f"{name}.yaml"
    mapping.write_text(f"overrides:\n  - match: {name!r}\n    partitions: {partitions}\n")
    live = await read_live(nc)
    plan = assemble_plan(_inventory(name), load_rules([mapping]), live, server=live.server)
    result = await apply_plan(nc, plan, allow_destructive=False)
    if not result.ok:
        raise RuntimeError(f"apply failed: {result.error}")
    (queue,) = [r for r in plan.resources if r.kind == "sqs-queue"]
    assert queue.stream is not None
    return queue.stream, queue.durables


async def _one(nc: Any, partitions: int, workdir: Path) -> tuple[float, bool]:
    """(messages per second, every group's order kept) for one partition count."""
    name = f"bench{partitions}.fifo"
    stream, durables = await _apply(nc, name, partitions, workdir)
    js = nc.jetstream()
    subject = f"sqsfifo.bench{partitions}"
    groups = [f"group-{i:04d}" for i in range(GROUPS)]
    for index in range(PER_GROUP):
        for group in groups:
            await js.publish(f"{subject}.{group}", f"{group}:{index}".encode())
    total = GROUPS * PER_GROUP
    next_index: dict[str, int] = defaultdict(int)
    in_order = True
    done = 0
    finished = asyncio.Event()

    async def worker(durable: str) -> None:
        nonlocal done, in_order
        sub = await js.pull_subscribe_bind(durable, stream=stream)
        try:
            while not finished.is_set():
                try:
                    msgs = await sub.fetch(1, timeout=0.5)
                except TimeoutError:
                    continue
                for msg in msgs:
                    await asyncio.sleep(WORK_SECONDS)
                    group, index = msg.data.decode().split(":")
                    if int(index) != next_index[group]:
                        in_order = False
                    next_index[group] = int(index) + 1
                    await msg.ack_sync()
                    done += 1
                    if done == total:
                        finished.set()
        finally:
            await sub.unsubscribe()

    started = time.perf_counter()
    tasks = [asyncio.create_task(worker(d)) for d in durables]
    await asyncio.wait_for(finished.wait(), timeout=total * WORK_SECONDS * 3 + 60)
    elapsed = time.perf_counter() - started
    await asyncio.gather(*tasks)
    return total / elapsed, in_order


def hash_ceiling(partitions: int) -> float:
    """The best ratio the server's hash allows: the fullest partition sets the pace."""
    load = [0] * partitions
    for i in range(GROUPS):
        load[partition_of(f"group-{i:04d}", partitions)] += 1
    return GROUPS / max(load)


def _row(name: str, value: float, unit: str, target: float | None = None) -> dict[str, Any]:
    return {"name": f"fifo.{name}", "value": value, "unit": unit, "target": target}


async def measure() -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="bench-fifo-") as tmp, NatsServer() as server:
        nc = await connect_nats(NatsOptions(servers=[server.url]), name="bench-fifo")
        try:
            results = {n: await _one(nc, n, Path(tmp)) for n in PARTITIONS}
        finally:
            await nc.close()
    base = results[1][0]
    rows: list[dict[str, Any]] = []
    for n, (rate, in_order) in results.items():
        rows.append(_row(f"partitions_{n}.throughput", round(rate, 1), "msg/s"))
        if n > 1:
            ceiling = hash_ceiling(n)
            rows.append(_row(f"partitions_{n}.hash_ceiling", round(ceiling, 2), "x"))
            rows.append(
                _row(
                    f"partitions_{n}.vs_partitions_1",
                    round(rate / base, 2),
                    "x",
                    round(EFFICIENCY * ceiling, 2),
                )
            )
        rows.append(_row(f"partitions_{n}.group_order_kept", 1 if in_order else 0, "bool", 1))
    return rows


def run() -> list[dict[str, Any]]:
    return asyncio.run(measure())


if __name__ == "__main__":
    for row in run():
        print(row)
