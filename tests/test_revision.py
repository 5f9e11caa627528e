"""The applied revision: `apply` records the plan it made true in NATS, and running bridges
follow it live, so a re-plan + apply in the middle of a migration is exact for every
application (issue 18 §4).

The live test reproduces the report: a topic fanning out through SNS because one subscriber
reads the envelope, NATS producers publishing without pause, a bridge running the first plan
file; midway the envelope reader turns raw on AWS, a queue with a new subscription appears and
another subscription's filter changes; `plan` + `apply` run under the running bridge (the
fan-out moves from SNS to stream sources), then a second bridge starts with the stale plan file.
Every queue gets each message exactly once.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from snsq2nats.apply import record_applied_revision
from snsq2nats.bridge.follow import choose_plan, read_applied
from snsq2nats.cli import main
from snsq2nats.cutover import CutoverRequest, run_cutover
from snsq2nats.demo.nats_server import NatsServer
from snsq2nats.jetstream.api import create_stream
from snsq2nats.jetstream.connect import NatsOptions, connect_nats
from snsq2nats.jetstream.spec import ServerInfo
from snsq2nats.jetstream.state import read_bucket
from snsq2nats.plan.buckets import revision_bucket_spec
from snsq2nats.plan.model import Plan, Resource, Route, load_plan
from snsq2nats.plan.pipeline import publish_subject
from snsq2nats.plan.revision import (
    CHUNK_BYTES,
    REVISION_BUCKET,
    RevisionUnreadable,
    decode,
    digest_of,
    encode,
)
from tests.fixtures.aws import AwsEndpoint
from tests.fixtures.bridge import Bridge, Bridges
from tests.fixtures.wait import until

TTL = 3.0
PLACED, SHIPPED, CANCELLED = "order_placed", "order_shipped", "order_cancelled"
EVENTS = (PLACED, SHIPPED, CANCELLED)


def big_plan(queues: int) -> Plan:
    """An estate of `queues` queues with names as varied as real ones (random tokens, so the
    record does not compress to almost nothing as a run of `queue-00001`… would)."""
    rng = random.Random(queues)
    routes = []
    resources = []
    for n in range(queues):
        i = f"{n:05d}-{rng.getrandbits(64):016x}"
        arn = f"arn:aws:sqs:us-east-1:123456789012:queue-{i}"
        resources.append(
            Resource(source_arn=arn, kind="sqs-queue", name=f"queue-{i}", stream=f"sqs_{i}")
        )
        routes.append(Route(name=f"sqs:queue-{i}", kind="sqs-to-nats", source_arn=arn, aws_arn=arn))
        if n % 10 == 0:
            routes.append(
                Route(name=f"to-sqs:queue-{i}", kind="nats-to-sqs", source_arn=arn, aws_arn=arn)
            )
    return Plan(
        generated_at="2026-01-01T00:00:00Z",
        server=ServerInfo(reachable=True),
        resources=resources,
        candidate_routes=routes,
    )


# --- the record, pure -----------------------------------------------------------------------------


def test_an_estate_of_ten_thousand_queues_is_recorded_in_chunks_and_read_back() -> None:
    plan = big_plan(10_000)
    assert len(plan.candidate_routes) == 11_000
    pointer, chunks = encode(plan, "2026-01-02T00:00:00Z")
    assert len(plan.model_dump_json()) > 1024 * 1024, "more than one NATS message holds"
    assert pointer.chunks == len(chunks) > 1
    assert all(len(v) <= CHUNK_BYTES for v in chunks.values())
    assert decode(pointer, chunks) == plan.model_copy(update={"changes": []})
    # A chunk gone (a newer revision replaced it) is said so, never read as a smaller plan.
    first = next(iter(chunks))
    with pytest.raises(RevisionUnreadable):
        decode(pointer, {k: v for k, v in chunks.items() if k != first})
    # The digest names the applied content: a plan file made again from the same estate is
    # the applied revision, whenever it was generated.
    assert digest_of(plan) == digest_of(plan.model_copy(update={"generated_at": "later"}))


# --- the record, on a real server -----------------------------------------------------------------


async def test_apply_records_each_revision_and_keeps_only_the_last_two(
    nats_server: NatsServer,
) -> None:
    nc = await connect_nats(NatsOptions(servers=[nats_server.url]))
    try:
        assert await read_applied(nc) is None  # no bucket: nothing recorded
        await create_stream(nc, revision_bucket_spec(), pedantic=False)
        plans = [big_plan(n) for n in (10_000, 10, 20)]
        revisions = [await record_applied_revision(nc, p) for p in plans[:1]]
        whole = await read_applied(nc)  # an estate of 10,000 queues: several chunks
        assert whole is not None and whole.pointer.chunks > 1 and whole.plan == plans[0]
        revisions += [await record_applied_revision(nc, p) for p in plans[1:]]
        assert revisions == sorted(revisions) and None not in revisions
        applied = await read_applied(nc)
        assert applied is not None and applied.revision == revisions[-1]
        assert applied.plan == plans[-1]
        chunks = await read_bucket(nc, REVISION_BUCKET, "chunk.>") or {}
        assert {k.split(".")[1] for k in chunks} == {digest_of(plans[1]), digest_of(plans[2])}
        # A stale plan file is followed by the applied revision, and said so.
        chosen = await choose_plan(nc, plans[0], "old.json")
        assert chosen.plan == plans[-1] and chosen.revision == revisions[-1]
        assert chosen.note and "old.json" in chosen.note and "not the applied" in chosen.note
        current = await choose_plan(nc, plans[-1], "new.json")
        assert current.note is None
    finally:
        await nc.close()


def test_bridge_without_a_plan_file_and_nothing_applied_says_what_to_run(
    nats_server: NatsServer,
) -> None:
    result = CliRunner().invoke(main, ["bridge", "-s", nats_server.url, "--duration", "0.1"])
    assert result.exit_code != 0
    assert "no applied revision" in result.output
    assert "snsq2nats apply PLAN_FILE" in result.output


# --- a re-plan + apply under a running bridge and continuous traffic ------------------------------


def cli(*args: str | Path) -> Any:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def queue_arn(sqs: Any, url: str) -> str:
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return str(attributes["Attributes"]["QueueArn"])


def start_bridge(bridges: Bridges, url: str, plan: Path, log: str) -> Bridge:
    return bridges.start(
        *("--plan", plan, "-s", url, "--pollers", "2", "--poll-wait", "1"),
        *("--visibility-timeout", "3", "--lease-ttl", str(TTL)),
        log=log,
    )


async def heartbeats(url: str) -> dict[int, int]:
    """Live fleet members by pid: the applied revision each runs."""
    from snsq2nats.plan.buckets import FLEET_BUCKET
    from snsq2nats.plan.fleet import MEMBERS, Heartbeat

    nc = await connect_nats(NatsOptions(servers=[url]))
    try:
        values = await read_bucket(nc, FLEET_BUCKET, MEMBERS + ">") or {}
    finally:
        await nc.close()
    out = {}
    for value in values.values():
        beat = Heartbeat.model_validate_json(value.value)
        if not beat.leaving and time.time() - value.written < TTL:
            out[beat.pid] = beat.plan_revision
    return out


class Worker:
    """An application's AWS workers: receive, note each copy, delete. A message is a copy
    (its SQS MessageId); the same copy received twice is SQS's own redelivery, not counted."""

    def __init__(self, aws: AwsEndpoint, url: str) -> None:
        self.sqs = aws.client("sqs")
        self.url = url
        self.copies: dict[str, set[str]] = defaultdict(set)
        self.lock = threading.Lock()
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
                body = m["Body"]
                if body.startswith("{"):  # the envelope, until the subscription turns raw
                    body = json.loads(body)["Message"]
                with self.lock:
                    self.copies[body].add(m["MessageId"])
            if messages:
                self.sqs.delete_message_batch(
                    QueueUrl=self.url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                        for i, m in enumerate(messages)
                    ],
                )

    def counts(self) -> dict[str, int]:
        with self.lock:
            return {label: len(ids) for label, ids in self.copies.items()}

    def halt(self) -> None:
        self.stop.set()
        self.thread.join()


