"""The gateway against what an application would otherwise talk to, in one run.

The same boto3 loop — SendMessageBatch of 10, ReceiveMessage of up to 10, DeleteMessageBatch —
runs in `THREADS` threads against the gateway (over a nats-server with file storage, the plan
applied as `apply` does it) and against moto's server, the AWS emulator the tests use; raw
nats-py does the same work on the same kind of stream (publish 10, fetch 10, ack 10) as the
ceiling. Throughput is messages sent, received and deleted per second; latency is the p50 of one
SendMessage of one message through the gateway against one JetStream publish, the difference
being what the gateway adds per call.

Targets: at least the emulator's throughput; at least half of raw nats-py's.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from snsq2nats.errors import GatewayAuthError
from snsq2nats.gateway.principal import Principal

THREADS = 4
PER_THREAD = 200
BATCH = 10
LATENCY_CALLS = 200
ACCOUNT = "123456789012"
REGION = "us-east-1"
QUEUE = "bench-gateway"


class _AnyKnownKey:
    """The benchmark's verifier: the access key must be the one its clients use."""

    def authenticate(
        self, method: str, path: str, query: str, headers: Mapping[str, str], body: bytes
    ) -> Principal:
        if "Credential=bench/" not in headers.get("authorization", ""):
            raise GatewayAuthError("InvalidClientTokenId", "unknown key")
        return Principal("bench", "bench")


def _client(url: str) -> Any:
    import boto3
    from botocore.config import Config

    session = boto3.Session(
        aws_access_key_id="bench", aws_secret_access_key="bench", region_name=REGION
    )
    return session.client("sqs", endpoint_url=url, config=Config(max_pool_connections=THREADS * 2))


class _Work:
    """How many messages are still to send and to delete, shared by the threads: a thread
    that takes others' messages deletes them, so nobody waits for a share that is gone."""

    def __init__(self, total: int) -> None:
        self.lock = threading.Lock()
        self.to_send = total
        self.to_delete = total

    def take_send(self) -> int:
        with self.lock:
            n = min(BATCH, self.to_send)
            self.to_send -= n
            return n

    def deleted(self, n: int) -> bool:
        """Count `n` deleted; True while more remain."""
        with self.lock:
            self.to_delete -= n
            return self.to_delete > 0


def _loop(sqs: Any, url: str, work: _Work) -> None:
    more = True
    while more:
        n = work.take_send()
        if n:
            sqs.send_message_batch(
                QueueUrl=url,
                Entries=[{"Id": str(i), "MessageBody": f"m{i}"} for i in range(n)],
            )
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=BATCH, WaitTimeSeconds=1).get(
            "Messages", []
        )
        if got:
            sqs.delete_message_batch(
                QueueUrl=url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)
                ],
            )
        more = work.deleted(len(got))


def _boto3_rate(endpoint: str) -> float:
    """Messages per second of THREADS threads running `_loop` on one queue."""
    clients = [_client(endpoint) for _ in range(THREADS)]
    url = clients[0].get_queue_url(QueueName=QUEUE)["QueueUrl"]
    _loop(clients[0], url, _Work(BATCH))  # warm: connections, the first pull
    work = _Work(THREADS * PER_THREAD)
    threads = [threading.Thread(target=_loop, args=(c, url, work)) for c in clients]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return THREADS * PER_THREAD / (time.perf_counter() - started)


def _p50(call: Callable[[], Any]) -> float:
    samples = []
    for _ in range(LATENCY_CALLS):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


async def _raw_rate(nats_url: str, stream: str, durable: str, subject: str) -> tuple[float, float]:
    """(messages per second, p50 seconds of one publish) with nats-py on the queue's stream."""
    from snsq2nats.jetstream.connect import NatsOptions, connect_nats

    nc = await connect_nats(NatsOptions(servers=[nats_url]), name="bench raw")
    try:
        js = nc.jetstream()
        work = _Work(THREADS * PER_THREAD)

        async def worker() -> None:
            sub = await js.pull_subscribe_bind(durable, stream)
            more = True
            while more:
                n = work.take_send()
                await asyncio.gather(*(js.publish(subject, b"m") for _ in range(n)))
                try:
                    msgs = await sub.fetch(BATCH, timeout=1)
                except TimeoutError:
                    msgs = []
                await asyncio.gather(*(m.ack_sync() for m in msgs))
                more = work.deleted(len(msgs))
            await sub.unsubscribe()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(THREADS)))
        rate = THREADS * PER_THREAD / (time.perf_counter() - started)
        samples = []
        for _ in range(LATENCY_CALLS):
            began = time.perf_counter()
            await js.publish(subject, b"m")
            samples.append(time.perf_counter() - began)
        return rate, statistics.median(samples)
    finally:
        await nc.close()


