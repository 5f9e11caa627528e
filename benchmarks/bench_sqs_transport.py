"""The bridge's CPU per idle poll and per relayed message, botocore's SQS transport ("before")
against the lean one (`aws.lean`, "after"), in one run on one fauxqs (see bench_bridge).

1. Idle, at N routes (`IDLE_ROUTES`): a real `snsq2nats bridge` process on N idle
   `sqs-to-nats` routes (bench_routes' estate, process and request-counting proxy), its CPU
   over the idle window divided by the SQS requests it made in it: the CPU per empty poll,
   everything the process does while idle included. An idle route makes one 20 s long poll
   at a time (180 an hour) whatever the transport, so this is what an idle estate pays.
   Beside it the client alone in this process on the same queues: one long poll out per
   queue with the relay's arguments, `IDLE_ROUNDS` each with a short wait (`IDLE_WAIT`), CPU
   of this process over the polls made. Target: <= 0.5 ms per empty poll at 1,000 and 5,000
   routes.
2. Busy: one route with `--pollers 8` relays `ROUND` messages each way; the best of `ROUNDS`
   rounds counts, and the process CPU per 10,000 relayed messages beside it, which is stable on
   a noisy machine where the rate is not. The ceiling is the faster of two raw drains on the
   same endpoint, same run: 8 concurrent aiobotocore receive + delete-batch loops, and a boto3
   drain on 8 threads (SQS → NATS); SendMessageBatch on the bridge's lanes from aiobotocore,
   and on 8 threads from boto3 (NATS → SQS). Targets: the lean bridge >= 0.9 of the ceiling,
   and its CPU per message <= 60 % of botocore's.

Nothing here weakens exactly-once: each direction ends with the stream holding exactly what
the bridges deleted from SQS (SQS → NATS) and SQS holding exactly what they sent (NATS → SQS).
`SNSQ2NATS_BENCH_PROFILE=1` adds a cProfile of one round of each transport (to stderr).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import cProfile
import gc
import io
import os
import pstats
import resource
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.bench_bridge import (
    IN_QUEUE,
    MAX_IN_FLIGHT,
    OUT_QUEUE,
    RAW_QUEUE,
    REGION,
    Setup,
    Tally,
    _aws_env,
    _log_bridge_lines,
    _receive_args,
    ceiling_send,
    client,
    consumer_pending,
    fauxqs,
    make_setup,
    place,
    prefill,
    publish_to_stream,
    queue_depth,
    stream_state,
)

TRANSPORTS = ("botocore", "lean")  # before, after
IDLE_ROUTES = (100, 1_000, 5_000)
IDLE_ROUNDS = 3
IDLE_WAIT = 1
WARM_AT_ONCE = 250
# The idle bridge's window: two 20 s long polls per route (they start together and stay close).
IDLE_WINDOW = 40.0
IDLE_TARGET_MS = 0.5
# The route counts the target is for (the 1,000 and 5,000): at 100 routes an idle
# bridge makes 5 requests a second, and its fixed once-a-second work (fleet step, metrics,
# NATS) outweighs them; that row is shown, not judged.
IDLE_TARGET_ROUTES = (1_000, 5_000)
POLLERS = 8
ROUND = 10_000
ROUNDS = 2
SLACK = 1_000
POLL_WAIT = 2
THREADS = 8
TARGET_RATIO = 0.9
TARGET_CPU_SHARE = 0.6  # lean CPU per message / botocore's
PER = 10_000  # CPU is given per this many messages

# Messages the bridges deleted (sqs-to-nats) or sent (nats-to-sqs), rounds past their goal too.
setup_counts: dict[str, int] = {}


def _cpu() -> float:
    """CPU seconds of this process, every thread."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Run:
    seconds: float
    cpu: float
    messages: int

    @property
    def rate(self) -> float:
        return self.messages / self.seconds

    @property
    def cpu_per(self) -> float:
        return self.cpu / self.messages * PER


