"""jetstream.py and diff.py against a real nats-server.

The central guarantee: whatever snsq2nats creates (in pedantic mode), reading it back and
diffing against the same specs shows no change at all.  Then drift, repair, the server's
refusals, and pagination.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from snsq2nats.demo.nats_server import NatsCluster, NatsServer
from snsq2nats.jetstream.api import (
    JetStreamApiError,
    api,
    create_consumer,
    create_stream,
    delete_consumer,
    delete_stream,
    pedantic_supported,
    update_stream,
)
from snsq2nats.jetstream.connect import NatsOptions, connect_nats
from snsq2nats.jetstream.spec import (
    NS,
    SOURCE_KEY,
    ConsumerSpec,
    LiveState,
    Placement,
    StreamSource,
    StreamSpec,
    SubjectTransform,
)
from snsq2nats.jetstream.state import (
    consumer_infos,
    read_live,
    server_info,
    stream_infos,
    stream_names,
)
from snsq2nats.plan.diff import diff
from snsq2nats.plan.model import Change, Desired, Route

ARN = "arn:aws:sqs:eu-west-1:123456789012:"
TOPIC = "arn:aws:sns:eu-west-1:123456789012:"


def _meta(arn: str, **tags: str) -> dict[str, str]:
    return {SOURCE_KEY: arn, **tags}


ORDERS = StreamSpec(
    name="q_orders",
    description="SQS queue orders",
    subjects=["sqs.orders.>"],
    retention="workqueue",
    max_age=4 * 86400 * NS,
    max_msg_size=256 * 1024,
    duplicate_window=300 * NS,
    placement=Placement(),
    metadata=_meta(ARN + "orders", team="payments"),
)
ORDERS_DLQ = StreamSpec(
    name="q_orders_dlq",
    subjects=["sqs.orders_dlq"],
    retention="workqueue",
    max_age=14 * 86400 * NS,
    metadata=_meta(ARN + "orders_dlq"),
)
EVENTS = StreamSpec(
    name="t_events",
    subjects=["sns.events.>"],
    max_age=86400 * NS,
    metadata=_meta(TOPIC + "events"),
)
ALERTS = StreamSpec(
    name="t_alerts",
    subjects=["sns.alerts.>"],
    storage="memory",
    max_msgs=10_000,
    metadata=_meta(TOPIC + "alerts"),
)
AUDIT = StreamSpec(
    name="q_audit",
    sources=[
        StreamSource(name="t_events", filter_subject="sns.events.audit.>"),
        StreamSource(
            name="t_alerts",
            subject_transforms=[SubjectTransform(src="sns.alerts.>", dest="audit.alerts.>")],
        ),
    ],
    metadata=_meta(ARN + "audit"),
)
DELAYED = StreamSpec(
    name="q_delayed",
    subjects=["sqs.delayed", "sched.delayed.>"],
    retention="workqueue",
    allow_msg_schedules=True,
    metadata=_meta(ARN + "delayed"),
)
STREAMS = [ORDERS, ORDERS_DLQ, EVENTS, ALERTS, AUDIT, DELAYED]

WORKER = ConsumerSpec(
    stream_name="q_orders",
    durable_name="orders",
    ack_wait=45 * NS,
    max_deliver=5,
    filter_subjects=["sqs.orders.created", "sqs.orders.paid"],
    metadata=_meta(ARN + "orders", team="payments"),
)
AUDIT_READER = ConsumerSpec(
    stream_name="q_audit",
    durable_name="audit",
    metadata=_meta(ARN + "audit"),
)
DELAYED_READER = ConsumerSpec(
    stream_name="q_delayed",
    durable_name="delayed",
    filter_subjects=["sqs.delayed"],
    metadata=_meta(ARN + "delayed"),
)
CONSUMERS = [WORKER, AUDIT_READER, DELAYED_READER]

DESIRED = Desired(
    streams=STREAMS,
    consumers=CONSUMERS,
    routes=[
        Route(
            name="orders-dlq",
            kind="dlq-mover",
            source_arn=ARN + "orders",
            aws_arn=ARN + "orders_dlq",
            stream="q_orders",
            consumer="orders",
            target_stream="q_orders_dlq",
        )
    ],
)


async def apply_all(nc: Any, desired: Desired, changes: list[Change]) -> None:
    """The minimal apply the next issue will build properly: enough to prove the round trip."""
    specs = {s.name: s for s in desired.streams}
    consumers = {(c.stream_name, c.durable_name): c for c in desired.consumers}
    pedantic = pedantic_supported(server_info(nc))
    for change in changes:
        if change.type == "stream" and change.action == "create":
            await create_stream(nc, specs[change.name], pedantic=pedantic)
        elif change.type == "consumer" and change.action == "create":
            spec = consumers[(change.stream, change.name)]
            await create_consumer(nc, spec, action="create", pedantic=pedantic)


def actions(changes: list[Change]) -> list[tuple[str, str, str]]:
    return [(c.action, c.type, c.name) for c in changes]


def pending(changes: list[Change]) -> list[Change]:
    return [c for c in changes if c.action != "noop"]


@pytest.fixture
def nats_no_js() -> Iterator[NatsServer]:
    server = NatsServer(name="nojs", jetstream=False).start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
async def applied(nc: Any) -> AsyncIterator[Any]:
    """A server holding the whole desired state, created in pedantic mode."""
    await apply_all(nc, DESIRED, diff(DESIRED, None))
    yield nc


async def test_applied_plan_shows_no_changes(applied: Any) -> None:
    live = await read_live(applied)
    assert live.server.reachable
    assert live.server.version == "2.15.1" or live.server.version
    assert live.server.cluster is None
    assert live.server.url is not None and live.server.url.startswith("nats://127.0.0.1:")
    assert set(live.streams) == {s.name for s in STREAMS}
    assert set(live.streams["q_orders"].consumers) == {"orders"}

    changes = diff(DESIRED, live)
    assert pending(changes) == [], [c.model_dump() for c in pending(changes)]
    assert all(c.reason == "up to date" for c in changes)
    # Order: DLQ target before the queue pointing at it, origins before the stream sourcing
    # them, streams before consumers.
    names = [c.name for c in changes if c.type == "stream"]
    assert names.index("q_orders_dlq") < names.index("q_orders")
    assert names.index("t_events") < names.index("q_audit")
    assert names.index("t_alerts") < names.index("q_audit")
    assert [c.type for c in changes] == ["stream"] * 6 + ["consumer"] * 3


async def test_server_fills_in_what_diff_ignores(applied: Any) -> None:
    """What the server added, so a regression in normalisation points here first."""
    live = await read_live(applied)
    audit = live.streams["q_audit"].config
    assert "subjects" not in audit  # a sourcing stream gets no default subject
    delayed = live.streams["q_delayed"].config
    assert delayed["allow_rollup_hdrs"] is True  # implied by schedules, sent explicitly
    assert any(k.startswith("_nats.") for k in delayed["metadata"])
    worker = live.streams["q_orders"].consumers["orders"]
    assert worker["max_waiting"] == 512
    assert worker["replay_policy"] == "instant"
    assert worker["num_replicas"] == 0
    assert "placement" not in live.streams["q_orders"].config  # {} is not kept


async def test_drift_is_an_update_and_update_repairs_it(applied: Any) -> None:
    nc = applied
    info = await api(nc, "$JS.API.STREAM.INFO.t_events", None)
    # max_age is managed; allow_direct is not, and a repair must leave it as the person set it.
    by_hand = dict(info["config"], max_age=3600 * NS, allow_direct=True)
    await api(nc, "$JS.API.STREAM.UPDATE.t_events", by_hand)

    live = await read_live(nc)
    changes = pending(diff(DESIRED, live))
    assert actions(changes) == [("update", "stream", "t_events")]
    [field] = changes[0].diff
    assert (field.field, field.live, field.desired) == ("max_age", 3600 * NS, 86400 * NS)

    await update_stream(nc, EVENTS, pedantic=True, base=live.streams["t_events"].config)
    live = await read_live(nc)
    assert pending(diff(DESIRED, live)) == []
    assert live.streams["t_events"].config["allow_direct"] is True

    await api(
        nc,
        "$JS.API.STREAM.UPDATE.t_events",
        dict(live.streams["t_events"].config, max_msgs=5000),
    )
    assert actions(pending(diff(DESIRED, await read_live(nc)))) == [
        ("update", "stream", "t_events")
    ]
    await update_stream(nc, EVENTS, pedantic=True)  # fetches the live config itself
    live = await read_live(nc)
    assert pending(diff(DESIRED, live)) == []
    assert live.streams["t_events"].config["allow_direct"] is True


async def test_immutable_stream_change_is_replace_and_server_refuses_update(
    applied: Any,
) -> None:
    nc = applied
    js = nc.jetstream()
    for i in range(3):
        await js.publish("sns.events.audit.x", f"m{i}".encode())
    events = EVENTS.model_copy(update={"retention": "workqueue"})
    desired = DESIRED.model_copy(update={"streams": [*STREAMS[:2], events, *STREAMS[3:]]})

    live = await read_live(nc)
    [change] = pending(diff(desired, live))
    assert (change.action, change.name, change.live_messages) == ("replace", "t_events", 3)
    assert "retention" in change.reason and "3 messages" in change.reason

    with pytest.raises(JetStreamApiError) as err:
        await update_stream(nc, events, pedantic=True)
    assert err.value.err_code == 10052
    assert "workqueue" in err.value.one_line()
    assert err.value.where == "stream t_events"

    storage = EVENTS.model_copy(update={"storage": "memory"})
    with pytest.raises(JetStreamApiError) as err:
        await update_stream(nc, storage, pedantic=True)
    assert err.value.err_code == 10052


async def test_consumer_update_and_immutable_replace(applied: Any) -> None:
    nc = applied
    live = await read_live(nc)
    slower = WORKER.model_copy(update={"ack_wait": 120 * NS})
    desired = DESIRED.model_copy(update={"consumers": [slower, AUDIT_READER, DELAYED_READER]})
    [change] = pending(diff(desired, live))
    assert (change.action, change.type, change.name) == ("update", "consumer", "orders")
    assert [(d.field, d.live, d.desired) for d in change.diff] == [("ack_wait", 45 * NS, 120 * NS)]
    base = live.streams["q_orders"].consumers["orders"]
    await create_consumer(nc, slower, action="update", pedantic=True, base=base)
    assert pending(diff(desired, await read_live(nc))) == []

    newest = slower.model_copy(update={"deliver_policy": "new"})
    desired = desired.model_copy(update={"consumers": [newest, AUDIT_READER, DELAYED_READER]})
    [change] = pending(diff(desired, await read_live(nc)))
    assert (change.action, change.name) == ("replace", "orders")
    assert "deliver_policy" in change.reason
    with pytest.raises(JetStreamApiError) as err:
        await create_consumer(nc, newest, action="update", pedantic=True)
    assert err.value.err_code == 10012

    # "create" must not silently change an existing consumer.
    with pytest.raises(JetStreamApiError) as err:
        await create_consumer(nc, WORKER, action="create", pedantic=True)
    assert err.value.err_code == 10148


async def test_create_with_other_config_and_deletes(applied: Any) -> None:
    nc = applied
    with pytest.raises(JetStreamApiError) as err:
        await create_stream(nc, EVENTS.model_copy(update={"max_age": NS * 7200}), pedantic=True)
    assert err.value.err_code == 10058
    # Same spec again is idempotent.
    await create_stream(nc, EVENTS, pedantic=True)

    assert await delete_consumer(nc, "q_orders", "orders") is True
    assert await delete_consumer(nc, "q_orders", "orders", missing_ok=True) is False
    with pytest.raises(JetStreamApiError) as err:
        await delete_consumer(nc, "q_orders", "orders")
    assert err.value.err_code == 10014
    assert await delete_stream(nc, "q_audit") is True
    assert await delete_stream(nc, "q_audit", missing_ok=True) is False

    live = await read_live(nc)
    assert actions(pending(diff(DESIRED, live))) == [
        ("create", "stream", "q_audit"),
        ("create", "consumer", "orders"),
        ("create", "consumer", "audit"),
    ]


async def test_pedantic_refuses_what_the_server_would_adjust(nc: Any) -> None:
    # Without pedantic the server would clamp the default 2-minute duplicate window to max_age.
    body = {"name": "short", "subjects": ["short"], "max_age": 60 * NS, "pedantic": True}
    with pytest.raises(JetStreamApiError) as err:
        await api(nc, "$JS.API.STREAM.CREATE.short", body)
    assert err.value.err_code == 10157
    assert err.value.hint is not None and "pedantic" in err.value.hint
    # A spec always sends its duplicate window, so the same mistake is a plain refusal: the
    # mapping has to keep duplicate_window <= max_age.
    short = StreamSpec(name="short", subjects=["short"], max_age=60 * NS)
    with pytest.raises(JetStreamApiError) as err:
        await create_stream(nc, short, pedantic=True)
    assert err.value.err_code == 10052


async def test_schedules_need_rollups_which_the_request_adds(nc: Any) -> None:
    body = {"name": "sched", "subjects": ["sched.>"], "allow_msg_schedules": True}
    with pytest.raises(JetStreamApiError) as err:
        await api(nc, "$JS.API.STREAM.CREATE.sched", {**body, "pedantic": True})
    assert err.value.err_code == 10052
    spec = StreamSpec(name="sched", subjects=["sched.>"], allow_msg_schedules=True)
    info = await create_stream(nc, spec, pedantic=True)
    assert info["config"]["allow_rollup_hdrs"] is True


async def test_prune_deletes_a_managed_orphan_only(applied: Any) -> None:
    nc = applied
    await api(
        nc,
        "$JS.API.STREAM.CREATE.foreign",
        {"name": "foreign", "subjects": ["foreign.>"], "storage": "memory"},
    )
    gone = StreamSpec(name="q_gone", subjects=["sqs.gone"], metadata=_meta(ARN + "gone"))
    await create_stream(nc, gone, pedantic=True)
    live = await read_live(nc)

    kept = pending(diff(DESIRED, live))
    assert kept == []
    changes = pending(diff(DESIRED, live, prune=True))
    assert actions(changes) == [("delete", "stream", "q_gone")]
    await delete_stream(nc, changes[0].name)
    live = await read_live(nc)
    assert "foreign" in live.streams and "q_gone" not in live.streams


# More than one page of every list the readers walk: STREAM.LIST and CONSUMER.LIST page at 256
# infos on current servers, STREAM.NAMES at 1024 names.
PAGED_STREAMS = 1030
PAGED_CONSUMERS = 300


async def _create_all(nc: Any, requests: list[tuple[str, dict[str, Any]]]) -> None:
    """Many creates at once (bounded), so a thousand streams take seconds, not minutes."""
    gate = asyncio.Semaphore(32)

    async def one(subject: str, body: dict[str, Any]) -> None:
        async with gate:
            await api(nc, subject, body, 30.0)

    await asyncio.gather(*(one(subject, body) for subject, body in requests))


async def test_every_list_reader_sees_every_page(nc: Any) -> None:
    streams = [f"p{i:04d}" for i in range(PAGED_STREAMS)]
    await _create_all(
        nc,
        [
            (
                f"$JS.API.STREAM.CREATE.{name}",
                {"name": name, "subjects": [f"p.{name}"], "storage": "memory"},
            )
            for name in streams
        ],
    )
    consumers = [f"c{i:03d}" for i in range(PAGED_CONSUMERS)]
    await _create_all(
        nc,
        [
            (
                f"$JS.API.CONSUMER.CREATE.p0000.{name}",
                {
                    "stream_name": "p0000",
                    "config": {"durable_name": name, "ack_policy": "explicit"},
                },
            )
            for name in consumers
        ],
    )
    # Otherwise this test no longer tests paging: each list must need more than one page.
    assert (await api(nc, "$JS.API.STREAM.LIST", {"offset": 0}))["limit"] < PAGED_STREAMS
    assert (await api(nc, "$JS.API.STREAM.NAMES", {"offset": 0}))["limit"] < PAGED_STREAMS
    first = await api(nc, "$JS.API.CONSUMER.LIST.p0000", {"offset": 0})
    assert first["limit"] < PAGED_CONSUMERS

    live = await read_live(nc)
    assert sorted(live.streams) == streams
    assert sorted(live.streams["p0000"].consumers) == consumers
    assert live.streams["p0000"].consumers["c299"]["durable_name"] == "c299"
    assert all(live.streams[name].consumers == {} for name in streams[1:])
    assert await stream_names(nc) == set(streams)
    infos = await stream_infos(nc)
    assert sorted(infos) == streams and "state" in infos[streams[-1]]
    listed = await consumer_infos(nc, "p0000")
    assert listed is not None and sorted(listed) == consumers
    assert listed["c299"]["num_pending"] == 0
    assert await consumer_infos(nc, "no_such_stream") is None


async def test_jetstream_disabled_is_a_clear_error(nats_no_js: NatsServer) -> None:
    nc = await connect_nats(NatsOptions(servers=[nats_no_js.url]))
    try:
        with pytest.raises(JetStreamApiError) as err:
            await read_live(nc)
    finally:
        await nc.close()
    assert "JetStream is not enabled" in err.value.one_line()
    assert err.value.hint is not None and "-js" in err.value.hint


async def test_stream_missing_is_typed(nc: Any) -> None:
    with pytest.raises(JetStreamApiError) as err:
        await api(nc, "$JS.API.STREAM.INFO.nope", None)
    assert err.value.err_code == 10059
    assert err.value.code == 404
    assert err.value.where == "stream nope"
    assert isinstance(json.dumps({"e": err.value.one_line()}), str)


@pytest.mark.slow
async def test_cluster_replicas_round_trip(nats_cluster: NatsCluster) -> None:
    """R3 streams, consumers inheriting replicas (0), and the cluster name in ServerInfo."""
    nc = await connect_nats(NatsOptions(servers=nats_cluster.urls))
    try:
        r3 = Desired(
            streams=[s.model_copy(update={"num_replicas": 3}) for s in (ORDERS, ORDERS_DLQ)],
            consumers=[WORKER],
        )
        await apply_all(nc, r3, diff(r3, None))
        live: LiveState = await read_live(nc)
        assert live.server.cluster == "pytest"
        assert pending(diff(r3, live)) == []
        # A consumer given the stream's replica count explicitly is the same as inheriting.
        explicit = r3.model_copy(
            update={"consumers": [WORKER.model_copy(update={"num_replicas": 3})]}
        )
        assert pending(diff(explicit, live)) == []
    finally:
        await nc.close()


async def test_every_missing_bucket_is_one_error_naming_it_and_apply(nc: Any) -> None:
    from snsq2nats.errors import BucketMissing
    from snsq2nats.jetstream.kv import open_kv
    from snsq2nats.plan.buckets import BUCKET_USES

    for use in BUCKET_USES:
        with pytest.raises(BucketMissing) as missing:
            await open_kv(nc, use, "nats://here")
        error = missing.value
        assert error.bucket == use.bucket and use.bucket in error.what
        assert error.where == "nats://here"
        assert "snsq2nats apply" in (error.hint or "")
