"""The journey's applications and the ledger that judges them.

Every message carries a unique id in its JSON body (and, for a FIFO queue, its group and its
sequence in that group). Producers write what they sent into the ledger; workers — boto3 on
AWS, nats-py on NATS, each under its application's identity — record each message they
process, in processing order, before they delete or ack it. The ledger's report says, per
application, what was expected, lost, duplicated, unexpected and processed out of group order.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

Attributes = dict[str, tuple[str, str]]
"""name → (SNS/SQS DataType, string value), as a producer means them."""


@dataclass(frozen=True)
class Sent:
    id: str
    target: str
    """The topic or queue it was published to."""
    side: str
    attributes: Attributes
    body: dict[str, Any]
    group: str | None = None
    seq: int = 0


@dataclass(frozen=True)
class Receipt:
    id: str
    side: str
    group: str | None
    seq: int
    order: int
    """Global processing order (a counter taken when the worker processed it)."""
    via: str = ""
    """How it reached a NATS worker: the relay route, or the stream it was sourced from, and its
    stream sequence (what a duplicate's report names)."""


def message_id(raw: bytes | str) -> tuple[str, str | None, int]:
    """(id, group, seq) from a body: raw, or inside an SNS envelope."""
    data = json.loads(raw)
    if isinstance(data, dict) and data.get("Type") == "Notification" and "Message" in data:
        data = json.loads(data["Message"])
    return str(data["id"]), data.get("group"), int(data.get("seq", 0))


@dataclass
class AppReport:
    app: str
    expected: int
    received: int
    lost: list[str]
    duplicated: dict[str, int]
    unexpected: list[str]
    order_violations: list[str]
    by_side: dict[str, int]
    paths: dict[str, list[str]] = field(default_factory=dict)
    """Each duplicated id's receipts: the path each copy came by."""

    @property
    def clean(self) -> bool:
        return not (self.lost or self.duplicated or self.unexpected or self.order_violations)

    def line(self) -> str:
        def some(items: Any) -> str:
            listed = list(items)
            return ", ".join(listed[:6]) + (" …" if len(listed) > 6 else "")

        parts = [
            f"{self.app}: expected {self.expected}, received {self.received} "
            f"(by side {dict(sorted(self.by_side.items()))})"
        ]
        if self.lost:
            parts.append(f"LOST {len(self.lost)} [{some(self.lost)}]")
        if self.duplicated:
            parts.append(
                f"DUPLICATED {len(self.duplicated)} "
                f"[{some(f'{k}×{v}' for k, v in self.duplicated.items())}]"
            )
            first = next(iter(self.duplicated))
            parts.append(f"{first} came by {' and '.join(self.paths.get(first, []))}")
        if self.unexpected:
            parts.append(f"UNEXPECTED {len(self.unexpected)} [{some(self.unexpected)}]")
        if self.order_violations:
            parts.append(
                f"ORDER VIOLATIONS {len(self.order_violations)} [{some(self.order_violations)}]"
            )
        return "; ".join(parts)


@dataclass
class Ledger:
    sent: list[Sent] = field(default_factory=list)
    receipts: dict[str, list[Receipt]] = field(default_factory=lambda: defaultdict(list))
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _order: int = 0

    def published(self, message: Sent) -> None:
        with self.lock:
            self.sent.append(message)

    def processed(self, app: str, raw: bytes | str, side: str, via: str = "") -> None:
        try:
            mid, group, seq = message_id(raw)
        except (ValueError, KeyError, TypeError) as err:
            self.error(f"{app} ({side}) got a message without an id: {raw[:200]!r} ({err})")
            return
        with self.lock:
            self._order += 1
            self.receipts[app].append(Receipt(mid, side, group, seq, self._order, via))

    def error(self, text: str) -> None:
        with self.lock:
            self.errors.append(text)

    def count(self, app: str) -> int:
        with self.lock:
            return len(self.receipts[app])

    def total_received(self) -> int:
        with self.lock:
            return sum(len(r) for r in self.receipts.values())

    def ids(self, app: str) -> set[str]:
        with self.lock:
            return {r.id for r in self.receipts[app]}

    def report(self, app: str, expected: set[str]) -> AppReport:
        with self.lock:
            receipts = list(self.receipts[app])
        counts = Counter(r.id for r in receipts)
        return AppReport(
            app=app,
            expected=len(expected),
            received=len(counts),
            lost=sorted(expected - set(counts)),
            duplicated={k: v for k, v in sorted(counts.items()) if v > 1},
            paths={
                k: [r.via or r.side for r in receipts if r.id == k]
                for k, v in counts.items()
                if v > 1
            },
            unexpected=sorted(set(counts) - expected),
            order_violations=order_violations(receipts),
            by_side=dict(Counter(r.side for r in receipts)),
        )


def order_violations(receipts: list[Receipt]) -> list[str]:
    """Per group, each message processed after one with a higher sequence (first processing of
    each id; a redelivery is a duplicate, counted as such)."""
    seen: set[str] = set()
    highest: dict[str, Receipt] = {}
    out = []
    for r in sorted(receipts, key=lambda r: r.order):
        if r.group is None or r.id in seen:
            continue
        seen.add(r.id)
        top = highest.get(r.group)
        if top is not None and r.seq < top.seq:
            out.append(
                f"{r.group}:{r.seq}({r.via or r.side}) after {top.seq}({top.via or top.side})"
            )
        if top is None or r.seq > top.seq:
            highest[r.group] = r
    return out


# --- producers --------------------------------------------------------------------------------

Publish = Callable[[Sent], Awaitable[None]]
PUBLISH_BOUND = 60.0
"""Seconds one publish (connect, subject lookup, PubAck) may take before it counts as failed."""


class Producer:
    """Publishes one message per active side every `interval` seconds until halted."""

    def __init__(
        self,
        ledger: Ledger,
        target: str,
        make: Callable[[int, str], Sent],
        publishers: dict[str, Publish],
        interval: float,
    ) -> None:
        self.ledger, self.target, self.make = ledger, target, make
        self.publishers = publishers
        self.interval = interval
        self.sides: set[str] = {"aws"}
        self.count = 0
        self.stopping = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while not self.stopping.is_set():
            for side in sorted(self.sides):
                message = self.make(self.count, side)
                self.count += 1
                await self._publish(side, message)
            # Paces the traffic (a few messages a second); nothing waits on it.
            await asyncio.sleep(self.interval)

    async def _publish(self, side: str, message: Sent) -> None:
        for attempt in range(1, 6):
            try:
                # Bounded: a publish that hangs (a connect that never succeeds) is a finding.
                await asyncio.wait_for(self.publishers[side](message), PUBLISH_BOUND)
            except Exception as err:
                self.ledger.error(
                    f"{self.target}: {side} publish of {message.id} failed "
                    f"(attempt {attempt}): {type(err).__name__}: {err}"
                )
                await asyncio.sleep(0.5)
                continue
            self.ledger.published(message)
            return
        self.ledger.error(f"{self.target}: gave up publishing {message.id} on {side}")

    async def halt(self) -> None:
        self.stopping.set()
        await self.task


# --- workers ----------------------------------------------------------------------------------


class AwsWorker:
    """An SQS application worker on a thread: receive, process (record), then delete."""

    def __init__(self, ledger: Ledger, app: str, sqs: Any, url: str) -> None:
        self.ledger, self.app, self.sqs, self.url = ledger, app, sqs, url
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"aws-worker-{app}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                reply = self.sqs.receive_message(
                    QueueUrl=self.url, MaxNumberOfMessages=10, WaitTimeSeconds=1
                )
                messages = reply.get("Messages") or []
                for m in messages:
                    self.ledger.processed(self.app, m["Body"], "aws")
                if messages:
                    self.sqs.delete_message_batch(
                        QueueUrl=self.url,
                        Entries=[
                            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                            for i, m in enumerate(messages)
                        ],
                    )
            except Exception as err:
                self.ledger.error(f"{self.app}: AWS worker: {type(err).__name__}: {err}")
                time.sleep(0.5)

    def halt(self) -> None:
        self.stop.set()
        self.thread.join()


