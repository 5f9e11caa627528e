"""`snsq2nats demo`: the whole story on embedded local services, nothing to install by hand.

Starts moto's AWS server and a nats-server with JetStream on loopback, seeds the small shop
estate, then runs the real pipeline against them: scan → plan. Every file a user would keep is
written to the output directory. Everything started here is stopped again, whatever happens.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from snsq2nats.console import Output
from snsq2nats.errors import UsageError

DEMO_REGION = "us-east-1"


@contextlib.contextmanager
def moto_endpoint() -> Iterator[str]:
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        raise UsageError(
            "the demo needs moto's server (a development dependency)",
            hint="run `make demo`, or pip install 'snsq2nats[dev]'",
        ) from None
    import logging

    # The embedded server would log every request to the terminal.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@contextlib.contextmanager
def demo_environment(endpoint: str) -> Iterator[None]:
    """Point the standard AWS chain at the local endpoint, and put it back afterwards."""
    values = {
        "AWS_ACCESS_KEY_ID": "demo",
        "AWS_SECRET_ACCESS_KEY": "demo",
        "AWS_REGION": DEMO_REGION,
        "AWS_DEFAULT_REGION": DEMO_REGION,
        "AWS_ENDPOINT_URL": endpoint,
    }
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run_demo(out: Output, workdir: Path) -> dict[str, Any]:
    import boto3

    from snsq2nats import aws_scan
    from snsq2nats.connect import NatsOptions
    from snsq2nats.estate import seed_shop
    from snsq2nats.files import write_atomic
    from snsq2nats.localnats import NatsServer
    from snsq2nats.pipeline import PlanRequest, make_plan
    from snsq2nats.report import render_plan, scan_summary, write_report

    workdir.mkdir(parents=True, exist_ok=True)
    with moto_endpoint() as endpoint, demo_environment(endpoint), NatsServer() as nats:
        out.info(f"[1/3] local AWS (moto) at {endpoint}, nats-server at {nats.url}")
        session = boto3.Session(region_name=DEMO_REGION)
        seeded = seed_shop(
            session.client("sqs", endpoint_url=endpoint),
            session.client("sns", endpoint_url=endpoint),
        )
        out.info(
            f"      seeded the shop: {len(seeded.queues)} queues, {len(seeded.topics)} topic, "
            f"{len(seeded.subscriptions)} subscriptions"
        )

        out.info("[2/3] snsq2nats scan")
        clients = aws_scan.make_clients(session, [DEMO_REGION], endpoint)
        with out.progress("scanning AWS", total=None) as bar:
            inventory = aws_scan.scan(clients, on_progress=bar.advance)
        write_atomic(workdir / "inventory.json", inventory.to_json())
        out.info(scan_summary(inventory))

        out.info("[3/3] snsq2nats plan")
        plan = make_plan(
            PlanRequest(inventory_path=workdir / "inventory.json"),
            scan=lambda: inventory,
            nats=NatsOptions(servers=[nats.url]),
        )
        write_atomic(workdir / "plan.json", plan.to_json())
        write_report(workdir / "plan.md", plan)
        write_report(workdir / "plan.html", plan)
        render_plan(out, plan, verbose=False)
        out.info(f"files in {workdir}: inventory.json, plan.json, plan.md, plan.html")
    return {"inventory": inventory, "plan": plan}
