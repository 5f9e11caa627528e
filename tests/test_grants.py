"""Grants derived from the requests: declarations, the grants record `apply` checks, and a fleet
member that cannot acquire a route it should is not ready (and confirms no cutover).

The whole tool under the generated identities (every admin command and a bridge fleet with a
restart, password and JWT modes) is in tests/test_grants_journey.py.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import nats
import pytest

from snsq2nats.auth.config import write_auth
from snsq2nats.auth.identities import Identity, identities
from snsq2nats.auth.record import covers, gaps, load_record, record_text, regenerate_command
from snsq2nats.bridge.context import BridgeContext
from snsq2nats.bridge.fleet import Fleet
from snsq2nats.bridge.metrics import ready
from snsq2nats.bridge.runtime import run_bridge
from snsq2nats.cutover import wait_for_bridges
from snsq2nats.demo.nats_server import NatsServer
from snsq2nats.errors import CutoverError
from snsq2nats.files import document_json
from snsq2nats.inventory import load_inventory
from snsq2nats.jetstream.api import create_stream
from snsq2nats.jetstream.connect import NatsOptions, connect_nats
from snsq2nats.jetstream.kv import open_kv
from snsq2nats.jetstream.operations import DIRECT_GET, KvOp, UndeclaredOperation, bucket_use
from snsq2nats.jetstream.spec import ServerInfo
from snsq2nats.plan.buckets import (
    BUCKET_USES,
    CUTOVER_FOLLOWER,
    FLEET_BUCKET,
    cutover_bucket_spec,
    fleet_bucket_spec,
)
from snsq2nats.plan.fleet import Heartbeat, member_key, route_key
from snsq2nats.plan.model import Plan, Route
from snsq2nats.plan.pipeline import assemble_plan
from snsq2nats.plan.rules import load_rules
from tests.fixtures.wait import until

DATA = Path(__file__).parent / "data"
SHOP = DATA / "mapping" / "shop_inventory.json"
SHOP_CUTOVER = DATA / "mapping" / "shop_cutover.yaml"


def shop_plan(inventory: Any = None) -> Plan:
    return assemble_plan(
        inventory or load_inventory(SHOP),
        load_rules([SHOP_CUTOVER]),
        None,
        server=ServerInfo(reachable=False, version="2.12.0"),
    )


def by_name(plan: Plan) -> dict[str, Identity]:
    return {i.name: i for i in identities(plan)}


# --- declarations ------------------------------------------------------------------------------


def test_every_bucket_use_is_granted_to_its_role() -> None:
    """The bridge may read a released lease (DIRECT.GET, and MSG.GET on a bucket without
    direct reads): what nats-py's create does after a delete, the cause of issue 18's stuck
    fleet. Each role's identity carries exactly its buckets' declared grants."""
    generated = by_name(shop_plan())
    for use in BUCKET_USES:
        identity = generated["snsq2nats-bridge" if use.role == "bridge" else "snsq2nats-admin"]
        assert set(use.grants()) <= set(identity.publish), use
    bridge = set(generated["snsq2nats-bridge"].publish)
    assert "$JS.API.DIRECT.GET.KV_snsq2nats_fleet.>" in bridge
    assert "$JS.API.STREAM.MSG.GET.KV_snsq2nats_fleet" in bridge
    # Follows the cutover state, never writes it.
    assert "$KV.snsq2nats_cutover.>" not in bridge
    assert "$KV.snsq2nats_cutover.>" in generated["snsq2nats-admin"].publish


def test_operation_grants_leave_unnamed_fields_as_wildcards() -> None:
    assert DIRECT_GET.subject(stream="KV_b") == "$JS.API.DIRECT.GET.KV_b"
    assert DIRECT_GET.grants(stream="KV_b") == [
        "$JS.API.DIRECT.GET.KV_b",
        "$JS.API.DIRECT.GET.KV_b.>",
    ]


async def test_an_undeclared_bucket_call_fails_before_any_request() -> None:
    """A bucket opened for following cannot be written: the code would be refused by the
    server under the generated identity, so it is refused here first, with or without one."""
    with pytest.raises(UndeclaredOperation, match="put on bucket snsq2nats_cutover"):
        CUTOVER_FOLLOWER.require(KvOp.PUT)
    with NatsServer(name="undeclared") as server:
        nc = await connect_nats(NatsOptions(servers=[server.url]))
        try:
            await create_stream(nc, cutover_bucket_spec(), pedantic=False)
            kv = await open_kv(nc, CUTOVER_FOLLOWER)
            with pytest.raises(UndeclaredOperation):
                await kv.put("resource.x", b"{}")
            with pytest.raises(UndeclaredOperation):
                await kv.get("resource.x")
            reader = await open_kv(nc, bucket_use("snsq2nats_cutover", "admin", KvOp.GET))
            with pytest.raises(UndeclaredOperation):
                await reader.watch(">")
        finally:
            await nc.close()


# --- the grants record -------------------------------------------------------------------------


def test_covers_follows_nats_wildcards() -> None:
    assert covers("$JS.API.CONSUMER.INFO.s.*", "$JS.API.CONSUMER.INFO.s.snsq2nats-filter-x")
    assert covers("$JS.API.CONSUMER.INFO.s.*", "$JS.API.CONSUMER.INFO.s.*")
    assert covers("$KV.b.>", "$KV.b.>") and covers("$KV.b.>", "$KV.b.routes.x")
    assert not covers("$KV.b.>", "$KV.b")
    assert not covers("$JS.API.CONSUMER.INFO.s.*", "$JS.API.CONSUMER.INFO.s.>")
    assert not covers("$JS.API.CONSUMER.INFO.s.*", "$JS.API.CONSUMER.INFO.t.c")
    assert not covers("$JS.API.STREAM.INFO.s", "$JS.API.STREAM.INFO.s.x")


def _record(tmp_path: Path, plan: Plan) -> Any:
    (tmp_path / "grants.json").write_text(
        record_text(identities(plan), ["--format", "jwt", "--url", "nats://n:4222"])
    )
    record = load_record(tmp_path)
    assert record is not None
    return record


def test_find_record_given_beside_the_context_then_nats_auth(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from snsq2nats.auth.record import find_record
    from snsq2nats.errors import UsageError

    plan = shop_plan()

    def found(given: Path | None, context: str | None) -> Path | None:
        record = find_record(given, context)
        return record.path.resolve() if record is not None else None

    monkeypatch.chdir(tmp_path)
    assert found(None, None) is None
    with pytest.raises(UsageError, match="no grants record at"):
        find_record(tmp_path / "nowhere", None)
    (tmp_path / "nats-auth" / "x").mkdir(parents=True)
    (tmp_path / "auth" / "contexts").mkdir(parents=True)
    default = _record(tmp_path / "nats-auth", plan)
    assert found(None, None) == default.path
    beside = _record(tmp_path / "auth", plan)
    context = tmp_path / "auth" / "contexts" / "snsq2nats-admin.json"
    context.write_text("{}")
    assert found(None, str(context)) == beside.path
    # A context by name (not a file auth wrote) leaves the default.
    assert found(None, "snsq2nats-admin") == default.path
    assert found(tmp_path / "auth", None) == beside.path


def _fanning_out_on_nats(policy: dict[str, Any] | None = None) -> Plan:
    """The shop estate without its webhook and envelope subscriptions, so orders fans out through
    stream sources (orders-fraud's numeric filter through the bridge's filter router), and
    with orders-billing's filter policy replaced by `policy` if given."""
    inventory = load_inventory(SHOP)
    subscriptions = [
        s.model_copy(update={"filter_policy": json.dumps(policy)})
        if policy is not None and s.endpoint.endswith(":orders-billing")
        else s
        for s in inventory.subscriptions
        if s.protocol == "sqs" and s.raw_message_delivery
    ]
    return shop_plan(inventory.model_copy(update={"subscriptions": subscriptions}))


