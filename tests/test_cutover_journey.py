"""A migration under continuous traffic, one `snsq2nats cutover` at a time: every application
receives each of its messages exactly once.

The estate: a topic `orders` with two SQS subscribers, `billing` (filtered to `order_placed`)
and `shipping` (everything). Real `snsq2nats bridge` processes (one or two fleet members) run
against moto over HTTP and a real nats-server while producers publish without pause and each
application's workers consume on AWS, on NATS, or on both during a move. The journey:

    all on AWS → shipping's consumers to NATS → topic producers to both → to NATS
    → billing's consumers to NATS → finish

in two worker orders: the old workers stop right when the move is made, or keep running until
`--wait` reports the old side drained. Variants: the topic fanning out through SNS (raw
delivery off) or through stream sources, a bridge killed with -9 during a move, two bridges.

What counts as a duplicate: a second *copy* of a message reaching an application. A copy is one
SQS message (its MessageId, which the bridge carries to NATS as a header) or one stream message;
receiving the same copy twice is SQS's own at-least-once receipt (a standard queue redelivers
after its visibility timeout, moto occasionally hands one message to two concurrent receivers),
which an SQS consumer absorbs by MessageId: those are counted and reported, not failed on.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from snsq2nats.bridge.codec import AWS_MESSAGE_ID_HEADER
from snsq2nats.cli import main
from snsq2nats.cutover import CutoverRequest, run_cutover
from snsq2nats.demo.nats_server import NatsServer
from snsq2nats.jetstream.connect import NatsOptions, connect_nats
from snsq2nats.plan.model import Plan, load_plan
from snsq2nats.plan.pipeline import publish_subject
from tests.fixtures.aws import AwsEndpoint
from tests.fixtures.bridge import Bridge, Bridges
from tests.fixtures.wait import until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

TTL = 3.0
PLACED, SHIPPED = "order_placed", "order_shipped"


# --- the estate and the bridges -----------------------------------------------------------------


def seed(aws: AwsEndpoint, raw: bool) -> dict[str, str]:
    sqs, sns = aws.client("sqs"), aws.client("sns")
    topic = sns.create_topic(Name="orders")["TopicArn"]
    urls = {}
    for name, policy in (("billing", {"event_type": [PLACED]}), ("shipping", None)):
        url = sqs.create_queue(QueueName=name)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        attributes = {"RawMessageDelivery": "true" if raw else "false"}
        if policy:
            attributes["FilterPolicy"] = json.dumps(policy)
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes=attributes)
        urls[name] = url
    urls["topic"] = topic
    return urls


def cli(*args: str | Path) -> Any:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def start_bridge(bridges: Bridges, plan: Path, url: str) -> Bridge:
    return bridges.start(
        *("--plan", plan, "-s", url, "--pollers", "2", "--poll-wait", "1"),
        *("--visibility-timeout", "3", "--lease-ttl", str(TTL)),
    )


async def members(url: str) -> set[str]:
    """The bridge fleet members whose heartbeat is fresh (within the lease TTL)."""
    from snsq2nats.jetstream.state import read_bucket
    from snsq2nats.plan.buckets import FLEET_BUCKET
    from snsq2nats.plan.fleet import MEMBERS, Heartbeat

    nc = await connect_nats(NatsOptions(servers=[url]))
    try:
        values = await read_bucket(nc, FLEET_BUCKET, MEMBERS + ">") or {}
    finally:
        await nc.close()
    beats = [(Heartbeat.model_validate_json(v.value), v.written) for v in values.values()]
    return {b.member for b, written in beats if not b.leaving and time.time() - written < TTL}


async def joined(url: str, pids: set[int]) -> None:
    """Wait until every bridge process in `pids` beats (a member id is host-pid-random)."""

    async def all_in() -> bool:
        return pids <= {int(m.split("-")[-2]) for m in await members(url)}

    await until(all_in, what=f"bridges {sorted(pids)} to join the fleet", timeout=120)


# --- the applications -----------------------------------------------------------------------------


@dataclass
class App:
    """One queue's application: what its workers on either side received, copy by copy."""

    name: str
    receipts: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    """label → the copy id of every receipt ("sqs:<MessageId>" or "stream:<seq>")."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def got(self, label: str, copy: str) -> None:
        with self.lock:
            self.receipts[label].append(copy)

    def copies(self) -> dict[str, int]:
        with self.lock:
            return {label: len(set(ids)) for label, ids in self.receipts.items()}

    def redeliveries(self) -> int:
        with self.lock:
            return sum(len(ids) - len(set(ids)) for ids in self.receipts.values())


class AwsWorker:
    """Receives from the SQS queue and deletes, on a thread, until stopped."""

    def __init__(self, aws: AwsEndpoint, url: str, app: App, raw: bool) -> None:
        self.sqs = aws.client("sqs")
        self.url, self.app, self.raw = url, app, raw
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            reply = self.sqs.receive_message(
                QueueUrl=self.url, MaxNumberOfMessages=10, WaitTimeSeconds=1
            )
            messages = reply.get("Messages") or []
            for m in messages:
                body = m["Body"] if self.raw else json.loads(m["Body"])["Message"]
                self.app.got(body, "sqs:" + m["MessageId"])
            if messages:
                self.sqs.delete_message_batch(
                    QueueUrl=self.url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                        for i, m in enumerate(messages)
                    ],
                )

    def halt(self) -> None:
        self.stop.set()
        self.thread.join()


class NatsWorker:
    """Pulls from the queue's durable and acks, until stopped."""

    def __init__(self, url: str, stream: str, durable: str, app: App) -> None:
        self.url, self.stream, self.durable, self.app = url, stream, durable, app
        self.stopping = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        from nats.errors import TimeoutError as NatsTimeout

        nc = await connect_nats(NatsOptions(servers=[self.url]))
        try:
            sub = await nc.jetstream().pull_subscribe_bind(self.durable, self.stream)
            while not self.stopping.is_set():
                try:
                    msgs = await sub.fetch(10, timeout=0.5)
                except (TimeoutError, NatsTimeout):
                    continue
                for msg in msgs:
                    headers = msg.headers or {}
                    copy = headers.get(AWS_MESSAGE_ID_HEADER)
                    copy = f"sqs:{copy}" if copy else f"stream:{msg.metadata.sequence.stream}"
                    self.app.got(msg.data.decode(), copy)
                    await msg.ack_sync()
        finally:
            await nc.close()

    async def halt(self) -> None:
        self.stopping.set()
        await self.task


