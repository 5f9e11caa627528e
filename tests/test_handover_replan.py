"""`apply` of a re-plan that moves a topic's fan-out from SNS to stream sources while the SNS
relay holds a message it was handed and never acknowledged (issue 18's seam, on its own).

`events` fans out through SNS because `audit` reads SNS's envelope; `billing` is raw. The
topic's producers are on NATS. With both queues' consumers on NATS, what SNS delivers is
relayed from SQS into each queue stream under the SNS path's id; with them still on AWS, SNS
delivers straight to SQS and what the sources bring follows through the nats-to-sqs relay, and
SQS keeps every copy it is given. A relay member takes one message and never acknowledges it
while the relay goes on: the ack floor N stays below it, and SNS has every acknowledged message
after it. Midway `audit` turns raw on AWS; the re-plan fans the topic out through stream
sources, and `apply` hands over under the running bridge and continuous traffic: sources start
after the last message the relay was handed (D), and the messages of (N, D] the relay's ledger
does not name as accepted by SNS are copied into each queue stream under their SNS ids first.
Sources starting at N + 1 (the old rule) deliver every acknowledged message after the held one
twice, and so does copying all of (N, D] to a queue whose consumers are on AWS (what apply falls
back to without a ledger, exact only with the consumers on NATS). This test counts each
queue's copies where its consumers read them.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from snsq2nats.apply import apply_plan
from snsq2nats.demo.nats_server import NatsServer
from snsq2nats.jetstream.api import delete_stream
from snsq2nats.jetstream.connect import NatsOptions, connect_nats
from snsq2nats.plan.buckets import SENT_LEDGER
from snsq2nats.plan.pipeline import publish_subject
from snsq2nats.plan.routes import TO_SNS_CONSUMER
from snsq2nats.report.apply import handover_lines
from tests.fixtures.aws import AwsEndpoint
from tests.fixtures.wait import until
from tests.test_cutover import Bridge, _hold, cutover, planned, stream_bodies

pytestmark = [pytest.mark.timeout(420), pytest.mark.slow]

QUEUES = ("audit", "billing")


@pytest.mark.parametrize(
    ("hold", "consumers", "ledger"),
    [
        (True, "nats", True),
        (False, "nats", True),
        (True, "aws", True),
        (False, "aws", True),
        (True, "nats", False),
    ],
    ids=[
        "held-relay-message-consumers-on-nats",
        "clean-stop-consumers-on-nats",
        "held-relay-message-consumers-on-aws",
        "clean-stop-consumers-on-aws",
        "held-without-ledger-consumers-on-nats",
    ],
)
async def test_a_replan_hands_a_held_relay_over_with_each_message_once_per_queue(
    aws: AwsEndpoint,
    nats_server: NatsServer,
    tmp_path: Path,
    hold: bool,
    consumers: str,
    ledger: bool,
) -> None:
    """`ledger` False: the ledger is gone before apply (as with a bridge older than it), so
    apply copies all of (N, D] and says so (exact where the queue streams deduplicate)."""
    url = nats_server.url
    sqs, sns = aws.client("sqs"), aws.client("sns")
    topic = sns.create_topic(Name="events")["TopicArn"]
    urls, subscriptions = {}, {}
    for name, raw in (("audit", "false"), ("billing", "true")):
        urls[name] = sqs.create_queue(QueueName=name)["QueueUrl"]
        subscriptions[name] = sns.subscribe(
            TopicArn=topic,
            Protocol="sqs",
            Endpoint=f"arn:aws:sqs:{aws.region}:123456789012:{name}",
            Attributes={"RawMessageDelivery": raw},
            ReturnSubscriptionArn=True,
        )["SubscriptionArn"]
    first = await planned(aws, nats_server, tmp_path, apply=True)
    assert any(r.kind == "nats-to-sns" for r in first.candidate_routes), "fans out through SNS"
    events = next(r for r in first.resources if r.name == "events")
    assert events.stream
    subject = publish_subject(first, "events", [])

    sent: list[str] = []
    publishing = asyncio.Event()

    async def produce() -> None:
        nc = await connect_nats(NatsOptions(servers=[url]))
        try:
            js = nc.jetstream()
            while publishing.is_set():
                body = f"m-{len(sent):04d}"
                await js.publish(subject, body.encode())
                sent.append(body)
                await asyncio.sleep(0.02)  # a steady stream; nothing waits on it
        finally:
            await nc.close()

    bridge = Bridge(nats_server, aws, first)
    producer: asyncio.Task[None] | None = None
    holding: asyncio.Task[None] | None = None
    holder = await connect_nats(NatsOptions(servers=[url]))
    try:
        if consumers == "nats":
            await cutover(nats_server, aws, first, "consumers", list(QUEUES), "nats")
        await cutover(nats_server, aws, first, "producers", ["events"], "nats")
        publishing.set()
        producer = asyncio.create_task(produce())
        await until(lambda: len(sent) >= 40, what="traffic through SNS", timeout=60)
        held_seq, held_body = 0, ""
        if hold:
            # A relay member that took a message and never acknowledged it (a pull answered
            # into its gone inbox, or killed before its ack) while the relay went on.
            sub = await holder.jetstream().pull_subscribe_bind(TO_SNS_CONSUMER, events.stream)
            (held,) = await sub.fetch(1, timeout=30)
            held_seq, held_body = held.metadata.sequence.stream, held.data.decode()
            holding = asyncio.create_task(_hold(held))
            mark = len(sent)
            await until(lambda: len(sent) >= mark + 20, what="traffic past the held one")

        # On AWS, midway: the envelope reader turns raw. The re-plan fans out through sources.
        sns.set_subscription_attributes(
            SubscriptionArn=subscriptions["audit"],
            AttributeName="RawMessageDelivery",
            AttributeValue="true",
        )
        nc = await connect_nats(NatsOptions(servers=[url]))
        try:
            if not ledger:
                await delete_stream(nc, SENT_LEDGER)
            second = await planned(aws, nats_server, tmp_path, apply=False)
            assert not any(r.kind == "nats-to-sns" for r in second.candidate_routes), "sources"
            result = await apply_plan(nc, second, allow_destructive=False)
            assert result.ok, result.error
            cut = result.handovers[events.stream]
            relay = await nc.jetstream().consumer_info(events.stream, TO_SNS_CONSUMER)
            acked, delivered = relay.ack_floor.stream_seq, relay.delivered.stream_seq
            assert (cut.acked, cut.delivered) == (acked, delivered)
            starts = {}
            for name in QUEUES:
                info = await nc.jetstream().stream_info(f"sqs_{name}")
                starts[name] = [(s.name, s.opt_start_seq) for s in info.config.sources or []]
        finally:
            await nc.close()
        if holding is not None:
            holding.cancel()
        assert cut.ledger is ledger
        if hold:
            # The cut this test is about: acknowledged messages after one never acknowledged.
            assert acked < held_seq < delivered, (acked, held_seq, delivered)
        if hold and ledger:
            # The ledger names what SNS took after the held one; the held one is copied.
            assert cut.recorded > 0, cut
            assert len(QUEUES) <= cut.copied <= len(QUEUES) * (delivered - acked - cut.recorded)
        if hold and ledger:
            (line,) = handover_lines(result)
            assert f"{cut.recorded} recorded as sent to SNS" in line, line
        if not ledger:
            # Nothing to tell SNS's share by: every message of (N, D] to each queue, said so.
            assert cut.recorded == 0, cut
            assert cut.copied == len(QUEUES) * (delivered - acked), cut
            (line,) = handover_lines(result)
            assert "no ledger of what SNS accepted" in line, line
        assert 0 < delivered < len(sent)
        # Each queue sources the topic after the last message the relay was handed.
        assert starts == {n: [(events.stream, delivered + 1)] for n in QUEUES}

        mark = len(sent)
        await until(lambda: len(sent) >= mark + 40, what="traffic after the switch", timeout=60)
        publishing.clear()
        await producer

        if consumers == "aws":
            await count_in_sqs(url, sqs, urls, second, sent)
            return

        async def arrived() -> bool:
            for name in QUEUES:
                if not set(sent) <= set(await stream_bodies(url, f"sqs_{name}")):
                    return False
            return True

        await until(arrived, what="every message in each queue stream", timeout=180)

        def sqs_empty() -> bool:
            for name in QUEUES:
                attributes = sqs.get_queue_attributes(
                    QueueUrl=urls[name],
                    AttributeNames=[
                        "ApproximateNumberOfMessages",
                        "ApproximateNumberOfMessagesNotVisible",
                    ],
                )["Attributes"]
                if any(int(v) for v in attributes.values()):
                    return False
            return True

        # What SNS delivered late is relayed too before the copies are counted.
        await until(sqs_empty, what="nothing left in SQS to relay", timeout=120)
        for name in QUEUES:
            bodies = await stream_bodies(url, f"sqs_{name}")
            doubled = sorted(b for b, n in Counter(bodies).items() if n > 1)
            assert not doubled, (name, len(doubled), doubled[:5])
            assert sorted(bodies) == sorted(sent), name
        if hold:
            # The held message reached no queue through SNS: each copy is apply's, under the
            # id the SNS path's copy would have carried.
            for name in QUEUES:
                assert await msg_ids(url, f"sqs_{name}", held_body) == [
                    f"{events.stream}:{held_seq}"
                ], name
    finally:
        publishing.clear()
        if producer is not None:
            await producer
        if holding is not None:
            holding.cancel()
        await holder.close()
        await bridge.close()


async def count_in_sqs(
    url: str, sqs: Any, urls: dict[str, str], plan: Any, sent: list[str]
) -> None:
    """Receive each queue on AWS to the end (what the nats-to-sqs relays still carry too) and
    assert each message arrived exactly once."""
    received: dict[str, list[str]] = {name: [] for name in QUEUES}

    def receive() -> None:
        for name in QUEUES:
            while True:
                got = sqs.receive_message(
                    QueueUrl=urls[name], MaxNumberOfMessages=10, VisibilityTimeout=60
                ).get("Messages", [])
                if not got:
                    break
                for m in got:
                    received[name].append(_body(m["Body"]))
                sqs.delete_message_batch(
                    QueueUrl=urls[name],
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                        for i, m in enumerate(got)
                    ],
                )

    def every_message() -> bool:
        receive()
        return all(set(sent) <= set(received[name]) for name in QUEUES)

    await until(every_message, what="every message in each queue on AWS", timeout=180)
    relays = [r for r in plan.candidate_routes if r.kind == "nats-to-sqs" and r.stream]

    async def relayed() -> bool:
        # Nothing left in the queue streams for the relays to carry, and nothing in SQS.
        nc = await connect_nats(NatsOptions(servers=[url]))
        try:
            for route in relays:
                for durable in route.durables:
                    info = await nc.jetstream().consumer_info(route.stream, durable)
                    if info.num_pending or info.num_ack_pending:
                        return False
        finally:
            await nc.close()
        before = sum(len(v) for v in received.values())
        receive()
        return sum(len(v) for v in received.values()) == before

    await until(relayed, what="the nats-to-sqs relays drained", timeout=120)
    for name in QUEUES:
        doubled = sorted(b for b, n in Counter(received[name]).items() if n > 1)
        assert not doubled, (name, len(doubled), doubled[:5])
        assert sorted(received[name]) == sorted(sent), name


def _body(raw: str) -> str:
    """The message as sent: SNS's envelope (a queue reading it before it turned raw) unwrapped."""
    try:
        doc = json.loads(raw)
    except ValueError:
        return raw
    if isinstance(doc, dict) and doc.get("Type") == "Notification":
        return str(doc.get("Message"))
    return raw


async def msg_ids(url: str, stream: str, body: str) -> list[str]:
    """The `Nats-Msg-Id` of each message in `stream` with this body."""
    nc = await connect_nats(NatsOptions(servers=[url]))
    try:
        js = nc.jetstream()
        state = (await js.stream_info(stream)).state
        out = []
        for seq in range(state.first_seq, state.last_seq + 1):
            message = await js.get_msg(stream, seq)
            if (message.data or b"").decode() == body:
                out.append((message.headers or {}).get("Nats-Msg-Id", ""))
        return out
    finally:
        await nc.close()
