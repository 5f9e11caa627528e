"""The bridge against the raw ceiling of the same SQS endpoint, both directions, in one run.

The SQS endpoint is fauxqs (npm, `fauxqs@1.9.2`), installed on first use into `.bench/` and
run on a free loopback port: it answers about 100x faster than moto server, so what is measured
is the client side — the bridge — not the emulator. Every comparison runs in this process with
the same asyncio AWS clients as `snsq2nats bridge` (aiobotocore, configured and sized by the
bridge's own `async_clients` / `aws_connections`) and the same concurrency (SQS pollers,
messages in flight), in the same run:

This process runs on one CPU and the servers on the others (`place`; SNSQ2NATS_BENCH_PIN=0 turns
it off): its event loop and worker threads share one GIL, and handing it across cores costs
both sides alike, but unevenly from run to run.

Throughput is measured in `ROUNDS` rounds of `ROUND` messages in which the ceiling and the bridge
take turns; the best round of each counts, so a passing disturbance does not decide the ratio.

1. SQS → JetStream: drain a queue pre-filled with small messages (two attributes).
   Ceiling: the pollers receive 10 at a time and hand each batch to a DeleteMessageBatch, with
   the same in-flight bound and no NATS at all. Bridge: the `sqs-to-nats` relay, which also
   publishes every message and waits for its PubAck before deleting it.
2. JetStream → SQS: messages waiting on the queue's durable. Ceiling: SendMessageBatch
   on as many concurrent lanes as the bridge uses, with the entries the bridge would build.
   Bridge: the `nats-to-sqs` relay (fetch, send, ack after AWS accepted).
3. Latency at a steady `RATE` msg/s from a producer in another process, which stamps each
   message with its send time: raw SQS receive latency (send → received by a plain poller) and
   the bridge's send → stored in JetStream (the stream's own timestamp, i.e. the PubAck).
4. Peak RSS of a real `python -m snsq2nats bridge --max-messages 100000` subprocess while it
   relays `RSS_MESSAGES` messages, sampled from /proc; flat means the second half of the run
   grows by less than `RSS_FLAT_MB`.

The plan is the real one: fauxqs is scanned, a mapping file moves one queue's consumers to NATS
and the other's producers, and `apply_plan` creates the streams and consumers on a local node.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import json
import logging
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / ".bench"
FAUXQS = "fauxqs"
FAUXQS_VERSION = "1.9.2"
REGION = "us-east-1"

ROUNDS = 3  # ceiling and bridge take turns; the best round of each counts
ROUND = 8_000  # messages per round
SLACK = 1_000  # per round: what a stopping bridge still finishes past its goal
RATE = 500  # msg/s for the latency runs
LATENCY_SECONDS = 10.0
LATENCY_WARMUP = 1.0  # seconds of the latency run left out of the percentiles
RSS_MESSAGES = 100_000
RSS_BUDGET_MB = 250.0
RSS_FLAT_MB = 25.0
POLLERS = 4  # `snsq2nats bridge` defaults
MAX_IN_FLIGHT = 256
POLL_WAIT = 2  # long-poll seconds: the queue is never empty while measuring
TARGET_RATIO = 0.8

IN_QUEUE = "bench-in"  # sqs-to-nats: its consumers moved to NATS
OUT_QUEUE = "bench-out"  # nats-to-sqs: its producers moved to NATS, consumers still on AWS
RAW_QUEUE = "bench-raw"  # the ceilings' queue, left out of the plan
MAPPING = f"""\
version: 1
overrides:
  - match: "{RAW_QUEUE}*"
    exclude: true
  - match: "{IN_QUEUE}"
    cutover: {{producers: aws, consumers: nats}}
  - match: "{OUT_QUEUE}"
    cutover: {{producers: nats, consumers: aws}}
