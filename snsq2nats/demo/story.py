"""`snsq2nats demo`: the whole story on embedded local services, nothing to install by hand.

Starts moto's AWS server and a nats-server with JetStream on loopback, seeds the small shop
estate, then runs the real pipeline against them: scan → plan. Every file a user would keep is
written to the output directory. Everything started here is stopped again, whatever happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from snsq2nats.aws.arns import arn_name
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
    import urllib.request

    # The embedded server would log every request to the terminal.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        # moto keeps its accounts per process: start from an empty one, whatever ran before.
        request = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")
        urllib.request.urlopen(request, timeout=10).close()
        yield endpoint
    finally:
        server.stop()


@dataclass
class Webhook:
    """The shop's https subscriber, served on loopback: SNS really posts the orders to it."""

    url: str
    received: list[bytes] = field(default_factory=list)


@contextlib.contextmanager
def https_webhook() -> Iterator[Webhook]:
    import http.server
    import ssl
    import tempfile
    import threading

    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    hook = Webhook(url="")

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            hook.received.append(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the URL carries a token: keep it out of the terminal

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / "ca.pem"
        ca.cert_pem.write_to_path(str(bundle))
        # moto delivers in this process with requests: trust the local CA for the demo only.
        saved = os.environ.get("REQUESTS_CA_BUNDLE")
        os.environ["REQUESTS_CA_BUNDLE"] = str(bundle)
        hook.url = f"https://127.0.0.1:{server.server_address[1]}/orders?token=s3cr3t-token"
        try:
            yield hook
        finally:
            if saved is None:
                os.environ.pop("REQUESTS_CA_BUNDLE", None)
            else:
                os.environ["REQUESTS_CA_BUNDLE"] = saved
            server.shutdown()
            server.server_close()


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """SIGTERM (a CI timeout, `kill`) unwinds the demo like an error, so moto, the webhook and
    nats-server are stopped rather than left running; Python's default would just exit."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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


CUTOVER_RULES = """\
# The demo's cutover state: these queues' consumers already run on NATS, so the bridge
# drains their SQS queues into JetStream; everything else still lives on AWS.
overrides:
  - match: "orders-billing"
    cutover: {consumers: nats}
  - match: "orders-shipping"
    cutover: {consumers: nats}
  - match: "orders-fraud"
    cutover: {consumers: nats}
  - match: "payments.fifo"
    cutover: {consumers: nats}
"""

BURST = [
    ("order_placed", "eu", 120),
    ("order_placed", "us", 2400),
    ("order_cancelled", "eu", 80),
    ("order_placed", "apac", 990),
    ("order_shipped", "us", 15),
    ("order_placed", "eu", 5000),
]


@dataclass
class SecureNats:
    """The demo's NATS: mutual TLS, users mapped from client certificates (verify_and_map), each
    with exactly the permissions `snsq2nats auth` generated from the plan, as in a secure
    cluster. `options(name)` connects as one identity through its generated natscli context."""

    url: str
    contexts: dict[str, Path]

    def options(self, identity: str) -> Any:
        from snsq2nats.jetstream.connect import NatsOptions

        return NatsOptions.resolve(context=str(self.contexts[identity]), env={})


def _secure_nats(stack: contextlib.ExitStack, plan: Any, workdir: Path) -> SecureNats:
    import trustme

    from snsq2nats.auth.config import write_auth, write_private
    from snsq2nats.auth.identities import identities
    from snsq2nats.demo.nats_server import NatsServer, TlsConfig

    tls_dir = workdir / "tls"
    tls_dir.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    ca_file = tls_dir / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))

    def issue(name: str, *ids: str) -> tuple[Path, Path]:
        cert = ca.issue_cert(*ids)
        cert_file, key_file = tls_dir / f"{name}.pem", tls_dir / f"{name}.key"
        cert.cert_chain_pems[0].write_to_path(str(cert_file))
        write_private(key_file, cert.private_key_pem.bytes().decode())
        return cert_file, key_file

    server_cert, server_key = issue("server", "127.0.0.1", "localhost")
    server = NatsServer(
        tls=TlsConfig(server_cert, server_key, ca_file, verify_and_map=True),
    )
    generated = identities(plan)
    emails = {i.name: f"{i.name}@shop.demo" for i in generated}
    files: dict[str, dict[str, str]] = {}
    for identity in generated:
        cert_file, key_file = issue(identity.name, emails[identity.name])
        files[identity.name] = {"cert": str(cert_file), "key": str(key_file), "ca": str(ca_file)}
    written = write_auth(
        generated,
        workdir / "auth",
        mode="tls",
        url=server.url,
        tls_names=emails,
        tls_files=files,
    )
    server.users = written.users
    stack.enter_context(server)
    return SecureNats(url=server.url, contexts=written.contexts)


def run_demo(out: Output, workdir: Path) -> dict[str, Any]:
    import asyncio

    import boto3

    from snsq2nats.aws import scan as aws_scan
    from snsq2nats.aws.clients import make_clients
    from snsq2nats.demo.estate import seed_shop
    from snsq2nats.demo.extras import require_demo_extras
    from snsq2nats.demo.nats_server import nats_server_version
    from snsq2nats.export.bundle import FORMATS, write_export
    from snsq2nats.export.targets import export_plan
    from snsq2nats.files import document_json, write_atomic
    from snsq2nats.jetstream.spec import ServerInfo
    from snsq2nats.plan.pipeline import PlanRequest, assemble_plan, make_plan
    from snsq2nats.plan.rules import load_rules
    from snsq2nats.report.document import write_report
    from snsq2nats.report.terminal import render_plan, scan_summary

    require_demo_extras()
    # nats-server runs in its own directory and the contexts are read from anywhere: every
    # path the demo writes into a config or hands to a process must not depend on our cwd.
    workdir = workdir.absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    rules = workdir / "cutover.yaml"
    write_atomic(rules, CUTOVER_RULES)
    with contextlib.ExitStack() as stack:
        stack.enter_context(sigterm_unwinds())
        endpoint = stack.enter_context(moto_endpoint())
        stack.enter_context(demo_environment(endpoint))
        webhook = stack.enter_context(https_webhook())
        out.info(f"[1/7] local AWS (moto) at {endpoint}")
        session = boto3.Session(region_name=DEMO_REGION)
        sqs = session.client("sqs", endpoint_url=endpoint)
        sns = session.client("sns", endpoint_url=endpoint)
        seeded = seed_shop(sqs, sns, webhook=webhook.url)
        out.info(
            f"      seeded the shop: {len(seeded.queues)} queues, {len(seeded.topics)} topic, "
            f"{len(seeded.subscriptions)} subscriptions"
        )

        out.info("[2/7] snsq2nats scan")
        clients = make_clients(session, [DEMO_REGION], endpoint)
        with out.progress("scanning AWS", total=None) as bar:
            inventory = aws_scan.scan(clients, on_progress=bar.advance)
        write_atomic(workdir / "inventory.json", document_json(inventory))
        out.info(scan_summary(inventory))

        request = PlanRequest(inventory_path=workdir / "inventory.json", mapping_paths=[rules])
        # Identities follow the plan for the server that will run (its version decides, e.g.,
        # whether delayed queues take schedule subjects), before that server starts with them.
        offline = assemble_plan(
            inventory,
            load_rules([rules]),
            None,
            server=ServerInfo(reachable=False, version=nats_server_version()),
        )
        nats = _secure_nats(stack, offline, workdir)
        out.info(
            f"      snsq2nats auth --credentials tls: {len(nats.contexts)} identities; "
            f"nats-server at {nats.url} with mutual TLS and certificate-mapped users"
        )

        out.info(f"[3/7] snsq2nats plan --mapping {rules} --context auth/contexts/snsq2nats-admin")
        admin = nats.options("snsq2nats-admin")
        plan = make_plan(request, scan=lambda: inventory, nats=admin)
        write_atomic(workdir / "plan.json", document_json(plan))
        write_report(workdir / "plan.md", plan)
        write_report(workdir / "plan.html", plan)
        render_plan(out, plan, verbose=False)
        for fmt in FORMATS:
            write_export(export_plan(plan, fmt), workdir / "export" / fmt)
        out.info(f"      exports for {', '.join(FORMATS)} in {workdir / 'export'}")

        asyncio.run(_live_story(out, plan, nats, sqs, sns, seeded, endpoint))
        out.info(
            f"      the https webhook, still served by SNS, received {len(webhook.received)} "
            "order(s)"
        )
        out.info(
            f"files in {workdir}: cutover.yaml, inventory.json, plan.json, plan.md, plan.html, "
            "export/{natscli,nack,terraform}/, auth/ (server users, contexts), tls/"
        )
    return {"inventory": inventory, "plan": plan}


async def _live_story(
    out: Output, plan: Any, nats: SecureNats, sqs: Any, sns: Any, seeded: Any, endpoint: str
) -> None:
    import asyncio
    import signal

    from snsq2nats.apply import apply_plan
    from snsq2nats.bridge.context import RelaySettings
    from snsq2nats.bridge.session import bridge_session
    from snsq2nats.console import configure_logging
    from snsq2nats.errors import SnsqError
    from snsq2nats.jetstream.connect import connect_nats
    from snsq2nats.report.apply import outcome_table, result_line
    from snsq2nats.report.live import LiveView
    from snsq2nats.report.status import status_table
    from snsq2nats.report.verify import results_table, summary_line
    from snsq2nats.verify import result_counts, verify_plan

    nc = await connect_nats(nats.options("snsq2nats-admin"), name="snsq2nats demo")
    try:
        out.info("[4/7] snsq2nats apply plan.json --auto-approve")
        applied = await apply_plan(nc, plan, allow_destructive=False)
        out.info(outcome_table(applied))
        out.info(result_line(applied))
        if not applied.ok:
            raise SnsqError("the demo's apply failed", hint="see the table above")

        out.info("[5/7] snsq2nats verify: a canary through every queue and topic")
        results = await verify_plan(nc, plan)
        out.info(results_table(results))
        counts = result_counts(results)
        out.info(summary_line(counts))
        if counts["failed"]:
            raise SnsqError("the demo's verify failed", hint="see the table above")

        out.info("[6/7] snsq2nats bridge: a burst of orders published on AWS")
        stop = asyncio.Event()
        settings = RelaySettings(pollers=2, max_in_flight=64, wait_time_seconds=1)
        configure_logging(out.console)  # the bridge logs what it does
        bridge = asyncio.create_task(
            bridge_session(
                nats.options("snsq2nats-bridge"),
                plan,
                plan.routes,
                regions=(DEMO_REGION,),
                endpoint_url=endpoint,
                settings=settings,
                duration=120,
                metrics_port=None,
                cleanup=False,
                stop=stop,
                view=LiveView(out),
            )
        )
        # The applications' NATS workers run alongside the bridge, as in a real cutover: a FIFO
        # queue's message leaves SQS once a NATS worker processed it (bridge.fifo_handover).
        workers = asyncio.create_task(_nats_workers(out, nats, plan, until=stop))
        try:
            statuses = await _burst_through_bridge(out, nc, plan, sqs, sns, seeded, bridge)
        finally:
            # Whatever failed above, the bridge stops before the services under it do.
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await bridge
            # The bridge's own SIGTERM handler (a graceful drain) leaves the default behind.
            if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
                signal.signal(signal.SIGTERM, _exit_on_sigterm)

        out.info("[7/7] snsq2nats status")
        out.info(status_table(statuses))
        if not all(s.drained for s in statuses):
            raise SnsqError(
                "the demo's routes did not drain: some messages were not relayed",
                hint="see the status table above and the bridge's log lines",
            )
        out.info("all routes drained: safe to switch")
        await workers
    finally:
        await nc.close()


async def _burst_through_bridge(
    out: Output, nc: Any, plan: Any, sqs: Any, sns: Any, seeded: Any, bridge: Any
) -> list[Any]:
    """Publish the burst on AWS once the bridge listens, and wait until every route drained
    (or the bridge stops): the routes' last status."""
    import asyncio
    import json

    from snsq2nats import status as status_lib
    from snsq2nats.errors import SnsqError

    topic = seeded.topics["orders"]
    bridge_queues = [r.bridge_queue for r in plan.routes if r.bridge_queue]
    await _wait_for_bridge(sns, topic, bridge_queues, bridge)
    for number, (event, region, amount) in enumerate(BURST, start=1):
        await asyncio.to_thread(
            sns.publish,
            TopicArn=topic,
            Message=json.dumps({"order": number, "amount": amount}),
            MessageAttributes={
                "event_type": {"DataType": "String", "StringValue": event},
                "region": {"DataType": "String", "StringValue": region},
                "amount": {"DataType": "Number", "StringValue": str(amount)},
            },
        )
    payments = (await asyncio.to_thread(sqs.get_queue_url, QueueName="payments.fifo"))["QueueUrl"]
    for number in range(1, 4):
        await asyncio.to_thread(
            sqs.send_message,
            QueueUrl=payments,
            MessageBody=json.dumps({"payment": number}),
            MessageGroupId="customer-42",
            MessageDeduplicationId=f"payment-{number}",
        )
    out.info(f"      published {len(BURST)} orders to SNS and 3 payments to payments.fifo")

    def sqs_for(region: str) -> Any:
        return sqs

    statuses: list[Any] = []
    for _ in range(60):
        await asyncio.sleep(1)
        if bridge.done():
            raise SnsqError(
                "the demo's bridge stopped before its routes drained",
                hint="see its log lines above",
            )
        statuses = await status_lib.collect(nc, sqs_for, plan, plan.routes)
        if all(s.drained for s in statuses):
            break
    return statuses


async def _wait_for_bridge(sns: Any, topic: str, names: list[str], bridge: Any) -> None:
    """The bridge subscribes its own queue to the topic on start: publish only after that."""
    import asyncio

    from snsq2nats.errors import SnsqError

    for _ in range(300):
        if bridge.done():
            break
        subs = (await asyncio.to_thread(sns.list_subscriptions_by_topic, TopicArn=topic))[
            "Subscriptions"
        ]
        endpoints = {arn_name(s["Endpoint"]) for s in subs}
        if all(name in endpoints for name in names):
            return
        await asyncio.sleep(0.1)
    raise SnsqError(
        f"the demo's bridge did not subscribe {', '.join(names)} to the orders topic",
        hint="see the bridge's log lines above",
    )


async def _nats_workers(
    out: Output, nats: SecureNats, plan: Any, until: asyncio.Event | None = None
) -> None:
    """The applications' side of the cutover: each queue's workers connect as its generated
    consumer identity, pull from its durable and ack (until `until` is set and nothing more
    waits; without it, until nothing waits)."""
    from snsq2nats.jetstream.connect import connect_nats

    async def work(resource: Any) -> int:
        nc = await connect_nats(nats.options(f"{resource.stream}-consumer"), name="demo worker")
        received = 0
        try:
            sub = await nc.jetstream().pull_subscribe_bind(
                resource.consumer, stream=resource.stream
            )
            while True:
                try:
                    batch = await sub.fetch(1, timeout=0.3)
                except Exception:  # nothing more waiting
                    if until is None or until.is_set():
                        break
                    continue
                for msg in batch:
                    await msg.ack_sync()
                    received += 1
        finally:
            await nc.close()
        return received

    queues = [
        r for r in plan.resources if r.kind == "sqs-queue" and r.consumer and r.consumers == "nats"
    ]
    counts = await asyncio.gather(*(work(r) for r in queues))
    for resource, received in zip(queues, counts, strict=True):
        if received:
            out.info(
                f"      NATS workers of {resource.name}: {received} message(s) received and acked"
            )