def _best(runs: list[Run]) -> Run:
    """The fastest round's rate with the lowest CPU per message seen (each its own best)."""
    fastest = min(runs, key=lambda r: r.seconds / r.messages)
    leanest = min(runs, key=lambda r: r.cpu_per)
    return Run(fastest.seconds, leanest.cpu / leanest.messages * fastest.messages, fastest.messages)


@contextlib.asynccontextmanager
async def clients(endpoint: str, transport: str, routes: int = 1, pollers: int = POLLERS) -> Any:
    from snsq2nats.aws.clients import async_clients
    from snsq2nats.bridge.session import READ_TIMEOUT, aws_connections

    _aws_env()
    connections = aws_connections(routes, pollers)
    async with async_clients(
        REGION, endpoint, connections, read_timeout=READ_TIMEOUT, transport=transport
    ) as aws:
        yield aws


# --- idle ---------------------------------------------------------------------------------------


def _create_queues(endpoint: str, names: list[str]) -> list[str]:
    sqs = client("sqs", endpoint, THREADS)
    with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
        return list(pool.map(lambda n: str(sqs.create_queue(QueueName=n)["QueueUrl"]), names))


async def idle_cpu_per_poll(endpoint: str, urls: list[str], transport: str) -> float:
    """ms of CPU per empty long poll with `len(urls)` polls out at once."""
    async with clients(endpoint, transport, routes=len(urls), pollers=1) as aws:
        sqs = aws.sqs

        async def poll(url: str, rounds: int) -> None:
            for _ in range(rounds):
                reply = await sqs.receive_message(**_receive_args(url, IDLE_WAIT))
                if reply.get("Messages"):
                    raise AssertionError(f"{url} is not empty")

        # Connections open and warm before measuring, as on a bridge that has been idle; a
        # few hundred at a time, as a bridge's routes start (thousands of connects at once
        # time out on a loaded machine).
        for start in range(0, len(urls), WARM_AT_ONCE):
            await asyncio.gather(*(poll(url, 1) for url in urls[start : start + WARM_AT_ONCE]))
        started = _cpu()
        await asyncio.gather(*(poll(url, IDLE_ROUNDS) for url in urls))
        used = _cpu() - started
    return used / (len(urls) * IDLE_ROUNDS) * 1000


# --- busy: the ceilings -------------------------------------------------------------------------


async def aio_drain(endpoint: str, url: str, n: int) -> Run:
    """8 aiobotocore loops: receive 10, hand them to a DeleteMessageBatch, receive again."""
    async with clients(endpoint, "botocore") as aws:
        sqs = aws.sqs
        tally = Tally(n)
        permits = asyncio.Semaphore(MAX_IN_FLIGHT)
        tasks: set[asyncio.Task[None]] = set()

        async def delete(messages: list[dict[str, Any]]) -> None:
            entries = [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
            ]
            try:
                await tally(sqs.delete_message_batch, QueueUrl=url, Entries=entries)
            finally:
                for _ in messages:
                    permits.release()

        async def poller() -> None:
            while not tally.done.is_set():
                for _ in range(10):
                    await permits.acquire()
                reply = await tally(sqs.receive_message, **_receive_args(url, POLL_WAIT))
                messages = reply.get("Messages") or []
                for _ in range(10 - len(messages)):
                    permits.release()
                if messages:
                    task = asyncio.create_task(delete(messages))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)

        cpu, started = _cpu(), time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(poller() for _ in range(POLLERS))), 600)
        await asyncio.gather(*tasks)
        return Run(tally.finished - started, _cpu() - cpu, tally.counted)


