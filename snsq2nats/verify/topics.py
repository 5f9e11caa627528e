"""Topic checks: canaries on a topic's stream, and where each subscribed queue receives them.

Per exactly-filtered subscription a canary its filter selects and a near miss it must not, plus
one no filter selects; each queue must receive exactly what its stream source lets through.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass

from snsq2nats.aws.arns import subscription_topic
from snsq2nats.jetstream.spec import StreamSpec
from snsq2nats.jetstream.subjects import subject_matches
from snsq2nats.plan.model import Plan, Resource
from snsq2nats.plan.names import topic_pattern, topic_subjects
from snsq2nats.verify.canary import (
    Canary,
    CanaryRun,
    CheckResult,
    Collected,
    canary_subject,
    ms,
    near_miss,
)


@dataclass
class _Target:
    """A subscription delivering into a queue: where its canaries should (not) arrive."""

    sub: Resource
    stream: str
    consumer: str
    filters: list[str]  # empty: the plan wires no source, so nothing may arrive
    busy: str | None = None
    missing: str | None = None


def _subscriptions(plan: Plan, topic: Resource) -> list[Resource]:
    return [
        r
        for r in plan.resources
        if r.kind == "sns-subscription" and subscription_topic(r.source_arn) == topic.source_arn
    ]


def _emulated(plan: Plan, sub: Resource) -> bool:
    return any(
        route.kind == "filter-router" and route.source_arn == sub.source_arn
        for route in [*plan.routes, *plan.candidate_routes]
    )


def _source_filters(
    specs: dict[str, StreamSpec], queue_stream: str, topic_stream: str, everything: list[str]
) -> list[str]:
    """The subjects the plan lets flow from the topic stream into the queue stream.

    Read from the stream spec rather than the subscription resource: the spec is exactly
    what apply creates, including "no source at all" for subscriptions SNS would not
    deliver to (unconfirmed, invalid filter).
    """
    spec = specs.get(queue_stream)
    filters: list[str] = []
    for source in (spec.sources or []) if spec else []:
        if source.name != topic_stream:
            continue
        if source.subject_transforms:
            filters.extend(t.src for t in source.subject_transforms)
        else:
            filters.extend([source.filter_subject] if source.filter_subject else everything)
    return filters


async def check_topic(
    run: CanaryRun, topic: Resource, subscriptions: list[Resource] | None = None
) -> list[CheckResult]:
    """`subscriptions`: the topic's, when the caller indexed them (else searched for)."""
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
    if await run.stream_state(topic.stream) is None:
        return [
            CheckResult(name, "topic stream", "failed", f"stream {topic.stream} does not exist")
        ]
    template = topic.publish_subject or ""
    parts = template.split(".")
    prefix = ".".join(parts[: len(parts) - len(topic.subject_tokens)])
    all_subjects = topic_pattern(prefix, topic.subject_tokens)
    everything = topic_subjects(prefix)

    results: list[CheckResult] = []
    targets: list[_Target] = []
    subs = subscriptions if subscriptions is not None else _subscriptions(run.plan, topic)
    for sub in subs:
        if sub.stream is None or sub.consumer is None:
            why = next((f.note for f in sub.fidelity if f.verdict == "unsupported"), "")
            results.append(
                CheckResult(sub.name, "delivery", "skipped", f"not delivered by NATS: {why}")
            )
        elif _emulated(run.plan, sub):
            results.append(
                CheckResult(
                    sub.name,
                    "filter routing",
                    "skipped",
                    "skipped: evaluated by the bridge's filter router",
                )
            )
        else:
            filters = _source_filters(run.specs, sub.stream, topic.stream, everything)
            targets.append(_Target(sub, sub.stream, sub.consumer, filters))
    # Every queue stream fed from this topic (emulated ones via the bridge too) could hold
    # a stray canary afterwards; the sweep looks there.
    fed = {t.stream for t in targets} | {
        r.target_stream
        for r in [*run.plan.routes, *run.plan.candidate_routes]
        if r.kind == "filter-router" and r.stream == topic.stream and r.target_stream
    }

    # Per filtered subscription: a canary its first filter selects, and a near miss that
    # differs from it in one attribute value, so filters are checked in both directions.
    subjects: list[str] = []
    for target in targets:
        if target.filters and sorted(target.filters) != sorted(everything):
            subjects.append(canary_subject(target.filters[0]))
            miss = near_miss(target.filters[0], len(parts) - len(topic.subject_tokens))
            if miss is not None:
                subjects.append(miss)
    subjects.append(canary_subject(all_subjects))
    canaries = [run.new_canary(s) for s in dict.fromkeys(subjects)]

    def wants(target: _Target, canary: Canary) -> bool:
        return any(subject_matches(f, canary.subject) for f in target.filters)

    for target in targets:
        info = await run.consumer_info(target.stream, target.consumer)
        if isinstance(info, str):
            target.missing = info
        else:
            target.busy = run.busy(info)

    to_send: list[Canary] = []
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
            run.touch(stream, canary.subject)
        error = await run.publish(canary, topic.stream)
        if canary.seq and canary.stream == topic.stream:
            run.topic_canaries.append(canary)
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
            run.collect(t.stream, t.consumer, {c.id for c in to_send if wants(t, c)}, run.timeout)
            for t in live
        )
    )
    got_by_target = dict(zip((id(t) for t in live), collected, strict=True))
    for target in targets:
        results.extend(_judge_routing(run, target, to_send, got_by_target.get(id(target))))
    return results


def _judge_routing(
    run: CanaryRun, target: _Target, sent: list[Canary], got: Collected | None
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
        latency = ms(arrived - canary.published_at) if arrived is not None else None
        shown = ", ".join(target.filters) or "none (no source)"
        if expected and arrived is not None:
            yield CheckResult(name, check, "ok", "arrived via the stream source", latency)
        elif expected:
            yield CheckResult(
                name,
                check,
                "failed",
                f"did not arrive in {where} within {run.timeout:g}s: check the source "
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