class Producers:
    """Publishes orders without pause on the sides the topic's producers are on."""

    def __init__(self, aws: AwsEndpoint, topic_arn: str, url: str, plan: Plan) -> None:
        self.sns = aws.client("sns")
        self.topic_arn, self.url, self.plan = topic_arn, url, plan
        self.sides = {"aws"}
        self.sent: list[tuple[str, str]] = []
        self.stopping = asyncio.Event()
        self.count = 0
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        nc = await connect_nats(NatsOptions(servers=[self.url]))
        js = nc.jetstream()
        try:
            while not self.stopping.is_set():
                for side in sorted(self.sides):
                    event = PLACED if self.count % 2 == 0 else SHIPPED
                    label = f"{side}-{self.count:05d}"
                    self.count += 1
                    attributes = {"event_type": {"DataType": "String", "StringValue": event}}
                    if side == "aws":
                        await asyncio.to_thread(
                            self.sns.publish,
                            TopicArn=self.topic_arn,
                            Message=label,
                            MessageAttributes=attributes,
                        )
                    else:
                        subject = publish_subject(self.plan, "orders", [f"event_type={event}"])
                        await js.publish(subject, label.encode(), headers={"event_type": event})
                    self.sent.append((label, event))
                # Paces the traffic (a steady stream); nothing waits on it.
                await asyncio.sleep(0.02)
        finally:
            await nc.close()

    async def halt(self) -> None:
        self.stopping.set()
        await self.task