def _threaded(n: int, work: Any) -> Run:
    """`work(stop)` on THREADS threads until they did `n` between them (it returns a count)."""
    done = 0
    lock = threading.Lock()
    stop = threading.Event()
    finished = [0.0]

    def loop() -> None:
        nonlocal done
        while not stop.is_set():
            count = work()
            with lock:
                done += count
                if done >= n and not stop.is_set():
                    finished[0] = time.perf_counter()
                    stop.set()

    cpu, started = _cpu(), time.perf_counter()
    threads = [threading.Thread(target=loop) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return Run(finished[0] - started, _cpu() - cpu, done)


def threaded_drain(endpoint: str, url: str, n: int) -> Run:
    sqs = client("sqs", endpoint, THREADS)

    def work() -> int:
        messages = sqs.receive_message(**_receive_args(url, POLL_WAIT)).get("Messages") or []
        if not messages:
            return 0
        entries = [
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
        ]
        reply = sqs.delete_message_batch(QueueUrl=url, Entries=entries)
        return len(reply.get("Successful") or [])

    return _threaded(n, work)


def threaded_send(endpoint: str, url: str, n: int) -> Run:
    sqs = client("sqs", endpoint, THREADS)
    counter = iter(range(0, 10**9, 10))

    def work() -> int:
        first = next(counter)
        entries = [
            {
                "Id": f"m{i - first}",
                "MessageBody": f"order-{i:07d}",
                "MessageAttributes": {
                    "customer": {"DataType": "String", "StringValue": f"c-{i % 97}"},
                    "amount": {"DataType": "String", "StringValue": str(i % 1000)},
                    "snsq2nats.origin": {"DataType": "String", "StringValue": "nats"},
                },
            }
            for i in range(first, first + 10)
        ]
        reply = sqs.send_message_batch(QueueUrl=url, Entries=entries)
        return len(reply.get("Successful") or [])

    return _threaded(n, work)


async def aio_send(endpoint: str, url: str, n: int) -> Run:
    async with clients(endpoint, "botocore") as aws:
        tally = Tally(n)
        cpu, started = _cpu(), time.perf_counter()
        await asyncio.wait_for(ceiling_send(aws.sqs, url, tally, n), 600)
        return Run(tally.finished - started, _cpu() - cpu, tally.counted)


# --- busy: the bridge ---------------------------------------------------------------------------


async def bridge_run(
    setup: Setup, route: Any, transport: str, n: int, profile: cProfile.Profile | None = None
) -> Run:
    """One route in this process, `--pollers 8`, until `n` messages were deleted or sent."""
    from snsq2nats.bridge.context import BridgeContext
    from snsq2nats.bridge.runtime import run_bridge
    from snsq2nats.jetstream.connect import NatsOptions, connect_nats

    nc = await connect_nats(NatsOptions(servers=[setup.nats_url]), name="bench bridge")
    tally = Tally(n)
    try:
        async with clients(setup.endpoint, transport) as aws:
            ctx = BridgeContext(
                plan=setup.plan,
                nc=nc,
                sqs=aws.sqs,
                sns=aws.sns,
                aws_call=tally,
                pollers=POLLERS,
                max_in_flight=MAX_IN_FLIGHT,
                wait_time_seconds=POLL_WAIT,
            )
            if profile is not None:
                profile.enable()
            cpu, started = _cpu(), time.perf_counter()
            task = asyncio.create_task(run_bridge(ctx, [route], handle_signals=False))
            try:
                await asyncio.wait_for(tally.done.wait(), 600)
                used = _cpu() - cpu
            finally:
                if profile is not None:
                    profile.disable()
                ctx.stopping.set()
                await asyncio.wait_for(task, 60)
            return Run(tally.finished - started, used, n)
    finally:
        await nc.close()
        # What the run counted past its goal (a stopping bridge finishes what it holds).
        setup_counts[route.kind] = setup_counts.get(route.kind, 0) + tally.counted


def _profile_text(profile: cProfile.Profile, title: str) -> str:
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    stats.sort_stats("tottime").print_stats(14)
    lines = [ln for ln in out.getvalue().splitlines() if ln.strip()]
    return f"  profile, {title} (by own time):\n" + "\n".join("    " + ln for ln in lines[-16:])


@dataclass
class Direction:
    ceilings: dict[str, Run]
    bridges: dict[str, Run]

    @property
    def ceiling(self) -> Run:
        return min(self.ceilings.values(), key=lambda r: r.seconds / r.messages)


async def sqs_to_nats(setup: Setup, profiling: bool) -> Direction:
    route = setup.route("sqs-to-nats")
    raw, queue = setup.urls[RAW_QUEUE], setup.urls[IN_QUEUE]
    sqs = client("sqs", setup.endpoint)
    extra = 1 if profiling else 0
    filled = (ROUNDS + extra) * len(TRANSPORTS) * (ROUND + SLACK)
    prefill(setup.endpoint, [raw], 2 * ROUNDS * (ROUND + SLACK))
    prefill(setup.endpoint, [queue], filled)
    ceilings: dict[str, list[Run]] = {"aiobotocore": [], "boto3_threads": []}
    bridges: dict[str, list[Run]] = {t: [] for t in TRANSPORTS}
    for _ in range(ROUNDS):
        ceilings["aiobotocore"].append(await aio_drain(setup.endpoint, raw, ROUND))
        ceilings["boto3_threads"].append(
            await asyncio.to_thread(threaded_drain, setup.endpoint, raw, ROUND)
        )
        for transport in TRANSPORTS:
            bridges[transport].append(await bridge_run(setup, route, transport, ROUND))
    if profiling:
        for transport in TRANSPORTS:
            profile = cProfile.Profile()
            await bridge_run(setup, route, transport, ROUND, profile)
            print(_profile_text(profile, f"sqs-to-nats, {transport}"), file=sys.stderr)
    deleted = setup_counts.get(route.kind, 0)
    stored, _ = await stream_state(setup.nats_url, route.stream)
    left = queue_depth(sqs, queue)
    if stored != deleted or left != (filled - deleted, 0):
        raise AssertionError(f"sqs-to-nats: {stored} stored, {deleted} deleted, {left} in SQS")
    sqs.purge_queue(QueueUrl=raw)
    sqs.purge_queue(QueueUrl=queue)
    return Direction(
        {k: _best(v) for k, v in ceilings.items()}, {k: _best(v) for k, v in bridges.items()}
    )


async def nats_to_sqs(setup: Setup, profiling: bool) -> Direction:
    route = setup.route("nats-to-sqs")
    raw, queue = setup.urls[RAW_QUEUE], setup.urls[OUT_QUEUE]
    sqs = client("sqs", setup.endpoint)
    extra = 1 if profiling else 0
    published = (ROUNDS + extra) * len(TRANSPORTS) * (ROUND + SLACK)
    await publish_to_stream(setup.nats_url, route.subject, published)
    ceilings: dict[str, list[Run]] = {"aiobotocore": [], "boto3_threads": []}
    bridges: dict[str, list[Run]] = {t: [] for t in TRANSPORTS}
    for _ in range(ROUNDS):
        ceilings["aiobotocore"].append(await aio_send(setup.endpoint, raw, ROUND))
        ceilings["boto3_threads"].append(
            await asyncio.to_thread(threaded_send, setup.endpoint, raw, ROUND)
        )
        sqs.purge_queue(QueueUrl=raw)
        for transport in TRANSPORTS:
            bridges[transport].append(await bridge_run(setup, route, transport, ROUND))
    if profiling:
        for transport in TRANSPORTS:
            profile = cProfile.Profile()
            await bridge_run(setup, route, transport, ROUND, profile)
            print(_profile_text(profile, f"nats-to-sqs, {transport}"), file=sys.stderr)
    sent = setup_counts.get(route.kind, 0)
    queued = queue_depth(sqs, queue)
    pending = await consumer_pending(setup.nats_url, route.stream, route.consumer)
    if queued != (sent, 0) or sum(pending) != published - sent:
        raise AssertionError(f"nats-to-sqs: {sent} sent, {queued} in SQS, {pending} on NATS")
    sqs.purge_queue(QueueUrl=queue)
    return Direction(
        {k: _best(v) for k, v in ceilings.items()}, {k: _best(v) for k, v in bridges.items()}
    )


# --- the run ------------------------------------------------------------------------------------


def _proc_cpu(pid: int) -> float:
    from benchmarks.bench_routes import _cpu_seconds

    return _cpu_seconds(pid)


def _row(name: str, value: float, unit: str, target: float | None = None) -> dict[str, Any]:
    return {"name": f"sqs_transport.{name}", "value": value, "unit": unit, "target": target}


def _allow_open_files(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        limit = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, limit), hard))


