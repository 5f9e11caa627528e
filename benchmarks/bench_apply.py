"""apply of a 500-queue plan (500 streams + 500 consumers) to a fresh single node.

The baseline, in the same run on another fresh node, creates the same objects one at a time,
each request awaited before the next (what a naive loop over the plan does). apply pipelines
independent creates with bounded concurrency, in dependency order. Also measured: re-planning
on the applied state (read_live + diff), which every later `plan` pays.

Measured twice. On loopback the server itself is the bottleneck (it creates streams one after
another), so pipelining cannot win much there and the ratio has no target. Through a proxy that
delays each direction by half a modest network round trip (`RTT`), the case apply is built for,
pipelining hides the round trip; that ratio has the target.

The inventory is built in memory: the subject here is JetStream, not AWS.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from benchmarks.latency import delayed_link
from benchmarks.synthetic import synthetic_inventory
from snsq2nats.apply import apply_plan
from snsq2nats.demo.nats_server import NatsServer
from snsq2nats.inventory import Inventory
from snsq2nats.jetstream.api import create_consumer, create_stream, pedantic_supported
from snsq2nats.jetstream.connect import NatsOptions, connect_nats
from snsq2nats.jetstream.state import read_live
from snsq2nats.plan.diff import diff
from snsq2nats.plan.model import Desired, Plan
from snsq2nats.plan.pipeline import assemble_plan
from snsq2nats.plan.rules import load_rules

QUEUES = 500
# Pipelining cannot beat the server: on a loaded 2-CPU machine it creates a file stream in
# ~2 ms, so at a 4 ms RTT the ceiling is ~3x; 2x says the round trip is really hidden.
TARGET_SPEEDUP = 2.0
RTT = 0.004  # seconds: a client in the same region as the cluster, not on the same host
ACCOUNT = "123456789012"
REGION = "us-east-1"


def inventory(n: int = QUEUES) -> Inventory:
    return synthetic_inventory(n, 0, 0)


async def _plan(nc: Any, inv: Inventory) -> Plan:
    live = await read_live(nc)
    return assemble_plan(inv, load_rules([]), live, server=live.server)


async def _apply(url: str, inv: Inventory) -> tuple[float, float, int]:
    """(apply wall time, re-plan time, objects) on the server at `url`."""
    nc = await connect_nats(NatsOptions(servers=[url]), name="bench apply")
    try:
        plan = await _plan(nc, inv)
        started = time.perf_counter()
        result = await apply_plan(nc, plan, allow_destructive=False)
        wall = time.perf_counter() - started
        if not result.ok or len(result.done) != len(plan.pending):
            raise AssertionError(f"apply incomplete: {result.error}")

        started = time.perf_counter()
        live = await read_live(nc)
        changes = diff(
            Desired(streams=plan.streams, consumers=plan.consumers, routes=plan.routes), live
        )
        replan = time.perf_counter() - started
        if any(c.action != "noop" for c in changes):
            raise AssertionError("re-plan after apply is not empty")
        return wall, replan, len(plan.pending)
    finally:
        await nc.close()


async def _sequential(url: str, inv: Inventory) -> float:
    """The same creates, one request at a time, in plan order."""
    nc = await connect_nats(NatsOptions(servers=[url]), name="bench sequential")
    try:
        plan = await _plan(nc, inv)
        pedantic = pedantic_supported(plan.server)
        started = time.perf_counter()
        for stream in plan.streams:
            await create_stream(nc, stream, pedantic=pedantic)
        for consumer in plan.consumers:
            await create_consumer(nc, consumer, pedantic=pedantic)
        return time.perf_counter() - started
    finally:
        await nc.close()


def _measure(inv: Inventory, rtt: float) -> tuple[float, float, float, int]:
    """(apply wall, sequential wall, re-plan, objects), each on its own fresh node."""
    with (
        NatsServer(name="bench-apply") as pipelined,
        NatsServer(name="bench-seq") as serial,
        contextlib.ExitStack() as links,
    ):
        urls = [pipelined.url, serial.url]
        if rtt:
            urls = [links.enter_context(delayed_link(s.port, rtt)) for s in (pipelined, serial)]
        wall, replan, objects = asyncio.run(_apply(urls[0], inv))
        baseline = asyncio.run(_sequential(urls[1], inv))
    return wall, baseline, replan, objects


def run() -> list[dict[str, Any]]:
    inv = inventory()
    wall, baseline, replan, objects = _measure(inv, 0.0)
    net_wall, net_baseline, net_replan, _ = _measure(inv, RTT)
    ms = round(RTT * 1000)
    return [
        {"name": "apply.objects", "value": objects, "unit": "objects", "target": None},
        {"name": "apply.loopback.wall", "value": round(wall, 2), "unit": "s", "target": None},
        {
            "name": "apply.loopback.sequential_wall",
            "value": round(baseline, 2),
            "unit": "s",
            "target": None,
        },
        {
            "name": "apply.loopback.speedup_vs_sequential",
            "value": round(baseline / wall, 2),
            "unit": "x",
            "target": None,
        },
        {"name": "apply.loopback.replan", "value": round(replan, 3), "unit": "s", "target": None},
        {"name": "apply.modelled_rtt", "value": ms, "unit": "ms", "target": None},
        {"name": f"apply.rtt{ms}ms.wall", "value": round(net_wall, 2), "unit": "s", "target": None},
        {
            "name": f"apply.rtt{ms}ms.sequential_wall",
            "value": round(net_baseline, 2),
            "unit": "s",
            "target": None,
        },
        {
            "name": f"apply.rtt{ms}ms.speedup_vs_sequential",
            "value": round(net_baseline / net_wall, 2),
            "unit": "x",
            "target": TARGET_SPEEDUP,
        },
        {
            "name": f"apply.rtt{ms}ms.replan",
            "value": round(net_replan, 3),
            "unit": "s",
            "target": None,
        },
    ]


if __name__ == "__main__":
    for row in run():
        print(row)
