"""A bridge fleet: one route's throughput with 1 vs 2 members, and four routes' for contrast.

Real `snsq2nats bridge` processes (the fleet is always on) drain a queue pre-filled on fauxqs
(see bench_bridge) into a local nats-server. A route runs on one member at a time (its lease),
so a second member does not speed one route up: what this shows is that membership costs the
route nothing (the ratio stays near 1.0; heartbeats and the watch are off the hot path), while
several routes spread over the members. Throughput is the messages relayed over the time from
the first message stored to the last (the streams' own timestamps), so process start-up and
lease acquisition are left out. Runs alternate 1 and 2 members; the best of each counts.
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

MESSAGES = 10_000  # per route and run
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


async def _span(nats_url: str, streams: list[str]) -> tuple[int, float]:
    """Messages in the streams, and seconds from the first stored to the last."""
    from snsq2nats.jetstream.connect import NatsOptions, connect_nats

    nc = await connect_nats(NatsOptions(servers=[nats_url]))
    try:
        js = nc.jetstream()
        total, firsts, lasts = 0, [], []
        for stream in streams:
            info = await js.stream_info(stream)
            total += info.state.messages
            if info.state.messages:
                firsts.append(await _stored_at(nc, stream, info.state.first_seq))
                lasts.append(await _stored_at(nc, stream, info.state.last_seq))
        return total, (max(lasts) - min(firsts)) if firsts else 0.0
    finally:
        await nc.close()


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
    plan.write_text(
        Plan(generated_at="bench", server=ServerInfo(reachable=True), routes=plan_routes).to_json()
    )
    prefill(endpoint, urls, MESSAGES)
    command = [sys.executable, "-m", "snsq2nats", "bridge", "--plan", str(plan)]
    command += ["--server", nats_url, "--endpoint-url", endpoint, "--region", REGION]
    command += ["--poll-wait", "2", "--lease-ttl", "5"]
    logs = [(workdir / f"{tag}-{i}.log").open("wb") for i in range(members)]
    procs = [
        subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, preexec_fn=_unpin)
        for log in logs
    ]
    want = MESSAGES * routes
    started = time.perf_counter()
    try:
        while (await _span(nats_url, streams))[0] < want:
            if any(p.poll() is not None for p in procs):
                raise AssertionError(f"a bridge exited early: see {workdir}")
            if time.perf_counter() - started > 600:
                raise AssertionError("the fleet did not relay its messages within 600 s")
            await asyncio.sleep(0.25)
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
    total, span = await _span(nats_url, streams)
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