class Producers:
    """NATS producers: publish on the subject the applied plan says, without pause."""

    def __init__(self, url: str, plan: Plan) -> None:
        self.url, self.plan = url, plan
        self.sent: list[tuple[str, str, float]] = []
        self.stopping = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        nc = await connect_nats(NatsOptions(servers=[self.url]))
        js = nc.jetstream()
        try:
            while not self.stopping.is_set():
                event = EVENTS[len(self.sent) % 3]
                label = f"m-{len(self.sent):05d}"
                subject = publish_subject(self.plan, "orders", [f"event_type={event}"])
                await js.publish(subject, label.encode(), headers={"event_type": event})
                self.sent.append((label, event, time.monotonic()))
                await asyncio.sleep(0.02)  # ~50 msg/s, as in the report
        finally:
            await nc.close()

    async def halt(self) -> None:
        self.stopping.set()
        await self.task


def seed(aws: AwsEndpoint) -> dict[str, str]:
    """`orders` fans out through SNS: `shipping` reads the envelope (raw delivery off)."""
    sqs, sns = aws.client("sqs"), aws.client("sns")
    topic = sns.create_topic(Name="orders")["TopicArn"]
    urls = {"topic": topic}
    for name, raw, policy in (
        ("billing", "true", {"event_type": [PLACED]}),
        ("shipping", "false", None),
    ):
        urls[name] = sqs.create_queue(QueueName=name)["QueueUrl"]
        attributes = {"RawMessageDelivery": raw}
        if policy:
            attributes["FilterPolicy"] = json.dumps(policy)
        urls[name + "-sub"] = sns.subscribe(
            TopicArn=topic,
            Protocol="sqs",
            Endpoint=queue_arn(sqs, urls[name]),
            Attributes=attributes,
            ReturnSubscriptionArn=True,
        )["SubscriptionArn"]
    return urls


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_a_replan_applied_under_a_running_bridge_is_exact_for_every_queue(
    aws: AwsEndpoint, nats_server: NatsServer, tmp_path: Path, bridges: Bridges
) -> None:
    url = nats_server.url
    urls = seed(aws)
    sqs, sns = aws.client("sqs"), aws.client("sns")
    inventory, first = tmp_path / "inventory.json", tmp_path / "plan-1.json"
    await asyncio.to_thread(cli, "scan", "-o", inventory)
    await asyncio.to_thread(cli, "plan", "--inventory", inventory, "-s", url, "-o", first)
    await asyncio.to_thread(cli, "apply", first, "-s", url, "--auto-approve")
    plan1 = load_plan(first)
    assert any(r.kind == "nats-to-sns" for r in plan1.candidate_routes), "fans out through SNS"
    nc = await connect_nats(NatsOptions(servers=[url]))
    try:
        request = CutoverRequest(side="producers", names=["orders"], to="nats", by="test")
        await run_cutover(nc, plan1, request)
    finally:
        await nc.close()
    workers = {n: Worker(aws, urls[n]) for n in ("billing", "shipping")}
    processes = [start_bridge(bridges, url, first, "bridge-1.log")]
    producers: Producers | None = None
    try:
        await until(
            lambda: _has_pids(url, {processes[0].pid}), what="the bridge to join", timeout=120
        )
        producers = Producers(url, plan1)
        await until(lambda: len(workers["shipping"].counts()) >= 40, what="traffic via SNS")

        # Midway on AWS: the envelope reader turns raw, a new queue subscribes, a filter changes.
        # What shipping already got went through SNS before the change: SNS filtered those
        # for billing with the old policy (the rest SNS filters when the relay reaches it).
        through_sns = set(workers["shipping"].counts())
        sns.set_subscription_attributes(
            SubscriptionArn=urls["shipping-sub"],
            AttributeName="RawMessageDelivery",
            AttributeValue="true",
        )
        sns.set_subscription_attributes(
            SubscriptionArn=urls["billing-sub"],
            AttributeName="FilterPolicy",
            AttributeValue=json.dumps({"event_type": [PLACED, CANCELLED]}),
        )
        urls["returns"] = sqs.create_queue(QueueName="returns")["QueueUrl"]
        before_returns = set(workers["shipping"].counts())  # through SNS before it subscribed
        sns.subscribe(
            TopicArn=urls["topic"],
            Protocol="sqs",
            Endpoint=queue_arn(sqs, urls["returns"]),
            Attributes={"RawMessageDelivery": "true"},
        )
        workers["returns"] = Worker(aws, urls["returns"])

        second = tmp_path / "plan-2.json"
        await asyncio.to_thread(cli, "scan", "-o", inventory)
        await asyncio.to_thread(cli, "plan", "--inventory", inventory, "-s", url, "-o", second)
        plan2 = load_plan(second)
        assert not any(r.kind == "nats-to-sns" for r in plan2.candidate_routes), "now sources"
        applied = await asyncio.to_thread(cli, "apply", second, "-s", url, "--auto-approve")
        assert "applied revision" in applied.output
        after_apply = len(producers.sent)
        nc = await connect_nats(NatsOptions(servers=[url]))
        try:
            revision = await read_applied(nc)
        finally:
            await nc.close()
        assert revision is not None and digest_of(revision.plan) == digest_of(plan2)
        # The running bridge follows the new revision without a restart.
        await until(
            lambda: _runs(url, processes[0].pid, revision.revision),
            what="the running bridge to follow the applied revision",
            timeout=120,
        )
        assert not processes[0].exited(), processes[0].tail()
        producers.plan = plan2  # producers publish as the applied plan says from now on

        # A bridge started with the stale plan file follows the applied revision too.
        processes.append(start_bridge(bridges, url, first, "bridge-stale.log"))
        await until(
            lambda: _runs(url, processes[1].pid, revision.revision),
            what="the stale-file bridge to run the applied revision",
            timeout=120,
        )
        assert "is not the applied revision" in processes[1].text(), processes[1].tail()

        # A third re-plan, now that the topic fans out through sources (its old relay's
        # consumer is still there: nothing was pruned): a new queue subscribes. Its source
        # starts at apply, not where the retired relay stopped.
        urls["audit"] = sqs.create_queue(QueueName="audit")["QueueUrl"]
        sns.subscribe(
            TopicArn=urls["topic"],
            Protocol="sqs",
            Endpoint=queue_arn(sqs, urls["audit"]),
            Attributes={"RawMessageDelivery": "true"},
        )
        audit_subscribed = len(producers.sent)
        workers["audit"] = Worker(aws, urls["audit"])
        third = tmp_path / "plan-3.json"
        await asyncio.to_thread(cli, "scan", "-o", inventory)
        await asyncio.to_thread(cli, "plan", "--inventory", inventory, "-s", url, "-o", third)
        await asyncio.to_thread(cli, "apply", third, "-s", url, "--auto-approve")
        after_third = len(producers.sent)
        nc = await connect_nats(NatsOptions(servers=[url]))
        try:
            latest = await read_applied(nc)
        finally:
            await nc.close()
        assert latest is not None and latest.revision > revision.revision
        for process in processes:
            await until(
                lambda pid=process.pid: _runs(url, pid, latest.revision),
                what="both bridges to follow the third revision",
                timeout=120,
            )

        mark = len(producers.sent)
        await until(lambda: len(producers.sent) >= mark + 150, what="traffic after apply")
        await producers.halt()

        sent = producers.sent
        placed = {label for label, event, _ in sent if event == PLACED}
        cancelled_late = {label for label, event, _ in sent[after_apply:] if event == CANCELLED}
        want = {
            "shipping": {label for label, _, _ in sent},
            "billing": placed | cancelled_late,
            "returns": {label for label, _, _ in sent[after_apply:]},
            "audit": {label for label, _, _ in sent[after_third:]},
        }

        def complete() -> bool:
            return all(want[n] <= set(workers[n].counts()) for n in want)

        await until(complete, what="every queue to get each of its messages", timeout=300)
        await until(
            lambda: _all_empty(sqs, [urls[n] for n in want]),
            what="every SQS queue to be empty",
            timeout=120,
        )
        await until(
            lambda: _streams_empty(url, plan2), what="every queue stream to be empty", timeout=120
        )
        for name, labels in want.items():
            counts = workers[name].counts()
            doubled = sorted(label for label, n in counts.items() if n > 1)
            lost = sorted(labels - set(counts))
            assert not doubled and not lost, (name, doubled[:5], lost[:5], len(doubled))
        # Filters hold on both sides of the switch: what billing never asked for never came;
        # a cancellation that reached SNS before its filter changed on AWS did not come, one
        # relayed later did (SNS's own timing); none came twice.
        shipped = {label for label, event, _ in sent if event == SHIPPED}
        early = {label for label, event, _ in sent if event == CANCELLED} & through_sns
        assert not shipped & set(workers["billing"].counts())
        assert not early & set(workers["billing"].counts())
        # A new subscription carries nothing that reached the topic before it existed.
        assert not before_returns & set(workers["returns"].counts())
        before = {label for label, _, _ in sent[:audit_subscribed]}
        assert not before & set(workers["audit"].counts())
        print(
            f"revision: {len(sent)} messages published on NATS; counts per queue:",
            {n: len(workers[n].counts()) for n in want},
        )
    finally:
        if producers is not None and not producers.stopping.is_set():
            await producers.halt()
        for worker in workers.values():
            worker.halt()
        bridges.stop_all(timeout=60)


