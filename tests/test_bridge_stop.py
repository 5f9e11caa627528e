"""Stopping the bridge never moves a message toward its DLQ, and always stops.

Real `snsq2nats bridge` processes against a real nats-server and moto's server over HTTP. moto
counts receives and redrives like SQS: a message received `maxReceiveCount` times is moved to
the DLQ on the next receive (checked first, below, so the proof cannot pass vacuously), and
a long poll the client cancelled lives on in moto, as in SQS, taking the next message.

- A rolling restart of a two-member fleet under continuous traffic, ten SIGINT/SIGTERM stops:
  every message lands in its stream exactly once, and the DLQs stay empty. One queue has
  maxReceiveCount 2 (the case reported); one has maxReceiveCount 1, where any second receive of
  any message (a hand-back, a long poll cancelled after SQS gave it messages) dead-letters it.
- `--workers 2` children stop (and leave the fleet) when their parent is killed with -9.
- A bridge told to stop that loses NATS during its drain exits non-zero, saying what it left
  undelivered.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from snsq2nats.bridge.codec import AWS_MESSAGE_ID_HEADER
from snsq2nats.bridge.fleet import preferred, read_fleet
from snsq2nats.demo.nats_server import NatsServer
from snsq2nats.files import document_json
from snsq2nats.jetstream.api import create_stream
from snsq2nats.jetstream.connect import NatsOptions, connect_nats
from snsq2nats.jetstream.spec import NS, ServerInfo, StreamSpec
from snsq2nats.plan.buckets import fleet_bucket_spec
from snsq2nats.plan.model import Plan, Route
from tests.fixtures.aws import AwsEndpoint
from tests.fixtures.bridge import Bridge, Bridges
from tests.fixtures.wait import until

pytestmark = pytest.mark.slow

ACCOUNT = "123456789012"
# queue → maxReceiveCount of its redrive policy (None: no DLQ)
QUEUES: dict[str, int | None] = {"redrive2": 2, "redrive1": 1, "plain": None}


# --- setting up ---------------------------------------------------------------------------------


def make_queues(aws: AwsEndpoint, queues: dict[str, int | None]) -> dict[str, str]:
    """Each queue (with its DLQ `<name>-dead` when it has a redrive policy); name → URL."""
    sqs = aws.client("sqs")
    urls: dict[str, str] = {}
    for name, max_receives in queues.items():
        attributes: dict[str, str] = {}
        if max_receives is not None:
            dead = sqs.create_queue(QueueName=f"{name}-dead")["QueueUrl"]
            dead_arn = sqs.get_queue_attributes(QueueUrl=dead, AttributeNames=["QueueArn"])[
                "Attributes"
            ]["QueueArn"]
            attributes["RedrivePolicy"] = json.dumps(
                {"deadLetterTargetArn": dead_arn, "maxReceiveCount": str(max_receives)}
            )
        urls[name] = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    return urls


def sqs_route(aws: AwsEndpoint, name: str) -> Route:
    arn = f"arn:aws:sqs:{aws.region}:{ACCOUNT}:{name}"
    return Route(
        name=f"sqs:{name}",
        kind="sqs-to-nats",
        source_arn=arn,
        aws_arn=arn,
        stream=f"sqs_{name}",
        subject=f"sqs.{name}",
    )


async def make_streams(url: str, names: list[str]) -> None:
    nc = await connect_nats(NatsOptions(servers=[url]))
    try:
        for name in names:
            spec = StreamSpec(
                name=f"sqs_{name}", subjects=[f"sqs.{name}"], duplicate_window=300 * NS
            )
            await create_stream(nc, spec, pedantic=False)
        await create_stream(nc, fleet_bucket_spec(), pedantic=False)
    finally:
        await nc.close()


def write_plan(path: Path, routes: list[Route]) -> Path:
    plan = Plan(generated_at="now", server=ServerInfo(reachable=True), routes=routes)
    path.write_bytes(document_json(plan))
    return path


def start_member(bridges: Bridges, plan: Path, url: str, log: str, *extra: str) -> Bridge:
    """One `snsq2nats bridge` process, logging to `log` in the test's directory."""
    return bridges.start(
        "--plan", plan, "-s", url, "--pollers", "2", "--lease-ttl", "5", *extra, log=log
    )