def test_a_replan_within_the_shaped_grants_needs_no_new_grants(tmp_path: Path) -> None:
    """A changed filter that moves a subscription to the bridge's filter router adds a bridge
    consumer on a stream the bridge already reads: the recorded grants still cover it."""
    before = _fanning_out_on_nats()
    record = _record(tmp_path, before)
    after = _fanning_out_on_nats({"amount": [{"numeric": [">=", 100]}]})
    new = [r for r in after.candidate_routes if r not in before.candidate_routes]
    assert [r.consumer for r in new if r.kind == "filter-router"] == [
        "snsq2nats-filter-orders-billing"
    ], [r.name for r in new]
    assert not [g for g in gaps(record, identities(after)) if g.identity == "snsq2nats-bridge"]


def test_a_replan_with_a_new_queue_names_each_identity_and_the_command(tmp_path: Path) -> None:
    before = shop_plan()
    record = _record(tmp_path, before)
    inventory = load_inventory(SHOP)
    queue = next(q for q in inventory.queues if q.name == "orders-billing")
    audit = queue.model_copy(
        update={
            "name": "audit",
            "arn": queue.arn.replace("orders-billing", "audit"),
            "url": queue.url.replace("orders-billing", "audit"),
        }
    )
    after = shop_plan(inventory.model_copy(update={"queues": [*inventory.queues, audit]}))
    found = {g.identity: g for g in gaps(record, identities(after))}
    assert found["sqs_audit-producer"].new and found["sqs_audit-consumer"].new
    assert any(s.endswith("sqs_audit") for s in found["snsq2nats-admin"].missing)
    command = regenerate_command(record, ["--plan", "plan 2.json"])
    assert command == (
        f"snsq2nats auth --plan 'plan 2.json' -o {tmp_path} --format jwt --url nats://n:4222"
    )
    assert not gaps(record, identities(before))


