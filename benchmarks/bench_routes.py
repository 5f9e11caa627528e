"""What one bridge process costs per idle route: threads, memory, idle CPU, AWS requests, and
how long the first message sent to an idle route takes to reach its stream.

For each N in `ROUTES`: N queues on a fresh fauxqs (the SQS endpoint of the bridge benchmark),
a plan from a synthetic inventory of those N queues with every queue's consumers moved to NATS
(so the plan derives N `sqs-to-nats` routes), applied to a fresh nats-server, and a real
`python -m snsq2nats bridge --direction aws-to-nats` subprocess with the CLI's defaults, so its
threads and memory are its own. It runs twice: straight to fauxqs for everything below but the
request counts, then once more through a pass-through TCP proxy in this process that counts the
HTTP requests it forwards (fauxqs keeps no request counts). Only the counts come from the
second run: the proxy shares this process and the CPUs, and slows the bridge it counts.

Once `/readyz` answers 200 and the process has settled (thread count unchanged, RSS within
`SETTLE_RSS_KB`, for `SETTLE_SAMPLES` one-second samples), `IDLE_SECONDS` of idle are measured:
the highest thread count and RSS seen (`/proc/<pid>/status`), CPU as a percentage of one core
(utime + stime from `/proc/<pid>/stat` over the window), and the requests the proxy forwarded,
per route and hour, in total and by SQS action (the `X-Amz-Target` header of botocore's JSON
protocol). Then one message goes to each of `LATENCY_SAMPLE` random queues (all of them when N
is no larger) and each one's latency is the stream's own timestamp of the stored message minus
the time just before SendMessage. Last, without a target, one message to every queue at once
(`burst_every_queue`), as issue 11 first measured it. Then the idle bridge gets SIGTERM and
`idle_stop` is the time until it exited (issue 18: at most about 2 s, its long polls cancelled
rather than waited out; it still gives up every lease in the fleet bucket, one request each).

At `BUSY_ROUTES` routes, a third bridge then starts with `BUSY_PER_ROUTE` messages waiting in
every queue: the aggregate rate of all routes together once every route is up (`busy.*`), and
the streams must hold each message once.

Targets (issue 11, "One process, many routes": 1,000 idle routes in <= 100 threads, <= 250 MB
RSS, <= 5 % of a core idle, first message p99 <= 2 s; 180 AWS requests per idle route and hour,
one 20 s long poll at a time) are applied at every N, the cost being meant not to depend on N;
the table's `ok` is `value >= target`, so each "at most" budget is a margin row (budget minus
measured, target 0). The request floor gets 10 % for the edges of the window. A miss is a row,
never an exception; a route count that cannot even start is a row too (`ready` 0, target 1).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.bench_bridge import REGION, ROOT, client, fauxqs, percentile
from benchmarks.synthetic import synthetic_inventory

ROUTES = (100, 1000, 5000)
BUSY_ROUTES = 1000  # the route count whose aggregate throughput is measured too
BUSY_PER_ROUTE = 50  # messages waiting in each queue when that bridge starts
BUSY_TIMEOUT = 600.0
IDLE_SECONDS = 20.0
LATENCY_SAMPLE = 50
LATENCY_TIMEOUT = 120.0  # seconds: a message not in its stream by then counts as this late
READY_TIMEOUT = 300.0
SETTLE_SAMPLES = 3
SETTLE_RSS_KB = 1024
SETTLE_TIMEOUT = 120.0
SEED = 11

MAX_THREADS = 100
MAX_RSS_MB = 250.0
MAX_IDLE_CPU = 5.0  # % of one core
MAX_P99_MS = 2000.0
REQUEST_FLOOR = 180.0  # per idle route and hour: one 20 s long poll at a time
REQUEST_SLACK = 1.1

MAPPING = """\
version: 1
overrides:
  - match: "*"
    cutover: {consumers: nats}