class Sender:
    """Sends two messages to every queue every quarter second until stopped; keeps the ids."""

    def __init__(self, aws: AwsEndpoint, urls: dict[str, str]) -> None:
        self.sqs = aws.client("sqs")
        self.urls = urls
        self.sent: dict[str, list[str]] = {name: [] for name in urls}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self.stop.is_set():
            for name, url in self.urls.items():
                entries = [{"Id": str(i), "MessageBody": f"{name}-{n}-{i}"} for i in range(2)]
                reply = self.sqs.send_message_batch(QueueUrl=url, Entries=entries)
                assert not reply.get("Failed"), reply
                self.sent[name] += [s["MessageId"] for s in reply["Successful"]]
            n += 1
            # Paces the producer (a steady stream, not a burst); nothing waits on it.
            self.stop.wait(0.25)

    def total(self) -> int:
        return sum(len(ids) for ids in self.sent.values())


def depth(aws: AwsEndpoint, url: str) -> int:
    """Visible plus in-flight messages."""
    attrs = aws.client("sqs").get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return sum(int(v) for v in attrs.values())


async def stream_ids(nc: Any, stream: str) -> list[str]:
    """The SQS MessageId of every message in the stream, duplicates included."""
    js = nc.jetstream()
    info = await js.stream_info(stream)
    if not info.state.messages:
        return []
    return [
        (await js.get_msg(stream, seq)).headers[AWS_MESSAGE_ID_HEADER]
        for seq in range(info.state.first_seq, info.state.last_seq + 1)
    ]


async def stream_total(nc: Any, names: list[str]) -> int:
    js = nc.jetstream()
    return sum([(await js.stream_info(f"sqs_{name}")).state.messages for name in names])


async def shared_by_two(url: str, routes: list[Route]) -> bool:
    """Two live members, every route leased to the member rendezvous hashing gives it: the
    restarted member has taken its share back (a handover drain on the other one)."""
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


# --- moto counts receives as SQS does -------------------------------------------------------------


def test_moto_dead_letters_a_message_handed_back_too_often(aws: AwsEndpoint) -> None:
    """The emulator the proof relies on: a message handed back (visibility 0) after each of
    maxReceiveCount receives is moved to the DLQ on the next receive."""
    sqs = aws.client("sqs")
    url = make_queues(aws, {"counted": 2})["counted"]
    sqs.send_message(QueueUrl=url, MessageBody="once")
    for _ in range(2):
        (message,) = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1)["Messages"]
        sqs.change_message_visibility(
            QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
        )
    assert sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1).get("Messages") is None
    dead = sqs.get_queue_url(QueueName="counted-dead")["QueueUrl"]
    assert depth(aws, dead) == 1


def long_poll_in_moto(queue: str) -> bool:
    """A thread of moto's server (in this process) is waiting for messages on `queue` (an
    earlier test's abandoned poll may still wait on another queue)."""
    for frame in sys._current_frames().values():
        while frame is not None:
            if (
                frame.f_code.co_name == "wait_for_messages"
                and getattr(frame.f_locals.get("self"), "name", None) == queue
            ):
                return True
            frame = frame.f_back  # type: ignore[assignment]
    return False


