"""The filter router: SNS filter policies JetStream subjects cannot express, evaluated here.

A subscription whose policy does not compile to filter subjects (numeric ranges, prefixes,
anything-but, body scope, …) gets a bridge consumer on the topic stream instead of a stream
source. Each NATS-published topic message is evaluated exactly as SNS would
(snsq2nats.filterpolicy, attributes read back from the headers by the codec); a match is
published to the subscribed queue's subject, everything is acknowledged afterwards.

Headers decide, never subject tokens: a NATS producer sets each attribute as a header and may
leave a promoted token `~absent` (what `snsq2nats subject` prints without `--attr`); a token that
disagrees with its header is counted (`rerouted`, cause `subject-mismatch`) and the message
routed by the header. Plain headers (no data type recorded) are typed by
`filterpolicy.PLAIN_HEADER_RULE`; types recorded by the bridge (AWS-relayed) are kept. Each
message not delivered is counted by cause: `skipped` (no-match, aws-origin, canary,
body-not-json: what SNS would not deliver either) or `undeliverable` (not-a-number,
number-out-of-range, evaluation-error), which is also recorded in NATS for `status`.

Exactly once: the copy's `Nats-Msg-Id` is `<topic stream>:<stream seq>`, so a restart that
re-delivers a message the router had already published (crash before the ack) is absorbed by
the queue stream's duplicate window. The body goes over raw: NATS consumers of the queue read
the raw body with attributes as headers, whatever RawMessageDelivery said on AWS.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING

from snsq2nats import filterpolicy
from snsq2nats.bridge.codec import (
    CANARY_HEADER,
    ORIGIN_HEADER,
    headers_to_attributes,
    plain_names,
    string_attributes,
    topic_copy,
)
from snsq2nats.bridge.context import BridgeContext
from snsq2nats.bridge.pull import (
    PullSource,
    ack,
    nak,
    nak_delay,
    publish_with_retry,
    require_consumer,
    route_binding,
)
from snsq2nats.bridge.undeliverable import Recorder
from snsq2nats.errors import SnsqError
from snsq2nats.jetstream.subjects import subject_in
from snsq2nats.plan.model import Route

if TYPE_CHECKING:
    from nats.aio.msg import Msg

__all__ = ["run_filter_router"]

log = logging.getLogger(__name__)

# Messages fetched per pull; each is one publish, so this is also the pipelining depth.
FETCH_BATCH = 100
# Reads, half a second apart, waiting for the stopping nats-to-sns relay's last batch.
SWITCH_SETTLE_READS = 60

RULE_HINT = "(the policy compares it as a number: " + filterpolicy.PLAIN_HEADER_RULE + ")"


def _json_object(body: bytes | None) -> bool:
    try:
        return isinstance(json.loads(body or b""), dict)
    except ValueError:
        return False


class _Router:
    def __init__(self, ctx: BridgeContext, route: Route) -> None:
        self.ctx = ctx
        self.route = route
        self.metrics = ctx.route_metrics(route)
        stream, consumer = route_binding(route)
        if not route.filter_policy or not route.subject:
            raise SnsqError(
                "the filter-router route has no filter policy or target subject",
                where=f"route {route.name}",
                hint="re-run `snsq2nats plan`",
            )
        if route.filter_policy_scope not in ("MessageBody", "MessageAttributes"):
            raise SnsqError(
                f"unknown FilterPolicyScope {route.filter_policy_scope!r}",
                where=f"route {route.name}",
                hint="SNS knows MessageAttributes and MessageBody; re-scan and re-plan",
            )
        scope: filterpolicy.Scope = (
            "MessageBody" if route.filter_policy_scope == "MessageBody" else "MessageAttributes"
        )
        # Parsed once: evaluation is then a compiled matcher per message.
        self.policy = filterpolicy.parse_policy(
            route.filter_policy, scope=scope, source=route.source_arn
        )
        # Plain headers of these attributes are Numbers when they parse as one: the topic's
        # (one type per attribute, as on SNS), and this policy's for a plan written before
        # routes carried them.
        self.numeric = set(route.number_attributes) | filterpolicy.numeric_keys(self.policy)
        self.reads = frozenset(self.policy.keys) if scope == "MessageAttributes" else frozenset()
        self.recorder = Recorder(ctx.home_nc, route.name)
        self.subject = route.subject
        self.source = PullSource(ctx, route, stream, consumer)
        self.gate = asyncio.Semaphore(1 if route.fifo else max(1, ctx.max_in_flight))

    async def run(self) -> None:
        await require_consumer(self.ctx, self.route, self.source.stream, self.source.consumer)
        try:
            while not self.ctx.stopping.is_set():
                size = 1 if self.route.fifo else min(FETCH_BATCH, max(1, self.ctx.max_in_flight))
                msgs = await self.source.fetch(size)
                if not msgs:
                    continue
                if self.ctx.stopping.is_set():
                    await asyncio.gather(*(nak(m) for m in msgs))
                    break
                if self.route.fifo:
                    for msg in msgs:  # in order: a FIFO queue's groups keep publish order
                        await self._route(msg)
                else:
                    await asyncio.gather(*(self._route(m) for m in msgs))
        finally:
            await self.source.close()

    async def _route(self, msg: Msg) -> None:
        async with self.gate:
            if self.ctx.stopping.is_set():
                await nak(msg)
                return
            headers: dict[str, str] = dict(msg.headers or {})
            if headers.get(ORIGIN_HEADER, "").lower() == "aws" or (
                self.route.relay_subjects and not subject_in(msg.subject, self.route.relay_subjects)
            ):
                # SNS filtered AWS-published messages itself and delivered them to the queue,
                # which sqs-to-nats relays; routing them here too would make a second copy.
                await self._skip(msg, "aws-origin")
                return
            if CANARY_HEADER in headers:
                # verify's canaries test NATS's own routing; copying one would leave it behind.
                await self._skip(msg, "canary")
                return
            written = string_attributes(headers_to_attributes(headers))
            # Headers decide, always: a promoted subject token only says the same thing again.
            self._check_subject(msg, written)
            attributes, problems = filterpolicy.type_plain(
                written, plain_names(headers), self.numeric
            )
            # Only a value this policy reads can leave it undecided.
            problems = [p for p in problems if p.attribute in self.reads]
            try:
                matched = self.policy.matches(attributes, msg.data)
            except Exception as exc:  # a policy engine bug must not stop the route
                self.metrics.error()
                log.error("%s: evaluating the policy failed: %r", self.route.name, exc)
                await self._undeliverable(msg, "evaluation-error", repr(exc))
                return
            if matched:
                await self._forward(msg, headers)
            elif problems:
                # SNS would have refused such a Number at publish; never a silent skip.
                first = problems[0]
                await self._undeliverable(
                    msg, first.cause, f"{first.attribute}={first.value!r} " + RULE_HINT
                )
            elif self.policy.scope == "MessageBody" and not _json_object(msg.data):
                await self._skip(msg, "body-not-json")
            else:
                await self._skip(msg, "no-match")

    def _check_subject(self, msg: Msg, written: dict[str, filterpolicy.MessageAttribute]) -> None:
        """Count a promoted subject token that disagrees with its header (or names a value no
        header has): the message is routed by its headers, as SNS routes by attributes."""
        promoted = self.route.subject_tokens
        if not promoted:
            return
        tokens = msg.subject.split(".")[-len(promoted) :]
        expected = filterpolicy.subject_for(written, promoted, "x").split(".")[1:]
        for name, token, wanted in zip(promoted, tokens, expected, strict=False):
            if token != filterpolicy.ABSENT_TOKEN and token != wanted:
                seen = self.metrics.rerouted_by.get("subject-mismatch", 0) + 1
                self.metrics.rerouted_by["subject-mismatch"] = seen
                if seen & (seen - 1) == 0:  # the 1st, 2nd, 4th, …: a producer's habit, not spam
                    log.warning(
                        "%s: %s carries %s=%s in its subject but %s in its headers: routed by "
                        "the headers (%d such message(s) so far)",
                        self.route.name,
                        msg.subject,
                        name,
                        token,
                        "no header" if wanted == filterpolicy.ABSENT_TOKEN else wanted,
                        seen,
                    )
                return

    async def _skip(self, msg: Msg, cause: str) -> None:
        if await ack(msg, self.ctx.timings.ack_timeout):
            self.metrics.skip(cause)
        else:
            self.metrics.error()

    async def _undeliverable(self, msg: Msg, cause: str, detail: str) -> None:
        meta = msg.metadata
        self.metrics.undeliverable(cause)
        log.error(
            "%s: undeliverable %s:%d (%s): %s",
            self.route.name,
            meta.stream,
            meta.sequence.stream,
            cause,
            detail,
        )
        await self.recorder.add(cause, meta.stream, meta.sequence.stream, detail)
        if not await ack(msg, self.ctx.timings.ack_timeout):
            self.metrics.error()

    async def _forward(self, msg: Msg, original: dict[str, str]) -> None:
        meta = msg.metadata
        subject, headers = topic_copy(
            original,
            meta.stream,
            meta.sequence.stream,
            self.route.name,
            self.subject,
            fifo=self.route.fifo,
        )
        started = asyncio.get_running_loop().time()
        self.metrics.in_flight += 1
        try:
            published = await publish_with_retry(
                self.ctx,
                subject,
                msg.data or b"",
                headers,
                stream=self.route.target_stream,
                # The subscribed queue's account when it is not the topic's.
                nc=self.ctx.target_nc,
            )
        finally:
            self.metrics.in_flight -= 1
        if not published:
            self.metrics.error()
            await nak(msg, None if self.ctx.stopping.is_set() else nak_delay(msg))
            return
        if await ack(msg, self.ctx.timings.ack_timeout):
            latency = asyncio.get_running_loop().time() - started
            self.metrics.delivered(1, len(msg.data or b""), latency)
            self.ctx.count_and_check_limit()
        else:
            self.metrics.error()


async def run_filter_router(ctx: BridgeContext, route: Route) -> None:
    """Evaluate route.filter_policy on the topic stream and publish matches to route.subject."""
    await _Router(ctx, route).run()
