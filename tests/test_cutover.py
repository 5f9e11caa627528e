"""`snsq2nats cutover` on a real nats-server and moto: bad input, dry runs, history, a move made
while no bridge runs, and a FIFO queue moved to NATS and back with each group kept in order.

The whole migration under traffic is tests/test_cutover_journey.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path
from typing import Any

import nats.errors
import pytest
from click.testing import CliRunner

from snsq2nats.apply import apply_plan
from snsq2nats.aws.clients import RegionClients
from snsq2nats.cli import main
from snsq2nats.cutover import CutoverRequest, history, open_state, run_cutover
from snsq2nats.demo.nats_server import NatsServer
from snsq2nats.errors import BucketMissing, CutoverError, UsageError
from snsq2nats.files import document_json
from snsq2nats.jetstream.api import api
from snsq2nats.jetstream.connect import NatsOptions, connect_nats
from snsq2nats.plan.model import Plan
from snsq2nats.plan.pipeline import PlanRequest, make_plan
from snsq2nats.plan.routes import TO_SNS_CONSUMER
from tests.fixtures.aws import AwsEndpoint
from tests.fixtures.wait import until

pytestmark = pytest.mark.timeout(300)


def seed(aws: AwsEndpoint) -> dict[str, str]:
    sqs, sns = aws.client("sqs"), aws.client("sns")
    topic = sns.create_topic(Name="orders")["TopicArn"]
    urls = {"topic": topic}
    for name in ("billing", "jobs.fifo"):
        attributes = {"FifoQueue": "true"} if name.endswith(".fifo") else {}
        urls[name] = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    arn = f"arn:aws:sqs:{aws.region}:123456789012:billing"
    sns.subscribe(
        TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"}
    )
    return urls


async def planned(aws: AwsEndpoint, server: NatsServer, tmp_path: Path, *, apply: bool) -> Plan:
    from snsq2nats.aws import scan as aws_scan
    from snsq2nats.aws.clients import make_clients

    inventory = await asyncio.to_thread(
        aws_scan.scan, make_clients(aws.session(), [aws.region], aws.url)
    )
    path = tmp_path / "inventory.json"
    path.write_bytes(document_json(inventory))
    plan = await asyncio.to_thread(
        make_plan,
        PlanRequest(inventory_path=path),
        scan=lambda: inventory,
        nats=NatsOptions(servers=[server.url]),
    )
    if apply:
        nc = await connect_nats(NatsOptions(servers=[server.url]))
        try:
            assert (await apply_plan(nc, plan, allow_destructive=False)).ok
        finally:
            await nc.close()
    return plan


async def cutover(
    server: NatsServer,
    aws: AwsEndpoint,
    plan: Plan,
    side: str,
    names: list[str],
    to: str | None,
    **kw: Any,
) -> Any:
    nc = await connect_nats(NatsOptions(servers=[server.url]))
    try:
        clients = RegionClients(aws.region, aws.client("sqs"), aws.client("sns"))
        request = CutoverRequest(side=side, names=names, to=to, by="tester", command="test", **kw)  # type: ignore[arg-type]
        return await run_cutover(nc, plan, request, aws=clients)
    finally:
        await nc.close()


# --- bad input ----------------------------------------------------------------------------------


async def test_bad_input_says_what_where_and_what_to_do(
    aws: AwsEndpoint, nats_server: NatsServer, tmp_path: Path
) -> None:
    seed(aws)
    plan = await planned(aws, nats_server, tmp_path, apply=False)

    # Nothing applied yet: no state bucket.
    with pytest.raises(BucketMissing) as missing:
        await cutover(nats_server, aws, plan, "consumers", ["billing"], "nats")
    assert "snsq2nats_cutover does not exist" in missing.value.what
    assert "snsq2nats apply" in (missing.value.hint or "")

    plan = await planned(aws, nats_server, tmp_path, apply=True)
    with pytest.raises(UsageError) as unknown:
        await cutover(nats_server, aws, plan, "consumers", ["biling"], "nats")
    assert "no queue or topic named 'biling'" in unknown.value.what
    assert "billing" in (unknown.value.hint or "")

    with pytest.raises(UsageError) as topic:
        await cutover(nats_server, aws, plan, "consumers", ["orders"], "nats")
    assert "topics have no consumers of their own" in topic.value.what
    assert "cutover producers orders" in (topic.value.hint or "")

    with pytest.raises(UsageError) as early:
        await cutover(nats_server, aws, plan, "finish", ["billing"], None)
    assert "cannot be finished yet" in early.value.what
    assert "consumers are on AWS" in early.value.what

    # A stream the plan needs was removed: the move names it and the apply to run.
    nc = await connect_nats(NatsOptions(servers=[nats_server.url]))
    try:
        await api(nc, "$JS.API.STREAM.DELETE.sqs_billing")
        with pytest.raises(CutoverError) as unapplied:
            await run_cutover(
                nc,
                plan,
                CutoverRequest(side="consumers", names=["billing"], to="nats"),
            )
        assert "stream sqs_billing does not exist" in unapplied.value.what
        assert "snsq2nats apply" in (unapplied.value.hint or "")
        # Nothing was recorded by the refused move.
        assert await history(await open_state(nc), plan.resources[0].source_arn) == []
    finally:
        await nc.close()


async def test_dry_run_records_nothing_and_a_move_is_history(
    aws: AwsEndpoint, nats_server: NatsServer, tmp_path: Path
) -> None:
    seed(aws)
    plan = await planned(aws, nats_server, tmp_path, apply=True)
    plan_path = tmp_path / "plan.json"
    plan_path.write_bytes(document_json(plan))
    runner = CliRunner()

    def cli(*args: str) -> Any:
        return runner.invoke(main, [*args, "--plan", str(plan_path), "-s", nats_server.url])

    dry = await asyncio.to_thread(
        cli, "cutover", "consumers", "billing", "--to", "nats", "--dry-run", "--json"
    )
    assert dry.exit_code == 0, dry.output
    doc = json.loads(dry.stdout)
    (move,) = doc["moves"]
    assert doc["dry_run"] and doc["revision"] is None
    assert move["start"] == ["sqs:billing"] and move["after"]["consumers"] == "nats"
    assert any("bind to the durable `billing`" in step for step in move["steps"])
    # The third way, as data and in the same words as the team's steps: point the workers at
    # the gateway with the key of billing's consumer identity, safe once this move is made.
    gateway = move["gateway"]
    assert {k: gateway[k] for k in ("kind", "env", "identity", "keys_file")} == {
        "kind": "gateway-workers",
        "env": "AWS_ENDPOINT_URL_SQS",
        "identity": "sqs_billing-consumer",
        "keys_file": "gateway-keys.json",
    }
    assert gateway["text"] == move["steps"][-1]
    assert "Safe once the bridges confirm this move, not before" in gateway["text"]
    human = await asyncio.to_thread(
        runner.invoke,
        main,
        [
            *("cutover", "consumers", "billing", "--to", "nats", "--dry-run"),
            *("--plan", str(plan_path), "-s", nats_server.url),
        ],
        env={"COLUMNS": "400"},
    )
    assert human.exit_code == 0, human.output
    shown = " ".join(human.output.split())
    assert gateway["text"][:120] in shown
    assert "`sqs_billing-consumer` from `gateway-keys.json`" in shown

    empty = await asyncio.to_thread(cli, "cutover", "history", "billing", "--json")
    assert json.loads(empty.stdout) == []

    for to in ("nats", "aws"):
        moved = await asyncio.to_thread(
            cli, "cutover", "consumers", "billing", "--to", to, "--record-only"
        )
        assert moved.exit_code == 0, moved.output
        assert "no bridge is running" in moved.output and "PENDING" in moved.output
    same = await asyncio.to_thread(cli, "cutover", "consumers", "billing", "--to", "aws")
    assert "no change" in same.output

    shown = await asyncio.to_thread(cli, "cutover", "history", "billing", "--json")
    changes = json.loads(shown.stdout)
    assert [(c["change"]["previous"]["consumers"], c["state"]["consumers"]) for c in changes] == [
        ("aws", "nats"),
        ("nats", "aws"),
    ]
    assert all(c["change"]["by"] and c["change"]["at"] for c in changes)
    table = await asyncio.to_thread(cli, "cutover", "history", "billing")
    assert "Cutover history of billing" in table.output and "tester" not in table.output
    assert "--to aws" in table.output

    # The plan reads the live state and says where it came from.
    replanned = await asyncio.to_thread(
        make_plan,
        PlanRequest(inventory_path=tmp_path / "inventory.json"),
        scan=lambda: None,  # type: ignore[arg-type,return-value]
        nats=NatsOptions(servers=[nats_server.url]),
    )
    billing = next(r for r in replanned.resources if r.name == "billing")
    assert replanned.cutover_origin[billing.source_arn] == "live"
    assert not replanned.pending  # a move changes no JetStream object


# --- moves and the bridge -------------------------------------------------------------------------


class Bridge:
    """One in-process bridge following the live cutover state."""

    def __init__(self, server: NatsServer, aws: AwsEndpoint, plan: Plan) -> None:
        from snsq2nats.bridge.context import RelaySettings
        from snsq2nats.bridge.runtime import select_routes
        from snsq2nats.bridge.session import bridge_session

        self.stop = asyncio.Event()
        self.task = asyncio.create_task(
            bridge_session(
                NatsOptions(servers=[server.url]),
                plan,
                plan.candidate_routes,
                regions=(aws.region,),
                endpoint_url=aws.url,
                settings=RelaySettings(wait_time_seconds=1, visibility_timeout=5),
                duration=None,
                metrics_port=None,
                cleanup=False,
                stop=self.stop,
                lease_ttl=3.0,
                select=lambda routes: select_routes(routes, "both"),
            )
        )

    async def close(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 60)


async def stream_bodies(url: str, stream: str) -> list[str]:
    nc = await connect_nats(NatsOptions(servers=[url]))
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        if not info.state.messages:
            return []
        return [
            (await js.get_msg(stream, seq)).data.decode()
            for seq in range(info.state.first_seq, info.state.last_seq + 1)
        ]
    finally:
        await nc.close()


async def test_a_move_made_while_no_bridge_runs_takes_effect_when_one_starts(
    aws: AwsEndpoint, nats_server: NatsServer, tmp_path: Path
) -> None:
    urls = seed(aws)
    plan = await planned(aws, nats_server, tmp_path, apply=True)
    sqs = aws.client("sqs")
    for i in range(5):
        sqs.send_message(QueueUrl=urls["billing"], MessageBody=f"early-{i}")
    result = await cutover(nats_server, aws, plan, "consumers", ["billing"], "nats")
    assert result.no_bridge and result.revision

    bridge = Bridge(nats_server, aws, plan)
    try:
        for i in range(5):
            sqs.send_message(QueueUrl=urls["billing"], MessageBody=f"late-{i}")

        async def relayed() -> bool:
            return len(await stream_bodies(nats_server.url, "sqs_billing")) >= 10

        await until(relayed, what="billing's SQS messages in its stream", timeout=60)
    finally:
        await bridge.close()
    bodies = await stream_bodies(nats_server.url, "sqs_billing")
    assert sorted(bodies) == sorted(
        [f"early-{i}" for i in range(5)] + [f"late-{i}" for i in range(5)]
    )


@pytest.mark.slow
async def test_a_fifo_queue_moves_to_nats_and_back_keeping_each_group_in_order(
    aws: AwsEndpoint, nats_server: NatsServer, tmp_path: Path
) -> None:
    """jobs.fifo's workers: on AWS, then on NATS, then on AWS again (old workers stop at each
    move, as a FIFO application must: one consumer per group at a time). Producers keep
    sending to SQS, and NATS producers too once moved; every group arrives complete, once, in
    order, across both handovers."""
    urls = seed(aws)
    plan = await planned(aws, nats_server, tmp_path, apply=True)
    sqs = aws.client("sqs")
    resource = next(r for r in plan.resources if r.name == "jobs.fifo")
    assert resource.stream and resource.consumer
    processed: list[tuple[str, str]] = []  # (group, body) in processing order
    sent: dict[str, list[str]] = {"g1": [], "g2": [], "g3": []}
    counter = iter(range(10_000))

    def send_aws(n: int) -> None:
        for _ in range(n):
            for group in sent:
                body = f"{group}-{next(counter)}"
                sqs.send_message(
                    QueueUrl=urls["jobs.fifo"],
                    MessageBody=body,
                    MessageGroupId=group,
                    MessageDeduplicationId=body,
                )
                sent[group].append(body)

    def consume_aws() -> int:
        got = sqs.receive_message(
            QueueUrl=urls["jobs.fifo"], MaxNumberOfMessages=10, WaitTimeSeconds=1
        ).get("Messages", [])
        for m in got:
            processed.append((m["Body"].split("-")[0], m["Body"]))
            sqs.delete_message(QueueUrl=urls["jobs.fifo"], ReceiptHandle=m["ReceiptHandle"])
        return len(got)

    async def consume_nats(until_count: int) -> None:
        nc = await connect_nats(NatsOptions(servers=[nats_server.url]))
        try:
            sub = await nc.jetstream().pull_subscribe_bind(resource.consumer, resource.stream)
            deadline = time.monotonic() + 60
            while len(processed) < until_count and time.monotonic() < deadline:
                try:
                    msgs = await sub.fetch(1, timeout=1)
                except Exception:
                    continue
                for msg in msgs:
                    body = msg.data.decode()
                    processed.append((body.split("-")[0], body))
                    await msg.ack_sync()
        finally:
            await nc.close()

    def total() -> int:
        return sum(len(v) for v in sent.values())

    bridge = Bridge(nats_server, aws, plan)
    try:
        send_aws(4)
        while len(processed) < 6:
            await asyncio.to_thread(consume_aws)
        # The AWS workers stop; the move; NATS workers take over what is left, in order.
        await cutover(nats_server, aws, plan, "consumers", ["jobs.fifo"], "nats")
        send_aws(3)
        await consume_nats(total())
        assert len(processed) == total()
        # Back to AWS: what producers on NATS publish now is relayed to SQS, in group order.
        await cutover(nats_server, aws, plan, "producers", ["jobs.fifo"], "both")
        nc = await connect_nats(NatsOptions(servers=[nats_server.url]))
        try:
            for _ in range(2):
                for group in sent:
                    body = f"{group}-{next(counter)}"
                    await nc.jetstream().publish(
                        f"sqsfifo.jobs.{group}", body.encode(), headers={"Nats-Msg-Id": body}
                    )
                    sent[group].append(body)
        finally:
            await nc.close()
        # --wait: returns once the stream's backlog is in SQS (the old side drained).
        await cutover(nats_server, aws, plan, "consumers", ["jobs.fifo"], "aws", wait=True)
        send_aws(2)
        deadline = time.monotonic() + 90
        while len(processed) < total() and time.monotonic() < deadline:
            await asyncio.to_thread(consume_aws)
    finally:
        await bridge.close()
    by_group: dict[str, list[str]] = {g: [] for g in sent}
    for group, body in processed:
        by_group[group].append(body)
    assert by_group == sent


@pytest.fixture
def atomic_receives(monkeypatch: pytest.MonkeyPatch) -> None:
    """SQS hands a FIFO group to one receiver at a time; moto's in-process server checks which
    groups are in flight once per ReceiveMessage, without a lock, so two concurrent receives
    can both find a group free and each take one of its messages. Each receive here is made
    atomic (a lock around moto's own, non-waiting, receive; the long poll waits outside it), as
    SQS's is. Everything still goes over HTTP to moto."""
    import threading

    from moto.sqs.models import SQSBackend

    original = SQSBackend.receive_message
    lock = threading.Lock()

    def receive(self: Any, queue_name: str, count: int, wait: int, *args: Any, **kw: Any) -> Any:
        deadline = time.monotonic() + (wait or 0)
        while True:
            with lock:
                got = original(self, queue_name, count, 0, *args, **kw)
            if got or time.monotonic() >= deadline:
                return got
            time.sleep(0.02)  # a long poll's wait, outside the lock

    monkeypatch.setattr(SQSBackend, "receive_message", receive)


@pytest.mark.usefixtures("atomic_receives")
@pytest.mark.slow
async def test_a_fifo_move_keeps_group_order_while_the_old_aws_workers_keep_running(
    aws: AwsEndpoint, nats_server: NatsServer, tmp_path: Path
) -> None:
    """jobs.fifo's consumers move to NATS while its AWS workers keep receiving (they stop only
    after the move, and producers keep sending to SQS throughout). The bridge is one more
    competing consumer of the SQS queue: it keeps each message it stored in flight (its group
    locked) until the NATS worker acknowledged it, so no group is ever processed on both sides
    at once. Each worker records a message when it has processed it, before deleting or
    acking: every group's record is its send order, each message once."""
    import threading

    from nats.errors import TimeoutError as NatsTimeout

    urls = seed(aws)
    plan = await planned(aws, nats_server, tmp_path, apply=True)
    resource = next(r for r in plan.resources if r.name == "jobs.fifo")
    assert resource.stream and resource.consumer
    groups = [f"g{i}" for i in range(4)]
    sent: dict[str, list[str]] = {g: [] for g in groups}
    processed: list[tuple[str, str, str]] = []  # (side, group, body), in processing order
    lock = threading.Lock()
    stop_sending, stop_aws = threading.Event(), threading.Event()

    def producer() -> None:
        sqs = aws.client("sqs")
        n = 0
        while not stop_sending.is_set():
            for group in groups:
                body = f"{group}-{n:04d}"
                sqs.send_message(
                    QueueUrl=urls["jobs.fifo"],
                    MessageBody=body,
                    MessageGroupId=group,
                    MessageDeduplicationId=body,
                )
                sent[group].append(body)
            n += 1

    def aws_worker() -> None:
        sqs = aws.client("sqs")
        while not stop_aws.is_set():
            got = sqs.receive_message(
                QueueUrl=urls["jobs.fifo"], MaxNumberOfMessages=10, WaitTimeSeconds=1
            ).get("Messages", [])
            for m in got:
                with lock:
                    processed.append(("aws", m["Body"].split("-")[0], m["Body"]))
                sqs.delete_message(QueueUrl=urls["jobs.fifo"], ReceiptHandle=m["ReceiptHandle"])

    nats_stop = asyncio.Event()

    async def nats_worker() -> None:
        nc = await connect_nats(NatsOptions(servers=[nats_server.url]))
        try:
            sub = await nc.jetstream().pull_subscribe_bind(resource.consumer, resource.stream)
            while not nats_stop.is_set():
                try:
                    # One message in flight: fetch one, with a short wait (`subject --durable`).
                    msgs = await sub.fetch(1, timeout=0.5)
                except (TimeoutError, NatsTimeout):
                    continue
                for msg in msgs:
                    # Processing takes a while: the window in which SQS must not hand the
                    # group's next message to an AWS worker.
                    await asyncio.sleep(0.05)
                    body = msg.data.decode()
                    with lock:
                        processed.append(("nats", body.split("-")[0], body))
                    await msg.ack_sync()
        finally:
            await nc.close()

    def count(side: str | None = None) -> int:
        with lock:
            return sum(1 for s, _, _ in processed if side in (None, s))

    threads = [threading.Thread(target=f, daemon=True) for f in (producer, aws_worker)]
    for thread in threads:
        thread.start()
    bridge = Bridge(nats_server, aws, plan)
    worker = asyncio.create_task(nats_worker())
    try:
        await until(lambda: count("aws") >= 20, what="the AWS workers at work", timeout=60)
        await cutover(nats_server, aws, plan, "consumers", ["jobs.fifo"], "nats")
        # Both sides now take messages of the same groups, for a good stretch of traffic.
        mark = count("aws")
        await until(lambda: count("nats") >= 30, what="NATS workers at work", timeout=120)
        await until(lambda: count("aws") >= mark + 5, what="AWS workers still at work", timeout=60)
        stop_sending.set()
        stop_aws.set()
        for thread in threads:
            await asyncio.to_thread(thread.join)
        total = sum(len(v) for v in sent.values())
        await until(lambda: count() >= total, what="every message processed", timeout=180)
    finally:
        stop_sending.set()
        stop_aws.set()
        nats_stop.set()
        await worker
        await bridge.close()
    by_group: dict[str, list[str]] = {g: [] for g in groups}
    sides: dict[str, set[str]] = {g: set() for g in groups}
    side_of: dict[str, list[str]] = {}
    for side, group, body in processed:
        by_group[group].append(body)
        sides[group].add(side)
        side_of.setdefault(body, []).append(side)
    for group in groups:
        got, want = by_group[group], sent[group]
        if got != want:
            at = next(
                (i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), len(want)
            )
            context = [(body, side_of.get(body)) for body in got[max(0, at - 3) : at + 4]]
            raise AssertionError(f"{group}: first difference at {at}: {context}")
    # The overlap was real: groups processed on both sides.
    assert all(s == {"aws", "nats"} for s in sides.values()), sides


@pytest.mark.slow
async def test_no_bridge_means_pending_and_wait_waits_on_a_move_already_made(
    aws: AwsEndpoint, nats_server: NatsServer, tmp_path: Path
) -> None:
    """Without a running bridge a move is recorded but pending: the command says so and exits
    1 (0 with --record-only), and names the fleet's members in words, never raw bytes. `--wait`
    on a move already made waits for the drain just the same; a queue still fed on AWS is said
    to be not waited for, never "drained after 0.0s"."""
    urls = seed(aws)
    plan = await planned(aws, nats_server, tmp_path, apply=True)
    plan_path = tmp_path / "plan.json"
    plan_path.write_bytes(document_json(plan))
    runner = CliRunner()

    def cli(*args: str) -> Any:
        return runner.invoke(main, [*args, "--plan", str(plan_path), "-s", nats_server.url])

    # A bridge ran once and stopped: its heartbeat is in the fleet bucket, no member is live.
    bridge = Bridge(nats_server, aws, plan)
    await until(lambda: _members(nats_server.url), what="the bridge's heartbeat", timeout=60)
    await bridge.close()

    pending = await asyncio.to_thread(cli, "cutover", "producers", "orders", "--to", "nats")
    assert pending.exit_code == 1, pending.output
    assert "PENDING" in pending.output and "the move is recorded" in pending.output
    assert "--record-only" in pending.output and "b'" not in pending.output
    assert "may stop" not in pending.output
    for args in (("producers", "billing"), ("consumers", "billing")):
        recorded = await asyncio.to_thread(cli, "cutover", *args, "--to", "nats", "--record-only")
        assert recorded.exit_code == 0, recorded.output
        assert "PENDING" in recorded.output and "b'" not in recorded.output

    sqs = aws.client("sqs")
    for i in range(5):
        sqs.send_message(QueueUrl=urls["billing"], MessageBody=f"waiting-{i}")
    # Already made, and no bridge to drain it: said, not waited for forever.
    nothing = await asyncio.to_thread(
        cli, "cutover", "consumers", "billing", "--to", "nats", "--wait"
    )
    assert nothing.exit_code == 1 and "no bridge is running" in nothing.output, nothing.output

    bridge = Bridge(nats_server, aws, plan)
    try:
        await until(lambda: _members(nats_server.url, live=True), what="a live bridge", timeout=60)
        waited = await asyncio.to_thread(
            cli, "cutover", "consumers", "billing", "--to", "nats", "--wait"
        )
        assert waited.exit_code == 0, waited.output
        assert "no change" in waited.output and "SQS queue billing drained after" in waited.output
        assert sorted(await stream_bodies(nats_server.url, "sqs_billing")) == [
            f"waiting-{i}" for i in range(5)
        ]
        # jobs.fifo's own producers are still on AWS: it never stays empty.
        fed = await asyncio.to_thread(
            cli, "cutover", "consumers", "jobs.fifo", "--to", "nats", "--wait", "--json"
        )
        assert fed.exit_code == 0, fed.output
        (drained,) = json.loads(fed.stdout)["drained"]
        assert drained["seconds"] is None and drained["fed"] == ["its producers on aws"]
        again = await asyncio.to_thread(
            cli, "cutover", "consumers", "jobs.fifo", "--to", "nats", "--wait"
        )
        assert "still fed (its producers on aws): not waited for" in again.output
        assert "drained after" not in again.output

        # Its producers move to NATS with --wait: the command returns once what the AWS
        # producers sent is out of SQS (relayed, and processed under the FIFO hold), so NATS
        # producers then publish after it. Until the NATS workers ack, it keeps waiting.
        for i in range(3):
            sqs.send_message(
                QueueUrl=urls["jobs.fifo"],
                MessageBody=f"aws-{i}",
                MessageGroupId="g",
                MessageDeduplicationId=f"aws-{i}",
            )
        moving = asyncio.create_task(
            asyncio.to_thread(cli, "cutover", "producers", "jobs.fifo", "--to", "nats", "--wait")
        )
        await until(
            lambda: _stream_has(nats_server.url, "sqsfifo_jobs"),
            what="the first relayed",
            timeout=60,
        )
        assert not moving.done(), moving.result().output
        processed = await _work(nats_server.url, "sqsfifo_jobs", "jobs", 3)
        moved = await moving
        assert moved.exit_code == 0, moved.output
        assert "SQS queue jobs.fifo drained after" in moved.output
        assert "the NATS producers of jobs.fifo may start" in moved.output
        assert processed == ["aws-0", "aws-1", "aws-2"]
    finally:
        await bridge.close()

    # A FIFO queue's durable holds one message at a time: the worker is told how to fetch.
    def subject(name: str) -> Any:
        return runner.invoke(main, ["subject", name, "--durable", "--plan", str(plan_path)])

    durable = await asyncio.to_thread(subject, "jobs.fifo")
    assert durable.exit_code == 0, durable.output
    assert durable.stdout.split("\n")[0] == "sqsfifo_jobs jobs"
    assert "fetch(1, timeout=0.5)" in durable.output
    standard = await asyncio.to_thread(subject, "billing")
    assert "fetch(" not in standard.output


async def test_without_a_plan_file_the_migration_commands_work_from_the_applied_plan(
    aws: AwsEndpoint, nats_server: NatsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runbook's step commands name no plan file: `cutover`, `cutover history`, `status`
    and `runbook` then work from the revision `apply` recorded (what the bridges run), never
    a plan made afresh from AWS, which may have changed since (and takes minutes to scan on a
    large estate). AWS here answers nothing: a scan would fail."""
    seed(aws)
    plan = await planned(aws, nats_server, tmp_path, apply=True)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.delenv("SNSQ2NATS_ENDPOINT_URL", raising=False)
    runner = CliRunner()

    def cli(*args: str) -> Any:
        return runner.invoke(main, [*args, "-s", nats_server.url])

    moved = await asyncio.to_thread(
        cli, "cutover", "producers", "orders", "--to", "nats", "--record-only"
    )
    assert moved.exit_code == 0, moved.output
    assert "working from the applied plan (revision" in moved.output
    history_run = await asyncio.to_thread(cli, "cutover", "history", "orders", "--json")
    assert history_run.exit_code == 0, history_run.output
    assert [r["state"]["producers"] for r in json.loads(history_run.stdout)] == ["nats"]
    book = await asyncio.to_thread(cli, "runbook", "--json")
    assert book.exit_code == 0, book.output
    steps = [s for g in json.loads(book.stdout)["groups"] for s in g["steps"]]
    done = [(s["resource"], s["action"]) for s in steps if s["status"] == "done"]
    assert ("orders", "producers") in done
    # status reads both sides' backlogs: AWS answers again.
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws.url)
    status = await asyncio.to_thread(cli, "status", "--json")
    assert "working from the applied plan" in status.output
    reported = {r["route"] for r in json.loads(status.stdout)["routes"]}
    assert reported and reported <= {r.name for r in plan.candidate_routes}


async def _hold(msg: Any) -> None:
    """Keep a message delivered and unacknowledged (`+WPI` before each ack_wait runs out)."""
    while True:
        await msg.in_progress()
        await asyncio.sleep(5)  # well inside the relay consumer's 30 s ack_wait


async def _stream_has(url: str, stream: str) -> bool:
    nc = await connect_nats(NatsOptions(servers=[url]))
    try:
        info = await api(nc, f"$JS.API.STREAM.INFO.{stream}", None, 5.0)
    finally:
        await nc.close()
    return bool(info["state"]["messages"])


async def _work(url: str, stream: str, durable: str, count: int) -> list[str]:
    """A NATS worker of the durable: process (record) and ack `count` messages, in order."""
    nc = await connect_nats(NatsOptions(servers=[url]))
    got: list[str] = []
    try:
        sub = await nc.jetstream().pull_subscribe_bind(durable, stream)
        while len(got) < count:
            with contextlib.suppress(asyncio.TimeoutError, nats.errors.TimeoutError):
                for msg in await sub.fetch(1, timeout=1):
                    got.append(msg.data.decode())
                    await msg.ack_sync()
    finally:
        await nc.close()
    return got


async def _members(url: str, live: bool = False) -> bool:
    """Whether the fleet bucket holds a heartbeat (`live`: of a member that has not left)."""
    from snsq2nats.jetstream.state import read_bucket
    from snsq2nats.plan.buckets import FLEET_BUCKET
    from snsq2nats.plan.fleet import MEMBERS, Heartbeat

    nc = await connect_nats(NatsOptions(servers=[url]))
    try:
        values = await read_bucket(nc, FLEET_BUCKET, MEMBERS + ">") or {}
    finally:
        await nc.close()
    beats = [Heartbeat.model_validate_json(v.value) for v in values.values()]
    return any(not b.leaving for b in beats) if live else bool(beats)


# --- finishing a topic that fans out through SNS only for an envelope reader --------------------


@pytest.mark.slow
async def test_finish_switches_a_topic_whose_only_sns_reason_is_an_envelope_reader(
    aws: AwsEndpoint, nats_server: NatsServer, tmp_path: Path
) -> None:
    """`events` fans out through SNS only because `audit` reads SNS's envelope; `big` is
    filtered by a policy the filter router evaluates (a prefix). Once every consumer and the
    producers are on NATS, `cutover finish events` switches the topic to stream sources where
    the nats-to-sns relay stopped — `audit`'s stream sources it after the last message the
    relay was handed (D), `big`'s router consumer starts after its ack floor (N) — while NATS
    producers keep publishing. A message a relay member took and never acknowledged holds the
    floor below messages SNS already has: those in between are copied under their SNS ids
    (one of each kept). Each queue gets exactly its share, once."""
    sqs, sns = aws.client("sqs"), aws.client("sns")
    topic = sns.create_topic(Name="events")["TopicArn"]
    urls = {}
    for name, raw, policy in (
        ("audit", False, None),
        ("big", True, {"kind": [{"prefix": "big"}]}),
    ):
        urls[name] = sqs.create_queue(QueueName=name)["QueueUrl"]
        attributes = {"RawMessageDelivery": "true" if raw else "false"}
        if policy:
            attributes["FilterPolicy"] = json.dumps(policy)
        sns.subscribe(
            TopicArn=topic,
            Protocol="sqs",
            Endpoint=f"arn:aws:sqs:{aws.region}:123456789012:{name}",
            Attributes=attributes,
        )
    plan = await planned(aws, nats_server, tmp_path, apply=True)
    events = next(r for r in plan.resources if r.name == "events")
    (fanout,) = [f for f in events.fidelity if f.attribute == "Fanout"]
    assert "audit expects the SNS envelope" in fanout.note
    (router,) = [r for r in plan.candidate_routes if r.kind == "filter-router"]
    assert router.at_finish and router.target_stream == "sqs_big"

    sent: list[tuple[str, str]] = []  # (body, kind)
    publishing = asyncio.Event()

    async def produce() -> None:
        from snsq2nats.plan.pipeline import publish_subject

        nc = await connect_nats(NatsOptions(servers=[nats_server.url]))
        try:
            js = nc.jetstream()
            subject = publish_subject(plan, "events", [])
            n = 0
            while publishing.is_set():
                kind = "big-order" if n % 3 == 0 else "small-order"
                body = f"m-{n:04d}"
                await js.publish(subject, body.encode(), headers={"kind": kind})
                sent.append((body, kind))
                n += 1
                await asyncio.sleep(0.02)  # a steady stream; nothing waits on it
        finally:
            await nc.close()

    bridge = Bridge(nats_server, aws, plan)
    producer: asyncio.Task[None] | None = None
    try:
        await cutover(nats_server, aws, plan, "consumers", ["audit", "big"], "nats")
        await cutover(nats_server, aws, plan, "producers", ["events"], "nats")
        publishing.set()
        producer = asyncio.create_task(produce())
        await until(lambda: len(sent) >= 40, what="traffic through SNS", timeout=60)
        # A relay member that took a message and never acknowledged it (stopped with a pull
        # answered into its gone inbox, or killed before its ack) while the relay went on: the
        # ack floor stays below it, and SNS has everything acknowledged after it.
        assert events.stream
        holder = await connect_nats(NatsOptions(servers=[nats_server.url]))
        held_sub = await holder.jetstream().pull_subscribe_bind(TO_SNS_CONSUMER, events.stream)
        (held,) = await held_sub.fetch(1, timeout=30)
        holding = asyncio.create_task(_hold(held))
        mark = len(sent)
        await until(lambda: len(sent) >= mark + 20, what="traffic past the held one", timeout=60)
        finished = await cutover(nats_server, aws, plan, "finish", ["events"], None)
        holding.cancel()
        await holder.close()
        cut = finished.switched["events"]
        assert cut.acked < held.metadata.sequence.stream <= cut.delivered
        assert cut.copied >= 1  # the held one, at least, reached no queue through SNS
        mark = len(sent)
        await until(lambda: len(sent) >= mark + 40, what="traffic after the switch", timeout=60)
        publishing.clear()
        await producer
        assert 0 < cut.acked < len(sent)

        want = {
            "audit": sorted(body for body, _ in sent),
            "big": sorted(body for body, kind in sent if kind.startswith("big")),
        }

        async def arrived() -> bool:
            for name, bodies in want.items():
                if not set(bodies) <= set(await stream_bodies(nats_server.url, f"sqs_{name}")):
                    return False
            return True

        await until(arrived, what="every queue's share in its stream", timeout=180)

        async def settled() -> bool:
            for name in want:
                attributes = sqs.get_queue_attributes(
                    QueueUrl=urls[name],
                    AttributeNames=[
                        "ApproximateNumberOfMessages",
                        "ApproximateNumberOfMessagesNotVisible",
                    ],
                )["Attributes"]
                if any(int(v) for v in attributes.values()):
                    return False
            nc = await connect_nats(NatsOptions(servers=[nats_server.url]))
            try:
                assert router.stream and router.consumer
                info = await nc.jetstream().consumer_info(router.stream, router.consumer)
            finally:
                await nc.close()
            return not info.num_pending and not info.num_ack_pending

        await until(settled, what="nothing left to relay", timeout=120)
        for name, bodies in want.items():
            assert sorted(await stream_bodies(nats_server.url, f"sqs_{name}")) == bodies, name
        # The router read from the switch on, not from when apply made its consumer.
        nc = await connect_nats(NatsOptions(servers=[nats_server.url]))
        try:
            assert router.stream and router.consumer
            info = await nc.jetstream().consumer_info(router.stream, router.consumer)
            assert info.config.opt_start_seq == cut.router_start
            live = (await nc.jetstream().stream_info("sqs_audit")).config.sources or []
            assert [(s.name, s.opt_start_seq) for s in live] == [(events.stream, cut.source_start)]
        finally:
            await nc.close()
        # A second run of the same finish changes nothing.
        again = await cutover(nats_server, aws, plan, "finish", ["events"], None)
        assert again.revision is None
        assert (again.switched["events"].acked, again.switched["events"].delivered) == (
            cut.acked,
            cut.delivered,
        )
        assert again.switched["events"].copied == 0
        # Planned again from the live state, the finished topic fans out through sources: what
        # the switch made is what that plan wants (nothing to apply).
        replanned = await planned(aws, nats_server, tmp_path, apply=False)
        assert [(c.action, c.name) for c in replanned.pending] == []
    finally:
        publishing.clear()
        if producer is not None:
            await producer
        await bridge.close()


# --- finishing a topic removes its bridge queue: what it holds reaches NATS first ---------------


@pytest.mark.slow
async def test_finish_relays_what_the_bridge_queue_holds_then_removes_it(
    aws: AwsEndpoint, nats_server: NatsServer, tmp_path: Path
) -> None:
    """`events`' AWS publishers reach its stream through the bridge queue (sns-to-nats). When
    the topic is finished, some of the queue's messages are in flight, taken by a member that
    died mid-batch: the finish detaches the queue before the bridges stop its relay, relays
    the rest, waits for those to come back, and only then deletes the queue. Each message the
    AWS publishers sent is in the topic stream once."""
    sqs, sns = aws.client("sqs"), aws.client("sns")
    topic = sns.create_topic(Name="events")["TopicArn"]
    sqs.create_queue(QueueName="audit")
    sns.subscribe(
        TopicArn=topic,
        Protocol="sqs",
        Endpoint=f"arn:aws:sqs:{aws.region}:123456789012:audit",
        Attributes={"RawMessageDelivery": "true"},
    )
    plan = await planned(aws, nats_server, tmp_path, apply=True)
    events = next(r for r in plan.resources if r.name == "events")
    (relay,) = [r for r in plan.candidate_routes if r.kind == "sns-to-nats"]
    assert events.stream and relay.bridge_queue

    async def relayed() -> list[str]:
        assert events.stream
        bodies = await stream_bodies(nats_server.url, events.stream)
        return sorted(b for b in bodies if b.startswith(("aws-", "late-")))

    def bridge_endpoints() -> list[str]:
        subs = sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
        return [s["Endpoint"] for s in subs if s["Endpoint"].endswith(":" + relay.bridge_queue)]

    bridge = Bridge(nats_server, aws, plan)
    try:
        await until(bridge_endpoints, what="the bridge queue subscribed", timeout=60)
        for i in range(10):
            sns.publish(TopicArn=topic, Message=f"aws-{i}")
        await until(lambda: _count(relayed, 10), what="the relay through the bridge queue")
    finally:
        await bridge.close()
    # Published while no bridge runs: they wait in the bridge queue. A member that died
    # mid-batch took some (in flight until their visibility timeout, longer than the finish).
    late = [f"late-{i}" for i in range(6)]
    for body in late:
        sns.publish(TopicArn=topic, Message=body)
    bridge_queue = sqs.get_queue_url(QueueName=relay.bridge_queue)["QueueUrl"]
    taken = sqs.receive_message(
        QueueUrl=bridge_queue, MaxNumberOfMessages=3, VisibilityTimeout=15
    ).get("Messages", [])
    assert taken, "a batch in flight"

    bridge = Bridge(nats_server, aws, plan)
    try:
        await cutover(nats_server, aws, plan, "consumers", ["audit"], "nats")
        await cutover(nats_server, aws, plan, "producers", ["events"], "nats")
        finished = await cutover(nats_server, aws, plan, "finish", ["events"], None)
    finally:
        await bridge.close()
    assert finished.confirmed and relay.bridge_queue in finished.deleted
    # Every message the publishers sent reached the stream once, the in-flight ones included.
    assert await relayed() == sorted([f"aws-{i}" for i in range(10)] + late)
    with pytest.raises(sqs.exceptions.QueueDoesNotExist):
        sqs.get_queue_url(QueueName=relay.bridge_queue)
    assert bridge_endpoints() == []


async def _count(bodies: Any, n: int) -> bool:
    return len(await bodies()) >= n