async def test_a_cancelled_long_poll_still_takes_messages_in_sqs(aws: AwsEndpoint) -> None:
    """Why a stop never cancels a poll on a queue with a DLQ: the request lives on in SQS
    (moto, as AWS: aws-sdk-go-v2#2068, aws-sdk-java-v2#1395) and takes the next message,
    counted as received and invisible, with nobody to hand it to."""
    url = make_queues(aws, {"ghost": None})["ghost"]
    async with aws.async_clients() as aio:
        poll = asyncio.create_task(
            aio.sqs.receive_message(QueueUrl=url, WaitTimeSeconds=10, VisibilityTimeout=60)
        )
        await until(lambda: long_poll_in_moto("ghost"), what="the poll waiting in moto")
        poll.cancel()
        await asyncio.gather(poll, return_exceptions=True)
    aws.client("sqs").send_message(QueueUrl=url, MessageBody="taken by nobody")

    def taken() -> bool:
        attrs = aws.client("sqs").get_queue_attributes(
            QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"]
        )["Attributes"]
        return attrs["ApproximateNumberOfMessagesNotVisible"] == "1"

    await until(taken, what="the message taken by the cancelled poll")
    assert aws.client("sqs").receive_message(QueueUrl=url).get("Messages") is None


# --- ten stops under traffic ----------------------------------------------------------------------


async def test_rolling_restarts_under_traffic_dead_letter_nothing(
    aws: AwsEndpoint, nats_server: NatsServer, tmp_path: Path, bridges: Bridges
) -> None:
    names = list(QUEUES)
    urls = make_queues(aws, QUEUES)
    routes = [sqs_route(aws, name) for name in names]
    await make_streams(nats_server.url, names)
    plan = write_plan(tmp_path / "plan.json", routes)
    # A visibility short enough that what a cancelled long poll took comes back in the test's
    # time; long enough that nothing in hand on this busy machine outlives it.
    extra = ("--visibility-timeout", "10")
    started = 0

    def start() -> Bridge:
        nonlocal started
        started += 1
        return start_member(bridges, plan, nats_server.url, f"member{started}.log", *extra)

    nc = await connect_nats(NatsOptions(servers=[nats_server.url]))
    sender = Sender(aws, urls)
    members = [start(), start()]
    try:
        sender.thread.start()
        for stop in range(10):
            await until(
                lambda: shared_by_two(nats_server.url, routes),
                timeout=90,
                what="two members sharing the routes",
            )
            relayed = await stream_total(nc, names)
            await until(
                lambda before=relayed: _grew(nc, names, before, 12),
                timeout=60,
                what="traffic relayed by the fleet",
            )
            victim = members[stop % 2]
            victim.send_signal(signal.SIGINT if stop % 2 == 0 else signal.SIGTERM)
            await until(victim.exited, timeout=90, what=f"member {victim.pid} stopped")
            assert victim.returncode == 0, victim.tail()
            members[stop % 2] = start()
        sender.stop.set()
        sender.thread.join()
        await until(
            lambda: shared_by_two(nats_server.url, routes),
            timeout=90,
            what="the last member running",
        )
        await until(
            lambda: all(depth(aws, url) == 0 for url in urls.values()),
            timeout=120,
            what="every queue emptied",
        )
        for member in members:
            member.send_signal(signal.SIGTERM)
        for member in members:
            await until(member.exited, timeout=90, what="the last members stopped")
            assert member.returncode == 0, member.tail()
        sqs = aws.client("sqs")
        for name, max_receives in QUEUES.items():
            if max_receives is not None:
                dead = sqs.get_queue_url(QueueName=f"{name}-dead")["QueueUrl"]
                assert depth(aws, dead) == 0, f"{name}: dead-lettered by a stop"
        for name in names:
            counts = Counter(await stream_ids(nc, f"sqs_{name}"))
            assert set(counts) == set(sender.sent[name]), f"{name}: missing messages"
            assert max(counts.values()) == 1, f"{name}: duplicates in the stream"
        assert sender.total() >= 100  # traffic ran through every stop
    finally:
        sender.stop.set()
        for member in members:
            member.kill()
        await nc.close()


async def _grew(nc: Any, names: list[str], before: int, by: int) -> bool:
    return await stream_total(nc, names) >= before + by


# --- --workers children die with their parent --------------------------------------------------


