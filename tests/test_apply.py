"""`snsq2nats apply` end to end: moto for AWS, real nats-server processes for JetStream.

Every test drives the CLI the way a person would (plan, apply, plan again) and then looks at
the server directly, so "apply worked" always means "the server holds the right objects".
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from click.testing import CliRunner, Result

from snsq2nats.apply import ApplyError, apply_plan
from snsq2nats.cli import main
from snsq2nats.demo.estate import seed_shop
from snsq2nats.demo.nats_server import NatsServer, free_ports
from snsq2nats.inventory import load_inventory
from snsq2nats.jetstream.api import api
from snsq2nats.jetstream.connect import NatsOptions, connect_nats
from snsq2nats.jetstream.spec import FOR_KEY, NS, ROUTE_KEY, SOURCE_KEY, LiveState
from snsq2nats.jetstream.state import read_live
from snsq2nats.plan.model import Plan
from snsq2nats.plan.pipeline import assemble_plan
from snsq2nats.plan.rules import load_rules
from tests.fixtures.aws import AwsEndpoint
from tests.fixtures.nats import TlsServer
from tests.fixtures.wait import retrying, until

T = TypeVar("T")
# The orders-* queues' consumers on NATS: the orders topic fans out through stream sources.
SHOP_CUTOVER = Path(__file__).parent / "data" / "mapping" / "shop_cutover.yaml"


def cli(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def desired(inventory: Path, *extra: str | Path) -> tuple[set[str], set[tuple[str, str]]]:
    """Stream names and (stream, consumer) pairs an inventory maps to, from an offline plan:
    the expectations follow the mapping rather than repeating it here."""
    result = cli("plan", "--inventory", inventory, "--offline", "--json", *extra)
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    return (
        {s["name"] for s in plan["streams"]},
        {(c["stream_name"], c["durable_name"]) for c in plan["consumers"]},
    )


def live_names(opts: NatsOptions) -> tuple[set[str], set[tuple[str, str]]]:
    state = live(opts)
    return set(state.streams), {(s, c) for s, ls in state.streams.items() for c in ls.consumers}


async def fresh_plan(nc: Any, inventory: Path, mapping: list[Path] | None = None) -> Plan:
    live_state = await read_live(nc)
    return assemble_plan(
        load_inventory(inventory), load_rules(mapping or []), live_state, server=live_state.server
    )


def on_nats(opts: NatsOptions, work: Callable[[Any], Awaitable[T]]) -> T:
    """Run `work(nc)` on a fresh connection: the tests themselves stay synchronous because the
    CLI under test runs its own event loop."""

    async def go() -> T:
        nc = await connect_nats(opts, name="pytest")
        try:
            return await work(nc)
        finally:
            await nc.close()

    return asyncio.run(go())


def live(opts: NatsOptions) -> LiveState:
    return on_nats(opts, read_live)


def stream_api(opts: NatsOptions, verb: str, name: str, body: dict[str, Any] | None) -> Any:
    return on_nats(opts, lambda nc: api(nc, f"$JS.API.STREAM.{verb}.{name}", body))


def hand_edit(opts: NatsOptions, name: str, **changes: Any) -> None:
    """Change a stream the way a person with natscli would: read, modify, update."""
    config = stream_api(opts, "INFO", name, None)["config"]
    stream_api(opts, "UPDATE", name, {**config, **changes})


@pytest.fixture
def opts(nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch) -> NatsOptions:
    monkeypatch.setenv("NATS_URL", nats_server.url)
    return NatsOptions(servers=[nats_server.url])


@pytest.fixture
def inventory(aws: AwsEndpoint, tmp_path: Path) -> Path:
    """The shop estate seeded into moto and scanned once into a file."""
    seed_shop(aws.client("sqs"), aws.client("sns"))
    path = tmp_path / "inventory.json"
    result = cli("scan", "-o", path)
    assert result.exit_code == 0, result.output
    return path


def applied(inventory: Path, *extra: str | Path) -> Result:
    result = cli("apply", "--inventory", inventory, "--auto-approve", *extra)
    assert result.exit_code == 0, result.output
    return result


def assert_converged(inventory: Path, *extra: str | Path) -> None:
    result = cli("plan", "--inventory", inventory, "--detailed-exitcode", *extra)
    assert result.exit_code == 0, result.output


# -- the happy path --------------------------------------------------------------------------


def test_apply_plan_file_is_exact_and_idempotent(
    opts: NatsOptions, aws: AwsEndpoint, tmp_path: Path
) -> None:
    seed_shop(aws.client("sqs"), aws.client("sns"))
    plan_file = tmp_path / "plan.json"
    result = cli("plan", "-o", plan_file)  # scans moto through the environment
    assert result.exit_code == 0, result.output
    plan = json.loads(plan_file.read_text())
    creates = [c for c in plan["changes"] if c["action"] == "create"]
    assert len(creates) == len(plan["changes"]) >= 17

    result = cli("apply", plan_file, "--auto-approve")
    assert result.exit_code == 0, result.output
    assert f"Apply complete: {len(creates)} created" in result.output

    result = cli("plan", "--detailed-exitcode")
    assert result.exit_code == 0, result.output
    state = live(opts)
    assert set(state.streams) == {s["name"] for s in plan["streams"]}
    consumers = {(s, c) for s, ls in state.streams.items() for c in ls.consumers}
    assert consumers == {(c["stream_name"], c["durable_name"]) for c in plan["consumers"]}
    # Every object is managed: traced to its AWS source, or (bridge-owned) to its route and
    # what that route serves; and exactly one consumer per queue carries the queue's ARN.
    configs = [s.config for s in state.streams.values()]
    configs += [c for s in state.streams.values() for c in s.consumers.values()]
    for config in configs:
        meta = config["metadata"]
        assert bool(meta.get(SOURCE_KEY)) != bool(meta.get(ROUTE_KEY) and meta.get(FOR_KEY))
    queue_consumers = [
        c["metadata"][SOURCE_KEY]
        for s in state.streams.values()
        for c in s.consumers.values()
        if c["metadata"].get(SOURCE_KEY, "").startswith("arn:aws:sqs:")
    ]
    queues = [r["source_arn"] for r in plan["resources"] if r["kind"] == "sqs-queue"]
    assert sorted(queue_consumers) == sorted(queues)

    result = cli("apply", "--auto-approve")
    assert result.exit_code == 0, result.output
    assert "No changes. JetStream matches the plan." in result.output
    # The same saved plan again: everything in it is already true, so nothing runs.
    result = cli("apply", plan_file)
    assert result.exit_code == 0, result.output
    assert f"{len(creates)} already as planned" in result.output


def test_without_a_terminal_apply_needs_auto_approve(opts: NatsOptions, inventory: Path) -> None:
    result = cli("apply", "--inventory", inventory)
    assert result.exit_code == 1
    assert "refusing to apply without confirmation" in result.output
    assert "--auto-approve" in result.output
    assert live(opts).streams == {}


def test_on_a_terminal_apply_asks_first(
    opts: NatsOptions, inventory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("snsq2nats.cli.apply._stdin_is_terminal", lambda: True)
    runner = CliRunner()
    result = runner.invoke(main, ["apply", "--inventory", str(inventory)], input="n\n")
    assert result.exit_code == 1
    assert "Apply these changes to NATS JetStream?" in result.output
    assert "apply cancelled: nothing was changed" in result.output
    assert live(opts).streams == {}

    result = runner.invoke(main, ["apply", "--inventory", str(inventory)], input="y\n")
    assert result.exit_code == 0, result.output
    assert "Apply complete" in result.output
    assert_converged(inventory)


# -- drift and stale plans -------------------------------------------------------------------


def test_drift_is_repaired_and_unmanaged_fields_survive(opts: NatsOptions, inventory: Path) -> None:
    applied(inventory)
    hand_edit(opts, "sqs_orders-dlq", max_age=3600 * NS, allow_direct=True)

    result = cli("plan", "--inventory", inventory, "--detailed-exitcode")
    assert result.exit_code == 2, result.output
    assert "max_age" in result.output

    result = applied(inventory)
    assert "1 updated" in result.output
    assert_converged(inventory)
    config = live(opts).streams["sqs_orders-dlq"].config
    assert config["max_age"] == 14 * 86400 * NS  # the queue's MessageRetentionPeriod
    assert config["allow_direct"] is True  # not managed by snsq2nats: left as set by hand


def test_stale_plan_is_refused_and_nothing_changes(
    opts: NatsOptions, inventory: Path, tmp_path: Path
) -> None:
    applied(inventory)
    hand_edit(opts, "sqs_orders-dlq", max_age=3600 * NS)
    plan_file = tmp_path / "plan.json"
    assert cli("plan", "--inventory", inventory, "-o", plan_file).exit_code == 0
    # After the plan was reviewed, someone changes another stream.
    hand_edit(opts, "sqs_orders-fraud", max_age=7200 * NS)

    result = cli("apply", plan_file)
    assert result.exit_code == 1
    assert "the live state changed since the plan was made" in result.output
    assert "stream sqs_orders-fraud: planned no change, now update (max_age)" in result.output
    assert "run plan again" in result.output
    state = live(opts)
    assert state.streams["sqs_orders-dlq"].config["max_age"] == 3600 * NS
    assert state.streams["sqs_orders-fraud"].config["max_age"] == 7200 * NS


def test_a_name_held_by_a_foreign_stream_is_an_error_not_a_noop(
    opts: NatsOptions, inventory: Path
) -> None:
    stream_api(opts, "CREATE", "sqs_orders-dlq", {"name": "sqs_orders-dlq", "subjects": ["old"]})
    # Refused before the confirmation question: no --auto-approve needed to see why.
    result = cli("apply", "--inventory", inventory)
    assert result.exit_code == 1
    assert "stream sqs_orders-dlq exists but is not managed by snsq2nats" in result.output
    assert set(live(opts).streams) == {"sqs_orders-dlq"}


async def test_a_foreign_consumer_under_a_managed_name_is_refused(
    nats_server: NatsServer, inventory: Path
) -> None:
    nc = await connect_nats(NatsOptions(servers=[nats_server.url]), name="pytest")
    try:
        plan = await fresh_plan(nc, inventory)
        assert (await apply_plan(nc, plan, allow_destructive=False)).ok
        await api(nc, "$JS.API.CONSUMER.DELETE.sqs_orders-dlq.orders-dlq")
        foreign = {"durable_name": "orders-dlq", "ack_policy": "explicit"}
        await api(
            nc,
            "$JS.API.CONSUMER.CREATE.sqs_orders-dlq.orders-dlq",
            {"stream_name": "sqs_orders-dlq", "config": foreign},
        )
        plan = await fresh_plan(nc, inventory)
        with pytest.raises(
            ApplyError, match="consumer sqs_orders-dlq/orders-dlq exists but is not"
        ):
            await apply_plan(nc, plan, allow_destructive=True)
        live_config = (await read_live(nc)).streams["sqs_orders-dlq"].consumers["orders-dlq"]
        assert SOURCE_KEY not in (live_config.get("metadata") or {})
    finally:
        await nc.close()


async def test_writes_run_in_dependency_order(nats_server: NatsServer, inventory: Path) -> None:
    nc = await connect_nats(NatsOptions(servers=[nats_server.url]), name="pytest")
    try:
        plan = await fresh_plan(nc, inventory, [SHOP_CUTOVER])
        finished: list[tuple[str, str, str]] = []
        result = await apply_plan(
            nc, plan, allow_destructive=False, on_progress=lambda o: finished.append(o.key)
        )
    finally:
        await nc.close()
    assert result.ok and len(result.done) == len(plan.pending)
    # on_progress fires on completion, and a write starts only after what it needs completed.
    at = {key: i for i, key in enumerate(finished)}

    def stream(name: str) -> int:
        return at[("stream", name, name)]

    checked = 0
    for spec in plan.streams:
        for source in spec.sources or []:
            assert stream(source.name) < stream(spec.name)
            checked += 1
    for route in plan.routes:
        if route.kind == "dlq-mover" and route.stream and route.target_stream:
            assert stream(route.target_stream) < stream(route.stream)
            checked += 1
    for consumer in plan.consumers:
        assert (
            stream(consumer.stream_name)
            < at[("consumer", consumer.stream_name, consumer.durable_name)]
        )
    assert checked >= 2  # two dead-letter queues (the shop's orders topic fans out via SNS)


# -- sources and bridge consumers added to live streams ---------------------------------------

FANNED_OUT = ("sqs_orders-billing", "sqs_orders-shipping", "sqs_orders-analytics")


def sources_shop(inventory: Path, *, without: str | None = None, unfiltered: bool = False) -> Path:
    """The shop with every orders subscription raw and the https one gone, so the topic fans
    out through stream sources; `without`: leave out the subscription into that queue too;
    `unfiltered`: no filter policies (a filtered subscription is its router's, not a source)."""
    doc = json.loads(inventory.read_text())
    subs = []
    for sub in doc["subscriptions"]:
        if sub["protocol"] != "sqs" or (without and sub["endpoint"].endswith(":" + without)):
            continue
        policy = None if unfiltered else sub["filter_policy"]
        subs.append({**sub, "raw_message_delivery": True, "filter_policy": policy})
    doc["subscriptions"] = subs
    path = inventory.with_name(f"sources-{without or 'all'}.json")
    path.write_text(json.dumps(doc))
    return path


def test_a_source_added_later_starts_after_the_topics_last_message(
    opts: NatsOptions, inventory: Path
) -> None:
    """A subscription added once the topic stream holds messages (found by the next scan) is
    like a new SNS subscription: its source starts after them, whether apply adds it to a live
    queue stream (update) or creates the queue stream with it; a later apply keeps that start,
    and the plan shows no change for it. Sources that were there keep theirs."""
    before = sources_shop(inventory, without="orders-analytics", unfiltered=True)
    applied(before)
    state = live(opts)
    (billing,) = state.streams["sqs_orders-billing"].config["sources"]
    assert billing.get("opt_start_seq") is None  # the topic stream was empty: from its start
    assert "sources" not in state.streams["sqs_orders-analytics"].config

    async def publish(nc: Any, body: str) -> None:
        await nc.jetstream().publish("sns.orders", body.encode())

    for i in range(3):
        on_nats(opts, lambda nc, i=i: publish(nc, f"early-{i}"))
    # One queue stream is gone meanwhile (re-created: the create path).
    stream_api(opts, "DELETE", "sqs_orders-shipping", None)

    after = sources_shop(inventory, unfiltered=True)
    result = applied(after)
    assert "2 created, 1 updated" in result.output, result.output
    state = live(opts)
    for name in ("sqs_orders-shipping", "sqs_orders-analytics"):
        (source,) = state.streams[name].config["sources"]
        assert (source["name"], source.get("opt_start_seq")) == ("sns_orders", 4), name
    (billing,) = state.streams["sqs_orders-billing"].config["sources"]
    assert billing.get("opt_start_seq") is None

    for i in range(2):
        on_nats(opts, lambda nc, i=i: publish(nc, f"late-{i}"))

    async def queue_bodies(nc: Any, stream: str, count: int) -> list[str]:
        js = nc.jetstream()

        async def caught_up() -> bool:
            # A source reports its lag behind the topic stream, counted from its start: 0 with
            # the late messages in means it has seen all of the topic's 5 (asserted below).
            info = await api(nc, f"$JS.API.STREAM.INFO.{stream}", None)
            lags = [source.get("lag", 0) for source in info.get("sources") or []]
            return info["state"]["messages"] >= count and lags == [0]

        await until(caught_up, what=f"{stream} to catch up with sns_orders")
        info = await js.stream_info(stream)
        return [
            (await js.get_msg(stream, seq)).data.decode()
            for seq in range(info.state.first_seq, info.state.last_seq + 1)
        ]

    for name in ("sqs_orders-shipping", "sqs_orders-analytics"):
        bodies = on_nats(opts, lambda nc, n=name: queue_bodies(nc, n, 2))
        assert bodies == ["late-0", "late-1"], name
    assert on_nats(opts, lambda nc: queue_bodies(nc, "sqs_orders-billing", 5)) == [
        "early-0",
        "early-1",
        "early-2",
        "late-0",
        "late-1",
    ]
    assert stream_api(opts, "INFO", "sns_orders", None)["state"]["last_seq"] == 5

    # Re-planning sees no difference in the anchored sources; re-applying changes nothing.
    assert_converged(after)
    result = applied(after)
    assert "No changes. JetStream matches the plan." in result.output
    # An update for another reason (drift) rewrites the config: the start survives it.
    hand_edit(opts, "sqs_orders-shipping", max_age=3600 * NS)
    result = applied(after)
    assert "1 updated" in result.output, result.output
    (source,) = live(opts).streams["sqs_orders-shipping"].config["sources"]
    assert source.get("opt_start_seq") == 4
    assert_converged(after)


def test_bridge_consumers_start_at_their_creation(opts: NatsOptions, inventory: Path) -> None:
    """The nats-to-sns relay's consumer (a topic fanning out through SNS) and a filter router
    (through sources) exist from the apply that creates their topic's subscription, anchored
    after what the topic stream held then: they carry what is published from then on, like a
    new SNS subscription, whatever the cutover state."""
    partial = sources_shop(inventory, without="orders-fraud")
    applied(partial)

    async def publish(nc: Any) -> None:
        for i in range(3):
            await nc.jetstream().publish("sns.orders.order_placed.eu", f"m{i}".encode())

    on_nats(opts, publish)
    applied(sources_shop(inventory))
    router = live(opts).streams["sns_orders"].consumers["snsq2nats-filter-orders-fraud"]
    assert (router["deliver_policy"], router.get("opt_start_seq")) == ("by_start_sequence", 4)
    applied(inventory)  # the real shop: an https subscriber, so the topic fans out via SNS
    relay = live(opts).streams["sns_orders"].consumers["snsq2nats-to-sns"]
    assert (relay["deliver_policy"], relay.get("opt_start_seq")) == ("by_start_sequence", 4)


# -- destructive changes ---------------------------------------------------------------------


def test_replace_needs_allow_destructive_and_names_the_loss(
    opts: NatsOptions, inventory: Path, tmp_path: Path
) -> None:
    applied(inventory)

    async def publish(nc: Any) -> None:
        js = nc.jetstream()
        for i in range(3):
            await js.publish("sqs.orders-fraud", f"order {i}".encode())

    on_nats(opts, publish)
    mapping = tmp_path / "memory.yaml"
    mapping.write_text("overrides:\n  - match: orders-fraud\n    storage: memory\n")
    plan_file = tmp_path / "plan.json"
    result = cli("plan", "--inventory", inventory, "--mapping", mapping, "-o", plan_file)
    assert result.exit_code == 0, result.output
    assert "storage cannot change in place" in result.output

    result = cli("apply", plan_file)
    assert result.exit_code == 1
    assert "stream sqs_orders-fraud would lose 3 messages" in result.output
    assert "--allow-destructive" in result.output
    assert live(opts).streams["sqs_orders-fraud"].config["storage"] == "file"

    result = cli("apply", plan_file, "--allow-destructive")
    assert result.exit_code == 0, result.output
    assert "1 replaced" in result.output
    state = live(opts)
    assert state.streams["sqs_orders-fraud"].config["storage"] == "memory"
    assert set(state.streams["sqs_orders-fraud"].consumers) == {"orders-fraud"}
    assert_converged(inventory, "--mapping", mapping)


def test_prune_deletes_managed_orphans_only(
    opts: NatsOptions, inventory: Path, tmp_path: Path
) -> None:
    applied(inventory)
    stream_api(opts, "CREATE", "legacy", {"name": "legacy", "subjects": ["legacy.>"]})
    raw = json.loads(inventory.read_text())
    raw["queues"] = [q for q in raw["queues"] if q["name"] != "notifications-delayed"]
    smaller = tmp_path / "smaller.json"
    smaller.write_text(json.dumps(raw))

    before = desired(inventory)
    after = desired(smaller)
    gone = len(before[0] - after[0]) + len(before[1] - after[1])
    assert gone >= 2  # at least the queue's stream and its consumer

    result = applied(smaller, "--prune")
    assert f"{gone} deleted" in result.output
    streams, consumers = live_names(opts)
    assert streams == after[0] | {"legacy"}
    assert consumers == after[1]
    assert_converged(smaller, "--prune")


# -- failures ----------------------------------------------------------------------------------


def test_partial_failure_stops_reports_and_a_rerun_converges(
    opts: NatsOptions, inventory: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # table rows on one line each, to assert on them
    # A stream snsq2nats does not manage already captures a subject the plan needs.
    stream_api(
        opts,
        "CREATE",
        "legacy_shipping",
        {"name": "legacy_shipping", "subjects": ["sqs.orders-shipping"]},
    )
    plan_file = tmp_path / "plan.json"
    assert cli("plan", "--inventory", inventory, "-o", plan_file).exit_code == 0

    result = cli("apply", plan_file)
    assert result.exit_code == 1
    out = result.output
    assert "Apply stopped" in out
    assert "failed: 10065" in out  # the server's subject-overlap error code
    assert "stream sqs_orders-shipping" in out
    # Its consumer cannot exist without it, and is reported as not done.
    assert re.search(r"stream sqs_orders-shipping +│ create │ failed: 10065", out)
    assert re.search(
        r"consumer sqs_orders-shipping/orders-shipping +│ create │ not done: needs stream "
        "sqs_orders-shipping, which was not applied",
        out,
    )
    assert "sqs_orders-shipping" not in live(opts).streams

    stream_api(opts, "DELETE", "legacy_shipping", None)
    result = cli("apply", plan_file)  # the same plan: what was done is skipped, the rest runs
    assert result.exit_code == 0, result.output
    assert "Apply complete" in result.output
    assert_converged(inventory)


def test_damaged_plan_file_is_named(tmp_path: Path, opts: NatsOptions, inventory: Path) -> None:
    plan_file = tmp_path / "plan.json"
    assert cli("plan", "--inventory", inventory, "-o", plan_file).exit_code == 0
    truncated = tmp_path / "truncated.json"
    truncated.write_text(plan_file.read_text()[:500])
    result = cli("apply", truncated)
    assert result.exit_code == 1
    assert str(truncated) in result.output
    assert "not valid JSON" in result.output
    assert "Traceback" not in result.output


def test_unreachable_server_is_a_clear_error(
    tmp_path: Path, inventory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NATS_URL", f"nats://127.0.0.1:{free_ports(1)[0]}")
    plan_file = tmp_path / "plan.json"
    assert cli("plan", "--inventory", inventory, "--offline", "-o", plan_file).exit_code == 0

    result = cli("apply", plan_file)
    assert result.exit_code == 1
    assert "cannot connect to NATS" in result.output
    result = cli("apply", "--inventory", inventory, "--auto-approve")
    assert result.exit_code == 1
    assert "cannot apply: no NATS server reachable" in result.output


# -- the seed's world: 3 nodes, replicas 3, mutual TLS ---------------------------------------


@pytest.mark.slow
def test_secure_cluster_replicas_3_survives_losing_a_node(
    nats_tls_cluster: TlsServer, inventory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NATS_URL", nats_tls_cluster.url)
    monkeypatch.setenv("NATS_CA", str(nats_tls_cluster.ca))
    monkeypatch.setenv("NATS_CERT", str(nats_tls_cluster.cert))
    monkeypatch.setenv("NATS_KEY", str(nats_tls_cluster.key))
    opts = nats_tls_cluster.options()

    applied(inventory, "--replicas", "3")
    assert_converged(inventory, "--replicas", "3")
    state = live(opts)
    assert set(state.streams) == desired(inventory)[0]
    assert {s.config["num_replicas"] for s in state.streams.values()} == {3}

    async def round_trip(nc: Any, body: bytes) -> tuple[bytes, str]:
        js = nc.jetstream()
        # Right after losing a node the stream and its consumer may be electing leaders (the
        # API answers "service unavailable" meanwhile): retry each step until they have.
        await retrying(lambda: js.publish("sqs.orders-fraud", body, timeout=2))
        sub = await retrying(
            lambda: js.pull_subscribe_bind("orders-fraud", stream="sqs_orders-fraud")
        )
        msgs = await retrying(lambda: sub.fetch(1, timeout=5))
        await retrying(msgs[0].ack_sync)
        info = await retrying(lambda: api(nc, "$JS.API.STREAM.INFO.sqs_orders-fraud"))
        return msgs[0].data, str(info["cluster"]["leader"])

    data, leader = on_nats(opts, lambda nc: round_trip(nc, b"one big burger"))
    assert data == b"one big burger"

    assert nats_tls_cluster.cluster is not None
    nats_tls_cluster.cluster.kill_node(int(leader.removeprefix("n")) - 1)  # the stream's leader
    data, new_leader = on_nats(opts, lambda nc: round_trip(nc, b"another big burger"))
    assert data == b"another big burger"
    assert new_leader != leader