"""


# --- counting the bridge's AWS requests ---------------------------------------------------------


class CountingProxy:
    """A TCP pass-through to 127.0.0.1:`port` on its own thread and loop; counts HTTP/1.1
    request lines sent upstream (a request line ends in ` HTTP/1.1`, a status line does not)."""

    MARK = b" HTTP/1.1\r\n"
    # botocore's SQS JSON protocol names the action in a header (headers come in one chunk).
    ACTION = re.compile(rb"(?i)x-amz-target: *AmazonSQS\.(\w+)")

    def __init__(self, port: int) -> None:
        self.port = port
        self.requests = 0
        self.actions: collections.Counter[str] = collections.Counter()
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._ready = threading.Event()
        self._bound = 0

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, count: bool
    ) -> None:
        tail = b""
        with contextlib.suppress(ConnectionError, OSError):
            while chunk := await reader.read(65536):
                if count:
                    seen = tail + chunk
                    self.requests += seen.count(self.MARK)
                    tail = seen[-(len(self.MARK) - 1) :]
                    self.actions.update(m.decode() for m in self.ACTION.findall(chunk))
                writer.write(chunk)
                await writer.drain()
        with contextlib.suppress(Exception):
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(
            self._pipe(reader, up_writer, True), self._pipe(up_reader, writer, False)
        )

    def _serve(self) -> None:
        server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=4096)
        )
        self._bound = int(server.sockets[0].getsockname()[1])
        self._ready.set()
        self._loop.run_forever()
        server.close()

    def __enter__(self) -> CountingProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the counting proxy did not start")
        self.url = f"http://127.0.0.1:{self._bound}"
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


# --- the bridge process, seen from /proc ---------------------------------------------------------


def _status(pid: int) -> dict[str, int]:
    """Threads and VmRSS (kB) of a process."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("Threads", "VmRSS"):
                out[key] = int(value.split()[0])
    return out


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _get(url: str, timeout: float = 5) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return int(reply.status), reply.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()


def _metric_sum(metrics: str, name: str) -> int:
    return sum(
        round(float(line.rsplit(" ", 1)[1]))
        for line in metrics.splitlines()
        if line.startswith(f"snsq2nats_bridge_{name}{{")
    )


def _up_sum(metrics: str) -> int:
    return _metric_sum(metrics, "up")


@dataclass
class Bridge:
    proc: subprocess.Popen[bytes]
    metrics_url: str
    log: Path

    def tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-2000:]
        return ""

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"the bridge exited with {self.proc.returncode}: {self.tail()}")


@contextlib.contextmanager
def bridge_process(plan_file: Path, endpoint: str, nats_url: str, log: Path) -> Iterator[Bridge]:
    from snsq2nats.demo.nats_server import free_ports

    port = free_ports(1)[0]
    command = [sys.executable, "-m", "snsq2nats", "bridge", "--plan", str(plan_file)]
    command += ["--server", nats_url, "--endpoint-url", endpoint, "--region", REGION]
    command += ["--direction", "aws-to-nats", "--metrics-port", str(port)]
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "bench"),
        "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "bench"),
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    try:
        yield Bridge(proc, f"http://127.0.0.1:{port}", log)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(90)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def wait_up(bridge: Bridge, routes: int) -> None:
    """Until /readyz is 200 with every route up."""
    started = time.monotonic()
    while True:
        bridge.check_alive()
        with contextlib.suppress(OSError):
            status, _ = _get(f"{bridge.metrics_url}/readyz")
            if status == 200 and _up_sum(_get(f"{bridge.metrics_url}/metrics")[1]) == routes:
                return
        if time.monotonic() - started > READY_TIMEOUT:
            raise RuntimeError(f"not ready within {READY_TIMEOUT:g}s: {bridge.tail()}")
        time.sleep(0.5)


def wait_ready(bridge: Bridge, routes: int) -> float:
    """Seconds until /readyz is 200 with every route up, then until threads and RSS settle."""
    started = time.monotonic()
    wait_up(bridge, routes)
    settle_started = time.monotonic()
    last: dict[str, int] = {}
    steady = 0
    while steady < SETTLE_SAMPLES and time.monotonic() - settle_started < SETTLE_TIMEOUT:
        time.sleep(1.0)
        bridge.check_alive()
        now = _status(bridge.proc.pid)
        same = (
            now.get("Threads") == last.get("Threads")
            and abs(now.get("VmRSS", 0) - last.get("VmRSS", 0)) <= SETTLE_RSS_KB
        )
        steady = steady + 1 if same else 0
        last = now
    if steady < SETTLE_SAMPLES:
        print(f"  not settled after {SETTLE_TIMEOUT:g}s; measuring anyway", file=sys.stderr)
    return time.monotonic() - started


