"""The filter router against a real nats-server: SNS semantics for policies JetStream subjects
cannot express, each match in the queue stream once, also across a crash and restart."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest

from snsq2nats.bridge import filter_router
from snsq2nats.bridge.codec import ORIGIN_HEADER, Attribute, attributes_to_headers
from snsq2nats.bridge.context import BridgeContext
from snsq2nats.bridge.dlq import parse_header_block
from snsq2nats.bridge.filter_router import run_filter_router
from snsq2nats.errors import SnsqError
from snsq2nats.jetstream.api import JetStreamApiError, api, create_consumer, create_stream
from snsq2nats.jetstream.spec import NS, ConsumerSpec, ServerInfo, StreamSpec
from snsq2nats.plan.model import Plan, Route
from tests.fixtures.bridge import FAST
from tests.fixtures.wait import until

TOPIC = "arn:aws:sns:us-east-1:123456789012:orders"
DURABLE = "snsq2nats-filter-workers"
POLICY = json.dumps({"price": [{"numeric": [">", 100]}], "region": [{"prefix": "eu-"}]})


def make_ctx(nc: Any) -> BridgeContext:
    plan = Plan(generated_at="test", server=ServerInfo(reachable=True))
    return BridgeContext(plan=plan, nc=nc, sqs=None, sns=None, timings=FAST)


def router_route(policy: str = POLICY, scope: str = "MessageAttributes") -> Route:
    return Route(
        name="filter:orders->big",
        kind="filter-router",
        source_arn=TOPIC + ":sub-1",
        aws_arn=TOPIC,
        stream="t_orders",
        consumer=DURABLE,
        subject="sqs.big",
        target_stream="q_big",
        filter_policy=policy,
        filter_policy_scope=scope,
        relay_subjects=["sns.orders.*"],
    )


async def setup(nc: Any, *, ack_wait: float = 30) -> None:
    await create_stream(
        nc,
        StreamSpec(name="t_orders", subjects=["sns.orders.*", "aws.sns.orders.*"]),
        pedantic=False,
    )
    await create_consumer(
        nc,
        ConsumerSpec(
            stream_name="t_orders",
            durable_name=DURABLE,
            ack_wait=int(ack_wait * NS),
            filter_subjects=["sns.orders.*"],
        ),
        pedantic=False,
    )
    await create_stream(
        nc, StreamSpec(name="q_big", subjects=["sqs.big"], retention="workqueue"), pedantic=False
    )


def attrs(price: str, region: str, price_type: str = "Number") -> dict[str, str]:
    return attributes_to_headers(
        {"price": Attribute(price_type, price), "region": Attribute("String", region)}
    )


async def drained(nc: Any) -> bool:
    info = await api(nc, f"$JS.API.CONSUMER.INFO.t_orders.{DURABLE}")
    return info["num_pending"] == 0 and info["num_ack_pending"] == 0


async def queue_messages(nc: Any) -> list[tuple[bytes, dict[str, str]]]:
    info = await api(nc, "$JS.API.STREAM.INFO.q_big")
    state = info["state"]
    out = []
    for seq in range(int(state["first_seq"]), int(state["last_seq"]) + 1):
        try:
            got = (await api(nc, "$JS.API.STREAM.MSG.GET.q_big", {"seq": seq}))["message"]
        except JetStreamApiError:
            continue
        hdrs = got.get("hdrs")
        out.append(
            (
                base64.b64decode(got.get("data") or ""),
                parse_header_block(base64.b64decode(hdrs)) if hdrs else {},
            )
        )
    return out


async def run_until(ctx: BridgeContext, route: Route) -> None:
    task = asyncio.create_task(run_filter_router(ctx, route))
    try:
        await until(lambda: drained(ctx.nc))
    finally:
        ctx.stopping.set()
        await asyncio.wait_for(task, timeout=10)


# --------------------------------------------------------------------------------------------


async def test_numeric_and_prefix_policy_routes_matches_once(nc: Any, js: Any) -> None:
    await setup(nc)
    cases = [
        (b"match-1", attrs("150", "eu-west-1")),
        (b"cheap", attrs("50", "eu-west-1")),
        (b"us", attrs("200", "us-east-1")),
        (b"string-price", attrs("150", "eu-west-1", price_type="String")),
        (b"no-attrs", {}),
        (b"match-2", attrs("100.5", "eu-central-1")),
    ]
    for body, headers in cases:
        await js.publish("sns.orders.x", body, headers=headers or None)
    # Came from SNS: SNS already filtered it into SQS; not routed again.
    await js.publish("aws.sns.orders.x", b"from-aws", headers={ORIGIN_HEADER: "aws"})

    ctx = make_ctx(nc)
    route = router_route()
    await run_until(ctx, route)
    got = await queue_messages(nc)
    assert sorted(body for body, _ in got) == [b"match-1", b"match-2"]
    headers = dict(got[0][1])
    assert headers["Nats-Msg-Id"] == "t_orders:1"
    assert headers["region"] == "eu-west-1"
    assert json.loads(headers["Snsq2nats-Attributes"])["price"]["t"] == "Number"
    metrics = ctx.route_metrics(route)
    assert (metrics.messages, metrics.skipped) == (2, 4)


async def test_body_scope_policy(nc: Any, js: Any) -> None:
    await setup(nc)
    policy = json.dumps({"order": {"total": [{"numeric": [">=", 10]}]}})
    for body in (b'{"order": {"total": 12}}', b'{"order": {"total": 3}}', b"not json"):
        await js.publish("sns.orders.x", body)
    ctx = make_ctx(nc)
    await run_until(ctx, router_route(policy, "MessageBody"))
    assert [body for body, _ in await queue_messages(nc)] == [b'{"order": {"total": 12}}']


async def test_crash_after_publish_then_restart_does_not_duplicate(
    nc: Any, js: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The router dies after the match reached the queue stream but before the topic message
    was acked; the restarted router gets it again and the dedup id absorbs the second copy."""
    await setup(nc, ack_wait=1)
    for i in range(5):
        await js.publish("sns.orders.x", f"m-{i}".encode(), headers=attrs("500", "eu-north-1"))

    real_ack = filter_router.ack
    crashed = asyncio.Event()

    async def hang(msg: Any, timeout: float) -> bool:
        crashed.set()
        await asyncio.Event().wait()
        return False

    monkeypatch.setattr(filter_router, "ack", hang)
    ctx = make_ctx(nc)
    task = asyncio.create_task(run_filter_router(ctx, router_route()))
    await asyncio.wait_for(crashed.wait(), timeout=10)

    async def all_published() -> bool:
        return len(await queue_messages(nc)) == 5

    # Every match is published before its ack (which hangs): all five copies land first.
    await until(all_published, what="the five copies in the queue stream")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    monkeypatch.setattr(filter_router, "ack", real_ack)
    await run_until(make_ctx(nc), router_route())
    bodies = sorted(body for body, _ in await queue_messages(nc))
    assert bodies == [f"m-{i}".encode() for i in range(5)]


