"""An application moved mid-traffic from SQS to `snsq2nats gateway` by changing only its endpoint:
each message processed once, with the bridge running and `cutover` making the moves.

The estate is a standard queue `jobs` with a dead-letter queue in moto, scanned, planned, with
the identities `auth` generates (config format) on a nats-server that knows only them, applied by
the admin. A real `snsq2nats bridge` runs as the bridge identity and the real `snsq2nats gateway`
command serves the estate with `auth`'s keys. One application (a producer thread and four worker
threads, boto3 code that knows nothing of NATS) sends, receives and deletes, its endpoint and
key its only settings. The move follows the runbook:

    all on SQS → `cutover consumers jobs --to nats` → two workers restart on the gateway (the
    mixed fleet: SQS workers and gateway workers share the queue) → the other two → the
    producer stops, `cutover producers jobs --to nats --wait`, it restarts on the gateway → drain

Every message is processed exactly once: each job is one copy (one MessageId) processed once,
none is lost, the gateway hands no copy out twice, and nothing is left in SQS, the stream or the
dead-letter queue. Twice: with a standard queue, and with a FIFO queue (three message groups,
content-based deduplication), whose groups the gateway's workers process in send order.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from click.testing import CliRunner

from snsq2nats.cli import main
from snsq2nats.demo.nats_server import NatsServer
from snsq2nats.gateway.keys import load_keys
from snsq2nats.jetstream.connect import NatsOptions, connect_nats
from snsq2nats.plan.model import load_plan
from tests.fixtures.aws import AwsEndpoint
from tests.fixtures.bridge import Bridges
from tests.fixtures.gateway import GatewayProcess, Gateways
from tests.fixtures.wait import until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

GROUPS = 3  # a FIFO queue's message groups: job n is in group n % GROUPS
AWS_KEY = ("testing", "testing")  # moto's: the application's credentials on AWS
TTL = 3.0


# --- the application: boto3 code whose only settings are an endpoint and a key ------------------


@dataclass
class Ledger:
    """What the application sent, received and processed.

    The application processes each MessageId once, as every SQS consumer must: SQS delivers a
    standard queue's messages at least once, and moto now and then hands one message, of either
    kind of queue, to two concurrent receivers (two SQS workers, or one and the bridge's relay).
    Those second receipts of one copy are kept (`receipts`) and reported; what would be a
    duplicate is a second *copy* of a job (another MessageId, processed again), or one copy
    received twice through the gateway.
    """

    sent: list[str] = field(default_factory=list)
    receipts: dict[str, list[tuple[str, str]]] = field(default_factory=lambda: defaultdict(list))
    """body → (MessageId, worker) of every receipt."""
    processed: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    """body → the workers that processed it (a new MessageId each time)."""
    order: list[tuple[str, str]] = field(default_factory=list)
    """(body, worker) in the order processed (a FIFO group's order is checked)."""
    by_worker: Counter[str] = field(default_factory=Counter)
    wrong: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def received(self, worker: str, body: str, message_id: str) -> None:
        with self.lock:
            seen = any(i == message_id for i, _ in self.receipts[body])
            self.receipts[body].append((message_id, worker))
            if not seen:
                self.processed[body].append(worker)
                self.order.append((body, worker))
                self.by_worker[worker] += 1

    def bodies(self) -> set[str]:
        """The jobs processed so far (read while the workers write)."""
        with self.lock:
            return set(self.processed)

    def count(self, prefix: str) -> int:
        with self.lock:
            return sum(n for w, n in self.by_worker.items() if w.startswith(prefix))


def number(body: str) -> int:
    return int(body.removeprefix("job-"))


def sqs_client(endpoint: str, key: tuple[str, str]) -> Any:
    """How the application builds its client: `AWS_ENDPOINT_URL_SQS`'s value and a key pair."""
    return boto3.client(
        "sqs",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=key[0],
        aws_secret_access_key=key[1],
        config=Config(retries={"max_attempts": 5, "mode": "standard"}),
    )


class Worker:
    """Receives, processes (records in the ledger) and deletes, until told to stop; a stop
    finishes the batch in hand, as a worker's graceful shutdown does."""

    def __init__(
        self, name: str, queue: str, endpoint: str, key: tuple[str, str], ledger: Ledger
    ) -> None:
        self.name, self.ledger = name, ledger
        self.sqs = sqs_client(endpoint, key)
        self.url = self.sqs.get_queue_url(QueueName=queue)["QueueUrl"]
        self.stopping = threading.Event()
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while not self.stopping.is_set():
                reply = self.sqs.receive_message(
                    QueueUrl=self.url,
                    MaxNumberOfMessages=10,
                    WaitTimeSeconds=1,
                    MessageAttributeNames=["All"],
                )
                messages = reply.get("Messages") or []
                for m in messages:
                    number = m.get("MessageAttributes", {}).get("n", {}).get("StringValue")
                    if number is None or m["Body"] != f"job-{int(number):05d}":
                        self.ledger.wrong.append(f"{self.name}: {m!r}")
                    self.ledger.received(self.name, m["Body"], m["MessageId"])
                if messages:
                    deleted = self.sqs.delete_message_batch(
                        QueueUrl=self.url,
                        Entries=[
                            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                            for i, m in enumerate(messages)
                        ],
                    )
                    if deleted.get("Failed"):
                        self.ledger.wrong.append(f"{self.name}: delete failed {deleted['Failed']}")
        except BaseException as exc:  # reported by halt(), not lost in the thread
            self.errors.append(exc)

    def halt(self) -> None:
        self.stopping.set()
        self.thread.join()
        assert not self.errors, (self.name, self.errors)


class Producer:
    """Sends job-00000, job-00001, … one by one, each with a Number attribute (and to a FIFO
    queue in GROUPS message groups, deduplicated by content), until stopped."""

    def __init__(self, queue: str, endpoint: str, key: tuple[str, str], ledger: Ledger) -> None:
        self.ledger = ledger
        self.fifo = queue.endswith(".fifo")
        self.sqs = sqs_client(endpoint, key)
        self.url = self.sqs.get_queue_url(QueueName=queue)["QueueUrl"]
        self.stopping = threading.Event()
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, name="producer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while not self.stopping.is_set():
                n = len(self.ledger.sent)
                body = f"job-{n:05d}"
                group = {"MessageGroupId": f"g{n % GROUPS}"} if self.fifo else {}
                self.sqs.send_message(
                    QueueUrl=self.url,
                    MessageBody=body,
                    MessageAttributes={"n": {"DataType": "Number", "StringValue": str(n)}},
                    **group,
                )
                self.ledger.sent.append(body)
                # Paces the traffic (a steady stream); nothing waits on it.
                self.stopping.wait(0.02)
        except BaseException as exc:
            self.errors.append(exc)

    def halt(self) -> None:
        self.stopping.set()
        self.thread.join()
        assert not self.errors, self.errors


# --- the estate, the bridge and the gateway -------------------------------------------------------


def names(fifo: bool) -> tuple[str, str]:
    """The queue and its dead-letter queue."""
    return ("jobs.fifo", "jobs-dlq.fifo") if fifo else ("jobs", "jobs-dlq")


def seed(aws: AwsEndpoint, fifo: bool) -> None:
    sqs = aws.client("sqs")
    queue, dlq_name = names(fifo)
    kind = {"FifoQueue": "true", "ContentBasedDeduplication": "true"} if fifo else {}
    dlq = sqs.create_queue(QueueName=dlq_name, Attributes=kind)["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 5})
    sqs.create_queue(
        QueueName=queue,
        Attributes={"RedrivePolicy": redrive, "VisibilityTimeout": "60", **kind},
    )


def cli(*args: str | Path) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, (args, result.output)
    return result.output


def server_users(directory: Path) -> dict[str, Any]:
    """The users of the generated `snsq2nats-auth.conf`, as NatsServer settings."""
    text = (directory / "snsq2nats-auth.conf").read_text()
    rows = [line.strip().rstrip(",") for line in text.splitlines()]
    users = [json.loads(row) for row in rows if row.startswith("{")]
    return {"authorization": {"users": [u for u in users if "permissions" in u]}}


async def backlogs(
    aws: AwsEndpoint, admin: NatsOptions, plan_path: Path, fifo: bool
) -> dict[str, int]:
    """Every place a message could wait: both SQS queues, both queues' durables and streams."""
    sqs = aws.client("sqs")
    left: dict[str, int] = {}
    queue, dlq = names(fifo)
    for name in (queue, dlq):
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        attributes = sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )["Attributes"]
        left[f"sqs {name}"] = sum(int(v) for v in attributes.values())
    nc = await connect_nats(admin)
    try:
        js = nc.jetstream()
        for resource in load_plan(plan_path).resources:
            if resource.kind == "sqs-queue" and resource.stream and resource.consumer:
                info = await js.consumer_info(resource.stream, resource.consumer)
                left[f"durable {resource.consumer}"] = info.num_pending + info.num_ack_pending
                if resource.name == dlq:
                    stream = await js.stream_info(resource.stream)
                    left[f"stream {resource.stream}"] = stream.state.messages
    finally:
        await nc.close()
    return left


# --- the move -------------------------------------------------------------------------------------


@pytest.mark.parametrize("fifo", [False, True], ids=["standard", "fifo"])
async def test_an_application_moves_to_the_gateway_mid_traffic_each_message_once(
    aws: AwsEndpoint, tmp_path: Path, bridges: Bridges, gateways: Gateways, fifo: bool
) -> None:
    seed(aws, fifo)
    queue = names(fifo)[0]
    inventory, plan0, plan = tmp_path / "inventory.json", tmp_path / "p0.json", tmp_path / "p.json"
    await asyncio.to_thread(cli, "scan", "-o", inventory)
    await asyncio.to_thread(cli, "plan", "--inventory", inventory, "--offline", "-o", plan0)
    server = NatsServer(name="gateway-move")
    auth = tmp_path / "auth"
    await asyncio.to_thread(cli, "auth", "--plan", plan0, "-o", auth, "--url", server.url)
    server.extra_config = server_users(auth)
    contexts = auth / "contexts"
    admin = contexts / "snsq2nats-admin.json"
    as_admin = NatsOptions.resolve(None, str(admin))
    keys = {k.identity: k for k in load_keys(auth).values()}

    def key(role: str) -> tuple[str, str]:
        (found,) = [k for i, k in keys.items() if i.endswith(f"_jobs-{role}")]
        return found.access_key_id, found.secret

    consumer_key, producer_key = key("consumer"), key("producer")
    ledger = Ledger()
    workers: list[Worker] = []
    producer: Producer | None = None
    gateway: GatewayProcess | None = None
    stopped: int | None = None
    server.start()
    try:
        await asyncio.to_thread(
            cli, "plan", "--inventory", inventory, "--context", admin, "-o", plan
        )
        await asyncio.to_thread(cli, "apply", plan, "--context", admin, "--auto-approve")
        bridge = bridges.start(
            *("--plan", plan, "--context", contexts / "snsq2nats-bridge.json"),
            *("--pollers", "2", "--poll-wait", "1", "--lease-ttl", str(TTL)),
        )

        async def bridge_ready() -> bool:
            status = await asyncio.to_thread(
                CliRunner().invoke, main, ["status", "--plan", str(plan), "--context", str(admin)]
            )
            assert bridge.returncode is None and not bridge.exited(), bridge.tail()
            return status.exit_code == 0

        await until(bridge_ready, 120, "the bridge to own every route")
        gateway = gateways.start(
            *("--keys", auth, "--context", contexts / "snsq2nats-bridge.json"),
            *("--listen", "127.0.0.1:0"),
        )
        await until(gateway.listening, 120, "the gateway to listen")

        # All on AWS: the application as it runs today.
        producer = Producer(queue, aws.url, AWS_KEY, ledger)
        workers = [Worker(f"sqs-{i}", queue, aws.url, AWS_KEY, ledger) for i in range(4)]

        async def traffic(what: str, more: int = 30) -> None:
            mark = len(ledger.sent)
            await until(lambda: len(ledger.sent) >= mark + more, 300, f"traffic {what}")

        await traffic("on AWS")

        # The consumers move; half the workers restart on the gateway (a mixed fleet), then all.
        moved = await asyncio.to_thread(
            cli, "cutover", "consumers", queue, "--to", "nats", "--plan", plan, "--context", admin
        )
        assert "confirmed by 1" in moved, moved
        for old in workers[:2]:
            await asyncio.to_thread(old.halt)
        workers[:2] = [
            Worker(f"gateway-{i}", queue, gateway.url, consumer_key, ledger) for i in range(2)
        ]
        gateway_before, sqs_before = ledger.count("gateway-"), ledger.count("sqs-")
        await until(
            lambda: (
                ledger.count("gateway-") >= gateway_before + 10
                and ledger.count("sqs-") >= sqs_before + 10
            ),
            300,
            "the mixed fleet: SQS workers and gateway workers each processing",
        )
        for old in workers[2:]:
            await asyncio.to_thread(old.halt)
        workers[2:] = [
            Worker(f"gateway-{i}", queue, gateway.url, consumer_key, ledger) for i in range(2, 4)
        ]
        await traffic("with every worker on the gateway")

        # The producers move: the SQS producer stops, `--wait` sees what it left relayed, and
        # it restarts on the gateway.
        await asyncio.to_thread(producer.halt)
        moved = await asyncio.to_thread(
            cli, "cutover", "producers", queue, "--to", "nats", "--wait", "--plan", plan,
            "--context", admin,
        )  # fmt: skip
        assert "confirmed by 1" in moved and "drained" in moved, moved
        producer = Producer(queue, gateway.url, producer_key, ledger)
        await traffic("from the producer on the gateway", 60)

        # Drain: the producer stops; the workers process everything it sent.
        await asyncio.to_thread(producer.halt)
        producer = None
        want = set(ledger.sent)
        await until(lambda: want <= ledger.bodies(), 300, "every message to be processed")

        async def nothing_left() -> bool:
            return not any((await backlogs(aws, as_admin, plan, fifo)).values())

        await until(nothing_left, 120, "SQS, the streams and the dead-letter queue to be empty")
        for worker in workers:
            await asyncio.to_thread(worker.halt)
        workers = []
    finally:
        if producer is not None:
            producer.stopping.set()
        for worker in workers:
            worker.stopping.set()
        bridges.stop_all(timeout=60)
        if gateway is not None:
            stopped = gateway.stop()
        server.close()

    assert gateway is not None and stopped == 0, gateway and gateway.tail()
    lost = sorted(want - set(ledger.processed))
    twice = {b: ws for b, ws in ledger.processed.items() if len(ws) != 1}
    extra = sorted(set(ledger.processed) - want)
    assert not lost and not twice and not extra, (lost[:5], list(twice.items())[:5], extra[:5])
    through_gateway = Counter(
        (body, i) for body, rs in ledger.receipts.items() for i, w in rs if w.startswith("gateway-")
    )
    doubled = [k for k, n in through_gateway.items() if n > 1]
    assert not doubled, [(body, ledger.receipts[body]) for body, _ in doubled[:5]]
    again = {b: rs for b, rs in ledger.receipts.items() if len(rs) > 1}
    assert not ledger.wrong, ledger.wrong[:5]
    by_side = {side: ledger.count(side) for side in ("sqs-", "gateway-")}
    assert all(by_side.values()), by_side
    if fifo:
        # What the gateway's workers processed, they processed in each group's send order (the
        # relay's and the producer's messages alike). Not checked across the two fleets: moto
        # hands a long poll that began before a group's message was received the group's next
        # message while that one is still in flight (SQS keeps the group locked), so on moto
        # the SQS workers and the bridge's relay can take one group out of order.
        for g in range(GROUPS):
            processed = [
                (b, w)
                for b, w in ledger.order
                if number(b) % GROUPS == g and w.startswith("gateway-")
            ]
            late = [
                processed[max(0, i - 2) : i + 2]
                for i in range(1, len(processed))
                if processed[i][0] < processed[i - 1][0]
            ]
            assert not late, (g, late[:5])
    print(
        f"gateway move: {len(want)} messages, processed by {dict(ledger.by_worker)}; "
        f"received twice on the SQS side: {again}"
    )
