"""The DLQ mover against a real nats-server: a poison message NAKed until max_deliver ends up
in the dead-letter stream once, with headers saying where from and why, and the original is
deleted, also when the mover dies between publishing the copy and deleting the original."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from snsq2nats.bridge import dlq
from snsq2nats.bridge.codec import GROUP_HEADER
from snsq2nats.bridge.context import BridgeContext
from snsq2nats.bridge.dlq import (
    ADVISORY_STREAM,
    advisory_consumer_name,
    parse_header_block,
    run_dlq_mover,
)
from snsq2nats.errors import SnsqError
from snsq2nats.jetstream.api import JetStreamApiError, api, create_consumer, create_stream
from snsq2nats.jetstream.spec import NS, ConsumerSpec, ServerInfo, StreamSpec
from snsq2nats.plan.model import Plan, Route
from snsq2nats.plan.routes import advisory_consumer_spec, advisory_stream_spec
from tests.fixtures.bridge import FAST
from tests.fixtures.wait import until

SRC = "arn:aws:sqs:us-east-1:123456789012:"


def make_ctx(nc: Any) -> BridgeContext:
    plan = Plan(generated_at="test", server=ServerInfo(reachable=True))
    return BridgeContext(plan=plan, nc=nc, sqs=None, sns=None, timings=FAST)


def dlq_route(name: str, *, fifo: bool = False) -> Route:
    prefix = "sqsfifo" if fifo else "sqs"
    return Route(
        name=f"dlq:{name}",
        kind="dlq-mover",
        source_arn=SRC + name,
        aws_arn=SRC + name + "-dlq",
        stream=f"q_{name}",
        consumer="workers",
        target_stream=f"q_{name}_dlq",
        subject=f"{prefix}.{name}-dlq",
        fifo=fifo,
    )


async def setup(nc: Any, route: Route, *, advisory_ack_wait: float = 30) -> None:
    """What `apply` creates: source queue stream + durable with max_deliver, the DLQ stream,
    the advisory stream and this route's advisory consumer."""
    assert route.stream and route.target_stream and route.subject
    wildcard = ".*" if route.fifo else ""
    source_subject = route.subject.replace("-dlq", "")
    await create_stream(
        nc,
        StreamSpec(name=route.stream, subjects=[source_subject + wildcard], retention="workqueue"),
        pedantic=False,
    )
    await create_consumer(
        nc,
        ConsumerSpec(stream_name=route.stream, durable_name="workers", ack_wait=NS, max_deliver=2),
        pedantic=False,
    )
    await create_stream(
        nc,
        StreamSpec(
            name=route.target_stream, subjects=[route.subject + wildcard], retention="workqueue"
        ),
        pedantic=False,
    )
    with pytest.raises(JetStreamApiError):
        await api(nc, f"$JS.API.STREAM.INFO.{ADVISORY_STREAM}")
    await create_stream(nc, advisory_stream_spec(), pedantic=False)
    named = route.model_copy(update={"advisory_consumer": advisory_consumer_name(route)})
    spec = advisory_consumer_spec(named).model_copy(
        update={"ack_wait": int(advisory_ack_wait * NS)}
    )
    await create_consumer(nc, spec, pedantic=False)


async def poison(js: Any, stream: str, expect_dead: int) -> None:
    """A worker that acks good messages and NAKs poison ones until the server gives up."""
    sub = await js.pull_subscribe_bind(durable="workers", stream=stream)

    async def work_then_check() -> bool:
        try:
            msgs = await sub.fetch(10, timeout=0.5)
        except TimeoutError:
            msgs = []
        for msg in msgs:
            if msg.data.startswith(b"poison"):
                await msg.nak()
            else:
                await msg.ack()
        info = await api(js._nc, f"$JS.API.STREAM.INFO.{ADVISORY_STREAM}")
        return bool(info["state"]["messages"] >= expect_dead)

    try:
        await until(work_then_check, timeout=20, what="max-deliveries advisories")
    finally:
        await sub.unsubscribe()


async def stream_msgs(nc: Any, stream: str) -> int:
    info = await api(nc, f"$JS.API.STREAM.INFO.{stream}")
    return int(info["state"]["messages"])


async def advisories_done(nc: Any, route: Route) -> bool:
    info = await api(nc, f"$JS.API.CONSUMER.INFO.{ADVISORY_STREAM}.{advisory_consumer_name(route)}")
    return info["num_pending"] == 0 and info["num_ack_pending"] == 0


@dataclass
class Stored:
    subject: str
    data: bytes
    headers: dict[str, str]


async def dead_letters(nc: Any, route: Route) -> list[Stored]:
    """Everything in the DLQ stream, read by sequence (a workqueue stream takes no peeking
    consumer)."""
    info = await api(nc, f"$JS.API.STREAM.INFO.{route.target_stream}")
    state = info["state"]
    out: list[Stored] = []
    for seq in range(int(state["first_seq"]), int(state["last_seq"]) + 1):
        try:
            got = await api(nc, f"$JS.API.STREAM.MSG.GET.{route.target_stream}", {"seq": seq})
        except JetStreamApiError:
            continue
        message = got["message"]
        hdrs = message.get("hdrs")
        out.append(
            Stored(
                subject=message["subject"],
                data=base64.b64decode(message.get("data") or ""),
                headers=parse_header_block(base64.b64decode(hdrs)) if hdrs else {},
            )
        )
    return out


async def run_until(ctx: BridgeContext, route: Route, done: Callable[[], Awaitable[bool]]) -> None:
    task = asyncio.create_task(run_dlq_mover(ctx, route))
    try:
        await until(done)
    finally:
        ctx.stopping.set()
        await asyncio.wait_for(task, timeout=10)


