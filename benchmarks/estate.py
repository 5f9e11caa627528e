"""The benchmark estate: 1,000 queues, 200 topics, 1,000 subscriptions on a moto server."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.latency import delayed_link

QUEUES, TOPICS, SUBSCRIPTIONS = 1000, 200, 1000
AWS_ROUND_TRIP = 0.020  # seconds added to every request: a modest in-region AWS API call


@contextlib.contextmanager
def moto_process() -> Iterator[tuple[str, int]]:
    """moto in its own process, so the benchmark's threads do not share its interpreter lock."""
    from snsq2nats.demo.nats_server import free_ports

    port = free_ports(1)[0]
    moto = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen(
        [str(moto), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.1)
        yield "127.0.0.1", port
    finally:
        proc.terminate()
        proc.wait(10)


@contextlib.contextmanager
def seeded_moto(
    queues: int = QUEUES, topics: int = TOPICS, subscriptions: int = SUBSCRIPTIONS
) -> Iterator[tuple[Any, str]]:
    import boto3

    from snsq2nats.demo.estate import seed_synthetic

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    with moto_process() as (host, port):
        endpoint = f"http://{host}:{port}"
        session = boto3.Session(region_name="us-east-1")
        started = time.perf_counter()
        seed_synthetic(
            session.client("sqs", endpoint_url=endpoint),
            session.client("sns", endpoint_url=endpoint),
            queues=queues,
            topics=topics,
            subscriptions=subscriptions,
            # One at a time: moto's SNS Subscribe walks its subscriptions while another
            # request adds one ("OrderedDict mutated during iteration", a 500).
            workers=1,
        )
        print(f"  seeded estate in {time.perf_counter() - started:.1f}s", file=sys.stderr)
        with delayed_link(port, AWS_ROUND_TRIP, scheme="http") as proxied:
            yield session, proxied


async def apply_estate(nats_url: str, inventory: Any, mapping_text: str, workdir: Path) -> Any:
    """Plan `inventory` under a mapping against the server at `nats_url` and apply it there;
    the applied plan comes back (its routes are what the bridge runs)."""
    from snsq2nats.apply import apply_plan
    from snsq2nats.jetstream.connect import NatsOptions, connect_nats
    from snsq2nats.jetstream.state import read_live
    from snsq2nats.plan.pipeline import assemble_plan
    from snsq2nats.plan.rules import load_rules

    mapping = workdir / "mapping.yaml"
    mapping.write_text(mapping_text)
    nc = await connect_nats(NatsOptions(servers=[nats_url]), name="bench setup")
    try:
        live = await read_live(nc)
        plan = assemble_plan(inventory, load_rules([mapping]), live, server=live.server)
        result = await apply_plan(nc, plan, allow_destructive=False)
        if not result.ok:
            raise RuntimeError(f"apply failed: {result.error}")
    finally:
        await nc.close()
    return plan