def _estate(nats_url: str, workdir: Path) -> tuple[Any, str, str, str]:
    from snsq2nats.apply import apply_plan
    from snsq2nats.inventory import Inventory, Queue
    from snsq2nats.jetstream.connect import NatsOptions, connect_nats
    from snsq2nats.jetstream.state import read_live
    from snsq2nats.plan.pipeline import assemble_plan
    from snsq2nats.plan.rules import load_rules

    inventory = Inventory(
        generated_at="2026-01-01T00:00:00+00:00",
        regions=[REGION],
        queues=[
            Queue(
                arn=f"arn:aws:sqs:{REGION}:{ACCOUNT}:{QUEUE}",
                name=QUEUE,
                url=f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{QUEUE}",
                region=REGION,
                account=ACCOUNT,
            )
        ],
    )

    async def apply() -> Any:
        nc = await connect_nats(NatsOptions(servers=[nats_url]), name="bench apply")
        try:
            live = await read_live(nc)
            plan = assemble_plan(inventory, load_rules([]), live, server=live.server)
            result = await apply_plan(nc, plan, allow_destructive=False)
            if not result.ok:
                raise RuntimeError(f"apply failed: {result.error}")
            return plan
        finally:
            await nc.close()

    plan = asyncio.run(apply())
    (queue,) = [r for r in plan.resources if r.kind == "sqs-queue"]
    return plan, queue.stream, queue.consumer, queue.publish_subject


class _Gateway:
    """The gateway served from a thread of its own, as `snsq2nats gateway` serves it."""

    def __init__(self, nats_url: str, plan: Any) -> None:
        self.nats_url, self.plan = nats_url, plan
        self.loop = asyncio.new_event_loop()
        self.stop = asyncio.Event()
        self.url = ""
        self.listening = threading.Event()
        self.thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        from snsq2nats.gateway.service import GatewaySettings, serve
        from snsq2nats.jetstream.connect import NatsOptions

        def listening(url: str) -> None:
            self.url = url
            self.listening.set()

        try:
            self.loop.run_until_complete(
                serve(
                    NatsOptions(servers=[self.nats_url]),
                    GatewaySettings(port=0, handle_secret="bench"),
                    _AnyKnownKey(),
                    self.plan,
                    self.stop,
                    listening,
                )
            )
        finally:
            self.listening.set()
            self.loop.close()

    def __enter__(self) -> _Gateway:
        self.thread.start()
        self.listening.wait(60)
        if not self.url:
            raise RuntimeError("the gateway did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(60)


def run() -> list[dict[str, Any]]:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    from snsq2nats.demo.nats_server import NatsServer

    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    try:
        host, port = moto.get_host_and_port()
        moto_url = f"http://{host}:{port}"
        _client(moto_url).create_queue(QueueName=QUEUE)
        moto_rate = _boto3_rate(moto_url)
        with tempfile.TemporaryDirectory() as tmp, NatsServer(name="bench-gateway") as server:
            plan, stream, durable, subject = _estate(server.url, Path(tmp))
            with _Gateway(server.url, plan) as gateway:
                gateway_rate = _boto3_rate(gateway.url)
                sqs = _client(gateway.url)
                url = sqs.get_queue_url(QueueName=QUEUE)["QueueUrl"]
                gateway_p50 = _p50(lambda: sqs.send_message(QueueUrl=url, MessageBody="m"))
                sqs.purge_queue(QueueUrl=url)
            raw_rate, raw_p50 = asyncio.run(_raw_rate(server.url, stream, durable, subject))
    finally:
        moto.stop()
    return [
        _row("send+receive+delete via gateway", round(gateway_rate), "msg/s"),
        _row("moto send+receive+delete (same boto3 code)", round(moto_rate), "msg/s"),
        _row("raw nats-py publish+fetch+ack", round(raw_rate), "msg/s"),
        _row("gateway / moto ratio", round(gateway_rate / moto_rate, 2), "ratio", 1.0),
        _row("gateway / raw nats-py ratio", round(gateway_rate / raw_rate, 2), "ratio", 0.5),
        _row("SendMessage p50 (boto3 → gateway)", round(gateway_p50 * 1000, 2), "ms"),
        _row("JetStream publish p50 (nats-py)", round(raw_p50 * 1000, 2), "ms"),
        _row("added by gateway + boto3 per call", round((gateway_p50 - raw_p50) * 1000, 2), "ms"),
    ]


def _row(name: str, value: float, unit: str, target: float | None = None) -> dict[str, Any]:
    return {"name": f"gateway.{name}", "value": value, "unit": unit, "target": target}