# --- the journey ----------------------------------------------------------------------------------


@dataclass
class Journey:
    aws: AwsEndpoint
    server: NatsServer
    plan_path: Path
    plan: Plan
    urls: dict[str, str]
    raw: bool
    overlap: bool
    apps: dict[str, App] = field(default_factory=dict)
    aws_workers: dict[str, AwsWorker] = field(default_factory=dict)
    nats_workers: dict[str, NatsWorker] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    retiring: list[str] = field(default_factory=list)

    async def move(self, side: str, name: str, to: str | None, *, wait: bool = False) -> None:
        request = CutoverRequest(
            side=side,  # type: ignore[arg-type]
            names=[name],
            to=to,
            wait=wait,
            by="journey",
            command=f"cutover {side} {name} {to or ''}",
        )
        started = time.monotonic()
        nc = await connect_nats(NatsOptions(servers=[self.server.url]))
        try:
            result = await run_cutover(nc, self.plan, request, aws=self._clients(), progress=print)
        finally:
            await nc.close()
        self.timings[f"{side} {name} {to or ''}".strip()] = round(time.monotonic() - started, 2)
        assert result.confirmed, "a running bridge confirms every move"

    def _clients(self) -> Any:
        from snsq2nats.aws.clients import RegionClients

        return RegionClients(
            region=self.aws.region, sqs=self.aws.client("sqs"), sns=self.aws.client("sns")
        )

    async def consumers_to_nats(self, name: str) -> None:
        resource = next(r for r in self.plan.resources if r.name == name)
        assert resource.stream and resource.consumer
        if not self.overlap:
            self.aws_workers.pop(name).halt()
        self.nats_workers[name] = NatsWorker(
            self.server.url, resource.stream, resource.consumer, self.apps[name]
        )
        await self.move("consumers", name, "nats", wait=self.overlap)
        if self.overlap:
            # `--wait` returned (the SQS queue drained, or still fed and relayed): the old
            # workers keep running through the next stretch of traffic, then stop.
            self.retiring.append(name)

    async def retire(self) -> None:
        for name in self.retiring:
            await asyncio.to_thread(self.aws_workers.pop(name).halt)
        self.retiring.clear()


async def run_journey(
    aws: AwsEndpoint,
    server: NatsServer,
    tmp_path: Path,
    launcher: Bridges,
    *,
    raw: bool,
    overlap: bool,
    bridges: int = 1,
    kill_during: str | None = None,
) -> Journey:
    urls = seed(aws, raw)
    inventory, plan_path = tmp_path / "inventory.json", tmp_path / "plan.json"
    # The CLI runs its own event loop: on a thread of its own, as from a shell.
    await asyncio.to_thread(cli, "scan", "-o", inventory)
    await asyncio.to_thread(
        cli, "plan", "--inventory", inventory, "-s", server.url, "-o", plan_path
    )
    await asyncio.to_thread(cli, "apply", plan_path, "-s", server.url, "--auto-approve")
    plan = load_plan(plan_path)
    journey = Journey(aws, server, plan_path, plan, urls, raw, overlap)
    for name in ("billing", "shipping"):
        journey.apps[name] = App(name)
        journey.aws_workers[name] = AwsWorker(aws, urls[name], journey.apps[name], raw)
    processes = [start_bridge(launcher, plan_path, server.url) for _ in range(bridges)]
    await joined(server.url, {p.pid for p in processes})
    producers = Producers(aws, urls["topic"], server.url, plan)
    try:
        await until(lambda: producers.count >= 20, what="traffic")

        async def phase(name: str, step: Any) -> None:
            if kill_during == name:
                victim = processes.pop(0)
                victim.kill()
                processes.append(start_bridge(launcher, plan_path, server.url))
                # The move is made while the dead member still looks alive to the others
                # (for a lease TTL) and its replacement starts.
            await step
            mark = producers.count
            await until(lambda: producers.count >= mark + 20, what=f"traffic after {name}")
            await journey.retire()

        await phase("shipping", journey.consumers_to_nats("shipping"))
        producers.sides = {"aws", "nats"}
        await phase("both", journey.move("producers", "orders", "both"))
        await phase("nats", journey.move("producers", "orders", "nats"))
        producers.sides = {"nats"}
        await phase("billing", journey.consumers_to_nats("billing"))
        # Finished under traffic: the topic first (fanning out through SNS, that is the switch
        # to stream sources at an exact sequence), then each queue once its SQS queue is empty.
        await phase("finish", journey.move("finish", "orders", None))
        for name in ("billing", "shipping"):
            # Nothing sends to the queues directly: their producers are already where the topic's
            # are; saying so lets them finish.
            await journey.move("producers", name, "nats")
            await journey.move("finish", name, None, wait=True)
        await producers.halt()
        return await settle(journey, producers)
    finally:
        if not producers.stopping.is_set():
            await producers.halt()
        for worker in journey.aws_workers.values():
            worker.halt()
        for nats_worker in journey.nats_workers.values():
            await nats_worker.halt()
        launcher.stop_all(timeout=60)


