"""SQS/SNS → JetStream against a real moto server and real nats-server processes.

Every test checks the two delivery rules at the end: each SQS message is in the stream exactly
once (by its AWS message id), and nothing was deleted from SQS that the stream does not hold.
A recorder wraps every AWS call of in-process bridges to see receives, deletes and visibility
changes as they happen.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from snsq2nats.bridge.aws_to_nats import REDRIVE_POLL_WAIT
from snsq2nats.bridge.codec import AWS_MESSAGE_ID_HEADER, headers_to_attributes
from snsq2nats.bridge.context import BridgeContext, Timings
from snsq2nats.bridge.runtime import RUNNERS, run_bridge
from snsq2nats.bridge.session import aws_connections
from snsq2nats.bridge.sns_to_nats import cleanup_sns_to_nats
from snsq2nats.demo.nats_server import NatsCluster, NatsServer
from snsq2nats.files import document_json
from snsq2nats.jetstream.api import create_stream
from snsq2nats.jetstream.connect import NatsOptions, connect_nats
from snsq2nats.jetstream.spec import ServerInfo
from snsq2nats.plan.buckets import fleet_bucket_spec
from snsq2nats.plan.model import Plan, Route
from tests.fixtures.aws import AwsEndpoint, threads_besides_moto
from tests.fixtures.bridge import FAST, Bridge, Bridges
from tests.fixtures.wait import until

N = 200


class Recorder:
    """Every AWS call an in-process bridge makes, awaited on the loop like the real path."""

    def __init__(self) -> None:
        self.received: Counter[str] = Counter()
        self.handles: dict[str, str] = {}
        self.deleted: list[str] = []
        self.visibility_changes = 0
        self.calls: Counter[str] = Counter()
        self.receiving = 0
        self.receiving_peak = 0
        self.waits: list[int] = []  # each receive's WaitTimeSeconds
        self.cancelled: Counter[str] = Counter()  # calls cancelled before AWS answered
        self.handed_back = 0  # receipt handles given visibility 0
        self.before_receive: Callable[[], None] | None = None  # runs once, as a receive starts

    async def __call__(self, fn: Callable[..., Any], **kwargs: Any) -> Any:
        name = getattr(fn, "__name__", "")
        self.calls[name] += 1
        if name == "receive_message":
            self.receiving += 1
            self.receiving_peak = max(self.receiving_peak, self.receiving)
            self.waits.append(kwargs["WaitTimeSeconds"])
            hook, self.before_receive = self.before_receive, None
            if hook is not None:
                hook()
        try:
            reply = await fn(**kwargs)
        except asyncio.CancelledError:
            self.cancelled[name] += 1
            raise
        finally:
            if name == "receive_message":
                self.receiving -= 1
        if name == "receive_message":
            for m in reply.get("Messages") or []:
                self.received[m["MessageId"]] += 1
                self.handles[m["ReceiptHandle"]] = m["MessageId"]
        elif name == "delete_message_batch":
            failed = {f["Id"] for f in reply.get("Failed") or []}
            self.deleted += [
                self.handles[e["ReceiptHandle"]] for e in kwargs["Entries"] if e["Id"] not in failed
            ]
        elif (
            name == "change_message_visibility_batch" and kwargs["Entries"][0]["VisibilityTimeout"]
        ):
            self.visibility_changes += 1
        elif name == "change_message_visibility_batch":
            self.handed_back += len(kwargs["Entries"])
        return reply


def plan_with(routes: list[Route]) -> Plan:
    return Plan(generated_at="now", server=ServerInfo(reachable=True), routes=routes)


def sqs_route(aws: AwsEndpoint, name: str, stream: str, subject: str, fifo: bool = False) -> Route:
    arn = f"arn:aws:sqs:{aws.region}:123456789012:{name}"
    return Route(
        name=f"sqs:{name}",
        kind="sqs-to-nats",
        source_arn=arn,
        aws_arn=arn,
        stream=stream,
        subject=subject,
        fifo=fifo,
    )


async def add_stream(url: str, name: str, subjects: list[str], replicas: int = 1) -> None:
    nc = await connect_nats(NatsOptions(servers=url.split(",")))
    try:
        await nc.jetstream().add_stream(
            name=name, subjects=subjects, num_replicas=replicas, duplicate_window=300.0
        )
    finally:
        await nc.close()


def send(aws: AwsEndpoint, url: str, n: int, **extra: Any) -> list[str]:
    sqs = aws.client("sqs")
    ids: list[str] = []
    for start in range(0, n, 10):
        entries = [
            {"Id": str(i), "MessageBody": f"order-{start + i}", **extra}
            for i in range(min(10, n - start))
        ]
        reply = sqs.send_message_batch(QueueUrl=url, Entries=entries)
        assert not reply.get("Failed")
        ids += [s["MessageId"] for s in reply["Successful"]]
    return ids


async def stream_ids(url: str, stream: str) -> list[str]:
    """The AWS message id of every message in the stream, duplicates included."""
    nc = await connect_nats(NatsOptions(servers=url.split(",")))
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        out: list[str] = []
        if not info.state.messages:
            return out  # an empty stream's first and last sequences say 0: no message 0 to get
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(stream, seq)
            out.append(msg.headers[AWS_MESSAGE_ID_HEADER])
        return out
    finally:
        await nc.close()


def queue_depth(aws: AwsEndpoint, url: str) -> tuple[int, int]:
    attrs = aws.client("sqs").get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]), int(
        attrs["ApproximateNumberOfMessagesNotVisible"]
    )


class InProcess:
    """A bridge running in this event loop, with a recorder on its AWS calls."""

    def __init__(self, aws: AwsEndpoint, url: str, routes: list[Route], **settings: Any) -> None:
        self.aws, self.url, self.routes, self.settings = aws, url, routes, settings
        self.recorder = Recorder()
        self.plan_routes: list[Route] = routes  # the plan may hold routes this run does not
        self.task: asyncio.Task[None] | None = None
        self.ctx: BridgeContext | None = None
        self.nc: Any = None
        self.clients = contextlib.AsyncExitStack()
        self.drain_timeout = 20.0

    async def __aenter__(self) -> InProcess:
        pollers = int(self.settings.get("pollers", 2))
        aio = await self.clients.enter_async_context(
            self.aws.async_clients(aws_connections(len(self.routes), pollers))
        )
        self.nc = await connect_nats(
            NatsOptions(servers=self.url.split(",")),
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
        )
        settings = {"pollers": 2, "wait_time_seconds": 1, "visibility_timeout": 10}
        settings.update(self.settings)
        self.ctx = BridgeContext(
            plan=plan_with(self.plan_routes),
            nc=self.nc,
            sqs=aio.sqs,
            sns=aio.sns,
            aws_call=self.recorder,
            **settings,
        )
        self.task = asyncio.create_task(
            run_bridge(
                self.ctx,
                self.routes,
                RUNNERS,
                handle_signals=False,
                drain_timeout=self.drain_timeout,
            )
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.ctx is not None and self.task is not None
        self.ctx.stopping.set()
        await asyncio.wait_for(self.task, 30)
        await self.nc.close()
        await self.clients.aclose()

    def delivered(self) -> int:
        assert self.ctx is not None
        return self.ctx.total_delivered()


async def assert_exactly_once(url: str, stream: str, sent: list[str], deleted: list[str]) -> None:
    ids = await stream_ids(url, stream)
    counts = Counter(ids)
    assert set(counts) == set(sent), f"missing {len(set(sent) - set(counts))}"
    assert max(counts.values()) == 1, f"duplicates: {[i for i, c in counts.items() if c > 1][:5]}"
    assert set(deleted) <= set(ids), "deleted from SQS but not in the stream"


# --- delivery rules --------------------------------------------------------------------------


async def test_attributes_become_headers_with_their_types(
    aws: AwsEndpoint, nats_server: NatsServer
) -> None:
    url = aws.client("sqs").create_queue(QueueName="orders")["QueueUrl"]
    await add_stream(nats_server.url, "sqs_orders", ["sqs.orders"])
    route = sqs_route(aws, "orders", "sqs_orders", "sqs.orders")
    attributes = {
        "kind": {"DataType": "String", "StringValue": "order_placed"},
        "amount": {"DataType": "Number", "StringValue": "12.5"},
        "count": {"DataType": "Number.int", "StringValue": "7"},
        "blob": {"DataType": "Binary", "BinaryValue": b"\x00\xff"},
        "note": {"DataType": "String", "StringValue": "two\nlines"},
    }
    sent = send(aws, url, 20, MessageAttributes=attributes)
    async with InProcess(aws, nats_server.url, [route]) as bridge:
        await until(lambda: bridge.delivered() >= 20, what="20 relayed")
        await until(lambda: queue_depth(aws, url) == (0, 0), what="queue empty")
    await assert_exactly_once(nats_server.url, "sqs_orders", sent, bridge.recorder.deleted)
    nc = await connect_nats(NatsOptions(servers=[nats_server.url]))
    msg = await nc.jetstream().get_msg("sqs_orders", 1)
    await nc.close()
    attrs = headers_to_attributes(msg.headers)
    assert {n: (a.data_type, a.value) for n, a in attrs.items()} == {
        "kind": ("String", "order_placed"),
        "amount": ("Number", "12.5"),
        "count": ("Number.int", "7"),
        "blob": ("Binary", b"\x00\xff"),
        "note": ("String", "two\nlines"),
    }
    assert msg.headers["kind"] == "order_placed"
    assert msg.headers["Snsq2nats-Route"] == "sqs:orders"


async def test_fifo_group_and_dedup_ids(aws: AwsEndpoint, nats_server: NatsServer) -> None:
    sqs = aws.client("sqs")
    url = sqs.create_queue(QueueName="jobs.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    await add_stream(nats_server.url, "sqsfifo_jobs", ["sqsfifo.jobs.*"])
    route = sqs_route(aws, "jobs.fifo", "sqsfifo_jobs", "sqsfifo.jobs", fifo=True)
    for i in range(6):
        sqs.send_message(
            QueueUrl=url,
            MessageBody=f"job-{i}",
            MessageGroupId=f"g{i % 2}",
            MessageDeduplicationId=f"d-{i}",
        )
    async with InProcess(aws, nats_server.url, [route]) as bridge:
        await until(lambda: bridge.delivered() >= 6, what="6 relayed")
    nc = await connect_nats(NatsOptions(servers=[nats_server.url]))
    js = nc.jetstream()
    msgs = [await js.get_msg("sqsfifo_jobs", s) for s in range(1, 7)]
    await nc.close()
    by_group: dict[str, list[str]] = {}
    for m in msgs:
        assert m.subject == f"sqsfifo.jobs.{m.headers['Snsq2nats-Group-Id']}"
        assert m.headers["Nats-Msg-Id"] == m.headers["Snsq2nats-Deduplication-Id"]
        by_group.setdefault(m.headers["Snsq2nats-Group-Id"], []).append(m.data.decode())
    # Order within each group survives.
    assert by_group == {"g0": ["job-0", "job-2", "job-4"], "g1": ["job-1", "job-3", "job-5"]}


async def test_fifo_order_survives_batch_after_batch(
    aws: AwsEndpoint, nats_server: NatsServer
) -> None:
    """One FIFO group over three receive batches with one poller: the stream holds the group in
    send order (nothing awaited between a batch's publishes may reorder them)."""
    sqs = aws.client("sqs")
    url = sqs.create_queue(QueueName="jobs.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    await add_stream(nats_server.url, "sqsfifo_jobs", ["sqsfifo.jobs.*"])
    route = sqs_route(aws, "jobs.fifo", "sqsfifo_jobs", "sqsfifo.jobs", fifo=True)
    for start in range(0, 30, 10):
        reply = sqs.send_message_batch(
            QueueUrl=url,
            Entries=[
                {
                    "Id": str(i),
                    "MessageBody": f"job-{start + i}",
                    "MessageGroupId": "g",
                    "MessageDeduplicationId": f"d-{start + i}",
                }
                for i in range(10)
            ],
        )
        assert not reply.get("Failed")
    async with InProcess(aws, nats_server.url, [route], pollers=1) as bridge:
        await until(lambda: bridge.delivered() >= 30, what="30 relayed")
    msgs = await stream_messages(nats_server.url, "sqsfifo_jobs")
    assert [m.data.decode() for m in msgs] == [f"job-{i}" for i in range(30)]


def origin(value: str) -> dict[str, Any]:
    return {"snsq2nats.origin": {"DataType": "String", "StringValue": value}}


def send_one(aws: AwsEndpoint, url: str, body: str, **extra: Any) -> str:
    return str(aws.client("sqs").send_message(QueueUrl=url, MessageBody=body, **extra)["MessageId"])


async def stream_messages(url: str, stream: str) -> list[Any]:
    nc = await connect_nats(NatsOptions(servers=url.split(",")))
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        return [
            await js.get_msg(stream, seq)
            for seq in range(info.state.first_seq, info.state.last_seq + 1)
        ]
    finally:
        await nc.close()


async def test_every_copy_in_a_queue_is_relayed_under_its_topic_id(
    aws: AwsEndpoint, nats_server: NatsServer
) -> None:
    """What SQS holds for a queue is that queue's one copy (see plan.routes): SNS copies of NATS
    topic messages are relayed under `<stream>:<seq>` whatever their sequence, like a queue
    message NATS handed SQS (plain `nats`) and AWS-published ones; nothing is dropped."""
    url = aws.client("sqs").create_queue(QueueName="billing")["QueueUrl"]
    await add_stream(nats_server.url, "sqs_billing", ["sqs.billing"])
    copies = {
        seq: send_one(aws, url, f"topic-{seq}", MessageAttributes=origin(f"nats:sns_orders:{seq}"))
        for seq in range(1, 7)
    }
    other = send_one(aws, url, "other-2", MessageAttributes=origin("nats:sns_other:2"))
    own = [send_one(aws, url, f"own-{i}", MessageAttributes=origin("nats")) for i in range(3)]
    plain = send(aws, url, 3)
    route = sqs_route(aws, "billing", "sqs_billing", "sqs.billing")
    async with InProcess(aws, nats_server.url, [route]) as bridge:
        await until(lambda: queue_depth(aws, url) == (0, 0), what="queue empty")
    assert set(bridge.recorder.deleted) == {*copies.values(), other, *own, *plain}
    assert bridge.ctx is not None and bridge.ctx.metrics["sqs:billing"].skipped == 0

    msgs = await stream_messages(nats_server.url, "sqs_billing")
    bodies = Counter(m.data.decode() for m in msgs)
    assert bodies == Counter(
        [*(f"topic-{s}" for s in range(1, 7)), "other-2", *(f"own-{i}" for i in range(3))]
        + [f"order-{i}" for i in range(3)]
    )
    relayed = {m.data.decode(): m.headers for m in msgs}
    for seq in range(1, 7):
        assert relayed[f"topic-{seq}"]["Nats-Msg-Id"] == f"sns_orders:{seq}"
        assert relayed[f"topic-{seq}"][AWS_MESSAGE_ID_HEADER] == copies[seq]
    assert relayed["other-2"]["Nats-Msg-Id"] == "sns_other:2"
    assert {relayed[f"own-{i}"]["Nats-Msg-Id"] for i in range(3)} == set(own)
    assert all("snsq2nats.origin" not in h for h in relayed.values())


async def test_relayed_topic_copy_deduplicates_with_the_filter_routers_copy(
    aws: AwsEndpoint, nats_server: NatsServer
) -> None:
    """An emulated filter policy has no stream source: the router publishes matches with
    `Nats-Msg-Id` = `<topic stream>:<seq>`, and SNS's copy of the same message, relayed, carries
    the same id, so the queue stream keeps one."""
    url = aws.client("sqs").create_queue(QueueName="fraud")["QueueUrl"]
    await add_stream(nats_server.url, "sqs_fraud", ["sqs.fraud"])
    nc = await connect_nats(NatsOptions(servers=[nats_server.url]))
    try:
        for seq in (7, 8):  # the router's copies (it started at 7: deliver policy "new")
            await nc.jetstream().publish(
                "sqs.fraud", f"big-{seq}".encode(), headers={"Nats-Msg-Id": f"sns_orders:{seq}"}
            )
    finally:
        await nc.close()
    for seq in (5, 7, 8):  # 5 went to SQS before the queue's consumers moved to NATS
        send_one(aws, url, f"big-{seq}", MessageAttributes=origin(f"nats:sns_orders:{seq}"))
    route = sqs_route(aws, "fraud", "sqs_fraud", "sqs.fraud")
    async with InProcess(aws, nats_server.url, [route]) as bridge:
        await until(lambda: queue_depth(aws, url) == (0, 0), what="queue empty")
    assert len(bridge.recorder.deleted) == 3
    msgs = await stream_messages(nats_server.url, "sqs_fraud")
    assert sorted(m.data.decode() for m in msgs) == ["big-5", "big-7", "big-8"]


async def test_sns_topic_through_the_bridge_owned_queue(
    aws: AwsEndpoint, nats_server: NatsServer
) -> None:
    sns, sqs = aws.client("sns"), aws.client("sqs")
    topic_arn = sns.create_topic(Name="orders")["TopicArn"]
    await add_stream(nats_server.url, "sns_orders", ["sns.orders.*", "aws.sns.orders.*"])
    route = Route(
        name="sns:orders",
        kind="sns-to-nats",
        source_arn=topic_arn,
        aws_arn=topic_arn,
        stream="sns_orders",
        subject="aws.sns.orders",
        subject_tokens=["event_type"],
        relay_subjects=["aws.sns.orders.*"],
        bridge_queue="snsq2nats-bridge-orders",
    )
    async with InProcess(aws, nats_server.url, [route]) as bridge:
        await until(
            lambda: sns.list_subscriptions_by_topic(TopicArn=topic_arn)["Subscriptions"],
            what="bridge subscribed",
        )
        for i in range(5):
            sns.publish(
                TopicArn=topic_arn,
                Message=f"o{i}",
                MessageAttributes={
                    "event_type": {"DataType": "String", "StringValue": "placed"},
                    "amount": {"DataType": "Number", "StringValue": str(i)},
                },
            )
        await until(lambda: bridge.delivered() >= 5, what="5 relayed")
    url = sqs.get_queue_url(QueueName="snsq2nats-bridge-orders")["QueueUrl"]
    subs = sns.list_subscriptions_by_topic(TopicArn=topic_arn)["Subscriptions"]
    assert len(subs) == 1
    raw = sns.get_subscription_attributes(SubscriptionArn=subs[0]["SubscriptionArn"])
    assert raw["Attributes"]["RawMessageDelivery"] == "true"
    nc = await connect_nats(NatsOptions(servers=[nats_server.url]))
    js = nc.jetstream()
    msgs = [await js.get_msg("sns_orders", s) for s in range(1, 6)]
    await nc.close()
    assert {m.subject for m in msgs} == {"aws.sns.orders.placed"}
    assert sorted(m.data.decode() for m in msgs) == [f"o{i}" for i in range(5)]
    assert headers_to_attributes(msgs[0].headers)["amount"].data_type == "Number"

    # A restart reuses the queue and the subscription: it relays a new message through them.
    async with InProcess(aws, nats_server.url, [route]) as again:
        sns.publish(
            TopicArn=topic_arn,
            Message="after-restart",
            MessageAttributes={"event_type": {"DataType": "String", "StringValue": "placed"}},
        )
        await until(lambda: again.delivered() >= 1, what="relayed after the restart")
    assert sqs.get_queue_url(QueueName="snsq2nats-bridge-orders")["QueueUrl"] == url
    assert len(sns.list_subscriptions_by_topic(TopicArn=topic_arn)["Subscriptions"]) == 1

    # Cleanup unsubscribes, relays what is left, and deletes the queue.
    sns.publish(TopicArn=topic_arn, Message="late")
    nc = await connect_nats(NatsOptions(servers=[nats_server.url]))
    async with aws.async_clients() as aio:
        ctx = BridgeContext(
            plan=plan_with([route]), nc=nc, sqs=aio.sqs, sns=aio.sns, pollers=1, wait_time_seconds=1
        )
        assert await cleanup_sns_to_nats(ctx, route)
    info = await nc.jetstream().stream_info("sns_orders")
    await nc.close()
    assert info.state.messages == 7
    assert sns.list_subscriptions_by_topic(TopicArn=topic_arn)["Subscriptions"] == []
    names = sqs.list_queues().get("QueueUrls", [])
    assert not any("snsq2nats-bridge-orders" in u for u in names)


@pytest.mark.slow
async def test_slow_publish_extends_visibility(aws: AwsEndpoint, nats_server: NatsServer) -> None:
    """A paused nats-server (SIGSTOP) makes every publish slow for real; with a 6 s visibility
    and NATS silent for longer than that, no message may be received twice. (6 s, not less: the
    extension is due every half visibility, and a loaded 2-core machine can stall the event
    loop for a second or two.)"""
    url = aws.client("sqs").create_queue(QueueName="slow")["QueueUrl"]
    await add_stream(nats_server.url, "sqs_slow", ["sqs.slow"])
    route = sqs_route(aws, "slow", "sqs_slow", "sqs.slow")
    async with InProcess(
        aws, nats_server.url, [route], visibility_timeout=6, timings=Timings(publish_timeout=1.0)
    ) as bridge:
        assert nats_server.pid is not None
        os.kill(nats_server.pid, signal.SIGSTOP)
        try:
            sent = send(aws, url, 20)
            await until(lambda: len(bridge.recorder.received) >= 20, what="20 received")
            # Kept invisible for over a visibility timeout (one extension per half of one).
            changes = bridge.recorder.visibility_changes
            await until(
                lambda: bridge.recorder.visibility_changes >= changes + 3,
                what="visibility extended while NATS is silent",
            )
        finally:
            os.kill(nats_server.pid, signal.SIGCONT)
        await until(lambda: queue_depth(aws, url) == (0, 0), what="queue empty")
    assert bridge.recorder.visibility_changes > 0
    assert max(bridge.recorder.received.values()) == 1, "a message reappeared while publishing"
    await assert_exactly_once(nats_server.url, "sqs_slow", sent, bridge.recorder.deleted)


async def test_nats_restart_mid_stream_loses_and_duplicates_nothing(
    aws: AwsEndpoint, nats_server: NatsServer
) -> None:
    url = aws.client("sqs").create_queue(QueueName="restart")["QueueUrl"]
    await add_stream(nats_server.url, "sqs_restart", ["sqs.restart"])
    route = sqs_route(aws, "restart", "sqs_restart", "sqs.restart")
    sent = send(aws, url, N)
    quick = Timings(publish_timeout=1.0)
    async with InProcess(aws, nats_server.url, [route], timings=quick) as bridge:
        await until(lambda: bridge.delivered() >= 40, what="40 relayed")
        nats_server.stop()
        deleted_when_down = len(bridge.recorder.deleted)
        assert bridge.ctx is not None
        metrics = bridge.ctx.metrics[route.name]
        errors = metrics.errors
        # Publishes go unanswered while NATS is down (each a counted error): once several
        # have, nothing more may have been acknowledged, so nothing more deleted (beyond
        # the batches whose PubAcks were already in).
        await until(lambda: metrics.errors >= errors + 20, what="publishes failing")
        stalled = len(bridge.recorder.deleted)
        assert stalled - deleted_when_down <= 2 * 10 * 2
        nats_server.start()
        await until(lambda: queue_depth(aws, url) == (0, 0), timeout=60, what="queue empty")
    await assert_exactly_once(nats_server.url, "sqs_restart", sent, bridge.recorder.deleted)


@pytest.mark.slow
async def test_leader_loss_in_a_cluster(aws: AwsEndpoint, nats_cluster: NatsCluster) -> None:
    url = aws.client("sqs").create_queue(QueueName="ha")["QueueUrl"]
    await add_stream(nats_cluster.url, "sqs_ha", ["sqs.ha"], replicas=3)
    route = sqs_route(aws, "ha", "sqs_ha", "sqs.ha")
    sent = send(aws, url, N)
    async with InProcess(
        aws, nats_cluster.url, [route], timings=Timings(publish_timeout=2.0)
    ) as bridge:
        await until(lambda: bridge.delivered() >= 40, what="40 relayed")
        info = await bridge.nc.jetstream().stream_info("sqs_ha")
        leader = info.cluster.leader
        index = next(i for i, node in enumerate(nats_cluster) if node.name == leader)
        nats_cluster.kill_node(index)
        await until(lambda: queue_depth(aws, url) == (0, 0), timeout=90, what="queue empty")
    nats_cluster.start_node(index)
    await assert_exactly_once(nats_cluster.url, "sqs_ha", sent, bridge.recorder.deleted)


# --- real bridge processes ---------------------------------------------------------------------


def start_bridge(bridges: Bridges, plan: Path, url: str, *extra: str) -> Bridge:
    return bridges.start(
        *("--plan", plan, "-s", url, "--pollers", "2", "--poll-wait", "1"),
        *("--visibility-timeout", "3", *extra),
    )


async def add_fleet_bucket(url: str) -> None:
    """What `apply` creates for every plan with routes: the bridge fleet's KV bucket."""
    nc = await connect_nats(NatsOptions(servers=url.split(",")))
    try:
        await create_stream(nc, fleet_bucket_spec(), pedantic=False)
    finally:
        await nc.close()


async def stream_count(url: str, stream: str) -> int:
    nc = await connect_nats(NatsOptions(servers=[url]))
    try:
        return int((await nc.jetstream().stream_info(stream)).state.messages)
    finally:
        await nc.close()


async def process_setup(
    aws: AwsEndpoint, server: NatsServer, tmp_path: Path, name: str
) -> tuple[str, Path, list[str]]:
    url = aws.client("sqs").create_queue(QueueName=name)["QueueUrl"]
    await add_stream(server.url, f"sqs_{name}", [f"sqs.{name}"])
    await add_fleet_bucket(server.url)
    plan = tmp_path / "plan.json"
    plan.write_bytes(document_json(plan_with([sqs_route(aws, name, f"sqs_{name}", f"sqs.{name}")])))
    return url, plan, send(aws, url, N)


@pytest.mark.slow
async def test_kill_9_then_restart_gives_each_message_once(
    aws: AwsEndpoint, nats_server: NatsServer, tmp_path: Path, bridges: Bridges
) -> None:
    url, plan, sent = await process_setup(aws, nats_server, tmp_path, "killed")
    proc = start_bridge(bridges, plan, nats_server.url)
    await until(
        lambda: stream_count(nats_server.url, "sqs_killed"), timeout=30, what="first messages"
    )
    await until(
        lambda: _at_least(stream_count(nats_server.url, "sqs_killed"), 60), what="60 in stream"
    )
    proc.kill()
    # Killed mid-stream: work was left in SQS, some of it received and not deleted.
    visible, invisible = queue_depth(aws, url)
    assert visible + invisible > 0
    # Published but not yet deleted: back after the 3 s visibility, republished, deduplicated.
    proc = start_bridge(bridges, plan, nats_server.url)
    await until(lambda: queue_depth(aws, url) == (0, 0), timeout=60, what="queue empty")
    proc.stop(timeout=30)
    await assert_exactly_once(nats_server.url, "sqs_killed", sent, [])


@pytest.mark.slow
async def test_two_bridges_on_one_route(
    aws: AwsEndpoint, nats_server: NatsServer, tmp_path: Path, bridges: Bridges
) -> None:
    url, plan, sent = await process_setup(aws, nats_server, tmp_path, "shared")
    procs = [start_bridge(bridges, plan, nats_server.url) for _ in range(2)]
    await until(lambda: queue_depth(aws, url) == (0, 0), timeout=60, what="queue empty")
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        proc.assert_exit(0, timeout=30)
    # Two fleet members, one route: one holds its lease at a time (two starting together may
    # hand it over once); tests/test_fleet*.py cover sharing many routes and the takeovers.
    shares = [_relayed(proc) for proc in procs]
    assert sum(shares) >= N, (shares, bridges.tails())
    await assert_exactly_once(nats_server.url, "sqs_shared", sent, [])


@pytest.mark.slow
async def test_sigterm_drains_in_flight_messages(
    aws: AwsEndpoint, nats_server: NatsServer, tmp_path: Path, bridges: Bridges
) -> None:
    url, plan, sent = await process_setup(aws, nats_server, tmp_path, "drained")
    proc = start_bridge(bridges, plan, nats_server.url, "--max-in-flight", "20")
    await until(
        lambda: _at_least(stream_count(nats_server.url, "sqs_drained"), 30), what="30 in stream"
    )
    proc.send_signal(signal.SIGTERM)
    proc.assert_exit(0, timeout=30)
    # What the bridge had received when told to stop was relayed and deleted, none left in
    # flight (nor handed back: tests/test_bridge_stop.py proves that with receive counts).
    visible, invisible = queue_depth(aws, url)
    assert invisible == 0
    assert visible > 0, "stopped too late to test a drain"
    in_stream = await stream_count(nats_server.url, "sqs_drained")
    assert in_stream + visible == N
    proc = start_bridge(bridges, plan, nats_server.url)
    await until(lambda: queue_depth(aws, url) == (0, 0), timeout=60, what="queue empty")
    proc.stop(timeout=30)
    await assert_exactly_once(nats_server.url, "sqs_drained", sent, [])


def _relayed(proc: Bridge) -> int:
    text = proc.text()
    counts = re.findall(r"route=\S+ kind=sqs-to-nats status=\S+ messages=(\d+)", text)
    return int(counts[-1]) if counts else 0


async def _at_least(count: Any, n: int) -> bool:
    return int(await count) >= n


# --- stopping: never a receive lost, never a long wait ----------------------------------------


def redrive_queue(aws: AwsEndpoint, name: str) -> str:
    sqs = aws.client("sqs")
    dead = sqs.create_queue(QueueName=f"{name}-dead")["QueueUrl"]
    dead_arn = sqs.get_queue_attributes(QueueUrl=dead, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    policy = json.dumps({"deadLetterTargetArn": dead_arn, "maxReceiveCount": "2"})
    return str(sqs.create_queue(QueueName=name, Attributes={"RedrivePolicy": policy})["QueueUrl"])


async def test_a_stop_cancels_an_idle_long_poll(aws: AwsEndpoint, nats_server: NatsServer) -> None:
    """An idle queue without a DLQ: the stop does not wait out the 20 s long poll, it cancels
    it (the drain may take longer than the poll: only the bridge cancels it)."""
    aws.client("sqs").create_queue(QueueName="idle")
    await add_stream(nats_server.url, "sqs_idle", ["sqs.idle"])
    route = sqs_route(aws, "idle", "sqs_idle", "sqs.idle")
    bridge = InProcess(aws, nats_server.url, [route], wait_time_seconds=20)
    bridge.drain_timeout = 60.0
    async with bridge:
        recorder = bridge.recorder
        await until(lambda: recorder.receiving == 1, what="the long poll out")
        polls = recorder.calls["receive_message"]
    assert recorder.waits[-1] == 20
    assert recorder.cancelled["receive_message"] == 1
    assert recorder.calls["receive_message"] == polls  # none sent after the stop


async def test_a_redrive_queue_is_polled_briefly_and_never_cut(
    aws: AwsEndpoint, nats_server: NatsServer
) -> None:
    """A queue with a DLQ: a cancelled long poll would still take messages in SQS, counting a
    receive toward the DLQ, so its polls are REDRIVE_POLL_WAIT long and a stop waits for them."""
    redrive_queue(aws, "careful")
    await add_stream(nats_server.url, "sqs_careful", ["sqs.careful"])
    route = sqs_route(aws, "careful", "sqs_careful", "sqs.careful")
    async with InProcess(aws, nats_server.url, [route], wait_time_seconds=20) as bridge:
        recorder = bridge.recorder
        await until(lambda: recorder.calls["receive_message"] >= 2, what="polls going on")
        await until(lambda: recorder.receiving == 1, what="a poll out")
    assert set(recorder.waits) == {REDRIVE_POLL_WAIT}
    assert recorder.cancelled["receive_message"] == 0


async def test_a_poll_returning_during_a_stop_is_relayed_not_handed_back(
    aws: AwsEndpoint, nats_server: NatsServer
) -> None:
    """The stop comes while a poll is out and messages arrive for it: they are published and
    deleted, not handed back to SQS (a receive counted toward the DLQ for nothing)."""
    url = redrive_queue(aws, "late")
    await add_stream(nats_server.url, "sqs_late", ["sqs.late"])
    route = sqs_route(aws, "late", "sqs_late", "sqs.late")
    sent: list[str] = []
    async with InProcess(aws, nats_server.url, [route]) as bridge:
        recorder = bridge.recorder
        await until(lambda: recorder.calls["receive_message"] >= 1, what="polling")
        ctx = bridge.ctx
        assert ctx is not None

        def stop_then_send() -> None:
            ctx.stopping.set()
            sent.extend(send(aws, url, 3))

        recorder.before_receive = stop_then_send
        await until(lambda: sent, what="the stop, with messages on their way")
    assert len(recorder.received) == 3
    assert recorder.handed_back == 0
    assert queue_depth(aws, url) == (0, 0)
    await assert_exactly_once(nats_server.url, "sqs_late", sent, recorder.deleted)


# --- runtime, metrics and view (no servers) ------------------------------------------------------


def fake_route(name: str, kind: str = "sqs-to-nats") -> Route:
    return Route(name=name, kind=kind, source_arn="arn:a", aws_arn="arn:a")  # type: ignore[arg-type]


async def test_runtime_restarts_a_crashing_runner_and_keeps_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from snsq2nats.bridge import runtime

    caplog.set_level(logging.INFO, logger="snsq2nats")
    calls = Counter[str]()

    async def flaky(ctx: BridgeContext, route: Route) -> None:
        calls[route.name] += 1
        if calls[route.name] < 3:
            raise RuntimeError("boom")
        ctx.route_metrics(route).delivered(1, 10, 0.002)
        await ctx.stopping.wait()

    async def steady(ctx: BridgeContext, route: Route) -> None:
        ctx.route_metrics(route).delivered(5, 50, 0.3)
        await ctx.stopping.wait()

    quick_restarts = Timings(restart_base=0.05)
    ctx = BridgeContext(plan=plan_with([]), nc=None, sqs=None, sns=None, timings=quick_restarts)
    routes = [fake_route("a"), fake_route("b", "nats-to-sqs"), fake_route("c", "dlq-mover")]
    run = asyncio.create_task(
        runtime.run_bridge(
            ctx, routes, {"sqs-to-nats": flaky, "nats-to-sqs": steady}, handle_signals=False
        )
    )
    a, b = (ctx.route_metrics(route) for route in routes[:2])
    await until(lambda: a.messages == 1, what="a running after two crashes")
    await until(lambda: b.messages == 5, what="b running")
    ctx.stopping.set()
    await asyncio.wait_for(run, 10)
    assert calls["a"] == 3
    assert ctx.metrics["a"].restarts == 2 and ctx.metrics["a"].status == "stopped"
    assert ctx.metrics["c"].status == "not available: no runner for dlq-mover"
    assert any("runner failed (RuntimeError: boom)" in line for line in caplog.messages)

    from prometheus_client.parser import text_string_to_metric_families

    from snsq2nats.bridge.metrics import render, serve_metrics

    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(render(ctx.metrics.values()))
        for s in family.samples
    }
    b = (("kind", "nats-to-sqs"), ("route", "b"))
    assert samples[("snsq2nats_bridge_messages_total", b)] == 5
    assert (
        samples[("snsq2nats_bridge_latency_seconds_bucket", tuple(sorted((*b, ("le", "0.5")))))]
        == 5
    )
    assert (
        samples[("snsq2nats_bridge_restarts_total", (("kind", "sqs-to-nats"), ("route", "a")))] == 2
    )
    assert any(name == "process_cpu_seconds_total" for name, _ in samples)  # process metrics too
    server = await serve_metrics(ctx, 0, host="127.0.0.1")
    port = server.sockets[0].getsockname()[1]

    async def get(path: str) -> str:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        reply = (await reader.read()).decode()
        writer.close()
        return reply

    reply = await get("/metrics")
    assert reply.startswith("HTTP/1.1 200 OK") and "snsq2nats_bridge_in_flight" in reply
    assert (await get("/healthz")).startswith("HTTP/1.1 200 OK")
    # No NATS connection in this context and the routes stopped: not ready, saying why.
    not_ready = await get("/readyz")
    assert not_ready.startswith("HTTP/1.1 503") and "not connected to NATS" in not_ready
    server.close()


def test_every_route_kind_has_a_runner() -> None:
    """Runners are imported with the runtime: one that cannot be imported fails the bridge at
    start instead of leaving its routes out."""
    from typing import get_args

    from snsq2nats.plan.model import RouteKind

    assert set(RUNNERS) == set(get_args(RouteKind))
    assert all(asyncio.iscoroutinefunction(runner) for runner in RUNNERS.values())


async def test_duration_stops_the_run() -> None:
    ctx = BridgeContext(plan=plan_with([]), nc=None, sqs=None, sns=None)

    async def idle(ctx: BridgeContext, route: Route) -> None:
        await ctx.stopping.wait()

    await asyncio.wait_for(
        run_bridge(ctx, [fake_route("a")], {"sqs-to-nats": idle}, 0.1, handle_signals=False), 30
    )
    assert ctx.stopping.is_set() and ctx.metrics["a"].status == "stopped"


class Unreachable:
    """A NATS client that lost its server."""

    is_connected = False


@pytest.mark.parametrize("nats", ["up", "lost"])
async def test_a_drain_that_cannot_finish_is_cut_short_saying_what_was_left(nats: str) -> None:
    """A route holding messages it cannot settle: the drain is cut (after the drain timeout,
    or the NATS grace once NATS is gone), and the error names what each route held."""
    from snsq2nats.bridge.runtime import DrainIncomplete

    ctx = BridgeContext(
        plan=plan_with([]), nc=Unreachable() if nats == "lost" else None, sqs=None, sns=None
    )  # type: ignore[arg-type]

    async def stuck(ctx: BridgeContext, route: Route) -> None:
        ctx.route_metrics(route).in_flight = 3
        await asyncio.Event().wait()  # never settles, stopping or not

    async def idle(ctx: BridgeContext, route: Route) -> None:
        await ctx.stopping.wait()

    runners = {"sqs-to-nats": stuck, "nats-to-sqs": idle}
    routes = [fake_route("held"), fake_route("free", "nats-to-sqs")]
    bounds = (
        {"drain_timeout": 3600.0, "nats_grace": 0.1} if nats == "lost" else {"drain_timeout": 0.1}
    )
    with pytest.raises(DrainIncomplete) as caught:
        await asyncio.wait_for(
            run_bridge(ctx, routes, runners, 0.1, handle_signals=False, **bounds),  # type: ignore[arg-type]
            30,
        )
    assert caught.value.left == {"held": 3}
    assert ("NATS unreachable" in caught.value.what) == (nats == "lost")


def test_route_selection_by_direction_and_glob() -> None:
    from snsq2nats.bridge.runtime import select_routes

    routes = [
        fake_route("sqs:a"),
        fake_route("to-sqs:a", "nats-to-sqs"),
        fake_route("dlq:a", "dlq-mover"),
    ]
    names = lambda rs: [r.name for r in rs]  # noqa: E731
    assert names(select_routes(routes, "aws-to-nats")) == ["sqs:a", "dlq:a"]
    assert names(select_routes(routes, "nats-to-aws")) == ["to-sqs:a", "dlq:a"]
    assert names(select_routes(routes, "both", ("*sqs:*",))) == ["sqs:a", "to-sqs:a"]


def test_plain_view_lines() -> None:
    from snsq2nats.report.live import line

    ctx = BridgeContext(plan=plan_with([]), nc=None, sqs=None, sns=None)
    metrics = ctx.route_metrics(fake_route("sqs:a"))
    metrics.delivered(3, 30)
    metrics.lag = 7
    assert line(metrics, 1.5) == (
        "route=sqs:a kind=sqs-to-nats status=starting messages=3 rate=1.5/s in_flight=0 "
        "errors=0 skipped=0 undeliverable=0 lag=7"
    )
    metrics.skip("no-match")
    metrics.undeliverable("not-a-number")
    assert line(metrics, 1.5).endswith(
        "skipped=1 skipped_by=no-match:1 undeliverable=1 undeliverable_by=not-a-number:1 lag=7"
    )


def test_plain_view_prints_a_summary_and_only_routes_with_news() -> None:
    from snsq2nats.report.live import PlainView

    ctx = BridgeContext(plan=plan_with([]), nc=None, sqs=None, sns=None)
    idle = [ctx.route_metrics(fake_route(f"sqs:idle{i}")) for i in range(3)]
    for m in idle:
        m.status = "running"
        m.lag = 0
    busy = ctx.route_metrics(fake_route("sqs:busy"))
    view = PlainView()
    first = view.lines(ctx)
    # A route never shown that is starting has news; idle running routes have none.
    assert first[0].startswith("routes=4 running=3 active=1 messages=0 ")
    assert [t.split()[0] for t in first[1:]] == ["route=sqs:busy"]
    busy.status = "running"
    busy.delivered(5, 50)
    second = view.lines(ctx)
    assert "messages=5 " in second[0]
    assert len(second) == 2 and "route=sqs:busy" in second[1] and "messages=5 " in second[1]
    quiet = view.lines(ctx)
    assert len(quiet) == 1 and quiet[0].startswith("routes=4 running=4 active=0 messages=5 ")
    idle[1].error()
    assert [t.split()[0] for t in view.lines(ctx)[1:]] == ["route=sqs:idle1"]


def test_grafana_dashboard_queries_only_metrics_the_bridge_exports() -> None:
    """The dashboard shipped with the bridge: every metric a panel or variable queries is one
    the bridge's /metrics serves (route metrics, process and python collectors)."""
    import json
    import re
    from importlib import resources

    from prometheus_client.parser import text_string_to_metric_families

    from snsq2nats.bridge.context import RouteMetrics
    from snsq2nats.bridge.metrics import render

    sample = RouteMetrics(route="r", kind="sqs-to-nats", lag=3)
    sample.delivered(1, 10, 0.01)
    exported = {s.name for f in text_string_to_metric_families(render([sample])) for s in f.samples}
    text = resources.files("snsq2nats.bridge").joinpath("grafana_dashboard.json").read_text()
    dashboard = json.loads(text)
    queries = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    queries += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    promql = {"sum", "by", "rate", "increase", "histogram_quantile", "count", "max", "label_values"}
    used = set()
    for query in queries:
        without_strings = re.sub(r'"[^"]*"', "", query)
        for name in re.findall(r"\b([a-z_][a-z0-9_]*)\s*(?=[{\[(),]|$)", without_strings):
            if name not in promql and name not in {"le", "route", "job", "instance"}:
                used.add(name)
    assert used, "the dashboard queries nothing"
    assert used <= exported, f"not exported: {sorted(used - exported)}"
    assert {"snsq2nats_bridge_lag", "snsq2nats_bridge_latency_seconds_bucket"} <= used


@pytest.mark.slow
async def test_an_idle_queue_holds_one_long_poll_and_a_busy_one_scales_up(
    aws: AwsEndpoint, nats_server: NatsServer
) -> None:
    """AWS request cost per idle route is one long poll at a time (180 an hour at 20 s) and no
    backlog reads; a backlog adds pollers, up to --pollers, and still relays exactly once."""
    url = aws.client("sqs").create_queue(QueueName="adaptive")["QueueUrl"]
    await add_stream(nats_server.url, "sqs_adaptive", ["sqs.adaptive"])
    route = sqs_route(aws, "adaptive", "sqs_adaptive", "sqs.adaptive")
    quick_lag = Timings(lag_interval=0.1)
    async with InProcess(aws, nats_server.url, [route], pollers=4, timings=quick_lag) as bridge:
        calls = bridge.recorder.calls
        await until(lambda: calls["receive_message"] >= 4, what="several idle long polls")
        assert bridge.recorder.receiving_peak == 1
        # One read, of the redrive policy at start: the empty polls said the backlog is 0.
        assert calls["get_queue_attributes"] == 1
        sent = send(aws, url, 150)

        async def all_in_stream() -> bool:
            # Not the delivered count: a message moto hands two concurrent pollers is relayed
            # twice (the stream keeps one), and the count would be reached early.
            return set(await stream_ids(nats_server.url, "sqs_adaptive")) == set(sent)

        await until(all_in_stream, what="the backlog relayed")
        assert 2 <= bridge.recorder.receiving_peak <= 4
        assert calls["get_queue_attributes"] > 1  # busy: the backlog is read for the metrics
    await assert_exactly_once(nats_server.url, "sqs_adaptive", sent, bridge.recorder.deleted)


@pytest.mark.slow
async def test_many_idle_routes_hold_a_long_poll_each_and_no_thread(
    aws: AwsEndpoint, nats_server: NatsServer
) -> None:
    """300 idle queues: one long poll each, all out at once, on the event loop: the bridge's
    threads do not grow with the routes (moto answers each poll on a thread of its own, so
    those are left out of the count), and a message sent to any one of them is relayed."""
    sqs = aws.client("sqs")
    urls = [sqs.create_queue(QueueName=f"many{n}")["QueueUrl"] for n in range(300)]
    await add_stream(nats_server.url, "sqs_many", ["sqs.many.*"])
    routes = [sqs_route(aws, f"many{n}", "sqs_many", f"sqs.many.q{n}") for n in range(300)]
    threads = threads_besides_moto()
    async with InProcess(aws, nats_server.url, routes, pollers=4, wait_time_seconds=10) as bridge:
        recorder = bridge.recorder
        await until(lambda: recorder.receiving == 300, what="every route in its long poll")
        assert threads_besides_moto() < threads + 10, "long polls took threads"
        sent = send(aws, urls[137], 1)
        await until(lambda: bridge.delivered() == 1, what="the one message relayed")
        assert recorder.receiving_peak == 300  # one long poll a route: none scaled up
    await assert_exactly_once(nats_server.url, "sqs_many", sent, recorder.deleted)


async def test_blocking_boto3_clients_still_relay(
    aws: AwsEndpoint, nats_server: NatsServer
) -> None:
    """A context built with boto3's clients (as an embedder may still build one) works: each
    call runs on a worker thread instead of the loop."""
    url = aws.client("sqs").create_queue(QueueName="blocking")["QueueUrl"]
    await add_stream(nats_server.url, "sqs_blocking", ["sqs.blocking"])
    route = sqs_route(aws, "blocking", "sqs_blocking", "sqs.blocking")
    sent = send(aws, url, 15)
    nc = await connect_nats(NatsOptions(servers=[nats_server.url]))
    ctx = BridgeContext(
        plan=plan_with([route]),
        nc=nc,
        sqs=aws.client("sqs"),
        sns=aws.client("sns"),
        wait_time_seconds=1,
        timings=FAST,
    )
    task = asyncio.create_task(run_bridge(ctx, [route], RUNNERS, handle_signals=False))
    try:
        await until(lambda: queue_depth(aws, url) == (0, 0), what="queue empty")
    finally:
        ctx.stopping.set()
        await asyncio.wait_for(task, 30)
        await nc.close()
    assert ctx.total_delivered() >= 15
    assert Counter(await stream_ids(nats_server.url, "sqs_blocking")) == Counter(sent)