async def _has_pids(url: str, pids: set[int]) -> bool:
    return pids <= set(await heartbeats(url))


async def _runs(url: str, pid: int, revision: int) -> bool:
    return (await heartbeats(url)).get(pid, 0) >= revision


def _all_empty(sqs: Any, urls: list[str]) -> bool:
    for queue in urls:
        attributes = sqs.get_queue_attributes(
            QueueUrl=queue,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        if any(int(v) for v in attributes.values()):
            return False
    return True


async def _streams_empty(url: str, plan: Plan) -> bool:
    nc = await connect_nats(NatsOptions(servers=[url]))
    try:
        js = nc.jetstream()
        for route in plan.candidate_routes:
            if route.kind == "nats-to-sqs" and route.stream and route.consumer:
                info = await js.consumer_info(route.stream, route.consumer)
                if info.num_pending or info.num_ack_pending:
                    return False
    finally:
        await nc.close()
    return True


# --- a running bridge follows each applied revision -----------------------------------------------


def router(name: str, policy: str) -> Route:
    arn = f"arn:aws:sns:us-east-1:123456789012:{name}"
    return Route(
        name=f"filter:{name}",
        kind="filter-router",
        source_arn=arn + ":sub",
        aws_arn=arn,
        filter_policy=policy,
    )


def routes_plan(*routes: Route) -> Plan:
    """Filter routers of topics whose producers are on NATS: each runs."""
    topics = [
        Resource(source_arn=r.aws_arn, kind="sns-topic", name=r.name, producers="nats")
        for r in routes
    ]
    return Plan(
        generated_at=time.strftime("%H:%M:%S"),
        server=ServerInfo(reachable=True),
        resources=topics,
        candidate_routes=list(routes),
    )


async def test_a_running_bridge_drains_removed_starts_new_and_restarts_changed_routes(
    nats_server: NatsServer,
) -> None:
    """Each revision: a route removed is drained, a new one started, a changed one (its
    filter policy) drained before it starts again with the new content, never both at once;
    the heartbeat says which revision runs."""
    from snsq2nats.bridge.context import BridgeContext
    from snsq2nats.bridge.fleet import Fleet
    from snsq2nats.bridge.follow import CutoverFollower
    from snsq2nats.bridge.runtime import run_bridge
    from snsq2nats.plan.buckets import cutover_bucket_spec, fleet_bucket_spec

    running: dict[str, str] = {}
    started: list[tuple[str, str]] = []
    overlaps: list[str] = []

    async def runner(ctx: BridgeContext, route: Route) -> None:
        if route.name in running:
            overlaps.append(route.name)
        running[route.name] = route.filter_policy or ""
        started.append((route.name, route.filter_policy or ""))
        try:
            await ctx.stopping.wait()
        finally:
            running.pop(route.name, None)

    nc = await connect_nats(NatsOptions(servers=[nats_server.url]))
    try:
        for spec in (cutover_bucket_spec(), fleet_bucket_spec(), revision_bucket_spec()):
            await create_stream(nc, spec, pedantic=False)
        first = routes_plan(router("a", '{"k": ["1"]}'), router("b", '{"k": ["1"]}'))
        await record_applied_revision(nc, first)
        # Started with a stale file (no routes it names exist any more): the applied one runs.
        follower = CutoverFollower(nc, routes_plan(router("old", "{}")), lambda r: r)
        routes = await follower.start()
        assert {r.name for r in routes} == {"filter:a", "filter:b"}
        ctx = BridgeContext(plan=follower.plan, nc=nc, sqs=None, sns=None)  # type: ignore[arg-type]
        fleet = Fleet(nc, routes, lease_ttl=3.0)
        run = asyncio.create_task(
            run_bridge(
                ctx, routes, {"filter-router": runner}, handle_signals=False, coordinator=fleet
            )
        )
        follow = asyncio.create_task(follower.follow(fleet, ctx.stopping, ctx))
        try:
            await until(lambda: set(running) == {"filter:a", "filter:b"}, what="first revision")
            second = routes_plan(router("a", '{"k": ["2"]}'), router("c", '{"k": ["1"]}'))
            revision = await record_applied_revision(nc, second)
            assert revision is not None
            want = {"filter:a": '{"k": ["2"]}', "filter:c": '{"k": ["1"]}'}
            await until(lambda: running == want, what="the second revision to run")
            await until(lambda: fleet.plan_revision == revision, what="the revision confirmed")
            assert ctx.plan == second.model_copy(update={"changes": []})
            assert started.count(("filter:a", '{"k": ["1"]}')) == 1
            assert started.count(("filter:a", '{"k": ["2"]}')) == 1
            assert ("filter:c", '{"k": ["1"]}') in started and not overlaps
        finally:
            ctx.stopping.set()
            await asyncio.wait_for(run, 30)
            follow.cancel()
            await asyncio.gather(follow, return_exceptions=True)
            await follower.close()
    finally:
        await nc.close()


async def test_a_changed_source_filter_does_not_replay_the_topic(nats_server: NatsServer) -> None:
    """The server takes a source whose filter changed for a new one and would start it again
    at its first start: every retained message of the topic a second time. apply starts it
    after the topic's last message instead."""
    from snsq2nats.apply import anchor_new_sources
    from snsq2nats.jetstream.api import api, update_stream
    from snsq2nats.jetstream.spec import StreamSource, StreamSpec

    nc = await connect_nats(NatsOptions(servers=[nats_server.url]))
    js = nc.jetstream()
    try:
        await create_stream(nc, StreamSpec(name="T", subjects=["t.>"]), pedantic=False)
        await js.publish("t.a", b"before")  # the source is created after it: an exact start
        queue = StreamSpec(
            name="Q",
            subjects=["q"],
            retention="workqueue",
            sources=[StreamSource(name="T", filter_subject="t.a")],
        )
        await create_stream(nc, await anchor_new_sources(nc, queue, None), pedantic=False)
        for i in range(5):
            await js.publish("t.a", f"a{i}".encode())
            await js.publish("t.b", f"b{i}".encode())
        worker = await js.pull_subscribe("t.>", "w", stream="Q")
        got: list[bytes] = []

        async def take(n: int) -> bool:
            try:
                for msg in await worker.fetch(10, timeout=0.5):
                    got.append(msg.data)
                    await msg.ack_sync()
            except Exception:
                pass
            return len(got) >= n

        await until(lambda: take(5), what="the filtered copies")
        live = (await api(nc, "$JS.API.STREAM.INFO.Q", None, 5.0))["config"]
        wider = queue.model_copy(update={"sources": [StreamSource(name="T", filter_subject="t.>")]})
        anchored = await anchor_new_sources(nc, wider, live)
        await update_stream(nc, anchored, pedantic=False, base=live)
        await js.publish("t.b", b"b-after")
        await until(lambda: take(6), what="the message published after the change")
        await js.publish("t.a", b"a-after")
        await until(lambda: take(7), what="one more")
        assert got == [b"a0", b"a1", b"a2", b"a3", b"a4", b"b-after", b"a-after"]
    finally:
        await nc.close()