async def settle(journey: Journey, producers: Producers) -> Journey:
    """Wait until every application got every one of its messages, then until nothing is left
    anywhere a copy could wait (so a duplicate would have arrived by then)."""
    want = {
        "billing": {label for label, event in producers.sent if event == PLACED},
        "shipping": {label for label, _ in producers.sent},
    }
    sqs = journey.aws.client("sqs")

    def complete() -> bool:
        return all(want[n] <= set(journey.apps[n].copies()) for n in want)

    await until(complete, what="every application to receive each of its messages", timeout=300)

    async def nothing_left() -> bool:
        for name in ("billing", "shipping"):
            attributes = sqs.get_queue_attributes(
                QueueUrl=journey.urls[name],
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                ],
            )["Attributes"]
            if any(int(v) for v in attributes.values()):
                return False
        nc = await connect_nats(NatsOptions(servers=[journey.server.url]))
        try:
            js = nc.jetstream()
            for resource in journey.plan.resources:
                if resource.kind == "sqs-queue" and resource.stream and resource.consumer:
                    info = await js.consumer_info(resource.stream, resource.consumer)
                    if info.num_pending or info.num_ack_pending:
                        return False
        finally:
            await nc.close()
        return True

    await until(nothing_left, what="every queue and stream to be empty", timeout=120)
    for name, labels in want.items():
        copies = journey.apps[name].copies()
        lost = sorted(labels - set(copies))
        doubled = sorted(label for label, n in copies.items() if n > 1)
        extra = sorted(set(copies) - labels)
        assert not lost and not doubled and not extra, (name, lost[:5], doubled[:5], extra[:5])
    print(
        f"journey: {len(producers.sent)} messages, moves {journey.timings}, receipt "
        f"redeliveries {[a.redeliveries() for a in journey.apps.values()]}"
    )
    return journey


# --- the tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [True, False], ids=["sources", "sns"])
@pytest.mark.parametrize("overlap", [False, True], ids=["stop-first", "overlap"])
async def test_journey_exactly_once(
    aws: AwsEndpoint,
    nats_server: NatsServer,
    tmp_path: Path,
    bridges: Bridges,
    raw: bool,
    overlap: bool,
) -> None:
    await run_journey(aws, nats_server, tmp_path, bridges, raw=raw, overlap=overlap)


async def test_journey_with_a_bridge_killed_during_a_move_and_two_bridges(
    aws: AwsEndpoint, nats_server: NatsServer, tmp_path: Path, bridges: Bridges
) -> None:
    await run_journey(
        aws,
        nats_server,
        tmp_path,
        bridges,
        raw=True,
        overlap=True,
        bridges=2,
        kill_during="shipping",
    )