@dataclass
class Idle:
    threads: int
    rss_mb: float
    cpu_percent: float
    requests_per_route_hour: float
    actions_per_route_hour: dict[str, float]


def measure_idle(bridge: Bridge, routes: int, proxy: CountingProxy | None = None) -> Idle:
    """`IDLE_SECONDS` of an idle bridge; AWS requests counted only when it goes through `proxy`."""
    pid = bridge.proc.pid
    threads, rss = 0, 0

    def requests() -> tuple[int, collections.Counter[str]]:
        return (
            (proxy.requests, collections.Counter(proxy.actions))
            if proxy
            else (0, collections.Counter())
        )

    (requests0, actions0), cpu0, started = requests(), _cpu_seconds(pid), time.monotonic()
    deadline = started + IDLE_SECONDS
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(1.0, left))
        now = _status(pid)
        threads, rss = max(threads, now.get("Threads", 0)), max(rss, now.get("VmRSS", 0))
    bridge.check_alive()
    (requests1, actions), cpu1, elapsed = requests(), _cpu_seconds(pid), time.monotonic() - started
    actions.subtract(actions0)
    per_hour = 3600 / elapsed / routes
    return Idle(
        threads=threads,
        rss_mb=rss / 1024,
        cpu_percent=100 * (cpu1 - cpu0) / elapsed,
        requests_per_route_hour=(requests1 - requests0) * per_hour,
        actions_per_route_hour={a: n * per_hour for a, n in sorted(actions.items()) if n},
    )


# --- the estate ----------------------------------------------------------------------------------


@dataclass
class Estate:
    plan_file: Path
    urls: dict[str, str]  # stream → its queue's URL on fauxqs


async def make_estate(routes: int, endpoint: str, nats_url: str, workdir: Path) -> Estate:
    """N queues on fauxqs, a plan of N sqs-to-nats routes, applied."""
    from benchmarks.estate import apply_estate
    from snsq2nats.aws.arns import parse_arn
    from snsq2nats.files import document_json

    inventory = synthetic_inventory(routes, 0, 0)
    sqs = client("sqs", endpoint, 16)

    def create(queue: Any) -> str:
        attributes = {"VisibilityTimeout": str(queue.visibility_timeout)}
        return str(sqs.create_queue(QueueName=queue.name, Attributes=attributes)["QueueUrl"])

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        urls = list(pool.map(create, inventory.queues))
    arn = sqs.get_queue_attributes(QueueUrl=urls[0], AttributeNames=["QueueArn"])
    where = parse_arn(arn["Attributes"]["QueueArn"])
    # The synthetic inventory, as a scan of this endpoint would have found it.
    queues = [
        q.model_copy(
            update={
                "url": url,
                "account": where.account,
                "region": where.region,
                "arn": f"arn:aws:sqs:{where.region}:{where.account}:{q.name}",
            }
        )
        for q, url in zip(inventory.queues, urls, strict=True)
    ]
    inventory = inventory.model_copy(update={"queues": queues})
    plan = await apply_estate(nats_url, inventory, MAPPING, workdir)
    kinds = {r.kind for r in plan.routes}
    if len(plan.routes) != routes or kinds != {"sqs-to-nats"}:
        raise RuntimeError(f"expected {routes} sqs-to-nats routes, got {len(plan.routes)} {kinds}")
    by_arn = {q.arn: q.url for q in inventory.queues}
    plan_file = workdir / "plan.json"
    plan_file.write_bytes(document_json(plan))
    return Estate(plan_file, {str(r.stream): by_arn[r.aws_arn] for r in plan.routes})


# --- first message to an idle route ---------------------------------------------------------------