async def measure() -> list[dict[str, Any]]:
    from snsq2nats.demo.nats_server import NatsServer

    profiling = os.environ.get("SNSQ2NATS_BENCH_PROFILE") == "1"
    _allow_open_files(max(IDLE_ROUTES) * 2 + 500)
    out: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-sqs-transport-") as tmp,
        fauxqs() as endpoint,
        NatsServer(name="bench-sqs-transport") as server,
    ):
        if os.environ.get("SNSQ2NATS_BENCH_PIN", "1") == "0":
            placement = "not pinned (SNSQ2NATS_BENCH_PIN=0)"
        else:
            placement = place([endpoint.pid, server.pid or 0])
        print(f"  {placement}", file=sys.stderr)
        setup = await make_setup(endpoint.endpoint, server.url, Path(tmp))
        _log_bridge_lines()
        gc.freeze()
        for label, measure_direction in (
            ("sqs_to_nats", sqs_to_nats),
            ("nats_to_sqs", nats_to_sqs),
        ):
            print(f"  {label} …", file=sys.stderr, flush=True)
            direction = await measure_direction(setup, profiling)
            rows = _busy_rows(label, direction)
            for row in rows:
                print(f"  {row['name']}: {row['value']} {row['unit']}", file=sys.stderr)
            out += rows
    for n in IDLE_ROUTES:
        # A route count that cannot even start (a loaded machine) is a row, not the end.
        try:
            out += await idle_routes(n)
        except Exception:
            traceback.print_exc(file=sys.stderr)
            out.append(_row(f"idle.{n}.measured", 0, "", 1))
    return out


