"""A bridge fleet: one route's throughput with 1 vs 2 members, and four routes' for contrast.

Real `snsq2nats bridge` processes (the fleet is always on) drain a queue pre-filled on fauxqs
(see bench_bridge) into a local nats-server. A route runs on one member at a time (its lease),
so a second member does not speed one route up: what this shows is that membership costs the
route nothing (the ratio stays near 1.0; heartbeats and the watch are off the hot path), while
several routes spread over the members. Throughput is measured once the fleet has settled
(every member joined, every route leased to the member rendezvous hashing gives it): the
messages stored from then to the last, over the time between them by the streams' own
timestamps, so start-up, joining and the first handover are left out. Runs alternate 1 and 2
members; the best of each counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.bench_bridge import REGION, ROOT, _unpin, client, fauxqs, prefill

MESSAGES = {1: 30_000, 4: 10_000}  # per route and run, by the number of routes
ROUNDS = 2
TARGET_RATIO = 0.8  # one route with 2 members vs 1: the coordination must cost the route nothing


async def _create(nats_url: str, streams: list[str]) -> None:
    from snsq2nats.jetstream.api import create_stream
    from snsq2nats.jetstream.connect import NatsOptions, connect_nats
    from snsq2nats.jetstream.spec import NS, StreamSpec
    from snsq2nats.plan.buckets import fleet_bucket_spec

    nc = await connect_nats(NatsOptions(servers=[nats_url]))
    try:
        with contextlib.suppress(Exception):
            await create_stream(nc, fleet_bucket_spec(), pedantic=False)
        for name in streams:
            spec = StreamSpec(
                name=name, subjects=[name.replace("_", ".", 1)], duplicate_window=120 * NS
            )
            await create_stream(nc, spec, pedantic=False)
    finally:
        await nc.close()


async def _counts(nats_url: str, streams: list[str]) -> dict[str, int]:
    from snsq2nats.jetstream.connect import NatsOptions, connect_nats

    nc = await connect_nats(NatsOptions(servers=[nats_url]))
    try:
        js = nc.jetstream()
        return {s: int((await js.stream_info(s)).state.last_seq) for s in streams}
    finally:
        await nc.close()


async def _rate_since(nats_url: str, since: dict[str, int]) -> tuple[int, float]:
    """Messages stored after the sequences in `since`, and the seconds they took."""
    from snsq2nats.jetstream.connect import NatsOptions, connect_nats

    nc = await connect_nats(NatsOptions(servers=[nats_url]))
    try:
        js = nc.jetstream()
        total, firsts, lasts = 0, [], []
        for stream, after in since.items():
            last = int((await js.stream_info(stream)).state.last_seq)
            if last > after + 1:
                total += last - after - 1
                firsts.append(await _stored_at(nc, stream, after + 1))
                lasts.append(await _stored_at(nc, stream, last))
        return total, (max(lasts) - min(firsts)) if firsts else 0.0
    finally:
        await nc.close()


async def _settled(nats_url: str, routes: list[str], members: int) -> bool:
    from snsq2nats.bridge.fleet import preferred, read_fleet
    from snsq2nats.jetstream.connect import NatsOptions, connect_nats

    nc = await connect_nats(NatsOptions(servers=[nats_url]))
    try:
        fleet = await read_fleet(nc)
    finally:
        await nc.close()
    if fleet is None or len(fleet.members) != members:
        return False
    ids = list(fleet.members)
    return all(r in fleet.leases and fleet.leases[r].member == preferred(r, ids) for r in routes)


async def _stored_at(nc: Any, stream: str, seq: int) -> float:
    from snsq2nats.jetstream.api import api

    reply = await api(nc, f"$JS.API.STREAM.MSG.GET.{stream}", {"seq": seq}, 5.0)
    stamp = str(reply["message"]["time"])
    # Nanosecond RFC 3339 from the server; Python's parser takes microseconds.
    head, _, frac = stamp.rstrip("Z").partition(".")
    return datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}+00:00").timestamp()


async def one_run(
    endpoint: str, nats_url: str, workdir: Path, tag: str, routes: int, members: int
) -> float:
    """Messages per second for `routes` routes drained by `members` bridge processes."""
    from snsq2nats.files import document_json
    from snsq2nats.jetstream.spec import ServerInfo
    from snsq2nats.plan.model import Plan, Route

    sqs = client("sqs", endpoint)
    names = [f"fleet-{tag}-{i}" for i in range(routes)]
    urls = [sqs.create_queue(QueueName=n)["QueueUrl"] for n in names]
    streams = [f"sqs_{n.replace('-', '')}" for n in names]
    await _create(nats_url, streams)
    plan_routes = [
        Route(
            name=f"sqs:{n}",
            kind="sqs-to-nats",
            source_arn=f"arn:aws:sqs:{REGION}:000000000000:{n}",
            aws_arn=f"arn:aws:sqs:{REGION}:000000000000:{n}",
            stream=s,
            subject=s.replace("_", ".", 1),
        )
        for n, s in zip(names, streams, strict=True)
    ]
    plan = workdir / f"plan-{tag}.json"
    plan.write_bytes(
        document_json(
            Plan(generated_at="bench", server=ServerInfo(reachable=True), routes=plan_routes)
        )
    )
    prefill(endpoint, urls, MESSAGES[routes])
    command = [sys.executable, "-m", "snsq2nats", "bridge", "--plan", str(plan)]
    command += ["--server", nats_url, "--endpoint-url", endpoint, "--region", REGION]
    command += ["--poll-wait", "2", "--lease-ttl", "5"]
    logs = [(workdir / f"{tag}-{i}.log").open("wb") for i in range(members)]
    procs = [
        subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, preexec_fn=_unpin)
        for log in logs
    ]
    want = {s: MESSAGES[routes] for s in streams}
    started = time.perf_counter()
    since: dict[str, int] | None = None
    try:
        while True:
            if since is None and await _settled(nats_url, [r.name for r in plan_routes], members):
                since = await _counts(nats_url, streams)
            counts = await _counts(nats_url, streams)
            if all(counts[s] >= want[s] for s in streams):
                break
            if any(p.poll() is not None for p in procs):
                raise AssertionError(f"a bridge exited early: see {workdir}")
            if time.perf_counter() - started > 600:
                raise AssertionError("the fleet did not relay its messages within 600 s")
            await asyncio.sleep(0.1)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        for log in logs:
            log.close()
    if since is None or min(want[s] - since[s] for s in streams) < MESSAGES[routes] // 2:
        raise AssertionError(f"the fleet settled too late to measure (at {since})")
    total, span = await _rate_since(nats_url, since)
    rate = total / span if span > 0 else 0.0
    print(
        f"  {routes} route(s), {members} member(s): {total:,} msgs in {span:.2f}s "
        f"= {rate:,.0f} msg/s",
        file=sys.stderr,
    )
    return rate


async def measure(endpoint: str, nats_url: str, workdir: Path) -> dict[str, float]:
    best: dict[str, float] = {}
    for round_ in range(ROUNDS):
        for routes in (1, 4):
            for members in (1, 2):
                key = f"{routes}r{members}m"
                rate = await one_run(
                    endpoint, nats_url, workdir, f"{key}-{round_}", routes, members
                )
                best[key] = max(best.get(key, 0.0), rate)
    return best


def _row(name: str, value: float, unit: str, target: float | None = None) -> dict[str, Any]:
    return {"name": f"fleet.{name}", "value": value, "unit": unit, "target": target}


def run() -> list[dict[str, Any]]:
    from snsq2nats.demo.nats_server import NatsServer

    with tempfile.TemporaryDirectory() as tmp, fauxqs() as fq, NatsServer(name="bench") as ns:
        best = asyncio.run(measure(fq.endpoint, ns.url, Path(tmp)))
    one, two = best["1r1m"], best["1r2m"]
    four_one, four_two = best["4r1m"], best["4r2m"]
    return [
        _row("one_route_1_member", round(one), "msg/s"),
        _row("one_route_2_members", round(two), "msg/s"),
        _row("one_route_2_vs_1_members", round(two / one, 2), "ratio", TARGET_RATIO),
        _row("four_routes_1_member", round(four_one), "msg/s"),
        _row("four_routes_2_members", round(four_two), "msg/s"),
        _row("four_routes_2_vs_1_members", round(four_two / four_one, 2), "ratio"),
    ]