async def first_message_ms(
    estate: Estate, endpoint: str, nats_url: str, sample: int | None
) -> list[float]:
    """Send one message to each of a random sample of idle queues (all: `sample` None) at
    once; per message, ms from just before SendMessage to the stream's timestamp of it."""
    from snsq2nats.jetstream.api import api
    from snsq2nats.jetstream.connect import NatsOptions, connect_nats

    streams = sorted(estate.urls)
    chosen = random.Random(SEED).sample(streams, min(sample or len(streams), len(streams)))
    sqs = client("sqs", endpoint, 16)
    sqs.get_queue_attributes(QueueUrl=estate.urls[chosen[0]], AttributeNames=["QueueArn"])

    def send(stream: str) -> tuple[str, float]:
        sent = time.time()
        sqs.send_message(QueueUrl=estate.urls[stream], MessageBody=f"first-{stream}")
        return stream, sent

    async def last_seqs(names: list[str]) -> dict[str, int]:
        infos = await asyncio.gather(
            *(api(nc, f"$JS.API.STREAM.INFO.{s}", None, 10.0) for s in names)
        )
        return {s: int(i["state"]["last_seq"]) for s, i in zip(names, infos, strict=True)}

    nc = await connect_nats(NatsOptions(servers=[nats_url]), name="bench routes latency")
    latencies: list[float] = []
    try:
        before = await last_seqs(chosen)
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            sent_at = dict(await asyncio.to_thread(lambda: list(pool.map(send, chosen))))
        pending = set(chosen)
        deadline = time.monotonic() + LATENCY_TIMEOUT
        while pending and time.monotonic() < deadline:
            seqs = await last_seqs(sorted(pending))
            for stream in [s for s, seq in seqs.items() if seq > before[s]]:
                subject = f"$JS.API.STREAM.MSG.GET.{stream}"
                reply = await api(nc, subject, {"seq": before[stream] + 1}, 10.0)
                stored = datetime.fromisoformat(reply["message"]["time"]).timestamp()
                latencies.append((stored - sent_at[stream]) * 1000)
                pending.discard(stream)
            if pending:
                await asyncio.sleep(0.1)
        if pending:
            print(
                f"  {len(pending)} of {len(chosen)} first messages not stored within "
                f"{LATENCY_TIMEOUT:g}s; counted as {LATENCY_TIMEOUT:g}s",
                file=sys.stderr,
            )
            latencies += [LATENCY_TIMEOUT * 1000] * len(pending)
    finally:
        await nc.close()
    return latencies


# --- every route busy at once ---------------------------------------------------------------------


@dataclass
class Busy:
    messages: int
    rate: float  # msg/s relayed, all routes together, once every route was up
    wall: float  # s from the process start to the last message stored
    threads: int
    rss_mb: float


def _fill_every_queue(endpoint: str, urls: list[str], n: int) -> None:
    sqs = client("sqs", endpoint, 16)

    def fill(url: str) -> None:
        for start in range(0, n, 10):
            entries = [
                {"Id": str(i), "MessageBody": f"busy-{start + i}"}
                for i in range(min(10, n - start))
            ]
            if sqs.send_message_batch(QueueUrl=url, Entries=entries).get("Failed"):
                raise RuntimeError(f"pre-fill refused in {url}")

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(fill, urls))
    took = time.perf_counter() - started
    print(f"  {n} messages in each of {len(urls)} queues in {took:.1f}s", file=sys.stderr)


async def _stored(estate: Estate, nats_url: str) -> int:
    from snsq2nats.jetstream.api import api
    from snsq2nats.jetstream.connect import NatsOptions, connect_nats

    nc = await connect_nats(NatsOptions(servers=[nats_url]), name="bench routes busy")
    try:
        streams = sorted(estate.urls)
        infos = await asyncio.gather(
            *(api(nc, f"$JS.API.STREAM.INFO.{s}", None, 10.0) for s in streams)
        )
        return sum(int(i["state"]["messages"]) for i in infos)
    finally:
        await nc.close()


