"""`verify`: prove the applied estate carries messages, one canary per path, and leave no trace.

For every queue, a canary goes to its publish subject and comes back through its durable pull
consumer (the seed's "one big burger" round trip). For every topic with a stream, canaries are
published so that each exactly-filtered subscription should see one, plus one that no filter
selects; each subscribed queue must receive exactly the canaries its stream source lets through.

Safety comes first, because verify runs against live estates:
* a consumer holding messages (or with workers pulling) is never fetched from: a canary would
  queue behind real work or go to a real worker, so that check is skipped and says why;
* a real message fetched by accident (it arrived after the check) is NAKed at once, without a
  delay, and the queue is left alone;
* we only ever bind to the existing durables: work-queue streams allow one unfiltered consumer,
  so creating our own would either fail or steal.
Canaries that stay in a stream (topic streams keep messages; a stray canary in a queue) are
deleted by sequence, and a final sweep confirms no canary of this run is left anywhere.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from snsq2nats.bridge.codec import CANARY_HEADER
from snsq2nats.errors import SnsqError
from snsq2nats.jetstream.api import (
    API_PREFIX,
    ERR_CONSUMER_NOT_FOUND,
    ERR_NO_MESSAGE,
    ERR_STREAM_NOT_FOUND,
    JetStreamApiError,
    api,
)
from snsq2nats.jetstream.spec import StreamSpec
from snsq2nats.jetstream.subjects import subject_matches
from snsq2nats.plan.model import Plan, Resource
from snsq2nats.plan.names import SCHEDULE_TOKEN
from snsq2nats.plan.pipeline import GROUP_ATTRIBUTE, publish_subject

__all__ = [
    "CANARY_HEADER",
    "CANARY_TOKEN",
    "CheckResult",
    "Outcome",
    "is_canary",
    "verify_plan",
]

Outcome = Literal["ok", "failed", "skipped"]

"""Header on every canary; its value is the verify run id. Consumers and the bridge may drop
messages carrying it."""
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


def _canary_subject(pattern: str) -> str:
    return ".".join(CANARY_TOKEN if t in ("*", ">") else t for t in pattern.split("."))


def _near_miss(pattern: str, prefix_len: int) -> str | None:
    """`pattern` with its last attribute value replaced by the canary token, if it has one."""
    tokens = pattern.split(".")
    for i in range(len(tokens) - 1, prefix_len - 1, -1):
        if tokens[i] not in ("*", ">"):
            tokens[i] = CANARY_TOKEN
            return _canary_subject(".".join(tokens))
    return None


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 1)


@dataclass
class _Canary:
    id: str
    subject: str
    published_at: float = 0.0
    stream: str | None = None
    seq: int | None = None


@dataclass
class _Collected:
    """What a durable handed us during one collection window."""

    arrived: dict[str, float] = field(default_factory=dict)  # canary id -> monotonic time
    foreign: int = 0  # real messages released again with NAK
    error: str | None = None


@dataclass
class _Target:
    """A subscription delivering into a queue: where its canaries should (not) arrive."""

    sub: Resource
    stream: str
    consumer: str
    filters: list[str]  # empty: the plan wires no source, so nothing may arrive
    busy: str | None = None
    missing: str | None = None


class _Verifier:
    def __init__(
        self,
        nc: Any,
        plan: Plan,
        timeout: float,
        on_progress: Callable[[int, int | None], None] | None,
    ) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.plan = plan
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
        self.topic_canaries: list[_Canary] = []

    # -- plumbing -----------------------------------------------------------------------------

    def _new_canary(self, subject: str) -> _Canary:
        self._counter += 1
        return _Canary(id=f"{self.run_id}-{self._counter}", subject=subject)

    def _touch(self, stream: str, subject: str) -> None:
        self.touched.setdefault(stream, set()).add(subject)

    def _tick(self, total: int) -> None:
        if self.on_progress is not None:
            self.on_progress(1, total)

    async def _stream_state(self, name: str) -> dict[str, Any] | None:
        try:
            info = await api(self.nc, f"{API_PREFIX}.STREAM.INFO.{name}", None, self.timeout)
        except JetStreamApiError as exc:
            if exc.err_code == ERR_STREAM_NOT_FOUND:
                return None
            raise
        return info

    async def _consumer_info(self, stream: str, consumer: str) -> dict[str, Any] | str:
        """The consumer's info, or why it cannot be used."""
        try:
            return await api(
                self.nc, f"{API_PREFIX}.CONSUMER.INFO.{stream}.{consumer}", None, self.timeout
            )
        except JetStreamApiError as exc:
            if exc.err_code == ERR_STREAM_NOT_FOUND:
                return f"stream {stream} does not exist (apply the plan first)"
            if exc.err_code == ERR_CONSUMER_NOT_FOUND:
                return f"durable consumer {stream}/{consumer} does not exist (apply the plan)"
            return exc.what

    @staticmethod
    def _busy(info: dict[str, Any]) -> str | None:
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

    def _headers(self, canary: _Canary) -> dict[str, str]:
        return {
            CANARY_HEADER: self.run_id,
            CANARY_ID_HEADER: canary.id,
            # Unique per canary, so a duplicate window never swallows one from an earlier run.
            "Nats-Msg-Id": f"snsq2nats-canary-{canary.id}",
        }

    def _body(self, canary: _Canary) -> bytes:
        return json.dumps({"snsq2nats": "canary", "id": canary.id}).encode()

    async def _publish(
        self, canary: _Canary, expect_stream: str, extra: dict[str, str] | None = None
    ) -> str | None:
        """Publish and wait for the PubAck; the failure reason, or None."""
        from nats import errors as nats_errors

        headers = self._headers(canary)
        headers.update(extra or {})
        canary.published_at = time.monotonic()
        try:
            reply = await self.nc.request(
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
        self._touch(canary.stream, canary.subject)
        if canary.stream != expect_stream:
            return f"{canary.subject} is stored by stream {canary.stream}, not {expect_stream}"
        return None

    async def _collect(
        self, stream: str, consumer: str, expected: set[str], wait: float
    ) -> _Collected:
        """Fetch from the durable until `expected` arrived (or `wait` ran out), plus a grace.

        Canaries of this run are acked (which removes them from a work queue); anything else
        is released with an immediate NAK and collection stops, leaving the queue to its
        workers.
        """
        from nats import errors as nats_errors

        out = _Collected()
        loop_start = time.monotonic()
        deadline = loop_start + wait
        settle_until: float | None = None
        sub = await self.js.pull_subscribe_bind(consumer, stream=stream)
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

    # -- queues -------------------------------------------------------------------------------

    async def check_queue(self, queue: Resource) -> list[CheckResult]:
        assert queue.stream is not None and queue.consumer is not None
        name = queue.name
        info = await self._consumer_info(queue.stream, queue.consumer)
        if isinstance(info, str):
            return [CheckResult(name, "round trip", "failed", info)]
        busy = self._busy(info)
        if busy:
            return [CheckResult(name, "round trip", "skipped", busy)]
        fifo = (queue.publish_subject or "").endswith(f".<{GROUP_ATTRIBUTE}>")
        attrs = [f"{GROUP_ATTRIBUTE}={CANARY_GROUP}"] if fifo else []
        subject = publish_subject(self.plan, queue.source_arn, attrs)
        results = [await self._round_trip(queue, subject)]
        spec = self.specs.get(queue.stream)
        if spec is not None and spec.allow_msg_schedules and results[0].result == "ok":
            results.append(await self._scheduled(queue, spec, subject))
        return results

    async def _round_trip(self, queue: Resource, subject: str) -> CheckResult:
        assert queue.stream is not None and queue.consumer is not None
        check = f"round trip via {subject}"
        canary = self._new_canary(subject)
        error = await self._publish(canary, queue.stream)
        if error:
            return CheckResult(queue.name, check, "failed", error)
        got = await self._collect(queue.stream, queue.consumer, {canary.id}, self.timeout)
        return self._judge_arrival(queue.name, check, canary, got, queue.consumer)

    def _judge_arrival(
        self, name: str, check: str, canary: _Canary, got: _Collected, consumer: str
    ) -> CheckResult:
        if got.foreign:
            return CheckResult(
                name,
                check,
                "skipped",
                "a real message arrived during the check: released at once (NAK), queue left "
                "to its workers; not verified",
            )
        if got.error:
            return CheckResult(name, check, "failed", got.error)
        if canary.id not in got.arrived:
            return CheckResult(
                name,
                check,
                "failed",
                f"canary stored in {canary.stream} but not received through durable "
                f"{consumer} within {self.timeout:g}s",
            )
        latency = got.arrived[canary.id] - canary.published_at
        return CheckResult(name, check, "ok", f"received and acked via {consumer}", _ms(latency))

    async def _scheduled(self, queue: Resource, spec: StreamSpec, target: str) -> CheckResult:
        assert queue.stream is not None and queue.consumer is not None
        check = f"delayed delivery ({SCHEDULE_DELAY:g}s schedule)"
        live = await self._stream_state(queue.stream)
        if live is None or not (live.get("config") or {}).get("allow_msg_schedules"):
            return CheckResult(
                queue.name,
                check,
                "failed",
                f"stream {queue.stream} does not allow message schedules (needs nats-server "
                "2.12+ and an applied plan)",
            )
        pattern = next(s for s in spec.subjects if f".{SCHEDULE_TOKEN}." in s)
        canary = self._new_canary("")
        canary.subject = pattern.replace("*", canary.id)
        at = datetime.now(UTC) + timedelta(seconds=SCHEDULE_DELAY)
        self._touch(queue.stream, target)
        error = await self._publish(
            canary,
            queue.stream,
            {
                "Nats-Schedule": "@at " + at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "Nats-Schedule-Target": target,
            },
        )
        if error:
            return CheckResult(queue.name, check, "failed", error)
        got = await self._collect(
            queue.stream, queue.consumer, {canary.id}, self.timeout + SCHEDULE_DELAY
        )
        result = self._judge_arrival(queue.name, check, canary, got, queue.consumer)
        if result.result == "ok" and result.latency_ms is not None:
            if result.latency_ms < SCHEDULE_DELAY * 1000 * 0.9:
                result.result = "failed"
                result.detail = f"arrived after {result.latency_ms:g} ms, before the delay"
            else:
                result.detail = f"arrived after the delay via {queue.consumer}, acked"
        return result

    # -- topics -------------------------------------------------------------------------------

    def _subscriptions(self, topic: Resource) -> list[Resource]:
        # A subscription ARN is its topic ARN plus `:<id>`.
        return [
            r
            for r in self.plan.resources
            if r.kind == "sns-subscription" and r.source_arn.rsplit(":", 1)[0] == topic.source_arn
        ]

    def _emulated(self, sub: Resource) -> bool:
        return any(
            route.kind == "filter-router" and route.source_arn == sub.source_arn
            for route in self.plan.routes
        )

    def _source_filters(self, queue_stream: str, topic_stream: str, all_subjects: str) -> list[str]:
        """The subjects the plan lets flow from the topic stream into the queue stream.

        Read from the stream spec rather than the subscription resource: the spec is exactly
        what apply creates, including "no source at all" for subscriptions SNS would not
        deliver to (unconfirmed, invalid filter).
        """
        spec = self.specs.get(queue_stream)
        filters: list[str] = []
        for source in (spec.sources or []) if spec else []:
            if source.name != topic_stream:
                continue
            if source.subject_transforms:
                filters.extend(t.src for t in source.subject_transforms)
            else:
                filters.append(source.filter_subject or all_subjects)
        return filters

    async def check_topic(self, topic: Resource) -> list[CheckResult]:
        name = topic.name
        if topic.stream is None:
            return [
                CheckResult(
                    name,
                    "topic stream",
                    "skipped",
                    "no stream: nothing subscribes durably, the topic is a core NATS subject",
                )
            ]
        if await self._stream_state(topic.stream) is None:
            return [
                CheckResult(name, "topic stream", "failed", f"stream {topic.stream} does not exist")
            ]
        template = topic.publish_subject or ""
        parts = template.split(".")
        prefix = ".".join(parts[: len(parts) - len(topic.subject_tokens)])
        all_subjects = ".".join([prefix, *("*" for _ in topic.subject_tokens)])

        results: list[CheckResult] = []
        targets: list[_Target] = []
        for sub in self._subscriptions(topic):
            if sub.stream is None or sub.consumer is None:
                why = next((f.note for f in sub.fidelity if f.verdict == "unsupported"), "")
                results.append(
                    CheckResult(sub.name, "delivery", "skipped", f"not delivered by NATS: {why}")
                )
            elif self._emulated(sub):
                results.append(
                    CheckResult(
                        sub.name,
                        "filter routing",
                        "skipped",
                        "skipped: evaluated by the bridge's filter router",
                    )
                )
            else:
                filters = self._source_filters(sub.stream, topic.stream, all_subjects)
                targets.append(_Target(sub, sub.stream, sub.consumer, filters))
        # Every queue stream fed from this topic (emulated ones via the bridge too) could hold
        # a stray canary afterwards; the sweep looks there.
        fed = {t.stream for t in targets} | {
            r.target_stream
            for r in self.plan.routes
            if r.kind == "filter-router" and r.stream == topic.stream and r.target_stream
        }

        # Per filtered subscription: a canary its first filter selects, and a near miss that
        # differs from it in one attribute value, so filters are checked in both directions.
        subjects: list[str] = []
        for target in targets:
            if target.filters and target.filters != [all_subjects]:
                subjects.append(_canary_subject(target.filters[0]))
                miss = _near_miss(target.filters[0], len(parts) - len(topic.subject_tokens))
                if miss is not None:
                    subjects.append(miss)
        subjects.append(_canary_subject(all_subjects))
        canaries = [self._new_canary(s) for s in dict.fromkeys(subjects)]

        def wants(target: _Target, canary: _Canary) -> bool:
            return any(subject_matches(f, canary.subject) for f in target.filters)

        for target in targets:
            info = await self._consumer_info(target.stream, target.consumer)
            if isinstance(info, str):
                target.missing = info
            else:
                target.busy = self._busy(info)

        to_send: list[_Canary] = []
        for canary in canaries:
            blockers = [t.sub.name for t in targets if t.busy and wants(t, canary)]
            if blockers:
                results.append(
                    CheckResult(
                        name,
                        f"publish {canary.subject}",
                        "skipped",
                        f"not published: it would reach {', '.join(blockers)}, which holds "
                        "real messages",
                    )
                )
                continue
            for stream in fed:
                self._touch(stream, canary.subject)
            error = await self._publish(canary, topic.stream)
            if canary.seq and canary.stream == topic.stream:
                self.topic_canaries.append(canary)
            if error:
                results.append(CheckResult(name, f"publish {canary.subject}", "failed", error))
            else:
                to_send.append(canary)
        if to_send:
            results.append(
                CheckResult(
                    name,
                    "publish canaries",
                    "ok",
                    f"{len(to_send)} canaries stored in {topic.stream}",
                )
            )

        live = [t for t in targets if not t.busy and not t.missing]
        collected = await asyncio.gather(
            *(
                self._collect(
                    t.stream, t.consumer, {c.id for c in to_send if wants(t, c)}, self.timeout
                )
                for t in live
            )
        )
        got_by_target = dict(zip((id(t) for t in live), collected, strict=True))
        for target in targets:
            results.extend(self._judge_routing(target, to_send, got_by_target.get(id(target))))
        return results

    def _judge_routing(
        self, target: _Target, sent: list[_Canary], got: _Collected | None
    ) -> Iterable[CheckResult]:
        name = target.sub.name
        where = f"{target.stream}/{target.consumer}"
        for canary in sent:
            expected = any(subject_matches(f, canary.subject) for f in target.filters)
            check = ("receives " if expected else "does not receive ") + canary.subject
            if target.missing:
                yield CheckResult(name, check, "failed", target.missing)
                continue
            if target.busy or got is None:
                yield CheckResult(name, check, "skipped", target.busy or "")
                continue
            if got.foreign:
                yield CheckResult(
                    name,
                    check,
                    "skipped",
                    "a real message arrived during the check: released at once (NAK); not verified",
                )
                continue
            if got.error:
                yield CheckResult(name, check, "failed", got.error)
                continue
            arrived = got.arrived.get(canary.id)
            latency = _ms(arrived - canary.published_at) if arrived is not None else None
            shown = ", ".join(target.filters) or "none (no source)"
            if expected and arrived is not None:
                yield CheckResult(name, check, "ok", "arrived via the stream source", latency)
            elif expected:
                yield CheckResult(
                    name,
                    check,
                    "failed",
                    f"did not arrive in {where} within {self.timeout:g}s: check the source "
                    f"from the topic stream on {target.stream} (filters {shown})",
                )
            elif arrived is not None:
                yield CheckResult(
                    name,
                    check,
                    "failed",
                    f"arrived in {where} although the plan's filters ({shown}) do not match",
                    latency,
                )
            else:
                yield CheckResult(name, check, "ok", "not delivered: no filter selects it")

    # -- cleanup ------------------------------------------------------------------------------

    async def _delete(self, stream: str, seq: int) -> bool:
        try:
            await api(
                self.nc,
                f"{API_PREFIX}.STREAM.MSG.DELETE.{stream}",
                {"seq": seq, "no_erase": True},
                self.timeout,
            )
        except JetStreamApiError as exc:
            if exc.err_code == ERR_NO_MESSAGE:
                return False  # already gone (acked from a work queue, or removed by limits)
            raise
        return True

    async def _sweep(self, stream: str, subjects: set[str], start: int) -> tuple[int, int]:
        """Delete every canary of this run on `subjects` from `start` on: (found, failed)."""
        found = failed = 0
        for subject in sorted(subjects):
            seq = start
            while True:
                try:
                    resp = await api(
                        self.nc,
                        f"{API_PREFIX}.STREAM.MSG.GET.{stream}",
                        {"seq": seq, "next_by_subj": subject},
                        self.timeout,
                    )
                except JetStreamApiError as exc:
                    if exc.err_code in (ERR_NO_MESSAGE, ERR_STREAM_NOT_FOUND):
                        break
                    raise
                message = resp.get("message") or {}
                seq = int(message.get("seq") or 0)
                if seq <= 0:
                    break
                raw = base64.b64decode(message.get("hdrs") or "")
                if f"{CANARY_HEADER}: {self.run_id}".encode() in raw:
                    found += 1
                    try:
                        await self._delete(stream, seq)
                    except JetStreamApiError:
                        failed += 1
                seq += 1
        return found, failed

    async def cleanup(self) -> CheckResult:
        check = "no canary left behind"
        try:
            for canary in self.topic_canaries:
                assert canary.stream is not None and canary.seq is not None
                await self._delete(canary.stream, canary.seq)
            strays = failures = 0
            for stream, subjects in sorted(self.touched.items()):
                start = self.before.get(stream, {}).get("last_seq")
                if start is None:
                    start = 0  # created during the run: look at all of it
                found, failed = await self._sweep(stream, subjects, start + 1)
                strays += found
                failures += failed
            changed: list[str] = []
            for stream, before in sorted(self.before.items()):
                state = await self._stream_state(stream)
                after = int(((state or {}).get("state") or {}).get("messages") or 0)
                if after != before["messages"]:
                    changed.append(f"{stream} {before['messages']}→{after}")
        except SnsqError as exc:
            return CheckResult("(verify)", check, "failed", f"cleanup failed: {exc.what}")
        if failures:
            return CheckResult(
                "(verify)", check, "failed", f"{failures} canary message(s) could not be deleted"
            )
        detail = f"{len(self.touched)} stream(s) checked"
        if strays:
            detail += f"; removed {strays} canary message(s) that were not consumed"
        if changed:
            # Not ours (our canaries are all gone): real traffic moved during the run.
            detail += "; message counts changed by other traffic: " + ", ".join(changed)
        else:
            detail += "; message counts as before"
        return CheckResult("(verify)", check, "ok", detail)

    # -- the run --------------------------------------------------------------------------------

    async def run(self) -> list[CheckResult]:
        queues = [
            r
            for r in self.plan.resources
            if r.kind == "sqs-queue" and r.stream is not None and r.consumer is not None
        ]
        topics = [r for r in self.plan.resources if r.kind == "sns-topic"]
        total = len(queues) + len(topics) + 1
        for spec in self.plan.streams:
            state = await self._stream_state(spec.name)
            if state is not None:
                st = state.get("state") or {}
                self.before[spec.name] = {
                    "messages": int(st.get("messages") or 0),
                    "last_seq": int(st.get("last_seq") or 0),
                }
        results: list[CheckResult] = []
        try:
            # Queues are independent of each other, so their round trips run concurrently.
            async def one_queue(queue: Resource) -> list[CheckResult]:
                try:
                    return await self.check_queue(queue)
                except SnsqError as exc:
                    return [CheckResult(queue.name, "round trip", "failed", exc.what)]
                finally:
                    self._tick(total)

            for batch in await asyncio.gather(*(one_queue(q) for q in queues)):
                results.extend(batch)
            # Topics share queues (one queue may subscribe to several), so one at a time.
            for topic in topics:
                try:
                    results.extend(await self.check_topic(topic))
                except SnsqError as exc:
                    results.append(CheckResult(topic.name, "fan-out", "failed", exc.what))
                self._tick(total)
        finally:
            results.append(await self.cleanup())
            self._tick(total)
        return results


async def verify_plan(
    nc: Any,
    plan: Plan,
    *,
    timeout: float = 5.0,
    on_progress: Callable[[int, int | None], None] | None = None,
) -> list[CheckResult]:
    """Check every queue and topic of `plan` on the connected server with canaries.

    Returns one result per check; `on_progress(n, total)` is called as resources finish.
    """
    return await _Verifier(nc, plan, timeout, on_progress).run()


def result_counts(results: list[CheckResult]) -> dict[str, int]:
    return {k: sum(1 for r in results if r.result == k) for k in ("ok", "failed", "skipped")}