async def idle_routes(n: int) -> list[dict[str, Any]]:
    """N idle routes, both transports: a real `snsq2nats bridge` process (bench_routes' estate,
    process and counting proxy), its CPU over `IDLE_WINDOW` divided by the SQS
    requests it made meanwhile; then the client alone, in this process, on the same queues."""
    from benchmarks import bench_routes
    from snsq2nats.aws.clients import TRANSPORT_ENV
    from snsq2nats.demo.nats_server import NatsServer

    per_poll: dict[str, float] = {}
    bridge: dict[str, tuple[float, float, float]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="bench-sqs-idle-") as tmp,
        fauxqs() as endpoint,
        NatsServer(name=f"bench-sqs-idle-{n}") as server,
        bench_routes.CountingProxy(int(endpoint.endpoint.rsplit(":", 1)[1])) as proxy,
    ):
        estate = await bench_routes.make_estate(n, endpoint.endpoint, server.url, Path(tmp))
        urls = list(estate.urls.values())
        for transport in TRANSPORTS:
            os.environ[TRANSPORT_ENV] = transport
            try:
                log = Path(tmp) / f"bridge-{transport}.log"
                with bench_routes.bridge_process(estate.plan_file, proxy.url, server.url, log) as b:
                    await asyncio.to_thread(bench_routes.wait_ready, b, n)
                    pid = b.proc.pid
                    cpu0, requests0, started = _proc_cpu(pid), proxy.requests, time.monotonic()
                    await asyncio.sleep(IDLE_WINDOW)
                    b.check_alive()
                    cpu, requests = _proc_cpu(pid) - cpu0, proxy.requests - requests0
                    elapsed = time.monotonic() - started
            finally:
                os.environ.pop(TRANSPORT_ENV, None)
            if not requests:
                raise AssertionError(f"{n} idle routes on {transport}: no SQS request counted")
            ms = cpu / requests * 1000
            core = 100 * cpu / elapsed
            per_hour = requests * 3600 / elapsed / n
            bridge[transport] = (ms, core, per_hour)
            print(
                f"  idle {n} routes, bridge on {transport}: {ms:.3f} ms per request, "
                f"{core:.1f}% core, {per_hour:.0f} req/h/route",
                file=sys.stderr,
            )
        for transport in TRANSPORTS:
            # A side figure: thousands of connects at once can time out on a loaded machine,
            # which must not cost the bridge's rows above.
            try:
                per_poll[transport] = await idle_cpu_per_poll(endpoint.endpoint, urls, transport)
            except Exception as exc:
                print(f"  idle {n} queues, client alone on {transport}: {exc!r}", file=sys.stderr)
                continue
            print(
                f"  idle {n} queues, client alone on {transport}: "
                f"{per_poll[transport]:.3f} ms per poll",
                file=sys.stderr,
            )
    return _idle_rows(n, bridge, per_poll)