def test_cli_apply_refuses_a_plan_the_recorded_grants_do_not_cover(tmp_path: Path) -> None:
    """Checked before anything is applied (no server is even reached); the auth command it
    prints regenerates grants that cover the plan, then the check passes."""
    import shlex

    from click.testing import CliRunner

    from snsq2nats.cli import main

    before, after = tmp_path / "plan1.json", tmp_path / "plan2.json"
    before.write_bytes(document_json(shop_plan()))
    inventory = load_inventory(SHOP)
    fewer = [q for q in inventory.queues if q.name != "orders-billing"]
    after.write_bytes(document_json(shop_plan(inventory.model_copy(update={"queues": fewer}))))
    grants = tmp_path / "auth"
    made = CliRunner().invoke(main, ["auth", "--plan", str(after), "-o", str(grants)])
    assert made.exit_code == 0, made.output
    refused = CliRunner().invoke(
        main, ["apply", str(before), "--grants", str(grants), "-s", "nats://127.0.0.1:9"]
    )
    assert refused.exit_code == 1
    text = " ".join(refused.output.split())
    assert "do not cover this plan" in text and "sqs_orders-billing-producer (new" in text
    command = text.split("regenerate them: `")[1].split("`")[0]
    assert command.startswith(f"snsq2nats auth --plan {before} -o {grants}")
    again = CliRunner().invoke(main, shlex.split(command)[1:])
    assert again.exit_code == 0, again.output
    checked = CliRunner().invoke(
        main, ["apply", str(before), "--grants", str(grants), "-s", "nats://127.0.0.1:9"]
    )
    said = " ".join(checked.output.split())
    assert "covers this plan" in said and "do not cover" not in said


# --- readiness ----------------------------------------------------------------------------------


def _route(name: str) -> Route:
    arn = f"arn:aws:sqs:us-east-1:123456789012:{name.split(':')[-1]}"
    return Route(name=name, kind="sqs-to-nats", source_arn=arn, aws_arn=arn)


