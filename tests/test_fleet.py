"""The bridge fleet on a real nats-server: members share routes through the KV bucket.

In-process members run stand-in runners that record which member runs which route, so every
test can check the fleet's promise at any moment: no route runs on two members at once
(outside a takeover of a dead member), and every route runs somewhere.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from typing import Any

import pytest

from snsq2nats.bridge.context import BridgeContext
from snsq2nats.bridge.fleet import Fleet, open_bucket, preferred
from snsq2nats.bridge.runtime import RouteSet, run_bridge
from snsq2nats.demo.nats_server import NatsServer
from snsq2nats.errors import BucketMissing
from snsq2nats.jetstream.api import create_stream
from snsq2nats.jetstream.connect import NatsOptions, connect_nats
from snsq2nats.jetstream.spec import ServerInfo
from snsq2nats.plan.buckets import fleet_bucket_spec
from snsq2nats.plan.fleet import Lease, route_key
from snsq2nats.plan.model import Plan, Route
from tests.fixtures.wait import until

TTL = 3.0


def route(name: str) -> Route:
    arn = f"arn:aws:sqs:us-east-1:123456789012:{name.split(':')[-1]}"
    return Route(name=name, kind="sqs-to-nats", source_arn=arn, aws_arn=arn)


ROUTES = [route(f"sqs:queue-{i:02d}") for i in range(12)]


class Ledger:
    """Which members run each route right now, and every moment two did at once."""

    def __init__(self) -> None:
        self.active: dict[str, set[str]] = defaultdict(set)
        self.overlaps: list[tuple[str, set[str]]] = []

    def runner(self, member: str) -> Any:
        async def run(ctx: BridgeContext, route: Route) -> None:
            others = self.active[route.name] - {member}
            if others:
                self.overlaps.append((route.name, set(others)))
            self.active[route.name].add(member)
            try:
                await ctx.stopping.wait()
            finally:
                self.active[route.name].discard(member)

        return run

    def runs(self, member: str) -> set[str]:
        return {name for name, members in self.active.items() if member in members}

    def complete_and_disjoint(self, routes: list[Route], members: list[str]) -> bool:
        return all(len(self.active[r.name]) == 1 for r in routes) and all(
            self.active[r.name] <= set(members) for r in routes
        )


class Member:
    def __init__(
        self, url: str, ledger: Ledger, routes: list[Route], name: str, ttl: float = TTL
    ) -> None:
        self.url, self.ledger, self.routes, self.name, self.ttl = url, ledger, routes, name, ttl
        self.task: asyncio.Task[None] | None = None
        self.fleet: Fleet | None = None
        self.ctx: BridgeContext | None = None

    async def start(self) -> Member:
        # As the bridge connects: reconnecting for ever.
        nc = await connect_nats(
            NatsOptions(servers=[self.url]),
            name=self.name,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.2,
        )
        plan = Plan(generated_at="now", server=ServerInfo(reachable=True), routes=self.routes)
        self.ctx = BridgeContext(plan=plan, nc=nc, sqs=None, sns=None)  # type: ignore[arg-type]
        self.fleet = Fleet(nc, self.routes, lease_ttl=self.ttl, member=self.name)

        async def run() -> None:
            assert self.ctx is not None
            try:
                await run_bridge(
                    self.ctx,
                    self.routes,
                    {"sqs-to-nats": self.ledger.runner(self.name)},
                    handle_signals=False,
                    coordinator=self.fleet,
                )
            finally:
                await nc.close()

        self.task = asyncio.create_task(run())
        return self

    async def stop(self) -> None:
        assert self.ctx is not None and self.task is not None
        self.ctx.stopping.set()
        await asyncio.wait_for(self.task, 30)

    async def crash(self) -> None:
        """Gone without a word: no drain, no release, the heartbeat simply stops."""
        assert self.task is not None and self.fleet is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        for name in list(self.ledger.active):
            self.ledger.active[name].discard(self.name)


@pytest.fixture
async def bucket(nats_server: NatsServer) -> str:
    nc = await connect_nats(NatsOptions(servers=[nats_server.url]))
    try:
        await create_stream(nc, fleet_bucket_spec(), pedantic=False)
    finally:
        await nc.close()
    return nats_server.url


async def leases(url: str) -> dict[str, str]:
    """route → member, as the bucket says."""
    nc = await connect_nats(NatsOptions(servers=[url]))
    try:
        kv = await open_bucket(nc)
        out = {}
        for r in ROUTES:
            try:
                entry = await kv.get(route_key(r.name))
            except Exception:
                continue
            out[r.name] = Lease.model_validate_json(entry.value or b"").member
        return out
    finally:
        await nc.close()


def test_rendezvous_moves_only_what_must_move() -> None:
    names = [r.name for r in ROUTES * 10]
    two = {n: preferred(n, ["a", "b"]) for n in names}
    three = {n: preferred(n, ["a", "b", "c"]) for n in names}
    moved = {n for n in names if two[n] != three[n]}
    assert moved and all(three[n] == "c" for n in moved), "a join takes routes only to the joiner"
    assert {preferred(n, ["b", "a"]) for n in names} == {preferred(n, ["a", "b"]) for n in names}


async def test_a_missing_bucket_names_apply(nats_server: NatsServer) -> None:
    nc = await connect_nats(NatsOptions(servers=[nats_server.url]))
    try:
        with pytest.raises(BucketMissing) as caught:
            await open_bucket(nc)
    finally:
        await nc.close()
    assert "snsq2nats_fleet" in caught.value.what and "snsq2nats apply" in (caught.value.hint or "")


async def test_alone_a_member_runs_every_route(bucket: str) -> None:
    ledger = Ledger()
    one = await Member(bucket, ledger, ROUTES, "m1").start()
    try:
        await until(lambda: ledger.complete_and_disjoint(ROUTES, ["m1"]), what="m1 runs all")
        assert (await leases(bucket)) == {r.name: "m1" for r in ROUTES}
    finally:
        await one.stop()
    assert not any(ledger.active.values())
    assert await leases(bucket) == {}, "a member that leaves releases its leases"


async def test_members_split_rebalance_on_join_and_hand_over_on_leave(
    bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="snsq2nats")
    ledger = Ledger()
    members = [await Member(bucket, ledger, ROUTES, f"m{i}").start() for i in (1, 2)]
    try:
        await until(
            lambda: (
                ledger.complete_and_disjoint(ROUTES, ["m1", "m2"])
                and all(ledger.runs(m.name) for m in members)
            ),
            what="two members splitting the routes",
        )
        expected = {r.name: preferred(r.name, ["m1", "m2"]) for r in ROUTES}
        assert {r.name: next(iter(ledger.active[r.name])) for r in ROUTES} == expected

        third = await Member(bucket, ledger, ROUTES, "m3").start()
        members.append(third)
        names = ["m1", "m2", "m3"]
        await until(
            lambda: (
                ledger.complete_and_disjoint(ROUTES, names)
                and {next(iter(ledger.active[r.name])) for r in ROUTES} == set(names)
            ),
            what="the routes rebalanced over three members",
        )
        assert {r.name: next(iter(ledger.active[r.name])) for r in ROUTES} == {
            r.name: preferred(r.name, names) for r in ROUTES
        }

        leaving = members.pop(0)
        held = ledger.runs("m1")
        assert held
        await leaving.stop()
        await until(
            lambda: ledger.complete_and_disjoint(ROUTES, ["m2", "m3"]),
            what="m1's routes moved to the others",
        )
        assert await leases(bucket) == {r.name: next(iter(ledger.active[r.name])) for r in ROUTES}
    finally:
        for member in members:
            await member.stop()
    assert ledger.overlaps == [], "a handover drains before the new owner starts"
    assert not any("took" in m and "over from" in m for m in caplog.messages), (
        "a graceful leave is a release, never a takeover"
    )


async def test_a_dead_members_routes_are_taken_over(bucket: str) -> None:
    ledger = Ledger()
    one = await Member(bucket, ledger, ROUTES, "m1").start()
    two = await Member(bucket, ledger, ROUTES, "m2").start()
    try:
        await until(
            lambda: ledger.complete_and_disjoint(ROUTES, ["m1", "m2"]) and ledger.runs("m1"),
            what="split",
        )
        lost = ledger.runs("m1")
        await one.crash()
        assert all(lease == "m1" for name, lease in (await leases(bucket)).items() if name in lost)
        await until(
            lambda: ledger.complete_and_disjoint(ROUTES, ["m2"]),
            timeout=TTL * 5,
            what="m2 took m1's routes over",
        )
        assert set((await leases(bucket)).values()) == {"m2"}
    finally:
        await two.stop()
    assert ledger.overlaps == []


async def test_the_fleet_carries_on_across_a_nats_restart(
    nats_server: NatsServer, bucket: str
) -> None:
    """A restart shorter than the lease TTL: no route moves, and the members' watches come
    back (a member joining afterwards gets its share)."""
    ledger = Ledger()
    members = [await Member(bucket, ledger, ROUTES, f"m{i}", ttl=8.0).start() for i in (1, 2)]
    try:
        await until(lambda: ledger.complete_and_disjoint(ROUTES, ["m1", "m2"]), what="split")
        before = {r.name: set(ledger.active[r.name]) for r in ROUTES}
        nats_server.restart()
        members.append(await Member(bucket, ledger, ROUTES, "m3", ttl=8.0).start())
        names = ["m1", "m2", "m3"]
        await until(
            lambda: (
                ledger.complete_and_disjoint(ROUTES, names)
                and all(ledger.active[r.name] == {preferred(r.name, names)} for r in ROUTES)
            ),
            timeout=60,
            what="rebalanced over three members after the restart",
        )
        moved = {r.name for r in ROUTES if ledger.active[r.name] != before[r.name]}
        assert all(ledger.active[name] == {"m3"} for name in moved), "only the joiner gained"
    finally:
        for member in members:
            await member.stop()
    assert ledger.overlaps == []


async def test_candidates_change_while_running_and_applied_waits_for_the_drain(
    bucket: str,
) -> None:
    ledger = Ledger()
    one = await Member(bucket, ledger, ROUTES, "m1").start()
    try:
        await until(lambda: ledger.complete_and_disjoint(ROUTES, ["m1"]), what="all running")
        assert one.fleet is not None
        kept, extra = ROUTES[:5], [route("sqs:new-queue")]
        generation = one.fleet.set_candidates(kept + extra)
        await asyncio.wait_for(one.fleet.applied(generation), 30)
        # At that point, and not later: the removed routes drained and released, the new one
        # started, the kept ones never stopped.
        assert ledger.runs("m1") == {r.name for r in kept + extra}
        assert set(await leases(bucket)) == {r.name for r in kept}  # (ROUTES only)
    finally:
        await one.stop()


async def test_route_set_stops_one_route_and_leaves_the_others(bucket: str) -> None:
    ledger = Ledger()
    nc = await connect_nats(NatsOptions(servers=[bucket]))
    plan = Plan(generated_at="now", server=ServerInfo(reachable=True))
    ctx = BridgeContext(plan=plan, nc=nc, sqs=None, sns=None)  # type: ignore[arg-type]
    routes = RouteSet(ctx, {"sqs-to-nats": ledger.runner("me")})
    try:
        await routes.reconcile(ROUTES[:3])
        await until(lambda: ledger.runs("me") == {r.name for r in ROUTES[:3]}, what="three")
        await routes.reconcile([ROUTES[0], ROUTES[2], ROUTES[3]])
        # reconcile returned: the removed route's runner has returned already.
        assert "sqs:queue-01" not in ledger.runs("me")
        assert ctx.metrics["sqs:queue-01"].status == "released"
        assert not ctx.stopping.is_set()
        await until(lambda: len(ledger.runs("me")) == 3, what="the new one")
        ctx.stopping.set()
        await routes.stop_all()
        assert ledger.runs("me") == set()
    finally:
        routes.close()
        await nc.close()


async def test_status_shows_each_routes_owner_and_lease_age(bucket: str, aws: Any) -> None:
    from rich.console import Console

    from snsq2nats import status as status_lib
    from snsq2nats.report.status import status_table

    ledger = Ledger()
    routes = ROUTES[:3]
    plan = Plan(generated_at="now", server=ServerInfo(reachable=True), routes=routes)
    nc = await connect_nats(NatsOptions(servers=[bucket]))
    sqs = aws.client("sqs")
    one = await Member(bucket, ledger, routes, "m1").start()
    try:
        await until(lambda: ledger.complete_and_disjoint(routes, ["m1"]), what="m1 runs all")
        statuses = await status_lib.collect(nc, lambda region: sqs, plan, routes)
        for st in statuses:
            doc = st.to_dict()["owner"]
            assert doc["member"] == "m1" and doc["alive"] is True
            assert 0 <= doc["lease_age"] < 600 and doc["heartbeat_age"] is not None
        console = Console(width=300, record=True)
        console.print(status_table(statuses))
        assert "m1, lease" in console.export_text()
    finally:
        await one.stop()
    statuses = await status_lib.collect(nc, lambda region: sqs, plan, routes)
    assert all(st.owner is not None and st.owner.member is None for st in statuses)
    await nc.close()


async def test_readyz_of_a_holder_and_of_a_standby(bucket: str) -> None:
    """More members than routes: the one holding the route is ready once it runs, the other
    is ready as a standby (it waits for no route, nor for one it handed over)."""
    from snsq2nats.bridge.metrics import ready

    ledger = Ledger()
    only = [ROUTES[0]]
    members = [await Member(bucket, ledger, only, f"m{i}").start() for i in (1, 2)]
    try:
        holder = preferred(only[0].name, ["m1", "m2"])
        await until(lambda: ledger.active[only[0].name] == {holder}, what="the route on its member")
        for member in members:
            assert member.ctx is not None and member.fleet is not None
            await until(lambda m=member: m.fleet.joined, what="joined")  # type: ignore[union-attr]
            assert ready(member.ctx, member.fleet) is None, member.name
        standby = next(m for m in members if m.name != holder)
        assert standby.fleet is not None and standby.fleet.owned == {}
    finally:
        for member in members:
            await member.stop()


async def test_an_idle_member_does_not_walk_every_route_at_each_step(bucket: str) -> None:
    """Steps keep coming (a second, and each heartbeat seen) but, nothing having changed, cost
    O(members): none walks the routes until an input moves (here: the candidates)."""
    ledger = Ledger()
    # A long TTL: the once-a-TTL safety walk cannot fall within the steps counted.
    one = await Member(bucket, ledger, ROUTES, "m1", ttl=120.0).start()
    try:
        await until(lambda: ledger.complete_and_disjoint(ROUTES, ["m1"]), what="all running")
        fleet = one.fleet
        assert fleet is not None
        await asyncio.wait_for(fleet.applied(), 30)
        # Settled: a step that did not walk.
        await until(lambda: fleet.steps > fleet.walks + 1, what="a step without a walk")
        steps, walks = fleet.steps, fleet.walks
        await until(lambda: fleet.steps >= steps + 4, timeout=60, what="four more steps")
        assert fleet.walks == walks
        generation = fleet.set_candidates(ROUTES[:5])
        await asyncio.wait_for(fleet.applied(generation), 30)
        assert fleet.walks > walks
        assert ledger.runs("m1") == {r.name for r in ROUTES[:5]}
    finally:
        await one.stop()
