"""`snsq2nats gateway` as operators run it: a process serving a plan file, its probes and
metrics, and a SIGTERM that lets the request in flight finish and loses no message."""

from __future__ import annotations

import asyncio
import signal
import threading
import urllib.request
from pathlib import Path
from typing import Any

from snsq2nats.demo.nats_server import NatsServer
from snsq2nats.files import document_json
from snsq2nats.jetstream.connect import NatsOptions, connect_nats
from snsq2nats.plan.pipeline import PlanRequest
from tests.fixtures.gateway import TEST_AUTHENTICATOR, Gateways, RunningGateway, applied_plan
from tests.fixtures.wait import wait_until

REGION = "us-east-1"
QUEUE = "gw-cli"


def plan_file(moto_server: str, nats_url: str, folder: Path) -> Path:
    """moto with one queue, scanned, planned and applied: the plan file a gateway serves."""
    import boto3

    from snsq2nats.aws import scan as aws_scan
    from snsq2nats.aws.clients import make_clients

    reset = urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST")
    urllib.request.urlopen(reset, timeout=10).close()
    session = boto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    )
    session.client("sqs", endpoint_url=moto_server).create_queue(
        QueueName=QUEUE, Attributes={"VisibilityTimeout": "2"}
    )
    inventory = folder / "inventory.json"
    inventory.write_bytes(
        document_json(aws_scan.scan(make_clients(session, [REGION], moto_server)))
    )
    path = folder / "plan.json"
    path.write_bytes(document_json(applied_plan(nats_url, PlanRequest(inventory_path=inventory))))
    return path


def get(url: str) -> tuple[int, str]:
    import urllib.error

    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def bodies_left(nats_url: str, stream: str, durable: str, want: int) -> list[bytes]:
    """What the queue's durable still holds, once every held message came back."""
    nc = await connect_nats(NatsOptions(servers=[nats_url]), name="pytest check")
    try:
        sub = await nc.jetstream().pull_subscribe_bind(durable, stream)
        got: list[bytes] = []
        for _ in range(200):
            if len(got) >= want:
                break
            try:
                msgs = await sub.fetch(want, timeout=1)
            except Exception:
                continue
            got += [m.data for m in msgs]
        return got
    finally:
        await nc.close()


def test_the_gateway_command_serves_probes_metrics_and_stops_gracefully(
    moto_server: str, tmp_path: Path, gateways: Gateways
) -> None:
    with NatsServer(name="gateway-cli") as server:
        plan = plan_file(moto_server, server.url, tmp_path)
        process = gateways.start(
            *("--plan", plan, "--server", server.url, "--listen", "127.0.0.1:0"),
            *("--authenticator", TEST_AUTHENTICATOR),
            env={"SNSQ2NATS_GATEWAY_SECRET": "s3cret"},
        )
        url = process.wait_listening()
        assert get(f"{url}/healthz") == (200, "ok\n")
        assert get(f"{url}/readyz")[0] == 200
        sqs = RunningGateway(url).client()
        queue_url = sqs.get_queue_url(QueueName=QUEUE)["QueueUrl"]
        for body in ("one", "two"):
            sqs.send_message(QueueUrl=queue_url, MessageBody=body)
        held: list[Any] = []
        while len(held) < 2:
            # Invisible for 8 s: the long poll below finds the queue empty and waits.
            held += sqs.receive_message(
                QueueUrl=queue_url, WaitTimeSeconds=5, VisibilityTimeout=8
            ).get("Messages", [])
        assert sorted(m["Body"] for m in held) == ["one", "two"]
        status, metrics = get(f"{url}/metrics")
        assert status == 200
        assert (
            'snsq2nats_gateway_requests_total{action="SendMessage",outcome="ok",'
            f'queue="{QUEUE}"}} 2.0' in metrics
        )
        assert f'snsq2nats_gateway_messages_total{{direction="sent",queue="{QUEUE}"}} 2.0' in (
            metrics
        )
        # A long poll in flight when SIGTERM comes is answered, not cut off.
        answers: list[Any] = []

        def long_poll() -> None:
            answers.append(
                sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=4, MaxNumberOfMessages=10)
            )

        poller = threading.Thread(target=long_poll)
        poller.start()
        wait_until(
            lambda: "snsq2nats_gateway_requests_in_flight 1.0" in get(f"{url}/metrics")[1],
            what="the long poll to be under way",
        )
        process.send_signal(signal.SIGTERM)
        poller.join(60)
        assert answers and answers[0]["ResponseMetadata"]["HTTPStatusCode"] == 200
        assert "Messages" not in answers[0]  # both held: the poll waited, then answered
        assert process.wait(60) == 0, process.tail()
        assert "gateway stopped" in process.text(), process.tail()
        # Nothing was deleted: both messages are still the queue's, held ones included.
        from snsq2nats.plan.model import load_plan

        resource = next(r for r in load_plan(plan).resources if r.name == QUEUE)
        assert resource.stream and resource.consumer
        left = asyncio.run(bodies_left(server.url, resource.stream, resource.consumer, 2))
        assert sorted(left) == [b"one", b"two"]