async def test_a_member_refused_its_lease_is_not_ready_and_confirms_nothing(
    tmp_path: Path, aws: Any
) -> None:
    """Issue 18: a bridge identity without DIRECT.GET (the old hand-written grants) cannot
    re-acquire a released route. It is not ready (/readyz says why), its heartbeat says so,
    `cutover` does not count it as confirming, and `status` fails the unowned route with the
    cause. The same member with the generated grants acquires it."""
    from snsq2nats import status as status_lib

    routes = [_route("sqs:orders-shipping")]
    plan = Plan(
        generated_at="now",
        server=ServerInfo(reachable=True),
        routes=routes,
        streams=[fleet_bucket_spec(), cutover_bucket_spec()],
    )
    generated = {i.name: i for i in identities(plan)}
    bridge = generated["snsq2nats-bridge"]
    stale = Identity(
        name="stale-bridge",
        role="bridge",
        serves=None,
        publish=tuple(s for s in bridge.publish if ".DIRECT.GET." not in s),
        subscribe=("_INBOX_stale-bridge.>",),
    )
    written = write_auth([*generated.values(), stale], tmp_path / "auth")
    server = NatsServer(name="stale", users=written.users)
    server.start()
    try:
        admin_opts = _options(server, written, generated["snsq2nats-admin"])
        admin = await connect_nats(admin_opts)
        await create_stream(admin, fleet_bucket_spec(), pedantic=False)
        # The route was run and released before: its key holds a delete marker.
        raw = await nats.connect(server.url, **_login(written, "snsq2nats-admin"))
        kv = await raw.jetstream().key_value(FLEET_BUCKET)
        await kv.put(route_key(routes[0].name), b"{}")
        await kv.delete(route_key(routes[0].name))
        await raw.close()

        async def member(identity: Identity) -> tuple[Fleet, BridgeContext, asyncio.Task[None]]:
            nc = await connect_nats(_options(server, written, identity))
            ctx = BridgeContext(plan=plan, nc=nc, sqs=None, sns=None)  # type: ignore[arg-type]
            # Longer than a refused request takes to time out (a member keeps beating meanwhile).
            fleet = Fleet(nc, routes, lease_ttl=12.0, member=identity.name)

            async def runner(ctx: BridgeContext, route: Route) -> None:
                await ctx.stopping.wait()

            task = asyncio.create_task(
                run_bridge(
                    ctx, routes, {"sqs-to-nats": runner}, handle_signals=False, coordinator=fleet
                )
            )
            return fleet, ctx, task

        fleet, ctx, task = await member(stale)
        try:
            await until(lambda: fleet.blocked, what="the stale member to fail to acquire")
            why = ready(ctx, fleet)
            assert why is not None and "sqs:orders-shipping" in why, why
            assert "direct.get.kv_snsq2nats_fleet" in why.lower(), why
            beat = await _heartbeat(admin, "stale-bridge")
            await until(lambda: _not_ready(admin, "stale-bridge"), what="heartbeat says so")
            beat = await _heartbeat(admin, "stale-bridge")
            assert "sqs:orders-shipping" in beat.blocked
            # The member ran every cutover revision it saw, but confirms none while not ready.
            fleet.cutover_revision = 10**6
            await fleet.beat()
            lines: list[str] = []
            with pytest.raises(CutoverError, match="stale-bridge is not ready: sqs:orders-ship"):
                await wait_for_bridges(admin, 1, 2.0, lines.append)
            sqs = aws.client("sqs")
            (status,) = await status_lib.collect(admin, lambda region: sqs, plan, routes)
            assert not status.drained and status.owner is not None
            assert status.owner.problem is not None
            assert "unowned while 1 bridge member(s) run" in status.reason
            assert "stale-bridge: cannot acquire" in status.reason
        finally:
            ctx.stopping.set()
            await asyncio.wait_for(task, 30)
            await ctx.nc.close()
        fleet, ctx, task = await member(bridge)
        try:
            await until(lambda: set(fleet.owned) == {routes[0].name}, what="generated grants")
            assert ready(ctx, fleet) is None and not fleet.blocked
            fleet.cutover_revision = 1
            await fleet.beat()
            assert await wait_for_bridges(admin, 1, 30.0, print) == ["snsq2nats-bridge"]
        finally:
            ctx.stopping.set()
            await asyncio.wait_for(task, 30)
            await ctx.nc.close()
        await admin.close()
    finally:
        log = server.log_file.read_text()
        server.close()
    # The only refusals were the stale identity's.
    refused = [line for line in log.splitlines() if "Violation" in line]
    assert refused and all("stale-bridge" in line for line in refused), refused[:3]