def measure_busy(estate: Estate, endpoint: str, nats_url: str, log: Path) -> Busy:
    """`BUSY_PER_ROUTE` messages waiting in every queue, then a bridge started on all of them:
    its aggregate rate from the moment every route is up (what it relayed while starting is
    left out) to the last message counted by its metrics; the streams must then hold each
    message once more than before (the stream's duplicate window absorbs redeliveries)."""
    before = asyncio.run(_stored(estate, nats_url))
    urls = list(estate.urls.values())
    _fill_every_queue(endpoint, urls, BUSY_PER_ROUTE)
    total = len(urls) * BUSY_PER_ROUTE
    threads = rss = 0
    with bridge_process(estate.plan_file, endpoint, nats_url, log) as bridge:
        started = time.monotonic()
        wait_up(bridge, len(urls))
        up_at = time.monotonic()
        at_up = _metric_sum(_get(f"{bridge.metrics_url}/metrics", 60)[1], "messages_total")
        done = at_up
        while done < total and time.monotonic() - up_at < BUSY_TIMEOUT:
            # Not faster: /metrics has a line per route and metric, rendered on the loop that
            # is relaying, and a busy loop answers late.
            time.sleep(1.0)
            bridge.check_alive()
            now = _status(bridge.proc.pid)
            threads, rss = max(threads, now.get("Threads", 0)), max(rss, now.get("VmRSS", 0))
            metrics = _get(f"{bridge.metrics_url}/metrics", timeout=60)[1]
            done = _metric_sum(metrics, "messages_total")
        finished = time.monotonic()
    stored = asyncio.run(_stored(estate, nats_url)) - before
    if stored != total:
        raise RuntimeError(f"busy routes: {stored} stored of {total} ({done} counted)")
    return Busy(
        messages=total,
        rate=(total - at_up) / max(finished - up_at, 1e-9),
        wall=finished - started,
        threads=threads,
        rss_mb=rss / 1024,
    )


# --- one route count ------------------------------------------------------------------------------


def _row(name: str, value: float, unit: str, target: float | None = None) -> dict[str, Any]:
    return {"name": f"routes.{name}", "value": value, "unit": unit, "target": target}


