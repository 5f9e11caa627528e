"""A fleet member whose candidates change in the middle of a step (issue 18's lost bridge).

A followed applied revision that changes a route hands the fleet two generations: first the
routes without the changed ones (drained and released), then the new definitions. When the
first arrives while a step is still acquiring the previous generation's routes, the step's
assignment names routes that are no candidates any more: it used to look them up (KeyError),
and the worker exited and took its bridge down. The step must stop acquiring instead, and the
next one work from the new candidates.

The interleaving is driven from the test, not timed: the route set hands the new generation
to the fleet from inside the step's first start, while three more routes of the old
assignment wait to be acquired.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from snsq2nats.bridge.context import BridgeContext
from snsq2nats.bridge.fleet import Fleet, open_bucket
from snsq2nats.bridge.runtime import RouteSet
from snsq2nats.demo.nats_server import NatsServer
from snsq2nats.jetstream.api import create_stream
from snsq2nats.jetstream.connect import NatsOptions, connect_nats
from snsq2nats.jetstream.spec import ServerInfo
from snsq2nats.plan.buckets import fleet_bucket_spec
from snsq2nats.plan.fleet import Lease, route_name
from snsq2nats.plan.model import Plan, Route
from tests.fixtures.wait import until

pytestmark = pytest.mark.timeout(120)


def route(name: str, stream: str) -> Route:
    arn = f"arn:aws:sqs:us-east-1:123456789012:{name}"
    return Route(name=f"sqs:{name}", kind="sqs-to-nats", source_arn=arn, aws_arn=arn, stream=stream)


class Interleaving(RouteSet):
    """A route set that runs `hook` once, inside the first start a fleet step makes."""

    def __init__(self, ctx: BridgeContext, hook: Callable[[Route], None]) -> None:
        async def run(ctx: BridgeContext, route: Route) -> None:
            await ctx.stopping.wait()

        super().__init__(ctx, {"sqs-to-nats": run})
        self.hook: Callable[[Route], None] | None = hook

    async def start(self, route: Route) -> bool:
        hook, self.hook = self.hook, None
        if hook is not None:
            hook(route)
        return await super().start(route)


async def leases(url: str) -> dict[str, tuple[str, int]]:
    """route → (member, lease revision), as the bucket says."""
    nc = await connect_nats(NatsOptions(servers=[url]))
    try:
        kv = await open_bucket(nc)
        watcher = await kv.watch("routes.>")
        out: dict[str, tuple[str, int]] = {}
        async for entry in watcher:
            if entry is None:
                break
            if entry.operation in ("DEL", "PURGE") or not entry.value:
                out.pop(route_name(entry.key), None)
                continue
            lease = Lease.model_validate_json(entry.value)
            out[lease.route] = (lease.member, int(entry.revision or 0))
        await watcher.stop()  # type: ignore[no-untyped-call]
        return out
    finally:
        await nc.close()


@pytest.mark.parametrize("started_changes", [False, True], ids=["kept", "changed-too"])
async def test_new_candidates_mid_step_stop_the_acquiring_and_the_member_survives(
    nats_server: NatsServer, started_changes: bool
) -> None:
    url = nats_server.url
    nc = await connect_nats(NatsOptions(servers=[url]))
    await create_stream(nc, fleet_bucket_spec(), pedantic=False)
    old = [route(f"queue-{i}", f"sqs_queue_{i}") for i in range(4)]
    plan = Plan(generated_at="now", server=ServerInfo(reachable=True), routes=old)
    ctx = BridgeContext(plan=plan, nc=nc, sqs=None, sns=None)  # type: ignore[arg-type]
    fleet = Fleet(nc, old, lease_ttl=3.0, member="m1")
    # The new revision changes every route but (unless `started_changes`) the first one the
    # step starts: they go first (the follower's first generation), then come back with their
    # new definitions. A route changed while it starts runs its old definition for a moment,
    # and is drained and released before the generation counts as applied.
    seen: dict[str, object] = {}

    def new_revision_arrives(starting: Route) -> None:
        seen["starting"] = starting
        seen["waiting"] = {r.name for r in old} - {starting.name} - set(fleet.owned)
        seen["generation"] = fleet.set_candidates([] if started_changes else [starting])

    routes = Interleaving(ctx, new_revision_arrives)
    member = asyncio.create_task(fleet.run(routes))
    try:
        await asyncio.wait_for(_until_set(seen, "generation", member), 60)
        starting = seen["starting"]
        assert isinstance(starting, Route)
        # The step had more of the old assignment to acquire when the generation changed.
        assert len(seen["waiting"]) == 3  # type: ignore[arg-type]
        first = seen["generation"]
        assert isinstance(first, int)
        await asyncio.wait_for(_applied(fleet, first, member), 60)
        assert not member.done(), member  # the member survived the stale assignment
        kept = {} if started_changes else {starting.name: starting}
        assert routes.running == kept

        async def leased_as_kept() -> bool:
            # A renewal late on a loaded machine lets a 3 s lease lapse and the next step take
            # it again: what must hold is that the member comes to hold exactly these.
            return set(await leases(url)) == set(kept)

        await until(leased_as_kept, what="the member to hold the kept routes' leases")

        changed = {
            r.name: r.model_copy(update={"stream": f"{r.stream}_v2"})
            for r in old
            if r.name not in kept
        }
        second = fleet.set_candidates([*kept.values(), *changed.values()])
        await asyncio.wait_for(_applied(fleet, second, member), 60)
        assert not member.done(), member
        # Only the new revision's routes run, each as the new revision defines it, and this
        # member holds exactly their leases.
        assert routes.running == {**kept, **changed}
        held = await leases(url)
        assert {name: m for name, (m, _) in held.items()} == dict.fromkeys(routes.running, "m1")
        assert {name: held[name][1] for name in routes.running} == fleet.owned
    finally:
        ctx.stopping.set()
        await asyncio.wait_for(member, 60)  # a clean leave: nothing raised
        await nc.close()
    assert await leases(url) == {}


async def _until_set(seen: dict[str, object], key: str, member: asyncio.Task[None]) -> None:
    while key not in seen:
        if member.done():
            member.result()  # its error, if it failed before getting there
            raise AssertionError("the fleet member ended")
        await asyncio.sleep(0.05)


async def _applied(fleet: Fleet, generation: int, member: asyncio.Task[None]) -> None:
    """Wait for the generation to be applied, or for the member to fail (its error raised)."""
    applied = asyncio.create_task(fleet.applied(generation))
    await asyncio.wait([applied, member], return_when=asyncio.FIRST_COMPLETED)
    if not applied.done():
        applied.cancel()
        member.result()
        raise AssertionError("the fleet member ended before applying the change")
