"""Scanner wall time on 1,000 queues / 200 topics / 1,000 subscriptions, parallel vs serial.

Both scans read the same moto server in the same run, through a proxy that adds a fixed AWS-like
round trip to every call (moto alone answers in ~1 ms, which no real region does); the serial
scan is the one-call-at-a-time baseline (concurrency 1). Target: the parallel scan >= 5x faster.
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks.estate import AWS_ROUND_TRIP, QUEUES, SUBSCRIPTIONS, TOPICS, seeded_moto
from snsq2nats.aws import scan as aws_scan
from snsq2nats.aws.clients import DEFAULT_CONCURRENCY, make_clients

TARGET_SPEEDUP = 5.0


def _timed_scan(session: Any, endpoint: str, concurrency: int) -> tuple[float, Any]:
    clients = make_clients(session, ["us-east-1"], endpoint, concurrency)
    started = time.perf_counter()
    inventory = aws_scan.scan(clients, concurrency=concurrency)
    return time.perf_counter() - started, inventory


def run() -> list[dict[str, Any]]:
    with seeded_moto() as (session, endpoint):
        parallel, inventory = _timed_scan(session, endpoint, DEFAULT_CONCURRENCY)
        serial, baseline = _timed_scan(session, endpoint, 1)
    counts = (len(inventory.queues), len(inventory.topics), len(inventory.subscriptions))
    if counts != (QUEUES, TOPICS, SUBSCRIPTIONS) or inventory.queues != baseline.queues:
        raise AssertionError(f"scan incomplete: {counts}")
    return [
        {
            "name": "scan.modelled_round_trip",
            "value": round(AWS_ROUND_TRIP * 1000),
            "unit": "ms",
            "target": None,
        },
        {"name": "scan.parallel_wall", "value": round(parallel, 2), "unit": "s", "target": None},
        {"name": "scan.serial_wall", "value": round(serial, 2), "unit": "s", "target": None},
        {
            "name": "scan.speedup_vs_serial",
            "value": round(serial / parallel, 2),
            "unit": "x",
            "target": TARGET_SPEEDUP,
        },
    ]