def measure(routes: int) -> list[dict[str, Any]]:
    from snsq2nats.demo.nats_server import NatsServer

    with (
        tempfile.TemporaryDirectory(prefix="bench-routes-") as tmp,
        fauxqs() as sqs_endpoint,
        NatsServer(name=f"bench-routes-{routes}") as server,
        CountingProxy(int(sqs_endpoint.endpoint.rsplit(":", 1)[1])) as proxy,
    ):
        workdir = Path(tmp)
        started = time.perf_counter()
        estate = asyncio.run(make_estate(routes, sqs_endpoint.endpoint, server.url, workdir))
        print(
            f"  {routes} queues, streams and routes in {time.perf_counter() - started:.1f}s",
            file=sys.stderr,
        )
        # Straight to fauxqs: what the bridge costs, and how fast it relays.
        direct = workdir / "bridge.log"
        with bridge_process(estate.plan_file, sqs_endpoint.endpoint, server.url, direct) as bridge:
            startup = wait_ready(bridge, routes)
            print(f"  bridge ready and settled in {startup:.1f}s", file=sys.stderr)
            idle = measure_idle(bridge, routes)
            print(f"  idle: {idle}", file=sys.stderr)
            latencies = asyncio.run(
                first_message_ms(estate, sqs_endpoint.endpoint, server.url, LATENCY_SAMPLE)
            )
            # Then one message to every queue at once (as issue 11 measured it): extra rows,
            # without a target, that must not cost the ones above if they fail.
            burst: list[float] = []
            try:
                burst = asyncio.run(
                    first_message_ms(estate, sqs_endpoint.endpoint, server.url, None)
                )
            except Exception:
                traceback.print_exc(file=sys.stderr)
            bridge.check_alive()
            stop = time.monotonic()
            bridge.proc.terminate()
            stopped = bridge.proc.wait(90)
            idle_stop = time.monotonic() - stop
            print(f"  idle stop in {idle_stop:.1f}s (exit {stopped})", file=sys.stderr)
        # A second bridge through the counting proxy, for its requests only: the proxy shares
        # this process and the CPUs, and in the first run it slowed the relay it counted
        # (a burst to 1,000 queues took 3-4x longer through it) and the bridge's own CPU.
        proxied = workdir / "bridge-counted.log"
        with bridge_process(estate.plan_file, proxy.url, server.url, proxied) as bridge:
            wait_ready(bridge, routes)
            counted = measure_idle(bridge, routes, proxy)
            print(f"  idle through the counting proxy: {counted}", file=sys.stderr)
        busy: Busy | None = None
        if routes == BUSY_ROUTES:
            try:
                busy = measure_busy(
                    estate, sqs_endpoint.endpoint, server.url, workdir / "bridge-busy.log"
                )
                print(f"  busy: {busy}", file=sys.stderr)
            except Exception:
                traceback.print_exc(file=sys.stderr)
    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
    n = str(routes)
    actions = [
        _row(f"{n}.aws_requests.{action}", round(rate), "req/h/route")
        for action, rate in counted.actions_per_route_hour.items()
    ]
    bursts = (
        [
            _row(f"{n}.burst_every_queue.samples", len(burst), "msgs"),
            _row(f"{n}.burst_every_queue.p50", round(percentile(burst, 0.5)), "ms"),
            _row(f"{n}.burst_every_queue.p99", round(percentile(burst, 0.99)), "ms"),
            _row(f"{n}.burst_every_queue.max", round(max(burst)), "ms"),
        ]
        if burst
        else []
    )
    busy_rows = (
        [
            _row(f"{n}.busy.messages", busy.messages, "msgs"),
            _row(f"{n}.busy.aggregate", round(busy.rate), "msg/s"),
            _row(f"{n}.busy.wall_from_start", round(busy.wall, 1), "s"),
            _row(f"{n}.busy.threads", busy.threads, "threads"),
            _row(f"{n}.busy.rss", round(busy.rss_mb, 1), "MB"),
        ]
        if busy
        else []
    )
    return [
        _row(f"{n}.ready", 1, "bool", 1),
        _row(f"{n}.startup_to_settled", round(startup, 1), "s"),
        _row(f"{n}.threads", idle.threads, "threads"),
        _row(f"{n}.threads_per_route", round(idle.threads / routes, 2), "threads"),
        _row(f"{n}.threads_margin_under_{MAX_THREADS}", MAX_THREADS - idle.threads, "threads", 0),
        _row(f"{n}.rss", round(idle.rss_mb, 1), "MB"),
        _row(f"{n}.rss_margin_under_{MAX_RSS_MB:g}mb", round(MAX_RSS_MB - idle.rss_mb, 1), "MB", 0),
        _row(f"{n}.idle_cpu", round(idle.cpu_percent, 1), "% core"),
        _row(
            f"{n}.idle_cpu_margin_under_{MAX_IDLE_CPU:g}pct",
            round(MAX_IDLE_CPU - idle.cpu_percent, 1),
            "% core",
            0,
        ),
        _row(f"{n}.aws_requests_per_route_hour", round(counted.requests_per_route_hour), "req/h"),
        *actions,
        _row(
            f"{n}.aws_requests_margin_over_{REQUEST_FLOOR:g}_floor",
            round(REQUEST_FLOOR * REQUEST_SLACK - counted.requests_per_route_hour),
            "req/h",
            0,
        ),
        _row(f"{n}.first_message_samples", len(latencies), "msgs"),
        _row(f"{n}.first_message_p50", round(p50), "ms"),
        _row(f"{n}.first_message_p99", round(p99), "ms"),
        _row(f"{n}.first_message_p99_margin_under_2s", round(MAX_P99_MS - p99), "ms", 0),
        *bursts,
        _row(f"{n}.idle_stop", round(idle_stop, 1), "s"),
        *busy_rows,
    ]


def run() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = [_row("idle_window", IDLE_SECONDS, "s")]
    for routes in ROUTES:
        print(f"  {routes} idle routes …", file=sys.stderr, flush=True)
        try:
            rows += measure(routes)
        except Exception:
            # One route count that cannot run must not lose the others' numbers.
            traceback.print_exc(file=sys.stderr)
            rows.append(_row(f"{routes}.ready", 0, "bool", 1))
    return rows


if __name__ == "__main__":
    for row in run():
        print(row)
