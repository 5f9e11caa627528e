"""NATS → SQS / SNS relays against a real nats-server and moto over HTTP.

Each test builds the stream and durable the route binds to (as `apply` would), publishes on
NATS, runs the runner as a task and then checks both sides: what AWS holds (count, ids,
attributes) and what JetStream still owes (pending / ack-pending), so "exactly once" and
"acked only after AWS accepted it" are measured, not assumed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

from snsq2nats.bridge.codec import (
    DEDUP_HEADER,
    GROUP_HEADER,
    ORIGIN_ATTRIBUTE,
    ORIGIN_HEADER,
    Attribute,
    attributes_to_headers,
)
from snsq2nats.bridge.context import BridgeContext
from snsq2nats.bridge.nats_to_sns import run_nats_to_sns
from snsq2nats.bridge.nats_to_sqs import run_nats_to_sqs
from snsq2nats.bridge.pull import PullSource
from snsq2nats.bridge.runtime import run_bridge
from snsq2nats.bridge.session import aws_connections
from snsq2nats.demo.nats_server import NatsCluster
from snsq2nats.errors import SnsqError
from snsq2nats.filterpolicy import encode_token
from snsq2nats.jetstream.api import api, create_consumer, create_stream
from snsq2nats.jetstream.connect import NatsOptions, connect_nats
from snsq2nats.jetstream.spec import NS, ConsumerSpec, ServerInfo, StreamSpec
from snsq2nats.jetstream.subjects import subject_in, subject_matches
from snsq2nats.plan.model import Plan, Route
from tests.fixtures.aws import AwsEndpoint, threads_besides_moto
from tests.fixtures.bridge import FAST
from tests.fixtures.wait import retrying, until

Runner = Callable[[BridgeContext, Route], Awaitable[None]]


@pytest.fixture(autouse=True)
async def aio(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """The bridge's asyncio clients for the test's AWS endpoint, open for the whole test."""
    if "aws" not in request.fixturenames:
        yield
        return
    aws: AwsEndpoint = request.getfixturevalue("aws")
    # Room for the 41 routes' polls of the starvation test, as a bridge run sizes it.
    async with aws.async_clients(aws_connections(41, 4)) as clients:
        _clients[id(aws)] = clients
        try:
            yield
        finally:
            del _clients[id(aws)]


_clients: dict[int, Any] = {}


def make_ctx(nc: Any, aws: AwsEndpoint, **kw: Any) -> BridgeContext:
    plan = Plan(generated_at="test", server=ServerInfo(reachable=True))
    kw.setdefault("timings", FAST)
    clients = _clients[id(aws)]
    return BridgeContext(plan=plan, nc=nc, sqs=clients.sqs, sns=clients.sns, **kw)


async def setup_stream(
    nc: Any, name: str, subjects: list[str], *, max_deliver: int = -1, ack_wait: float = 30
) -> None:
    await create_stream(
        nc, StreamSpec(name=name, subjects=subjects, retention="workqueue"), pedantic=False
    )
    await create_consumer(
        nc,
        ConsumerSpec(
            stream_name=name,
            durable_name="workers",
            ack_wait=int(ack_wait * NS),
            max_deliver=max_deliver,
        ),
        pedantic=False,
    )


async def consumer_state(nc: Any, stream: str, consumer: str = "workers") -> dict[str, Any]:
    return await api(nc, f"$JS.API.CONSUMER.INFO.{stream}.{consumer}")


async def run_until(
    runner: Runner, ctx: BridgeContext, route: Route, done: Callable[[], Awaitable[bool]]
) -> None:
    """Run the runner until `done`, then stop it the way the runtime does (ctx.stopping)."""
    task = asyncio.create_task(runner(ctx, route))
    try:
        await until(lambda: _done_or_failed(task, done))
    finally:
        ctx.stopping.set()
        await asyncio.wait_for(task, timeout=15)


async def _done_or_failed(task: asyncio.Task[None], done: Callable[[], Awaitable[bool]]) -> bool:
    if task.done():
        task.result()  # raise the runner's error instead of timing out
        raise AssertionError("runner returned before the condition held")
    return await done()


async def drained(nc: Any, stream: str) -> bool:
    info = await consumer_state(nc, stream)
    return info["num_pending"] == 0 and info["num_ack_pending"] == 0


def receive_all(sqs: Any, url: str) -> list[dict[str, Any]]:
    """Everything in the queue, deleted as read (a FIFO group stays locked while one of its
    messages is in flight, so reading without deleting would stop at the first batch)."""
    out: list[dict[str, Any]] = []
    empty = 0
    while empty < 2:
        got = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=0,
            VisibilityTimeout=300,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["All"],
        ).get("Messages", [])
        empty = 0 if got else empty + 1
        out.extend(got)
        if got:
            sqs.delete_message_batch(
                QueueUrl=url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)
                ],
            )
    return out


def sqs_route(arn: str, stream: str, **kw: Any) -> Route:
    return Route(
        name=f"to-sqs:{stream}",
        kind="nats-to-sqs",
        source_arn=arn,
        aws_arn=arn,
        stream=stream,
        consumer="workers",
        **kw,
    )


def queue(aws: AwsEndpoint, name: str, **attributes: str) -> tuple[str, str]:
    sqs = aws.client("sqs")
    url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    return url, arn


async def publish(
    js: Any, subject: str, body: bytes, headers: dict[str, str] | None = None
) -> None:
    await js.publish(subject, body, headers=headers)


# --------------------------------------------------------------------------------------------


async def test_every_message_exactly_once_with_attribute_types(
    nc: Any, js: Any, aws: AwsEndpoint
) -> None:
    """50 messages, several batches in flight at once: each lands in SQS once, data types of
    attributes survive NATS → SQS byte-exactly, and JetStream owes nothing afterwards."""
    url, arn = queue(aws, "orders")
    await setup_stream(nc, "q_orders", ["sqs.orders"])
    typed = attributes_to_headers(
        {
            "s": Attribute("String", "hello"),
            "n": Attribute("Number", "12.5"),
            "ni": Attribute("Number.int", "42"),
            "b": Attribute("Binary", b"\x00\x01\xfe\xff"),
            "nl": Attribute("String", "line one\nline two"),
        }
    )
    for i in range(50):
        headers = dict(typed) if i == 0 else {"seq": str(i)}
        await publish(js, "sqs.orders", f"order-{i}".encode(), headers)

    ctx = make_ctx(nc, aws, max_in_flight=30)
    route = sqs_route(arn, "q_orders")
    await run_until(run_nats_to_sqs, ctx, route, lambda: drained(nc, "q_orders"))

    got = receive_all(aws.client("sqs"), url)
    bodies = sorted(m["Body"] for m in got)
    assert bodies == sorted(f"order-{i}" for i in range(50))
    first = next(m for m in got if m["Body"] == "order-0")
    attrs = first["MessageAttributes"]
    assert attrs["s"] == {"DataType": "String", "StringValue": "hello"}
    assert attrs["n"] == {"DataType": "Number", "StringValue": "12.5"}
    assert attrs["ni"] == {"DataType": "Number.int", "StringValue": "42"}
    assert attrs["b"] == {"DataType": "Binary", "BinaryValue": b"\x00\x01\xfe\xff"}
    assert attrs["nl"] == {"DataType": "String", "StringValue": "line one\nline two"}
    assert attrs[ORIGIN_ATTRIBUTE] == {"DataType": "String", "StringValue": "nats"}
    # A plain header from a NATS producer becomes a String attribute.
    other = next(m for m in got if m["Body"] == "order-7")
    assert other["MessageAttributes"]["seq"] == {"DataType": "String", "StringValue": "7"}
    assert ctx.route_metrics(route).messages == 50
    assert ctx.route_metrics(route).in_flight == 0


async def test_partial_failure_keeps_only_the_refused_message_on_nats(
    nc: Any, js: Any, aws: AwsEndpoint, caplog: pytest.LogCaptureFixture
) -> None:
    """A queue with MaximumMessageSize=1024 refuses one oversize entry while its batch mates
    arrive once; a message with 11 attributes is refused before any AWS call instead of losing
    an attribute. With no DLQ to copy them to, both stay in the work-queue stream (a TERM would
    delete them): NAKed for a long delay and reported, never acked as delivered."""
    url, arn = queue(aws, "small", MaximumMessageSize="1024")
    await setup_stream(nc, "q_small", ["sqs.small"])
    terminated: list[dict[str, Any]] = []

    async def on_term(msg: Any) -> None:
        terminated.append(json.loads(msg.data))

    await nc.subscribe("$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.q_small.workers", cb=on_term)
    for i in range(6):
        body = b"x" * 2000 if i == 2 else f"small-{i}".encode()
        await publish(js, "sqs.small", body)
    many = {f"a{i}": str(i) for i in range(10)}  # + snsq2nats.origin = 11
    await publish(js, "sqs.small", b"too-many-attributes", many)

    caplog.set_level(logging.INFO, logger="snsq2nats")
    ctx = make_ctx(nc, aws)
    route = sqs_route(arn, "q_small")

    def refusals() -> list[str]:
        return [x for x in caplog.messages if "kept on NATS" in x]

    async def relayed_and_refused() -> bool:
        info = await consumer_state(nc, "q_small")
        return info["num_pending"] == 0 and len(refusals()) == 2

    await run_until(run_nats_to_sqs, ctx, route, relayed_and_refused)
    await nc.flush()

    got = receive_all(aws.client("sqs"), url)
    assert sorted(m["Body"] for m in got) == [f"small-{i}" for i in (0, 1, 3, 4, 5)]
    assert ctx.route_metrics(route).messages == 5
    assert ctx.route_metrics(route).errors >= 2
    assert terminated == []
    refused = " ".join(refusals())
    assert "q_small#3" in refused and ("1024" in refused or "shorter" in refused)
    assert "q_small#7" in refused and "11 message attributes" in refused
    kept = await js.stream_info("q_small")
    assert kept.state.messages == 2, "the refused orders are still there"
    assert (await js.get_msg("q_small", 3)).data == b"x" * 2000
    assert (await js.get_msg("q_small", 7)).data == b"too-many-attributes"


async def test_failed_entries_and_throttling_are_retried_once(
    nc: Any, js: Any, aws: AwsEndpoint
) -> None:
    """Failed[] entries with SenderFault=false and throttled calls are retried with backoff:
    every message still arrives exactly once."""
    url, arn = queue(aws, "flaky")
    await setup_stream(nc, "q_flaky", ["sqs.flaky"])
    for i in range(15):
        await publish(js, "sqs.flaky", f"m-{i}".encode())
    calls = {"send": 0}

    async def flaky(fn: Callable[..., Any], /, **kw: Any) -> Any:
        if getattr(fn, "__name__", "") != "send_message_batch":
            return await fn(**kw)
        calls["send"] += 1
        if calls["send"] <= 2:
            raise ClientError(
                {
                    "Error": {"Code": "ThrottlingException", "Message": "slow down"},
                    "ResponseMetadata": {"HTTPStatusCode": 400},
                },
                "SendMessageBatch",
            )
        if calls["send"] <= 4 and len(kw["Entries"]) > 1:
            # AWS accepts all but the last entry and reports it as a transient failure.
            entries = kw["Entries"]
            result = await fn(**{**kw, "Entries": entries[:-1]})
            failed = {"Id": entries[-1]["Id"], "SenderFault": False, "Code": "InternalError"}
            result["Failed"] = [*result.get("Failed", []), failed]
            return result
        return await fn(**kw)

    ctx = make_ctx(nc, aws, max_in_flight=10, aws_call=flaky)
    route = sqs_route(arn, "q_flaky")
    await run_until(run_nats_to_sqs, ctx, route, lambda: drained(nc, "q_flaky"))
    got = receive_all(aws.client("sqs"), url)
    assert sorted(m["Body"] for m in got) == sorted(f"m-{i}" for i in range(15))
    assert calls["send"] > 4


async def test_fifo_group_and_dedup_ids(nc: Any, js: Any, aws: AwsEndpoint) -> None:
    """Group from the Snsq2nats-Group-Id header or the subject's last token (decoded); dedup
    from Snsq2nats-Deduplication-Id, Nats-Msg-Id, else <stream>:<seq>; group order kept."""
    url, arn = queue(aws, "pay.fifo", FifoQueue="true", ContentBasedDeduplication="false")
    await setup_stream(nc, "sqsfifo_pay", ["sqsfifo.pay.*"])
    await publish(js, f"sqsfifo.pay.{encode_token('g/1')}", b"a1")
    await publish(js, f"sqsfifo.pay.{encode_token('g/1')}", b"a2", {"Nats-Msg-Id": "msg-a2"})
    await publish(js, "sqsfifo.pay.ignored", b"b1", {GROUP_HEADER: "g2", DEDUP_HEADER: "d-b1"})
    await publish(js, f"sqsfifo.pay.{encode_token('g/1')}", b"a3")

    ctx = make_ctx(nc, aws)
    route = sqs_route(arn, "sqsfifo_pay", fifo=True)
    await run_until(run_nats_to_sqs, ctx, route, lambda: drained(nc, "sqsfifo_pay"))
    got = receive_all(aws.client("sqs"), url)
    ids = {m["Body"]: m["Attributes"] for m in got}
    assert set(ids) == {"a1", "a2", "a3", "b1"}
    assert ids["a1"]["MessageGroupId"] == "g/1"
    assert ids["a1"]["MessageDeduplicationId"] == "sqsfifo_pay:1"
    assert ids["a2"]["MessageDeduplicationId"] == "msg-a2"
    assert ids["b1"]["MessageGroupId"] == "g2"
    assert ids["b1"]["MessageDeduplicationId"] == "d-b1"
    group = [m["Body"] for m in got if m["Attributes"]["MessageGroupId"] == "g/1"]
    assert group == ["a1", "a2", "a3"]


async def test_a_queue_relay_carries_everything_its_workers_would_get(
    nc: Any, js: Any, aws: AwsEndpoint
) -> None:
    """nats-to-sqs is the AWS side's way into the queue's one durable: its own messages, copies
    a topic stream source brought, and what sqs-to-nats relayed while the consumers were on NATS
    (origin `aws`, moved back) all go to SQS; a relay restricted to subjects skips the rest."""
    url, arn = queue(aws, "mixed")
    await setup_stream(nc, "q_mixed", ["sqs.mixed", "sns.news.>"])
    await publish(js, "sqs.mixed", b"own-1")
    await publish(js, "sqs.mixed", b"from-aws", {ORIGIN_HEADER: "aws"})
    await publish(js, "sns.news.sport", b"topic-copy")
    await publish(js, "sqs.mixed", b"own-2")

    ctx = make_ctx(nc, aws)
    route = sqs_route(arn, "q_mixed")
    await run_until(run_nats_to_sqs, ctx, route, lambda: drained(nc, "q_mixed"))
    got = receive_all(aws.client("sqs"), url)
    assert sorted(m["Body"] for m in got) == ["from-aws", "own-1", "own-2", "topic-copy"]
    assert ctx.route_metrics(route).skipped == 0

    await publish(js, "sqs.mixed", b"own-3")
    await publish(js, "sns.news.sport", b"topic-copy-2")
    restricted = sqs_route(arn, "q_mixed", relay_subjects=["sqs.mixed"])
    again = make_ctx(nc, aws)
    await run_until(run_nats_to_sqs, again, restricted, lambda: drained(nc, "q_mixed"))
    assert [m["Body"] for m in receive_all(aws.client("sqs"), url)] == ["own-3"]
    assert again.route_metrics(restricted).skipped == 1


def test_subject_patterns() -> None:
    assert subject_in("sqsfifo.pay.g1", ["sqsfifo.pay.*"])
    assert not subject_in("sqsfifo.pay.g1.x", ["sqsfifo.pay.*"])
    assert subject_in("a.b.c", ["a.>"])
    assert not subject_in("a", ["a.>"])
    assert not subject_in("sqs.mixed", ["sqs.other"])
    assert subject_matches("a.*.c", "a.b.c") and not subject_matches("a.*", "a.b.c")


async def test_stop_mid_stream_then_resume_is_exactly_once(
    nc: Any, js: Any, aws: AwsEndpoint
) -> None:
    """ctx.stopping while batches are at AWS: accepted entries are acked, fetched-but-unsent
    messages are NAKed (nothing held until ack_wait); a second run delivers the rest once."""
    url, arn = queue(aws, "drain")
    await setup_stream(nc, "q_drain", ["sqs.drain"])
    for i in range(60):
        await publish(js, "sqs.drain", f"d-{i}".encode())

    sends = 0
    held = 0

    async def held_after_first(fn: Callable[..., Any], /, **kw: Any) -> Any:
        # The first batch goes through; later ones reach "AWS" and wait there for the stop.
        nonlocal sends, held
        if getattr(fn, "__name__", "") == "send_message_batch":
            sends += 1
            if sends > 1:
                held += 1
                await ctx.stopping.wait()
        return await fn(**kw)

    route = sqs_route(arn, "q_drain")
    ctx = make_ctx(nc, aws, max_in_flight=20, aws_call=held_after_first)
    task = asyncio.create_task(run_nats_to_sqs(ctx, route))
    await until(lambda: ctx.route_metrics(route).messages >= 10 and held >= 1)
    ctx.stopping.set()
    await asyncio.wait_for(task, timeout=15)
    first = ctx.route_metrics(route).messages
    # The batches held at AWS when the stop came were accepted, hence acked; no more went out.
    assert first == 10 * sends < 60
    info = await consumer_state(nc, "q_drain")
    assert info["num_ack_pending"] == 0  # nothing left dangling for ack_wait
    first_bodies = [m["Body"] for m in receive_all(aws.client("sqs"), url)]
    assert len(first_bodies) == first

    ctx2 = make_ctx(nc, aws, max_in_flight=20)
    await run_until(run_nats_to_sqs, ctx2, route, lambda: drained(nc, "q_drain"))
    rest = [m["Body"] for m in receive_all(aws.client("sqs"), url)]
    assert sorted(first_bodies + rest) == sorted(f"d-{i}" for i in range(60))


async def test_max_messages_stops_the_runner(nc: Any, js: Any, aws: AwsEndpoint) -> None:
    url, arn = queue(aws, "limited")
    await setup_stream(nc, "q_limited", ["sqs.limited"])
    for i in range(30):
        await publish(js, "sqs.limited", f"l-{i}".encode())
    ctx = make_ctx(nc, aws, max_messages=5, max_in_flight=10)
    await asyncio.wait_for(run_nats_to_sqs(ctx, sqs_route(arn, "q_limited")), timeout=15)
    assert ctx.stopping.is_set()
    delivered = ctx.total_delivered()
    assert delivered >= 5
    # It stopped there: what SQS got was acked, and everything else is still owed on NATS.
    assert len(receive_all(aws.client("sqs"), url)) == delivered
    state = await consumer_state(nc, "q_limited")
    assert state["num_ack_pending"] == 0
    assert state["num_pending"] == 30 - delivered > 0


async def test_missing_consumer_is_a_clear_error(nc: Any, aws: AwsEndpoint) -> None:
    _url, arn = queue(aws, "nobody")
    ctx = make_ctx(nc, aws)
    with pytest.raises(SnsqError, match="apply"):
        await run_nats_to_sqs(ctx, sqs_route(arn, "q_nobody"))


async def test_sns_publish_batch_reaches_raw_and_envelope_subscribers_once(
    nc: Any, js: Any, aws: AwsEndpoint
) -> None:
    sns = aws.client("sns")
    topic = sns.create_topic(Name="news")["TopicArn"]
    raw_url, raw_arn = queue(aws, "news-raw")
    env_url, env_arn = queue(aws, "news-env")
    sub = sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=raw_arn)["SubscriptionArn"]
    sns.set_subscription_attributes(
        SubscriptionArn=sub, AttributeName="RawMessageDelivery", AttributeValue="true"
    )
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=env_arn)
    await setup_stream(nc, "t_news", ["sns.news.>"])
    headers = attributes_to_headers(
        {"kind": Attribute("String", "sport"), "n": Attribute("Number", "3")}
    )
    for i in range(12):
        await publish(js, "sns.news.sport", f"n-{i}".encode(), headers)
    await publish(js, "sns.news.sport", b"echo", {ORIGIN_HEADER: "aws"})

    ctx = make_ctx(nc, aws)
    route = Route(
        name="to-sns:news",
        kind="nats-to-sns",
        source_arn=topic,
        aws_arn=topic,
        stream="t_news",
        consumer="workers",
    )
    await run_until(run_nats_to_sns, ctx, route, lambda: drained(nc, "t_news"))
    sqs = aws.client("sqs")
    raw = receive_all(sqs, raw_url)
    assert sorted(m["Body"] for m in raw) == sorted(f"n-{i}" for i in range(12))
    assert raw[0]["MessageAttributes"]["n"] == {"DataType": "Number", "StringValue": "3"}
    # Each copy names its topic stream and stream sequence (n-i was published as seq i+1), so
    # the sqs-to-nats relay of a queue can tell whether a stream source carried it already.
    origins = {m["Body"]: m["MessageAttributes"][ORIGIN_ATTRIBUTE] for m in raw}
    assert origins == {
        f"n-{i}": {"DataType": "String", "StringValue": f"nats:t_news:{i + 1}"} for i in range(12)
    }
    envelopes = [json.loads(m["Body"]) for m in receive_all(sqs, env_url)]
    assert sorted(e["Message"] for e in envelopes) == sorted(f"n-{i}" for i in range(12))
    assert {e["Type"] for e in envelopes} == {"Notification"}
    assert envelopes[0]["MessageAttributes"]["kind"] == {"Type": "String", "Value": "sport"}
    assert {e["Message"]: e["MessageAttributes"][ORIGIN_ATTRIBUTE] for e in envelopes} == {
        f"n-{i}": {"Type": "String", "Value": f"nats:t_news:{i + 1}"} for i in range(12)
    }
    assert ctx.route_metrics(route).skipped == 1


async def test_sns_filters_a_plain_numeric_header_as_a_number(
    nc: Any, js: Any, aws: AwsEndpoint
) -> None:
    """A NATS producer's plain header `amount: 150` reaches SNS as the Number a policy of the
    topic compares (route.number_attributes), so SNS's own filter delivers it; recorded types
    (relayed from AWS) and other headers are left as they are."""
    sns = aws.client("sns")
    topic = sns.create_topic(Name="pay")["TopicArn"]
    big_url, big_arn = queue(aws, "pay-big")
    sub = sns.subscribe(
        TopicArn=topic,
        Protocol="sqs",
        Endpoint=big_arn,
        Attributes={
            "RawMessageDelivery": "true",
            "FilterPolicy": json.dumps({"amount": [{"numeric": [">=", 100]}]}),
        },
    )["SubscriptionArn"]
    assert sub
    await setup_stream(nc, "t_pay", ["sns.pay"])
    await publish(js, "sns.pay", b"plain-150", {"amount": "150", "note": "150"})
    await publish(js, "sns.pay", b"plain-99", {"amount": "99"})
    await publish(js, "sns.pay", b"plain-abc", {"amount": "abc"})
    typed = attributes_to_headers({"amount": Attribute("String", "150")})
    await publish(js, "sns.pay", b"recorded-string", typed)

    ctx = make_ctx(nc, aws)
    route = Route(
        name="to-sns:pay",
        kind="nats-to-sns",
        source_arn=topic,
        aws_arn=topic,
        stream="t_pay",
        consumer="workers",
        number_attributes=["amount"],
    )
    await run_until(run_nats_to_sns, ctx, route, lambda: drained(nc, "t_pay"))
    got = receive_all(aws.client("sqs"), big_url)
    assert [m["Body"] for m in got] == ["plain-150"]
    attributes = got[0]["MessageAttributes"]
    assert attributes["amount"] == {"DataType": "Number", "StringValue": "150"}
    assert attributes["note"] == {"DataType": "String", "StringValue": "150"}


async def test_sns_fifo_topic_gets_group_and_dedup(nc: Any, js: Any, aws: AwsEndpoint) -> None:
    sns = aws.client("sns")
    topic = sns.create_topic(
        Name="ledger.fifo", Attributes={"FifoTopic": "true", "ContentBasedDeduplication": "false"}
    )["TopicArn"]
    url, arn = queue(aws, "ledger-sub.fifo", FifoQueue="true")
    sub = sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)["SubscriptionArn"]
    sns.set_subscription_attributes(
        SubscriptionArn=sub, AttributeName="RawMessageDelivery", AttributeValue="true"
    )
    await setup_stream(nc, "snsfifo_ledger", ["snsfifo.ledger"])
    for i in range(3):
        await publish(js, "snsfifo.ledger", f"l-{i}".encode(), {GROUP_HEADER: "acct-1"})
    ctx = make_ctx(nc, aws)
    route = Route(
        name="to-sns:ledger",
        kind="nats-to-sns",
        source_arn=topic,
        aws_arn=topic,
        stream="snsfifo_ledger",
        consumer="workers",
        fifo=True,
    )
    await run_until(run_nats_to_sns, ctx, route, lambda: drained(nc, "snsfifo_ledger"))
    got = receive_all(aws.client("sqs"), url)
    assert [m["Body"] for m in got] == ["l-0", "l-1", "l-2"]
    assert {m["Attributes"]["MessageGroupId"] for m in got} == {"acct-1"}


async def test_survives_nats_server_restart(
    nats_server: Any, nc: Any, js: Any, aws: AwsEndpoint
) -> None:
    """The server restarts mid-stream: the relay re-subscribes (nats.py #504) and keeps going.
    A FIFO queue's dedup ids absorb a resend of anything whose ack the restart swallowed."""
    url, arn = queue(aws, "restart.fifo", FifoQueue="true")
    await setup_stream(nc, "sqsfifo_restart", ["sqsfifo.restart.*"])
    for i in range(20):
        await publish(js, "sqsfifo.restart.g", f"r-{i:02d}".encode())
    ctx = make_ctx(nc, aws)
    route = sqs_route(arn, "sqsfifo_restart", fifo=True)
    task = asyncio.create_task(run_nats_to_sqs(ctx, route))
    try:
        await until(lambda: ctx.route_metrics(route).messages >= 5)
        await asyncio.to_thread(nats_server.restart)
        for i in range(20, 40):
            body = f"r-{i:02d}".encode()
            publish_once = functools.partial(
                js.publish, "sqsfifo.restart.g", body, headers={"Nats-Msg-Id": body.decode()}
            )
            await retrying(publish_once, timeout=20, what="publish after the restart")
        await until(lambda: drained(nc, "sqsfifo_restart"), timeout=40)
    finally:
        ctx.stopping.set()
        await asyncio.wait_for(task, timeout=15)
    got = [m["Body"] for m in receive_all(aws.client("sqs"), url)]
    assert got == [f"r-{i:02d}" for i in range(40)]


@pytest.mark.slow
async def test_idle_long_polls_never_hold_up_sends(nc: Any, js: Any, aws: AwsEndpoint) -> None:
    """More idle queues long-polling (one poll each) than asyncio's default pool has threads on
    any machine (32 at most): the nats-to-sqs relay in the same bridge sends everything while
    every one of those long polls is still waiting."""
    idle_routes = []
    for n in range(40):
        _idle_url, idle_arn = queue(aws, f"idle{n}")
        await js.add_stream(name=f"sqs_idle{n}", subjects=[f"sqs.idle{n}"])
        idle_routes.append(
            Route(
                name=f"sqs:idle{n}",
                kind="sqs-to-nats",
                source_arn=idle_arn,
                aws_arn=idle_arn,
                stream=f"sqs_idle{n}",
                subject=f"sqs.idle{n}",
            )
        )
    url, arn = queue(aws, "busy")
    await setup_stream(nc, "q_busy", ["sqs.busy"])
    for i in range(30):
        await publish(js, "sqs.busy", f"b-{i}".encode())
    polls = {"started": 0, "returned": 0}
    threads = threads_besides_moto()

    async def count(fn: Callable[..., Any], /, **kwargs: Any) -> Any:
        # Every AWS call passes here, whichever SQS transport makes it.
        polling = getattr(fn, "__name__", "") == "receive_message"
        polls["started"] += polling
        reply = await fn(**kwargs)
        polls["returned"] += polling
        return reply

    # An idle queue holds one long poll: 40 idle queues, 40 long polls at once.
    ctx = make_ctx(nc, aws, pollers=4, max_in_flight=400, wait_time_seconds=10, aws_call=count)
    routes = [*idle_routes, sqs_route(arn, "q_busy")]
    task = asyncio.create_task(run_bridge(ctx, routes, handle_signals=False))
    try:
        await until(lambda: polls["started"] >= 40, what="every poller in its long poll")
        # Each poll holds a socket on the loop, not a thread (moto serves them on its own);
        # asyncio's default pool may start a thread or two (a name lookup), never one a poll.
        assert threads_besides_moto() < threads + 10, "long polls took threads"
        await until(lambda: drained(nc, "q_busy") if not polls["returned"] else True)
        assert polls["returned"] == 0, "sends waited for a long poll to return"
    finally:
        ctx.stopping.set()
        await asyncio.wait_for(task, timeout=30)
    assert len(receive_all(aws.client("sqs"), url)) == 30


async def test_idle_recheck_rebinds_or_reports_a_missing_consumer(
    nc: Any, aws: AwsEndpoint
) -> None:
    """An idle pull source checks its consumer now and then: still there, it subscribes afresh
    (a subscription can go silent after a restart); gone, the check is a reported error, never
    an exception out of `fetch`."""
    _url, arn = queue(aws, "quiet")
    await setup_stream(nc, "q_quiet", ["sqs.quiet"])
    ctx = make_ctx(nc, aws, timings=dataclasses.replace(FAST, idle_recheck=0.0))
    route = sqs_route(arn, "q_quiet")
    source = PullSource(ctx, route, "q_quiet", "workers")
    try:
        assert await source.fetch(1, wait=0.2) == []
        first_inbox = source._inbox
        assert await source.fetch(1, wait=0.2) == []
        assert source._inbox != first_inbox  # re-subscribed after the check
        errors = ctx.route_metrics(route).errors
        await api(nc, "$JS.API.CONSUMER.DELETE.q_quiet.workers")
        assert await source.fetch(1, wait=0.2) == []
        assert ctx.route_metrics(route).errors == errors + 1
    finally:
        await source.close()


async def test_acks_are_answered_per_batch_only_outside_a_cluster(
    nc: Any, js: Any, aws: AwsEndpoint, nats_cluster: NatsCluster
) -> None:
    """A consumer on a lone server takes a batch's acks in order, so one answer covers the
    batch; in a cluster (any replica count) a leader change can drop acks mid-batch, so each
    ack is answered."""
    _url, arn = queue(aws, "placement")
    await setup_stream(nc, "q_alone", ["sqs.alone"])
    await publish(js, "sqs.alone", b"x")
    alone = PullSource(make_ctx(nc, aws), sqs_route(arn, "q_alone"), "q_alone", "workers")
    assert len(await alone.fetch(1)) == 1
    assert alone.standalone
    await alone.close()

    cnc = await connect_nats(NatsOptions(servers=nats_cluster.urls))
    try:
        for replicas in (1, 3):
            name = f"q_r{replicas}"
            await cnc.jetstream().add_stream(
                name=name, subjects=[f"sqs.r{replicas}"], num_replicas=replicas
            )
            await cnc.jetstream().add_consumer(name, durable_name="workers", ack_policy="explicit")
            await cnc.jetstream().publish(f"sqs.r{replicas}", b"x")
            source = PullSource(make_ctx(cnc, aws), sqs_route(arn, name), name, "workers")
            assert len(await source.fetch(1)) == 1
            assert not source.standalone
            await source.close()
    finally:
        await cnc.close()


@pytest.mark.slow
async def test_consumer_leader_loss_in_a_cluster_is_exactly_once(
    aws: AwsEndpoint, nats_cluster: NatsCluster
) -> None:
    """The R3 consumer's leader dies while batches are at SQS: acks answered by the old leader
    count, the others are sent again to the new one, and the FIFO dedup ids absorb anything
    JetStream hands out twice across the election."""
    url, arn = queue(aws, "ha.fifo", FifoQueue="true")
    cnc = await connect_nats(NatsOptions(servers=nats_cluster.urls))
    js = cnc.jetstream()
    try:
        await js.add_stream(name="sqsfifo_ha", subjects=["sqsfifo.ha.*"], num_replicas=3)
        # What the dead leader had delivered unacknowledged comes again after the ack wait:
        # 5 s, not the default 30 s the test would otherwise sit out.
        await js.add_consumer(
            "sqsfifo_ha", durable_name="workers", ack_policy="explicit", ack_wait=5
        )
        for i in range(200):
            await js.publish("sqsfifo.ha.g", f"h-{i:03d}".encode())

        async def slow(fn: Callable[..., Any], /, **kw: Any) -> Any:
            if getattr(fn, "__name__", "") == "send_message_batch":
                await asyncio.sleep(0.05)
            return await fn(**kw)

        ctx = make_ctx(cnc, aws, aws_call=slow)
        route = sqs_route(arn, "sqsfifo_ha", fifo=True)
        task = asyncio.create_task(run_nats_to_sqs(ctx, route))
        try:
            await until(lambda: ctx.route_metrics(route).messages >= 40)
            leader = (await js.consumer_info("sqsfifo_ha", "workers")).cluster.leader
            index = next(i for i, node in enumerate(nats_cluster) if node.name == leader)
            nats_cluster.kill_node(index)
            await until(lambda: _drained_retrying(cnc, "sqsfifo_ha"), timeout=90)
        finally:
            ctx.stopping.set()
            await asyncio.wait_for(task, timeout=30)
        nats_cluster.start_node(index)
    finally:
        await cnc.close()
    got = [m["Body"] for m in receive_all(aws.client("sqs"), url)]
    assert got == [f"h-{i:03d}" for i in range(200)]


async def _drained_retrying(nc: Any, stream: str) -> bool:
    try:
        return await drained(nc, stream)
    except Exception:  # no consumer leader during the election
        return False


async def test_refused_message_is_copied_to_the_queue_dlq_before_term(
    nc: Any, js: Any, aws: AwsEndpoint
) -> None:
    """A workqueue stream deletes a TERMed message, so with a dlq-mover route in the plan the
    refused message is first kept in the DLQ stream, with the reason."""
    url, arn = queue(aws, "keep", MaximumMessageSize="1024")
    await setup_stream(nc, "q_keep", ["sqs.keep"])
    await create_stream(
        nc, StreamSpec(name="q_keep_dlq", subjects=["sqs.keep-dlq"]), pedantic=False
    )
    await publish(js, "sqs.keep", b"fine")
    await publish(js, "sqs.keep", b"y" * 2000, {"order": "o-9"})
    dlq_route = Route(
        name="dlq:keep",
        kind="dlq-mover",
        source_arn=arn,
        aws_arn=arn + "-dlq",
        stream="q_keep",
        consumer="workers",
        target_stream="q_keep_dlq",
        subject="sqs.keep-dlq",
    )
    ctx = make_ctx(nc, aws)
    ctx.plan = ctx.plan.model_copy(update={"routes": [dlq_route]})
    await run_until(run_nats_to_sqs, ctx, sqs_route(arn, "q_keep"), lambda: drained(nc, "q_keep"))
    assert [m["Body"] for m in receive_all(aws.client("sqs"), url)] == ["fine"]
    kept = await js.get_msg("q_keep_dlq", seq=1)
    assert kept.data == b"y" * 2000
    assert kept.headers["order"] == "o-9"
    assert kept.headers["Snsq2nats-Dlq-Source-Seq"] == "2"
    assert "rejected by SQS" in kept.headers["Snsq2nats-Dlq-Reason"]
    assert kept.headers["Nats-Msg-Id"] == "dlq:q_keep:2"


async def test_verify_canaries_never_reach_aws(nc: Any, js: Any, aws: AwsEndpoint) -> None:
    """`verify` publishes canaries on NATS while the bridge runs: they are acked, not relayed."""
    from snsq2nats.bridge.codec import CANARY_HEADER

    url, arn = queue(aws, "canary")
    await setup_stream(nc, "q_canary", ["sqs.canary"])
    await js.publish("sqs.canary", b"canary", headers={CANARY_HEADER: "run-1"})
    await publish(js, "sqs.canary", b"real order")
    ctx = make_ctx(nc, aws)
    route = sqs_route(arn, "q_canary")
    await run_until(run_nats_to_sqs, ctx, route, lambda: drained(nc, "q_canary"))
    assert [m["Body"] for m in receive_all(aws.client("sqs"), url)] == ["real order"]
    assert ctx.route_metrics(route).skipped == 1