class NatsWorker:
    """A JetStream application worker: bound to the queue's durable, acks after processing."""

    def __init__(
        self,
        ledger: Ledger,
        app: str,
        connect: Callable[[], Awaitable[Any]],
        stream: str,
        durable: str,
    ) -> None:
        self.ledger, self.app, self.connect = ledger, app, connect
        self.stream, self.durable = stream, durable
        self.stopping = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        from nats.errors import TimeoutError as NatsTimeout

        nc = await self.connect()
        try:
            sub = await nc.jetstream().pull_subscribe_bind(self.durable, self.stream)
            while not self.stopping.is_set():
                try:
                    msgs = await sub.fetch(10, timeout=1)
                except (TimeoutError, NatsTimeout):
                    continue
                except Exception as err:
                    self.ledger.error(f"{self.app}: NATS worker fetch: {type(err).__name__}: {err}")
                    await asyncio.sleep(0.5)
                    continue
                for msg in msgs:
                    self.ledger.processed(self.app, msg.data, "nats", _via(msg))
                    try:
                        await msg.ack_sync()
                    except Exception as err:
                        self.ledger.error(f"{self.app}: NATS ack: {type(err).__name__}: {err}")
        finally:
            await nc.close()

    async def halt(self) -> None:
        self.stopping.set()
        await self.task


def _via(msg: Any) -> str:
    """The path a NATS message came by: the bridge route that published it, or the stream it
    was sourced from (a message a producer published on the queue's own subject: `publish`)."""
    headers = msg.headers or {}
    if "Nats-Stream-Source" in headers:
        how = "source " + headers["Nats-Stream-Source"].split(" ")[0]
    else:
        how = headers.get("Snsq2nats-Route") or "publish"
    ident = headers.get("Nats-Msg-Id", "")
    try:
        where = f"#{msg.metadata.sequence.stream}"
    except Exception:
        where = ""
    return f"{how}{where} id={ident}"
