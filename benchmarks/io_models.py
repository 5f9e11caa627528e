"""How to keep N idle SQS queues under watch: the three I/O models issue 11 weighs, measured.

Not part of `make bench`: it is the measurement the bridge's I/O model was chosen by, kept so
the choice can be re-checked. `python -m benchmarks.io_models [N]` starts fauxqs, creates N
queues and, for each model in a fresh subprocess (so threads, memory and CPU are its own),
watches every queue for `IDLE_SECONDS`, then sends one message to each of `SAMPLE` random
queues and times how long each takes to be received.

- `threads`: boto3 with a thread per queue holding its 20 s long poll (the bridge before).
- `aio`: aiobotocore, one event loop holding N 20 s long polls on N sockets.
- `pool-wW`: boto3 on a bounded pool of `POOL` threads taking turns over the queues with
  W-second polls (an idle queue then holds no thread, so nothing is watching it in between).

Reported per model: threads, RSS, CPU (% of one core) while idle, receive requests per queue
and hour, and the p50/p99 of send → received.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

IDLE_SECONDS = 20.0
SAMPLE = 50
POOL = 64
REGION = "us-east-1"


def _status() -> dict[str, int]:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("Threads", "VmRSS"):
            out[key] = int(value.split()[0])
    return out


def _sync_client(endpoint: str, pool: int) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(max_pool_connections=pool, read_timeout=40, retries={"mode": "adaptive"})
    return boto3.Session().client("sqs", region_name=REGION, endpoint_url=endpoint, config=config)


class Watch:
    """What a model reports: requests made and when each sampled message was received."""

    def __init__(self) -> None:
        self.requests = 0
        self.received: dict[str, float] = {}
        self.stop = threading.Event()

    def got(self, reply: dict[str, Any]) -> None:
        self.requests += 1
        for message in reply.get("Messages") or []:
            self.received.setdefault(message["Body"], time.time())


def _threads(endpoint: str, urls: list[str], watch: Watch, wait: int) -> None:
    sqs = _sync_client(endpoint, len(urls) + 10)

    def poll(url: str) -> None:
        while not watch.stop.is_set():
            reply = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=wait)
            watch.got(reply)
            _delete(sqs, url, reply)

    pool = concurrent.futures.ThreadPoolExecutor(len(urls))
    for url in urls:
        pool.submit(poll, url)


def _pool(endpoint: str, urls: list[str], watch: Watch, wait: int) -> None:
    sqs = _sync_client(endpoint, POOL + 10)
    turns: collections.deque[str] = collections.deque(urls)
    lock = threading.Lock()

    def worker() -> None:
        while not watch.stop.is_set():
            with lock:
                url = turns.popleft()
            reply = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=wait)
            watch.got(reply)
            _delete(sqs, url, reply)
            with lock:
                turns.append(url)

    for _ in range(POOL):
        threading.Thread(target=worker, daemon=True).start()


def _delete(sqs: Any, url: str, reply: dict[str, Any]) -> None:
    entries = [
        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
        for i, m in enumerate(reply.get("Messages") or [])
    ]
    if entries:
        sqs.delete_message_batch(QueueUrl=url, Entries=entries)


def _aio(endpoint: str, urls: list[str], watch: Watch, wait: int) -> None:
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    async def main() -> None:
        config = AioConfig(
            max_pool_connections=len(urls) + 10, read_timeout=40, retries={"mode": "adaptive"}
        )
        async with get_session().create_client(
            "sqs", region_name=REGION, endpoint_url=endpoint, config=config
        ) as sqs:

            async def poll(url: str) -> None:
                while not watch.stop.is_set():
                    reply = await sqs.receive_message(
                        QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=wait
                    )
                    watch.got(dict(reply))
                    entries = [
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                        for i, m in enumerate(reply.get("Messages") or [])
                    ]
                    if entries:
                        await sqs.delete_message_batch(QueueUrl=url, Entries=entries)

            await asyncio.gather(*(poll(u) for u in urls))

    threading.Thread(target=asyncio.run, args=(main(),), daemon=True).start()


MODELS = {"threads": _threads, "aio": _aio, "pool": _pool}


def child(model: str, wait: int, endpoint: str, urls: list[str]) -> dict[str, Any]:
    """One model, in this (fresh) process."""
    watch = Watch()
    MODELS[model](endpoint, urls, watch, wait)
    time.sleep(5.0)  # every queue has its first poll out
    threads = rss = 0
    requests0, cpu0, started = watch.requests, time.process_time(), time.monotonic()
    while time.monotonic() - started < IDLE_SECONDS:
        time.sleep(1.0)
        now = _status()
        threads, rss = max(threads, now["Threads"]), max(rss, now["VmRSS"])
    elapsed = time.monotonic() - started
    cpu = 100 * (time.process_time() - cpu0) / elapsed
    requests = (watch.requests - requests0) * 3600 / elapsed / len(urls)
    sender = _sync_client(endpoint, 16)
    chosen = random.Random(11).sample(urls, min(SAMPLE, len(urls)))
    sent = {}
    for i, url in enumerate(chosen):
        sent[f"m{i}"] = time.time()
        sender.send_message(QueueUrl=url, MessageBody=f"m{i}")
    deadline = time.monotonic() + 120
    while len(watch.received.keys() & sent.keys()) < len(sent) and time.monotonic() < deadline:
        time.sleep(0.05)
    latencies = sorted(
        (watch.received.get(k, time.time() + 120) - t) * 1000 for k, t in sent.items()
    )
    return {
        "model": model if model != "pool" else f"pool{POOL}-w{wait}",
        "threads": threads,
        "rss_mb": round(rss / 1024, 1),
        "idle_cpu_pct": round(cpu, 1),
        "receives_per_queue_hour": round(requests),
        "p50_ms": round(latencies[len(latencies) // 2]),
        "p99_ms": round(latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))]),
    }


def main(n: int) -> None:
    from benchmarks.bench_bridge import _aws_env, client, fauxqs

    _aws_env()
    with fauxqs() as server:
        sqs = client("sqs", server.endpoint, 16)
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            urls = list(
                pool.map(lambda i: sqs.create_queue(QueueName=f"io-{i:05d}")["QueueUrl"], range(n))
            )
        for model, wait in (("threads", 20), ("aio", 20), ("pool", 1), ("pool", 0)):
            args = [sys.executable, "-m", "benchmarks.io_models", "--child", model, str(wait)]
            proc = subprocess.run(
                [*args, server.endpoint],
                input=json.dumps(urls).encode(),
                capture_output=True,
                env=os.environ,
                timeout=600,
            )
            if proc.returncode:
                print(f"{model}: failed\n{proc.stderr.decode()[-2000:]}", file=sys.stderr)
                continue
            print(proc.stdout.decode().strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        model, wait, endpoint = sys.argv[2], int(sys.argv[3]), sys.argv[4]
        result = child(model, wait, endpoint, json.loads(sys.stdin.read()))
        print(json.dumps(result), flush=True)
        os._exit(0)  # pollers still hold their calls: do not wait for them
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
