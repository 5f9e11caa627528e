"""The fleet as real `snsq2nats bridge` processes against moto and a real nats-server.

A member killed with -9 has its routes taken over by the survivor within the lease TTL (plus
a heartbeat), and a continuous SQS → NATS stream still arrives exactly once: what the dead
member had published but not deleted comes back to the new owner after the SQS visibility
timeout and is deduplicated by `Nats-Msg-Id`. NATS → SQS across a takeover is at least once:
what the dead member had sent to SQS but not yet acknowledged on NATS is redelivered after
the consumer's ack wait and sent again (a standard queue has no deduplication), so nothing is
lost and the duplicates are at most what was in flight.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from snsq2nats.bridge.codec import AWS_MESSAGE_ID_HEADER
from snsq2nats.bridge.fleet import open_bucket, preferred, read_fleet
from snsq2nats.demo.nats_server import NatsServer
from snsq2nats.files import document_json
from snsq2nats.jetstream.api import create_consumer, create_stream
from snsq2nats.jetstream.connect import NatsOptions, connect_nats
from snsq2nats.jetstream.spec import NS, ConsumerSpec, ServerInfo, StreamSpec
from snsq2nats.plan.buckets import fleet_bucket_spec
from snsq2nats.plan.fleet import Lease, route_key
from snsq2nats.plan.model import Plan, Route
from tests.fixtures.aws import AwsEndpoint
from tests.fixtures.bridge import Bridge, Bridges
from tests.fixtures.wait import until

TTL = 3.0
QUEUES = [f"fleet{i}" for i in range(4)]

pytestmark = pytest.mark.slow


def start_member(bridges: Bridges, plan: Path, url: str, *extra: str) -> Bridge:
    return bridges.start(
        *("--plan", plan, "-s", url, "--pollers", "2", "--poll-wait", "1"),
        *("--visibility-timeout", "3", "--lease-ttl", str(TTL), *extra),
    )


async def owners(url: str, routes: list[Route]) -> dict[str, int]:
    """route → pid of the member holding its lease (a member id is host-pid-random)."""
    nc = await connect_nats(NatsOptions(servers=[url]))
    try:
        kv = await open_bucket(nc)
        out: dict[str, int] = {}
        for r in routes:
            try:
                entry = await kv.get(route_key(r.name))
            except Exception:
                continue
            out[r.name] = int(Lease.model_validate_json(entry.value or b"").member.split("-")[-2])
        return out
    finally:
        await nc.close()


async def split_between_two(url: str, routes: list[Route]) -> bool:
    """Two members, every route leased to the member rendezvous hashing gives it."""
    nc = await connect_nats(NatsOptions(servers=[url]))
    try:
        fleet = await read_fleet(nc)
    finally:
        await nc.close()
    assert fleet is not None
    members = list(fleet.members)
    return len(members) == 2 and all(
        r.name in fleet.leases and fleet.leases[r.name].member == preferred(r.name, members)
        for r in routes
    )


def victim_and_survivor(procs: list[Bridge], held: dict[str, int]) -> tuple[Bridge, Bridge]:
    """The member to kill holds routes (all of them, should the hash give it all)."""
    first, second = procs
    return (first, second) if first.pid in held.values() else (second, first)


async def stream_ids(nc: Any, stream: str) -> list[str]:
    js = nc.jetstream()
    info = await js.stream_info(stream)
    out: list[str] = []
    if not info.state.messages:
        return out
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        out.append((await js.get_msg(stream, seq)).headers[AWS_MESSAGE_ID_HEADER])
    return out


class Sender:
    """Sends to every queue, ten at a time, until told to stop; records every message id."""

    def __init__(self, aws: AwsEndpoint, urls: dict[str, str]) -> None:
        self.sqs = aws.client("sqs")
        self.urls = urls
        self.sent: dict[str, list[str]] = {q: [] for q in urls}
        self.rounds = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            for name, url in self.urls.items():
                entries = [
                    {"Id": str(i), "MessageBody": f"{name}-{self.rounds}-{i}"} for i in range(10)
                ]
                reply = self.sqs.send_message_batch(QueueUrl=url, Entries=entries)
                self.sent[name] += [s["MessageId"] for s in reply["Successful"]]
            self.rounds += 1
            # Paces the producer (a steady stream, not a burst); nothing waits on it.
            self.stop.wait(0.1)


async def test_kill_9_member_routes_taken_over_and_sqs_to_nats_exactly_once(
    aws: AwsEndpoint, nats_server: NatsServer, tmp_path: Path, bridges: Bridges
) -> None:
    sqs = aws.client("sqs")
    urls = {q: sqs.create_queue(QueueName=q)["QueueUrl"] for q in QUEUES}
    routes = [
        Route(
            name=f"sqs:{q}",
            kind="sqs-to-nats",
            source_arn=f"arn:aws:sqs:{aws.region}:123456789012:{q}",
            aws_arn=f"arn:aws:sqs:{aws.region}:123456789012:{q}",
            stream=f"sqs_{q}",
            subject=f"sqs.{q}",
        )
        for q in QUEUES
    ]
    nc = await connect_nats(NatsOptions(servers=[nats_server.url]))
    for q in QUEUES:
        spec = StreamSpec(name=f"sqs_{q}", subjects=[f"sqs.{q}"], duplicate_window=300 * NS)
        await create_stream(nc, spec, pedantic=False)
    await create_stream(nc, fleet_bucket_spec(), pedantic=False)
    plan = tmp_path / "plan.json"
    plan.write_bytes(
        document_json(Plan(generated_at="now", server=ServerInfo(reachable=True), routes=routes))
    )
    sender = Sender(aws, urls)
    procs = [start_member(bridges, plan, nats_server.url) for _ in range(2)]
    try:
        sender.thread.start()
        await until(
            lambda: split_between_two(nats_server.url, routes),
            timeout=60,
            what="two members sharing the routes",
        )

        async def relayed_everywhere() -> bool:
            js = nc.jetstream()
            counts = [(await js.stream_info(f"sqs_{q}")).state.messages for q in QUEUES]
            return all(count >= 20 for count in counts)

        await until(relayed_everywhere, timeout=60, what="messages flowing on every route")
        victim, survivor = victim_and_survivor(procs, await owners(nats_server.url, routes))
        victim.kill()

        async def taken_over() -> bool:
            held = await owners(nats_server.url, routes)
            return len(held) == len(routes) and set(held.values()) == {survivor.pid}

        # The failure bound: the lease TTL, a heartbeat, and this slow machine's slack.
        await until(taken_over, timeout=TTL * 2 + 10, what="the survivor owning every route")
        after = sender.rounds
        await until(lambda: sender.rounds >= after + 5, what="more sent after the takeover")
        sender.stop.set()
        sender.thread.join()

        def empty() -> bool:
            for url in urls.values():
                attrs = sqs.get_queue_attributes(
                    QueueUrl=url,
                    AttributeNames=[
                        "ApproximateNumberOfMessages",
                        "ApproximateNumberOfMessagesNotVisible",
                    ],
                )["Attributes"]
                if any(int(v) for v in attrs.values()):
                    return False
            return True

        await until(empty, timeout=90, what="every queue emptied by the survivor")
        survivor.send_signal(signal.SIGTERM)
        survivor.assert_exit(0, timeout=30)
    finally:
        sender.stop.set()
        for proc in procs:
            proc.kill()
    try:
        for q in QUEUES:
            counts = Counter(await stream_ids(nc, f"sqs_{q}"))
            assert set(counts) == set(sender.sent[q]), f"{q}: missing messages"
            assert max(counts.values()) == 1, f"{q}: duplicates in the stream"
    finally:
        await nc.close()


async def test_kill_9_member_nats_to_sqs_loses_nothing(
    aws: AwsEndpoint, nats_server: NatsServer, tmp_path: Path, bridges: Bridges
) -> None:
    sqs = aws.client("sqs")
    urls = {q: sqs.create_queue(QueueName=q)["QueueUrl"] for q in QUEUES}
    routes = [
        Route(
            name=f"to-sqs:{q}",
            kind="nats-to-sqs",
            source_arn=f"arn:aws:sqs:{aws.region}:123456789012:{q}",
            aws_arn=f"arn:aws:sqs:{aws.region}:123456789012:{q}",
            stream=f"sqs_{q}",
            consumer="workers",
        )
        for q in QUEUES
    ]
    nc = await connect_nats(NatsOptions(servers=[nats_server.url]))
    js = nc.jetstream()
    for q in QUEUES:
        spec = StreamSpec(name=f"sqs_{q}", subjects=[f"sqs.{q}"], retention="workqueue")
        await create_stream(nc, spec, pedantic=False)
        consumer = ConsumerSpec(stream_name=f"sqs_{q}", durable_name="workers", ack_wait=3 * NS)
        await create_consumer(nc, consumer, pedantic=False)
    await create_stream(nc, fleet_bucket_spec(), pedantic=False)
    plan = tmp_path / "plan.json"
    plan.write_bytes(
        document_json(Plan(generated_at="now", server=ServerInfo(reachable=True), routes=routes))
    )
    published: dict[str, set[str]] = {q: set() for q in QUEUES}
    stop = asyncio.Event()

    async def publish() -> None:
        n = 0
        while not stop.is_set():
            for q in QUEUES:
                body = f"{q}-{n}"
                await js.publish(f"sqs.{q}", body.encode())
                published[q].add(body)
            n += 1
            # Paces the producer; nothing waits on it.
            await asyncio.sleep(0.01)

    received: dict[str, Counter[str]] = {q: Counter() for q in QUEUES}

    def drain_queues() -> None:
        for q, url in urls.items():
            while True:
                got = sqs.receive_message(
                    QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0
                ).get("Messages", [])
                if not got:
                    break
                received[q].update(m["Body"] for m in got)
                sqs.delete_message_batch(
                    QueueUrl=url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                        for i, m in enumerate(got)
                    ],
                )

    procs = [
        start_member(bridges, plan, nats_server.url, "--max-in-flight", "20") for _ in range(2)
    ]
    publishing = asyncio.create_task(publish())
    try:
        await until(
            lambda: split_between_two(nats_server.url, routes),
            timeout=60,
            what="two members sharing the routes",
        )
        await until(
            lambda: all(len(p) >= 50 for p in published.values()), what="publishing under way"
        )
        victim, survivor = victim_and_survivor(procs, await owners(nats_server.url, routes))
        victim.kill()

        async def taken_over() -> bool:
            held = await owners(nats_server.url, routes)
            return set(held.values()) == {survivor.pid}

        await until(taken_over, timeout=TTL * 2 + 10, what="the survivor owning every route")
        stop.set()
        await publishing

        def all_arrived() -> bool:
            drain_queues()
            return all(set(received[q]) >= published[q] for q in QUEUES)

        await until(all_arrived, timeout=90, what="every published message in SQS")
        survivor.send_signal(signal.SIGTERM)
        survivor.assert_exit(0, timeout=30)
    finally:
        stop.set()
        publishing.cancel()
        for proc in procs:
            proc.kill()
        await nc.close()
    for q in QUEUES:
        assert set(received[q]) == published[q]
        duplicates = sum(c - 1 for c in received[q].values())
        # At least once: only what the dead member held unacknowledged can come twice.
        assert duplicates <= 20, f"{q}: {duplicates} duplicates"