def _login(written: Any, name: str) -> dict[str, Any]:
    return {
        "user": name,
        "password": written.secrets[name].read_text().strip(),
        "inbox_prefix": f"_INBOX_{name}",
    }


def _options(server: NatsServer, written: Any, identity: Identity) -> NatsOptions:
    return NatsOptions(
        servers=[server.url],
        user=identity.name,
        password=written.secrets[identity.name].read_text().strip(),
        inbox_prefix=identity.inbox_prefix,
    )


async def _heartbeat(nc: Any, member: str) -> Heartbeat:
    from snsq2nats.jetstream.state import read_bucket
    from snsq2nats.plan.buckets import FLEET_OBSERVER

    values = await read_bucket(nc, FLEET_OBSERVER, member_key(member)) or {}
    (value,) = values.values()
    return Heartbeat.model_validate_json(value.value)


async def _not_ready(nc: Any, member: str) -> bool:
    return not (await _heartbeat(nc, member)).ready


def test_heartbeats_without_readiness_count_as_ready() -> None:
    """Members of an older version (no `ready` field) keep confirming cutovers."""
    old = json.dumps(
        {
            "member": "m",
            "host": "h",
            "pid": 1,
            "started": "s",
            "at": "a",
            "lease_ttl": 3.0,
            "selection": "x",
        }
    )
    beat = Heartbeat.model_validate_json(old)
    assert beat.ready and beat.blocked == {}


async def test_a_member_whose_runner_keeps_failing_is_not_ready(nats_url: str, aws: Any) -> None:
    """A route held but not running (its runner fails and restarts, say refused its consumer
    after a re-plan) makes the member unready with why, and `status` fails the route; once it
    runs, ready again."""
    from snsq2nats import status as status_lib
    from snsq2nats.bridge.context import Timings

    routes = [_route("sqs:orders-fraud")]
    plan = Plan(generated_at="now", server=ServerInfo(reachable=True), routes=routes)
    nc = await connect_nats(NatsOptions(servers=[nats_url]))
    await create_stream(nc, fleet_bucket_spec(), pedantic=False)
    ctx = BridgeContext(
        plan=plan,
        nc=nc,
        sqs=None,  # type: ignore[arg-type]
        sns=None,  # type: ignore[arg-type]
        timings=Timings(restart_base=0.5, restart_cap=0.5),
    )
    fleet = Fleet(nc, routes, lease_ttl=3.0, member="failing")
    healthy = asyncio.Event()

    async def runner(ctx: BridgeContext, route: Route) -> None:
        if not healthy.is_set():
            raise RuntimeError("consumer info refused")
        await ctx.stopping.wait()

    task = asyncio.create_task(
        run_bridge(ctx, routes, {"sqs-to-nats": runner}, handle_signals=False, coordinator=fleet)
    )
    try:
        await until(lambda: "sqs:orders-fraud" in fleet.blocked, what="the failing runner seen")
        assert fleet.blocked["sqs:orders-fraud"].startswith("runner restarting")
        why = ready(ctx, fleet)
        assert why is not None and "routes this member should run but cannot" in why
        await until(lambda: _not_ready(nc, "failing"), what="its heartbeat says so")
        sqs = aws.client("sqs")

        async def failed_by_status() -> bool:
            (status,) = await status_lib.collect(nc, lambda region: sqs, plan, routes)
            return not status.drained and (
                "held by failing but not running: runner restarting" in status.reason
            )

        await until(failed_by_status, what="status to fail the route with why")
        healthy.set()
        await until(lambda: not fleet.blocked, what="ready again once it runs")
        assert ready(ctx, fleet) is None
    finally:
        ctx.stopping.set()
        await asyncio.wait_for(task, 30)
        await nc.close()