# --------------------------------------------------------------------------------------------


async def test_poison_message_moves_to_dlq_with_headers(nc: Any, js: Any) -> None:
    route = dlq_route("orders")
    await setup(nc, route)
    await js.publish("sqs.orders", b"good-1")
    await js.publish("sqs.orders", b"poison-1", headers={"kind": "bad", "Nats-Msg-Id": "p-1"})
    await js.publish("sqs.orders", b"good-2")
    await poison(js, "q_orders", expect_dead=1)

    ctx = make_ctx(nc)
    await run_until(
        ctx,
        route,
        lambda: _all(stream_msgs(nc, "q_orders_dlq"), advisories_done(nc, route)),
    )
    assert await stream_msgs(nc, "q_orders") == 0  # original deleted, good ones acked
    dead = await dead_letters(nc, route)
    assert [m.data for m in dead] == [b"poison-1"]
    headers = dead[0].headers
    assert headers["kind"] == "bad"
    assert headers["Snsq2nats-Dlq-Source-Stream"] == "q_orders"
    assert headers["Snsq2nats-Dlq-Source-Subject"] == "sqs.orders"
    assert headers["Snsq2nats-Dlq-Source-Seq"] == "2"
    assert headers["Snsq2nats-Dlq-Deliveries"] == "2"
    assert headers["Snsq2nats-Dlq-Reason"] == "max_deliver"
    assert headers["Snsq2nats-Dlq-Source-Msg-Id"] == "p-1"
    assert headers["Nats-Msg-Id"] == "dlq:q_orders:2"
    assert ctx.route_metrics(route).messages == 1


async def _all(*checks: Awaitable[Any]) -> bool:
    results = [await c for c in checks]
    return all(bool(r) for r in results)


async def test_restart_between_publish_and_delete_is_exactly_once(
    nc: Any, js: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mover dies after the DLQ copy is stored but before the original is deleted and the
    advisory acked; the next run republishes under the same Nats-Msg-Id (deduplicated),
    deletes the original and acks: one copy in the DLQ, none left in the source."""
    route = dlq_route("jobs", fifo=True)
    await setup(nc, route, advisory_ack_wait=1.5)
    await js.publish("sqsfifo.jobs.g1", b"poison-a", headers={GROUP_HEADER: "g/1"})
    await js.publish("sqsfifo.jobs.g2", b"poison-b")
    await poison(js, "q_jobs", expect_dead=2)

    real_api = dlq.api
    crashed = asyncio.Event()

    async def crash_on_delete(nc_: Any, subject: str, payload: Any = None, **kw: Any) -> Any:
        if ".STREAM.MSG.DELETE." in subject:
            crashed.set()
            await asyncio.Event().wait()  # hang here until the "process" is killed
        return await real_api(nc_, subject, payload, **kw)

    monkeypatch.setattr(dlq, "api", crash_on_delete)
    ctx = make_ctx(nc)
    task = asyncio.create_task(run_dlq_mover(ctx, route))
    await asyncio.wait_for(crashed.wait(), timeout=15)
    task.cancel()  # kill: no cleanup, nothing acked
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await stream_msgs(nc, "q_jobs_dlq") == 1
    assert await stream_msgs(nc, "q_jobs") == 2

    monkeypatch.setattr(dlq, "api", real_api)
    ctx2 = make_ctx(nc)
    await run_until(
        ctx2,
        route,
        lambda: _all(_is_zero(stream_msgs(nc, "q_jobs")), advisories_done(nc, route)),
    )
    dead = await dead_letters(nc, route)
    assert sorted(m.data for m in dead) == [b"poison-a", b"poison-b"]
    subjects = {m.data: m.subject for m in dead}
    # FIFO: the group token survives (from the header, else the source subject's last token).
    assert subjects[b"poison-a"] == "sqsfifo.jobs-dlq.g~2F1"
    assert subjects[b"poison-b"] == "sqsfifo.jobs-dlq.g2"


async def _is_zero(value: Awaitable[int]) -> bool:
    return await value == 0


async def test_message_already_gone_acks_the_advisory(nc: Any, js: Any) -> None:
    route = dlq_route("gone")
    await setup(nc, route)
    await js.publish("sqs.gone", b"poison-x")
    await poison(js, "q_gone", expect_dead=1)
    await api(nc, "$JS.API.STREAM.MSG.DELETE.q_gone", {"seq": 1})
    ctx = make_ctx(nc)
    await run_until(ctx, route, lambda: advisories_done(nc, route))
    assert await stream_msgs(nc, "q_gone_dlq") == 0
    assert ctx.route_metrics(route).skipped == 1


async def test_missing_advisory_consumer_says_run_apply(nc: Any) -> None:
    with pytest.raises(SnsqError, match="apply"):
        await run_dlq_mover(make_ctx(nc), dlq_route("nothing"))


def test_names_and_specs() -> None:
    route = dlq_route("orders")
    assert advisory_consumer_name(route) == "snsq2nats-dlq-q_orders"
    planned = route.model_copy(update={"advisory_consumer": "custom"})
    assert advisory_consumer_name(planned) == "custom"
    spec = advisory_consumer_spec(planned)
    assert spec.durable_name == "custom"
    assert spec.filter_subjects == ["$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.q_orders.workers"]
    assert advisory_stream_spec().subjects == ["$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.>"]
    raw = b"NATS/1.0\r\nA: 1\r\nB: x: y\r\n\r\n"
    assert parse_header_block(raw) == {"A": "1", "B": "x: y"}