"""

# Imports a fauxqs app and serves it on 127.0.0.1:$FAUXQS_PORT without request logging (its own
# CLI always logs every request, which would make the emulator slower than it needs to be).
_LAUNCHER = """
const { buildApp } = await import(process.argv[1]);
const app = buildApp({ logger: false });
await app.listen({ port: Number(process.env.FAUXQS_PORT), host: "127.0.0.1" });
"""


# --- fauxqs ---------------------------------------------------------------------------------


def _installed_version() -> str | None:
    package = BENCH_DIR / "node_modules" / FAUXQS / "package.json"
    try:
        return str(json.loads(package.read_text())["version"])
    except (OSError, ValueError, KeyError):
        return None


def ensure_fauxqs() -> Path:
    """The installed fauxqs app module; `npm install`s it into `.bench/` the first time."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise RuntimeError(
            "the bridge benchmark needs Node.js (>= 20) and npm on PATH to run its SQS endpoint "
            f"({FAUXQS}@{FAUXQS_VERSION} from npm); install them, or skip it with "
            "`python -m benchmarks --only <suite>`"
        )
    if _installed_version() != FAUXQS_VERSION:
        print(f"  installing {FAUXQS}@{FAUXQS_VERSION} into {BENCH_DIR} …", file=sys.stderr)
        BENCH_DIR.mkdir(exist_ok=True)
        subprocess.run(
            [
                npm,
                "install",
                "--prefix",
                str(BENCH_DIR),
                f"{FAUXQS}@{FAUXQS_VERSION}",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        if _installed_version() != FAUXQS_VERSION:
            raise RuntimeError(f"npm did not install {FAUXQS}@{FAUXQS_VERSION} in {BENCH_DIR}")
    return BENCH_DIR / "node_modules" / FAUXQS / "dist" / "app.js"


@dataclass
class Fauxqs:
    endpoint: str
    pid: int


@contextlib.contextmanager
def fauxqs() -> Iterator[Fauxqs]:
    """A fauxqs server on a free loopback port."""
    from snsq2nats.demo.nats_server import free_ports

    app = ensure_fauxqs()
    port = free_ports(1)[0]
    proc = subprocess.Popen(
        ["node", "--input-type=module", "-e", _LAUNCHER, app.as_uri()],
        env={**os.environ, "FAUXQS_PORT": str(port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{endpoint}/health", timeout=1):
                    break
            except OSError:
                if proc.poll() is not None:
                    err = proc.stderr.read().decode() if proc.stderr else ""
                    raise RuntimeError(f"fauxqs exited at start: {err[-2000:]}") from None
                if time.monotonic() > deadline:
                    raise RuntimeError("fauxqs did not answer /health within 30 s") from None
                time.sleep(0.1)
        yield Fauxqs(endpoint, proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


# --- where the work runs ----------------------------------------------------------------------


def _tasks(pid: int) -> list[int]:
    try:
        return [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return [pid]


def _set_affinity(pid: int, cpus: set[int]) -> None:
    # Per thread: sched_setaffinity moves one thread; threads started later inherit it.
    for tid in _tasks(pid):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(tid, cpus)


def place(server_pids: list[int]) -> str:
    """This process on one CPU, the servers on the others; a description for the report.

    The measured side is one Python process whose event loop and boto3 worker threads share
    the GIL. Left to the scheduler they run on every CPU and hand the GIL across cores, which
    on a small VM costs a quarter of the CPU in context switches and moves the ratio by ±0.05
    from run to run; on one CPU the ceiling is higher and repeats. Ceiling and bridge run in
    this same process, so both are measured the same way.
    """
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned (no CPU affinity on this platform)"
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return "not pinned (one CPU)"
    mine, others = cpus[0], set(cpus[1:])
    for pid in server_pids:
        _set_affinity(pid, others)
    _set_affinity(os.getpid(), {mine})
    return f"bench process on CPU {mine}, fauxqs and nats-server on CPU {_ranges(others)}"


def _ranges(cpus: set[int]) -> str:
    ordered = sorted(cpus)
    return str(ordered[0]) if len(ordered) == 1 else f"{ordered[0]}-{ordered[-1]}"


def _unpin() -> None:
    """For helper processes started from the pinned one: they inherit its single CPU."""
    if hasattr(os, "sched_setaffinity"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))


# --- AWS clients and load generation ----------------------------------------------------------


def _aws_env() -> None:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)


def client(service: str, endpoint: str, pool: int = POLLERS + 10) -> Any:
    """A client configured as `snsq2nats bridge` configures its own (one route)."""
    import boto3
    from botocore.config import Config

    _aws_env()
    config = Config(
        retries={"mode": "adaptive", "max_attempts": 8},
        max_pool_connections=max(10, pool),
        read_timeout=40,
    )
    session: Any = boto3.Session()
    return session.client(service, region_name=REGION, endpoint_url=endpoint, config=config)


def _attributes(i: int) -> dict[str, Any]:
    return {
        "customer": {"DataType": "String", "StringValue": f"c-{i % 97}"},
        "amount": {"DataType": "Number", "StringValue": str(i % 1000)},
    }


def _fill(endpoint: str, url: str, start: int, count: int, threads: int) -> int:
    """Send messages start..start+count with SendMessageBatch on `threads` threads (a process)."""
    sqs = client("sqs", endpoint, threads)

    def batch(first: int) -> int:
        entries = [
            {"Id": str(i), "MessageBody": f"order-{i:07d}", "MessageAttributes": _attributes(i)}
            for i in range(first, min(first + 10, start + count))
        ]
        reply = sqs.send_message_batch(QueueUrl=url, Entries=entries)
        if reply.get("Failed"):
            raise RuntimeError(f"pre-fill refused: {reply['Failed'][:2]}")
        return len(entries)

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        return sum(pool.map(batch, range(start, start + count, 10)))


def _processes(count: int) -> concurrent.futures.ProcessPoolExecutor:
    return concurrent.futures.ProcessPoolExecutor(
        count, mp_context=multiprocessing.get_context("spawn"), initializer=_unpin
    )


def prefill(endpoint: str, urls: list[str], n: int, workers: int = 2) -> None:
    """Put `n` messages in each queue, from other processes (boto3 is CPU-bound)."""
    started = time.perf_counter()
    per = -(-n // workers // 10) * 10
    with _processes(workers) as pool:
        jobs = [
            pool.submit(_fill, endpoint, url, start, min(per, n - start), 4)
            for url in urls
            for start in range(0, n, per)
        ]
        sent = sum(job.result() for job in jobs)
    took = time.perf_counter() - started
    print(f"  pre-filled {sent:,} messages in {took:.1f}s", file=sys.stderr)


def _produce_steady(endpoint: str, url: str, rate: int, seconds: float) -> int:
    """Send `rate` msg/s for `seconds` (batches of 10 on a fixed schedule), each stamped with
    its send time in the `sent_ns` attribute; returns how many were sent."""
    sqs = client("sqs", endpoint, 4)
    sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])  # warm the connection
    interval = 10 / rate
    due = time.monotonic()
    end = due + seconds
    sent = 0
    while due < end:
        if (wait := due - time.monotonic()) > 0:
            time.sleep(wait)
        stamp = str(time.time_ns())
        entries = []
        for k in range(10):
            attrs = _attributes(sent + k)
            attrs["sent_ns"] = {"DataType": "String", "StringValue": stamp}
            entries.append(
                {"Id": str(k), "MessageBody": f"tick-{sent + k}", "MessageAttributes": attrs}
            )
        sqs.send_message_batch(QueueUrl=url, Entries=entries)
        sent += 10
        due += interval
    return sent


async def steady_producer(endpoint: str, url: str) -> int:
    loop = asyncio.get_running_loop()
    with _processes(1) as pool:
        return await loop.run_in_executor(
            pool, _produce_steady, endpoint, url, RATE, LATENCY_SECONDS
        )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


# --- counting AWS calls -----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def aio_clients(endpoint: str) -> Any:
    """The asyncio SQS and SNS clients `snsq2nats bridge` makes for one route."""
    from snsq2nats.aws.clients import async_clients
    from snsq2nats.bridge.session import READ_TIMEOUT, aws_connections

    _aws_env()
    connections = aws_connections(1, POLLERS)
    async with async_clients(REGION, endpoint, connections, read_timeout=READ_TIMEOUT) as aws:
        yield aws


@dataclass
class Tally:
    """Runs AWS calls the way the bridge does (awaited on the loop), counting the entries
    deleted or sent, and signals when `goal` is reached. Used as `BridgeContext.aws_call` and by
    the ceilings alike, so both pay exactly the same for it."""

    goal: int
    counted: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)
    finished: float = 0.0

    async def __call__(self, fn: Callable[..., Any], /, **kwargs: Any) -> Any:
        reply = await fn(**kwargs)
        if getattr(fn, "__name__", "") in ("delete_message_batch", "send_message_batch"):
            self.counted += len(reply.get("Successful") or [])
            if self.counted >= self.goal and not self.done.is_set():
                self.finished = time.perf_counter()
                self.done.set()
        return reply


def _receive_args(url: str, wait: int) -> dict[str, Any]:
    return {
        "QueueUrl": url,
        "MaxNumberOfMessages": 10,
        "WaitTimeSeconds": wait,
        "VisibilityTimeout": 30,
        "MessageAttributeNames": ["All"],
        "MessageSystemAttributeNames": ["All"],
    }


async def ceiling_drain(
    sqs: Any,
    url: str,
    tally: Tally,
    on_receive: Callable[[list[dict[str, Any]]], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Receive 10 and delete them, nothing else: the pollers hand each batch to a delete task
    with the bridge's in-flight bound, as the relay does."""
    permits = asyncio.Semaphore(MAX_IN_FLIGHT)
    tasks: set[asyncio.Task[None]] = set()
    stop = stop or tally.done

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
        while not stop.is_set():
            for _ in range(10):
                await permits.acquire()
            reply = await tally(sqs.receive_message, **_receive_args(url, POLL_WAIT))
            messages = reply.get("Messages") or []
            for _ in range(10 - len(messages)):
                permits.release()
            if messages:
                if on_receive is not None:
                    on_receive(messages)
                task = asyncio.create_task(delete(messages))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

    await asyncio.gather(*(poller() for _ in range(POLLERS)))
    await asyncio.gather(*tasks)


async def ceiling_send(sqs: Any, url: str, tally: Tally, n: int) -> None:
    """SendMessageBatch on the bridge's number of lanes, with the entries it would send."""
    starts = iter(range(0, n, 10))

    async def lane() -> None:
        for first in starts:
            entries = []
            for i in range(first, min(first + 10, n)):
                attrs = {
                    "customer": {"DataType": "String", "StringValue": f"c-{i % 97}"},
                    "amount": {"DataType": "String", "StringValue": str(i % 1000)},
                    "snsq2nats.origin": {"DataType": "String", "StringValue": "nats"},
                }
                entries.append(
                    {
                        "Id": f"m{i - first}",
                        "MessageBody": f"order-{i:07d}",
                        "MessageAttributes": attrs,
                    }
                )
            await tally(sqs.send_message_batch, QueueUrl=url, Entries=entries)

    await asyncio.gather(*(lane() for _ in range(max(1, MAX_IN_FLIGHT // 10))))


def queue_depth(sqs: Any, url: str) -> tuple[int, int]:
    attrs = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]), int(
        attrs["ApproximateNumberOfMessagesNotVisible"]
    )


# --- the plan and the in-process bridge ----------------------------------------------------------


@dataclass
class Setup:
    endpoint: str
    nats_url: str
    plan: Any
    plan_file: Path
    urls: dict[str, str]

    def route(self, kind: str) -> Any:
        return next(r for r in self.plan.routes if r.kind == kind)


async def make_setup(endpoint: str, nats_url: str, workdir: Path) -> Setup:
    """Queues on fauxqs, scanned, planned with the cutover mapping, applied to NATS."""
    import boto3

    from benchmarks.estate import apply_estate
    from snsq2nats.aws import scan as aws_scan
    from snsq2nats.aws.clients import make_clients
    from snsq2nats.files import document_json

    sqs = client("sqs", endpoint)
    urls = {
        name: sqs.create_queue(QueueName=name)["QueueUrl"]
        for name in (IN_QUEUE, OUT_QUEUE, RAW_QUEUE)
    }
    clients = make_clients(boto3.Session(), [REGION], endpoint)
    inventory = await asyncio.to_thread(aws_scan.scan, clients)
    plan = await apply_estate(nats_url, inventory, MAPPING, workdir)
    kinds = sorted(r.kind for r in plan.routes)
    if kinds != ["nats-to-sqs", "sqs-to-nats"]:
        raise RuntimeError(f"unexpected routes in the plan: {kinds}")
    plan_file = workdir / "plan.json"
    plan_file.write_bytes(document_json(plan))
    return Setup(endpoint, nats_url, plan, plan_file, urls)


async def run_bridge_until(
    setup: Setup, route: Any, tally: Tally, timeout: float, stop: asyncio.Event | None = None
) -> float:
    """Run one route in this process until `tally` reaches its goal (or `stop` is set);
    seconds until the goal."""
    from snsq2nats.bridge.context import BridgeContext
    from snsq2nats.bridge.runtime import run_bridge
    from snsq2nats.jetstream.connect import NatsOptions, connect_nats

    nc = await connect_nats(NatsOptions(servers=[setup.nats_url]), name="bench bridge")
    clients = contextlib.AsyncExitStack()
    aws = await clients.enter_async_context(aio_clients(setup.endpoint))
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
    started = time.perf_counter()
    task = asyncio.create_task(run_bridge(ctx, [route], handle_signals=False))
    try:
        await asyncio.wait_for((stop or tally.done).wait(), timeout)
        return tally.finished - started
    finally:
        ctx.stopping.set()
        await asyncio.wait_for(task, 60)
        await nc.close()
        await clients.aclose()


async def timed(coro: Any, tally: Tally, timeout: float) -> float:
    started = time.perf_counter()
    await asyncio.wait_for(coro, timeout)
    return tally.finished - started


# --- the measurements ---------------------------------------------------------------------------


async def stream_state(nats_url: str, stream: str) -> tuple[int, int]:
    """(messages, last sequence) of a stream."""
    from snsq2nats.jetstream.connect import NatsOptions, connect_nats

    nc = await connect_nats(NatsOptions(servers=[nats_url]))
    try:
        info = await nc.jetstream().stream_info(stream)
        return int(info.state.messages), int(info.state.last_seq)
    finally:
        await nc.close()


async def sqs_to_nats(setup: Setup) -> dict[str, float]:
    """Best round of each, ceiling and bridge taking turns on queues filled alike."""
    route = setup.route("sqs-to-nats")
    sqs = client("sqs", setup.endpoint)
    filled = ROUNDS * (ROUND + SLACK)
    prefill(setup.endpoint, [setup.urls[RAW_QUEUE], setup.urls[IN_QUEUE]], filled)
    ceilings, bridges, deleted = [], [], 0
    for _ in range(ROUNDS):
        tally = Tally(ROUND)
        async with aio_clients(setup.endpoint) as aws:
            drain = ceiling_drain(aws.sqs, setup.urls[RAW_QUEUE], tally)
            ceilings.append(await timed(drain, tally, 600))
        tally = Tally(ROUND)
        bridges.append(await run_bridge_until(setup, route, tally, 600))
        deleted += tally.counted
    # Nothing lost, nothing twice: the stream holds exactly what the bridge deleted.
    stored, _ = await stream_state(setup.nats_url, route.stream)
    left = queue_depth(sqs, setup.urls[IN_QUEUE])
    if stored != deleted or left != (filled - deleted, 0):
        raise AssertionError(f"sqs-to-nats: {stored} stored, {deleted} deleted, {left} in SQS")
    sqs.purge_queue(QueueUrl=setup.urls[RAW_QUEUE])
    sqs.purge_queue(QueueUrl=setup.urls[IN_QUEUE])
    return {"ceiling": ROUND / min(ceilings), "bridge": ROUND / min(bridges)}


async def publish_to_stream(nats_url: str, subject: str, n: int) -> None:
    from snsq2nats.jetstream.connect import NatsOptions, connect_nats

    nc = await connect_nats(NatsOptions(servers=[nats_url]))
    try:
        js = nc.jetstream()
        pending: list[asyncio.Future[Any]] = []
        for i in range(n):
            headers = {"customer": f"c-{i % 97}", "amount": str(i % 1000)}
            pending.append(
                await js.publish_async(subject, f"order-{i:07d}".encode(), headers=headers)
            )
            if len(pending) >= 1000:
                await asyncio.wait_for(asyncio.gather(*pending), 30)
                pending = []
        await asyncio.wait_for(asyncio.gather(*pending), 30)
    finally:
        await nc.close()


async def consumer_pending(nats_url: str, stream: str, consumer: str) -> tuple[int, int]:
    from snsq2nats.jetstream.connect import NatsOptions, connect_nats

    nc = await connect_nats(NatsOptions(servers=[nats_url]))
    try:
        info = await nc.jetstream().consumer_info(stream, consumer)
        return int(info.num_pending or 0), int(info.num_ack_pending or 0)
    finally:
        await nc.close()


async def nats_to_sqs(setup: Setup) -> dict[str, float]:
    """Best round of each, ceiling and bridge taking turns."""
    route = setup.route("nats-to-sqs")
    sqs = client("sqs", setup.endpoint)
    published = ROUNDS * (ROUND + SLACK)
    await publish_to_stream(setup.nats_url, route.subject, published)
    sqs.purge_queue(QueueUrl=setup.urls[RAW_QUEUE])
    ceilings, bridges, sent = [], [], 0
    for _ in range(ROUNDS):
        tally = Tally(ROUND)
        async with aio_clients(setup.endpoint) as aws:
            sending = ceiling_send(aws.sqs, setup.urls[RAW_QUEUE], tally, ROUND)
            ceilings.append(await timed(sending, tally, 600))
        tally = Tally(ROUND)
        bridges.append(await run_bridge_until(setup, route, tally, 600))
        sent += tally.counted
    # Each message sent once; the rest still on the consumer (those fetched when the bridge
    # stopped were handed back with a NAK and count as ack-pending until redelivered).
    queued = queue_depth(sqs, setup.urls[OUT_QUEUE])
    pending = await consumer_pending(setup.nats_url, route.stream, route.consumer)
    if queued != (sent, 0) or sum(pending) != published - sent:
        raise AssertionError(f"nats-to-sqs: {sent} sent, {queued} in SQS, {pending} on NATS")
    sqs.purge_queue(QueueUrl=setup.urls[RAW_QUEUE])
    sqs.purge_queue(QueueUrl=setup.urls[OUT_QUEUE])
    return {"ceiling": ROUND / min(ceilings), "bridge": ROUND / min(bridges)}


async def raw_latency(setup: Setup) -> list[float]:
    """Send → received by a plain poller, in ms, at the steady rate."""
    url = setup.urls[RAW_QUEUE]
    samples: list[tuple[int, float]] = []

    def on_receive(messages: list[dict[str, Any]]) -> None:
        now = time.time_ns()
        for m in messages:
            sent = int(m["MessageAttributes"]["sent_ns"]["StringValue"])
            samples.append((sent, (now - sent) / 1e6))

    stop = asyncio.Event()
    tally = Tally(10**12)
    async with aio_clients(setup.endpoint) as aws:
        consumer = asyncio.create_task(ceiling_drain(aws.sqs, url, tally, on_receive, stop))
        sent = await steady_producer(setup.endpoint, url)
        await _until(lambda: len(samples) >= sent, 30)
        stop.set()
        await consumer
    return _after_warmup(samples)


def _after_warmup(samples: list[tuple[int, float]]) -> list[float]:
    first = min(s for s, _ in samples)
    return [ms for s, ms in samples if s - first >= LATENCY_WARMUP * 1e9]


async def _until(check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the latency run to finish")
        await asyncio.sleep(0.05)


async def bridge_latency(setup: Setup) -> list[float]:
    """Send → stored in JetStream (the stream's timestamp of the PubAck'd message), in ms."""
    from snsq2nats.jetstream.connect import NatsOptions, connect_nats

    route = setup.route("sqs-to-nats")
    _, before = await stream_state(setup.nats_url, route.stream)
    stop = asyncio.Event()
    bridge = asyncio.create_task(run_bridge_until(setup, route, Tally(10**12), 3600, stop))
    await asyncio.sleep(0.5)
    sent = await steady_producer(setup.endpoint, setup.urls[IN_QUEUE])

    async def relayed() -> int:
        return (await stream_state(setup.nats_url, route.stream))[1] - before

    deadline = time.monotonic() + 30
    while await relayed() < sent and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    stop.set()
    await bridge
    nc = await connect_nats(NatsOptions(servers=[setup.nats_url]))
    try:
        js = nc.jetstream()
        samples: list[tuple[int, float]] = []
        for start in range(before + 1, before + sent + 1, 200):
            msgs = await asyncio.gather(
                *(
                    js.get_msg(route.stream, seq)
                    for seq in range(start, min(start + 200, before + sent + 1))
                )
            )
            for msg in msgs:
                sent_ns = int((msg.headers or {})["sent_ns"])
                stored = msg.time.timestamp() * 1e9
                samples.append((sent_ns, (stored - sent_ns) / 1e6))
    finally:
        await nc.close()
    if len(samples) != sent:
        raise AssertionError(f"latency run: {len(samples)} relayed of {sent}")
    return _after_warmup(samples)


@dataclass
class RssRun:
    peak_mb: float
    growth_mb: float  # RSS growth over the second half of the messages
    seconds: float


def _status_kb(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


async def bridge_rss(setup: Setup, workdir: Path) -> RssRun:
    """A real `snsq2nats bridge` process relays RSS_MESSAGES; its memory is sampled meanwhile."""
    route = setup.route("sqs-to-nats")
    prefill(setup.endpoint, [setup.urls[IN_QUEUE]], RSS_MESSAGES)
    _, before = await stream_state(setup.nats_url, route.stream)
    log = (workdir / "bridge.log").open("wb")
    command = [sys.executable, "-m", "snsq2nats", "bridge", "--plan", str(setup.plan_file)]
    command += ["--server", setup.nats_url, "--endpoint-url", setup.endpoint, "--region", REGION]
    command += ["--route", route.name, "--max-messages", str(RSS_MESSAGES)]
    command += ["--pollers", str(POLLERS), "--max-in-flight", str(MAX_IN_FLIGHT)]
    command += ["--poll-wait", str(POLL_WAIT)]
    proc = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, preexec_fn=_unpin
    )
    started = time.perf_counter()
    samples: list[tuple[int, int]] = []  # (messages relayed, RSS kB)
    peak = 0
    try:
        while proc.poll() is None:
            rss = _status_kb(proc.pid, "VmRSS")
            peak = max(peak, _status_kb(proc.pid, "VmHWM") or 0)
            if rss is not None:
                done = (await stream_state(setup.nats_url, route.stream))[1] - before
                samples.append((done, rss))
            if time.perf_counter() - started > 600:
                raise AssertionError("the bridge did not relay its messages within 600 s")
            await asyncio.sleep(0.25)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(30)
        log.close()
    seconds = time.perf_counter() - started
    relayed = (await stream_state(setup.nats_url, route.stream))[1] - before
    if proc.returncode != 0 or relayed != RSS_MESSAGES:
        tail = (workdir / "bridge.log").read_text()[-2000:]
        raise AssertionError(f"bridge exited {proc.returncode}, relayed {relayed}: {tail}")
    half = [rss for done, rss in samples if done >= RSS_MESSAGES // 2]
    at_half = half[0] if half else peak
    return RssRun(peak / 1024, (max(half, default=peak) - at_half) / 1024, seconds)


async def measure() -> list[dict[str, Any]]:
    from snsq2nats.demo.nats_server import NatsServer

    with (
        tempfile.TemporaryDirectory(prefix="bench-bridge-") as tmp,
        fauxqs() as sqs_endpoint,
        NatsServer(name="bench-bridge") as server,
    ):
        if os.environ.get("SNSQ2NATS_BENCH_PIN", "1") == "0":
            placement = "not pinned (SNSQ2NATS_BENCH_PIN=0)"
        else:
            placement = place([sqs_endpoint.pid, server.pid or 0])
        print(f"  {placement}", file=sys.stderr)
        workdir = Path(tmp)
        setup = await make_setup(sqs_endpoint.endpoint, server.url, workdir)
        _log_bridge_lines()
        # As `snsq2nats bridge` does once before relaying: the long-lived startup heap (boto3's
        # models, the plan) is no longer rescanned by every collection, for ceiling and bridge.
        gc.freeze()
        inbound = await sqs_to_nats(setup)
        outbound = await nats_to_sqs(setup)
        raw = await raw_latency(setup)
        bridged = await bridge_latency(setup)
        rss = await bridge_rss(setup, workdir)
    return rows(inbound, outbound, raw, bridged, rss)


def _log_bridge_lines() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("  bridge: %(message)s"))
    logger = logging.getLogger("snsq2nats")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def _row(name: str, value: float, unit: str, target: float | None = None) -> dict[str, Any]:
    return {"name": f"bridge.{name}", "value": value, "unit": unit, "target": target}


def rows(
    inbound: dict[str, float],
    outbound: dict[str, float],
    raw: list[float],
    bridged: list[float],
    rss: RssRun,
) -> list[dict[str, Any]]:
    out = []
    for label, rates in (("sqs_to_nats", inbound), ("nats_to_sqs", outbound)):
        out += [
            _row(f"{label}.ceiling", round(rates["ceiling"]), "msg/s"),
            _row(f"{label}.bridge", round(rates["bridge"]), "msg/s"),
            _row(
                f"{label}.vs_ceiling",
                round(rates["bridge"] / rates["ceiling"], 2),
                "x",
                TARGET_RATIO,
            ),
        ]
    p = {q: (percentile(raw, q), percentile(bridged, q)) for q in (0.5, 0.99)}
    out.append(_row("latency.rate", RATE, "msg/s"))
    for q, name in ((0.5, "p50"), (0.99, "p99")):
        raw_q, bridged_q = p[q]
        out += [
            _row(f"latency.sqs_receive_{name}", round(raw_q, 1), "ms"),
            _row(f"latency.to_jetstream_{name}", round(bridged_q, 1), "ms"),
            _row(f"latency.added_{name}", round(bridged_q - raw_q, 1), "ms"),
        ]
    out += [
        _row("latency.samples", len(bridged), "msgs"),
        _row("rss.messages", RSS_MESSAGES, "msgs"),
        _row("rss.relay_wall", round(rss.seconds, 1), "s"),
        _row("rss.peak", round(rss.peak_mb, 1), "MB"),
        _row("rss.second_half_growth", round(rss.growth_mb, 1), "MB"),
        _row(
            f"rss.margin_under_{RSS_BUDGET_MB:g}mb", round(RSS_BUDGET_MB - rss.peak_mb, 1), "MB", 0
        ),
        _row(f"rss.flat_margin_{RSS_FLAT_MB:g}mb", round(RSS_FLAT_MB - rss.growth_mb, 1), "MB", 0),
    ]
    return out


def run() -> list[dict[str, Any]]:
    return asyncio.run(measure())


if __name__ == "__main__":
    for row in run():
        print(row)
