"""Plan time for 1,000 queues / 200 topics / 1,000 subscriptions: offline, and against a server
already holding the applied state (read live + diff, all noop).

The applied state is created with `apply` on a local server in the same run. The offline plan
is the baseline the live plan is compared with.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from benchmarks.synthetic import synthetic_inventory
from snsq2nats.apply import apply_plan
from snsq2nats.demo.nats_server import NatsServer
from snsq2nats.jetstream.connect import NatsOptions
from snsq2nats.jetstream.spec import ServerInfo
from snsq2nats.plan.pipeline import assemble_plan, read_server
from snsq2nats.plan.rules import load_rules


def run() -> list[dict[str, Any]]:
    inventory = synthetic_inventory(1000, 200, 1000)
    rules = load_rules([])
    offline_server = ServerInfo(reachable=False, note="offline")
    started = time.perf_counter()
    plan = assemble_plan(inventory, rules, None, server=offline_server)
    offline = time.perf_counter() - started

    async def live_plan(url: str) -> tuple[float, int]:
        import nats

        nc = await nats.connect(url)
        try:
            applied = await apply_plan(nc, plan, allow_destructive=False)
            if not applied.ok:
                raise AssertionError(f"apply failed: {applied.error}")
        finally:
            await nc.close()
        began = time.perf_counter()
        live, server = await read_server(NatsOptions(servers=[url]))
        replanned = assemble_plan(inventory, rules, live, server=server)
        elapsed = time.perf_counter() - began
        return elapsed, len(replanned.pending)

    with NatsServer() as server:
        live_seconds, pending = asyncio.run(live_plan(server.url))
    if pending:
        raise AssertionError(f"{pending} false changes against the applied state")
    return [
        {"name": "plan.objects", "value": len(plan.changes), "unit": "objects", "target": None},
        {"name": "plan.offline_wall", "value": round(offline, 3), "unit": "s", "target": None},
        {
            "name": "plan.live_applied_wall",
            "value": round(live_seconds, 3),
            "unit": "s",
            "target": None,
        },
        {
            "name": "plan.live_vs_offline",
            "value": round(live_seconds / offline, 2),
            "unit": "x",
            "target": None,
        },
    ]