def _idle_rows(
    n: int, bridge: dict[str, tuple[float, float, float]], per_poll: dict[str, float]
) -> list[dict[str, Any]]:
    rows = []
    for transport in TRANSPORTS:
        ms, core, requests = bridge[transport]
        rows += [
            _row(f"idle.{n}.{transport}.bridge_cpu_per_poll", round(ms, 3), "ms"),
            _row(f"idle.{n}.{transport}.bridge_core", round(core, 1), "% core"),
            _row(f"idle.{n}.{transport}.bridge_requests", round(requests), "req/h/route"),
        ]
        if transport in per_poll:
            rows.append(
                _row(
                    f"idle.{n}.{transport}.client_cpu_per_poll", round(per_poll[transport], 3), "ms"
                )
            )
    rows.append(
        _row(
            f"idle.{n}.lean.margin_under_{IDLE_TARGET_MS:g}ms",
            round(IDLE_TARGET_MS - bridge["lean"][0], 3),
            "ms",
            0 if n in IDLE_TARGET_ROUTES else None,
        )
    )
    return rows


def _busy_rows(label: str, d: Direction) -> list[dict[str, Any]]:
    rows = []
    for name, run in d.ceilings.items():
        rows += [
            _row(f"{label}.ceiling.{name}", round(run.rate), "msg/s"),
            _row(f"{label}.ceiling.{name}.cpu_per_10k", round(run.cpu_per, 2), "cpu s"),
        ]
    ceiling = d.ceiling.rate
    for transport, run in d.bridges.items():
        target = TARGET_RATIO if transport == "lean" else None
        rows += [
            _row(f"{label}.{transport}.bridge", round(run.rate), "msg/s"),
            _row(f"{label}.{transport}.vs_ceiling", round(run.rate / ceiling, 2), "x", target),
            _row(f"{label}.{transport}.cpu_per_10k", round(run.cpu_per, 2), "cpu s"),
        ]
    share = d.bridges["lean"].cpu_per / d.bridges["botocore"].cpu_per
    rows += [
        _row(f"{label}.lean_cpu_vs_botocore", round(share, 2), "x"),
        _row(
            f"{label}.lean_cpu_margin_under_{TARGET_CPU_SHARE:g}",
            round(TARGET_CPU_SHARE - share, 2),
            "x",
            0,
        ),
    ]
    return rows


def run() -> list[dict[str, Any]]:
    return asyncio.run(measure())


if __name__ == "__main__":
    for row in run():
        print(row)