def children_of(pid: int) -> list[int]:
    """Live processes whose parent is `pid` (from /proc: Linux, as the workers' guard is)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                out.append(int(entry.name))
    return out


def alive(pid: int) -> bool:
    """Running (a zombie nobody reaped yet has stopped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


async def fleet_members(url: str) -> int:
    nc = await connect_nats(NatsOptions(servers=[url]))
    try:
        fleet = await read_fleet(nc)
    finally:
        await nc.close()
    assert fleet is not None
    return len(fleet.members)


async def test_workers_stop_when_their_parent_is_killed(
    aws: AwsEndpoint, nats_server: NatsServer, tmp_path: Path, bridges: Bridges
) -> None:
    """kill -9 of a `--workers 2` parent, twice: once while its workers are still starting
    (before they could look at their parent), once while they run. Either way both workers
    stop, and leave the fleet cleanly (only a worker that drained deletes its heartbeat)."""
    make_queues(aws, {"orphans": None})
    await make_streams(nats_server.url, ["orphans"])
    plan = write_plan(tmp_path / "plan.json", [sqs_route(aws, "orphans")])
    workers: list[int] = []
    parents: list[Bridge] = []
    try:
        for when in ("starting", "running"):
            parent = start_member(bridges, plan, nats_server.url, f"{when}.log", "--workers", "2")
            parents.append(parent)
            await until(
                lambda p=parent: len(children_of(p.pid)) == 2,
                timeout=60,
                what="two workers started",
            )
            workers = children_of(parent.pid)
            if when == "running":
                await until(lambda: _two(nats_server.url), timeout=90, what="two members")
            parent.send_signal(signal.SIGKILL)
            parent.wait()
            await until(
                lambda pids=workers: not any(alive(pid) for pid in pids),
                timeout=90,
                what=f"the workers orphaned while {when} stopped",
            )
            assert await fleet_members(nats_server.url) == 0, "a worker died without leaving"
    finally:
        for parent in parents:
            parent.kill()
        for pid in workers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


async def _two(url: str) -> bool:
    return await fleet_members(url) == 2


# --- NATS lost during the drain ------------------------------------------------------------------


async def test_nats_lost_during_the_drain_exits_non_zero_saying_what_was_left(
    aws: AwsEndpoint, nats_server: NatsServer, tmp_path: Path, bridges: Bridges
) -> None:
    """SIGTERM while the bridge holds messages it cannot publish (their stream was deleted:
    every publish is retried), then NATS killed: the bridge exits non-zero and logs what it
    left undelivered, which is still in SQS."""
    url = make_queues(aws, {"stranded": None})["stranded"]
    await make_streams(nats_server.url, ["stranded"])
    plan = write_plan(tmp_path / "plan.json", [sqs_route(aws, "stranded")])
    bridge = start_member(bridges, plan, nats_server.url, "bridge.log")
    sender = Sender(aws, {"stranded": url})
    try:
        sender.thread.start()
        nc = await connect_nats(NatsOptions(servers=[nats_server.url]))
        try:
            await until(
                lambda: _grew(nc, ["stranded"], 0, 10), timeout=60, what="relaying under way"
            )
            await nc.jetstream().delete_stream("sqs_stranded")
        finally:
            await nc.close()
        await until(
            lambda: "not acknowledged" in bridge.text(), timeout=60, what="publishes failing"
        )
        sender.stop.set()
        bridge.send_signal(signal.SIGTERM)
        await until(lambda: "stopping: draining" in bridge.text(), what="the drain begun")
        nats_server.kill()
        await until(bridge.exited, timeout=120, what="the bridge exited")
    finally:
        sender.stop.set()
        bridge.kill()
    log = bridge.text()
    assert bridge.returncode == 1, log[-3000:]
    assert "NATS unreachable" in log, log[-3000:]
    left = [int(n) for n in re.findall(r"sqs:stranded: left (\d+) message\(s\) undelivered", log)]
    assert left and left[0] > 0, log[-3000:]
    assert depth(aws, url) >= left[0]  # still in SQS: back after the visibility timeout