async def test_missing_consumer_and_bad_route(nc: Any) -> None:
    with pytest.raises(SnsqError, match="apply"):
        await run_filter_router(make_ctx(nc), router_route())
    with pytest.raises(SnsqError, match="filter policy"):
        await run_filter_router(
            make_ctx(nc), router_route().model_copy(update={"filter_policy": None})
        )


async def test_verify_canaries_are_never_routed(nc: Any, js: Any) -> None:
    """A canary that matches the policy is still not copied: verify would leave it behind."""
    from snsq2nats.bridge.codec import CANARY_HEADER

    await setup(nc)
    await js.publish(
        "sns.orders.x", b"canary", headers={**attrs("150", "eu-west-1"), CANARY_HEADER: "r1"}
    )
    await js.publish("sns.orders.x", b"match", headers=attrs("150", "eu-west-1"))
    ctx = make_ctx(nc)
    route = router_route()
    await run_until(ctx, route)
    assert [body for body, _ in await queue_messages(nc)] == [b"match"]
    assert ctx.route_metrics(route).skipped == 1


async def test_after_switch_router_skips_what_the_sns_relay_handed_over(nc: Any, js: Any) -> None:
    """A topic switched from SNS at `cutover finish`: the router starts after the nats-to-sns
    relay's ack floor (SNS delivered those), and routes everything after it."""
    from snsq2nats.plan.routes import TO_SNS_CONSUMER

    await setup(nc)
    await create_consumer(
        nc,
        ConsumerSpec(
            stream_name="t_orders", durable_name=TO_SNS_CONSUMER, filter_subjects=["sns.orders.*"]
        ),
        pedantic=False,
    )
    for i in range(6):
        await js.publish("sns.orders.x", f"m{i}".encode(), headers=attrs("150", "eu-west-1"))
    relay = await js.pull_subscribe_bind(TO_SNS_CONSUMER, stream="t_orders")
    for msg in await relay.fetch(4, timeout=5):  # the relay handed m0..m3 to SNS, then stopped
        await msg.ack_sync()

    ctx = make_ctx(nc)
    route = router_route().model_copy(update={"after_switch": True})
    await run_until(ctx, route)
    assert sorted(body for body, _ in await queue_messages(nc)) == [b"m4", b"m5"]
    metrics = ctx.route_metrics(route)
    assert metrics.skipped_by == {"before-switch": 4}
