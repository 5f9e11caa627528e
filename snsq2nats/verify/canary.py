"""Canaries: what one verify run publishes, how each travels and how it is collected.

A canary carries the run id in `CANARY_HEADER` and its own id in `CANARY_ID_HEADER`; it is
published with a PubAck (so we know the stream and sequence it landed at) and collected by
binding to the plan's existing durable, never a consumer of our own.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from snsq2nats.errors import SnsqError
from snsq2nats.jetstream.api import (
    ERR_CONSUMER_NOT_FOUND,
    ERR_STREAM_NOT_FOUND,
    JetStreamApiError,
    api,
)
from snsq2nats.jetstream.operations import CONSUMER_INFO, STREAM_INFO
from snsq2nats.jetstream.spec import StreamSpec
from snsq2nats.plan.headers import CANARY_HEADER
from snsq2nats.plan.model import Plan

if TYPE_CHECKING:
    from nats.aio.client import Client

Outcome = Literal["ok", "failed", "skipped"]

# Every canary carries CANARY_HEADER (its value is the run id; consumers and the bridge may drop
# messages carrying it) and its own id in CANARY_ID_HEADER.
CANARY_ID_HEADER = "Snsq2nats-Canary-Id"
# A subject token no compiled filter can select: real values encode `~` as `~7E`, and the
# planner's own markers are `~absent`, `~empty` and `~typed`.
CANARY_TOKEN = "~canary"
# The MessageGroupId a FIFO canary is published under (already a valid subject token).
CANARY_GROUP = "snsq2nats-canary"
SCHEDULE_DELAY = 1.0


@dataclass
class CheckResult:
    resource: str
    check: str
    result: Outcome
    detail: str = ""
    latency_ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_canary(headers: dict[str, str] | None) -> bool:
    return bool(headers and CANARY_HEADER in headers)


def canary_subject(pattern: str) -> str:
    return ".".join(CANARY_TOKEN if t in ("*", ">") else t for t in pattern.split("."))


def near_miss(pattern: str, prefix_len: int) -> str | None:
    """`pattern` with its last attribute value replaced by the canary token, if it has one."""
    tokens = pattern.split(".")
    for i in range(len(tokens) - 1, prefix_len - 1, -1):
        if tokens[i] not in ("*", ">"):
            tokens[i] = CANARY_TOKEN
            return canary_subject(".".join(tokens))
    return None


def ms(seconds: float) -> float:
    return round(seconds * 1000.0, 1)


@dataclass
class Canary:
    id: str
    subject: str
    published_at: float = 0.0
    stream: str | None = None
    seq: int | None = None


@dataclass
class Collected:
    """What a durable handed us during one collection window."""

    arrived: dict[str, float] = field(default_factory=dict)  # canary id -> monotonic time
    foreign: int = 0  # real messages released again with NAK
    error: str | None = None


class CanaryRun:
    """What every check of one run shares: the connection, the run id each canary carries,
    the streams' state before the run and every subject a canary may have landed on."""

    def __init__(
        self,
        nc: Client,
        plan: Plan,
        timeout: float,
        on_progress: Callable[[int, int | None], None] | None,
        accounts: Mapping[str, Client] | None = None,
    ) -> None:
        self.nc = nc
        self.plan = plan
        # A per-account plan: the connection to each NATS account but the home one (`nc`),
        # by name; each stream is reached in the account holding it.
        self.accounts: dict[str, Client] = dict(accounts or {})
        self._holder = {s: a.name for a in plan.nats_accounts for s in a.streams}
        self.timeout = timeout
        # How long a window stays open after the expected canaries arrived, to catch ones that
        # should not arrive; stream sources copy within milliseconds on a healthy server.
        self.grace = min(max(timeout / 10.0, 0.2), 1.0)
        self.on_progress = on_progress
        self.run_id = secrets.token_hex(6)
        self._counter = 0
        self.specs: dict[str, StreamSpec] = {s.name: s for s in plan.streams}
        self.before: dict[str, dict[str, int]] = {}
        # Per stream, every canary subject that could have landed there: the final sweep looks
        # only at those subjects, so its cost does not grow with real traffic elsewhere.
        self.touched: dict[str, set[str]] = {}
        self.topic_canaries: list[Canary] = []

    def new_canary(self, subject: str) -> Canary:
        self._counter += 1
        return Canary(id=f"{self.run_id}-{self._counter}", subject=subject)

    def conn(self, stream: str) -> Client:
        """The connection to the NATS account holding `stream`."""
        conn: Client = self.accounts.get(self._holder.get(stream, ""), self.nc)
        return conn

    @property
    def connections(self) -> list[Client]:
        """One connection per NATS account of the run."""
        return [self.nc, *self.accounts.values()]

    def touch(self, stream: str, subject: str) -> None:
        self.touched.setdefault(stream, set()).add(subject)

    def tick(self, total: int) -> None:
        if self.on_progress is not None:
            self.on_progress(1, total)

    async def stream_state(self, name: str) -> dict[str, Any] | None:
        try:
            info = await api(self.conn(name), STREAM_INFO.subject(stream=name), None, self.timeout)
        except JetStreamApiError as exc:
            if exc.err_code == ERR_STREAM_NOT_FOUND:
                return None
            raise
        return info

    async def consumer_info(self, stream: str, consumer: str) -> dict[str, Any] | str:
        """The consumer's info, or why it cannot be used."""
        try:
            return await api(
                self.conn(stream),
                CONSUMER_INFO.subject(stream=stream, consumer=consumer),
                None,
                self.timeout,
            )
        except JetStreamApiError as exc:
            if exc.err_code == ERR_STREAM_NOT_FOUND:
                return f"stream {stream} does not exist (apply the plan first)"
            if exc.err_code == ERR_CONSUMER_NOT_FOUND:
                return f"durable consumer {stream}/{consumer} does not exist (apply the plan)"
            return exc.what

    @staticmethod
    def busy(info: dict[str, Any]) -> str | None:
        """Why fetching from this consumer would disturb real traffic, if it would."""
        pending = int(info.get("num_pending") or 0) + int(info.get("num_ack_pending") or 0)
        if pending:
            return f"queue has {pending} pending messages: not verified (would disturb traffic)"
        waiting = int(info.get("num_waiting") or 0)
        if waiting:
            # Workers' pull requests would be served before ours: they would get the canary.
            return (
                f"{waiting} worker pull request(s) waiting on the consumer: not verified "
                "(a worker would receive the canary)"
            )
        return None

    def _headers(self, canary: Canary) -> dict[str, str]:
        return {
            CANARY_HEADER: self.run_id,
            CANARY_ID_HEADER: canary.id,
            # Unique per canary, so a duplicate window never swallows one from an earlier run.
            "Nats-Msg-Id": f"snsq2nats-canary-{canary.id}",
        }

    def _body(self, canary: Canary) -> bytes:
        return json.dumps({"snsq2nats": "canary", "id": canary.id}).encode()

    async def publish(
        self, canary: Canary, expect_stream: str, extra: dict[str, str] | None = None
    ) -> str | None:
        """Publish and wait for the PubAck; the failure reason, or None."""
        from nats import errors as nats_errors

        headers = self._headers(canary)
        headers.update(extra or {})
        canary.published_at = time.monotonic()
        try:
            # Published in the account of the stream meant to store it: only there does the
            # subject reach that stream.
            reply = await self.conn(expect_stream).request(
                canary.subject, self._body(canary), timeout=self.timeout, headers=headers
            )
        except nats_errors.NoRespondersError:
            return f"no stream captures {canary.subject} (apply the plan first)"
        except (TimeoutError, nats_errors.TimeoutError):
            return f"no PubAck for {canary.subject} within {self.timeout:g}s"
        try:
            ack = json.loads(reply.data)
        except ValueError:
            return f"publish to {canary.subject} got a reply that is not a PubAck"
        if not isinstance(ack, dict):
            return f"publish to {canary.subject} got a reply that is not a PubAck"
        if ack.get("error"):
            err = ack["error"]
            desc = err.get("description") if isinstance(err, dict) else err
            return f"publish to {canary.subject} refused: {desc}"
        canary.stream = str(ack.get("stream"))
        canary.seq = int(ack.get("seq") or 0)
        # Wherever it landed, the sweep must look there.
        self.touch(canary.stream, canary.subject)
        if canary.stream != expect_stream:
            return f"{canary.subject} is stored by stream {canary.stream}, not {expect_stream}"
        return None

    async def collect(
        self, stream: str, consumer: str, expected: set[str], wait: float
    ) -> Collected:
        """Fetch from the durable until `expected` arrived (or `wait` ran out), plus a grace.

        Canaries of this run are acked (which removes them from a work queue); anything else
        is released with an immediate NAK and collection stops, leaving the queue to its
        workers.
        """
        from nats import errors as nats_errors

        out = Collected()
        loop_start = time.monotonic()
        deadline = loop_start + wait
        settle_until: float | None = None
        sub = await self.conn(stream).jetstream().pull_subscribe_bind(consumer, stream=stream)
        try:
            while True:
                now = time.monotonic()
                if settle_until is None and expected <= out.arrived.keys():
                    settle_until = now + self.grace
                end = min(deadline, settle_until) if settle_until is not None else deadline
                if now >= end:
                    return out
                try:
                    msgs = await sub.fetch(1, timeout=max(end - now, 0.05))
                except (TimeoutError, nats_errors.TimeoutError):
                    continue
                for msg in msgs:
                    headers = msg.headers or {}
                    if headers.get(CANARY_HEADER) == self.run_id:
                        out.arrived[headers.get(CANARY_ID_HEADER, "")] = time.monotonic()
                        await msg.ack_sync(timeout=self.timeout)
                        continue
                    # Real traffic (or another verify run's canary): hand it straight back.
                    await msg.nak()
                    out.foreign += 1
                if out.foreign:
                    return out
        except SnsqError as exc:
            out.error = exc.what
        except nats_errors.Error as exc:
            out.error = f"{type(exc).__name__}: {exc}"
        finally:
            await sub.unsubscribe()
        return out
