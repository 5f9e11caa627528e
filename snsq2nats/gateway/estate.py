"""The queues the gateway serves: the applied plan's SQS queues, looked up as clients name them.

A client names a queue by its URL (`http://HOST:PORT/<account>/<name>`) or, in GetQueueUrl, by
its name and optionally its owner's account. The plan knows each queue's ARN (account, region,
name), its stream, its worker durables and the consumer settings that stand for its SQS
attributes; everything the gateway answers about a queue comes from there, never from AWS.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from snsq2nats.aws.arns import parse_arn
from snsq2nats.jetstream.spec import NS
from snsq2nats.plan.model import Plan

SQS_MAX_MESSAGE_SIZE = 262_144
"""What a queue takes when the plan does not say (the historical SQS maximum)."""
GROUP_SUFFIX = ".<MessageGroupId>"


@dataclass(frozen=True)
class GatewayQueue:
    name: str
    account: str
    region: str
    arn: str
    stream: str
    durables: tuple[str, ...]
    """Where receivers read: the one worker durable, or one per partition."""
    subject_base: str
    fifo: bool
    visibility_timeout: int
    """Seconds: the durable's ack wait, which is what a received message stays invisible for."""
    max_message_size: int
    max_receive_count: int
    max_in_flight: int
    """Each durable's max_ack_pending: a receive asks for no more (a FIFO queue's is 1)."""
    """The durable's max_deliver (-1: unlimited)."""
    retention_seconds: int
    duplicate_window_seconds: int
    content_based_deduplication: bool = False
    receive_wait_seconds: int = 0
    delay_seconds: int = 0
    """The queue's DelaySeconds: what a message sent without its own delay waits."""
    schedules: bool = False
    """The stream takes message schedules: how a delay is kept (nats-server 2.12+)."""
    """The queue's ReceiveMessageWaitTimeSeconds: a receive's wait when it names none."""
    recorded: tuple[tuple[str, str], ...] = ()
    """SQS attributes as the scan recorded them (the plan's fidelity), answered as they were:
    encryption, redrive, FIFO throughput. Left out when the scan recorded nothing to say."""

    def url(self, base: str) -> str:
        return f"{base.rstrip('/')}/{self.account}/{self.name}"


class Estate:
    """The applied queues by name; a name may exist in several accounts (several scanned)."""

    def __init__(self, queues: Iterable[GatewayQueue], plan: Plan | None = None) -> None:
        self.queues = sorted(queues, key=lambda q: (q.name, q.account))
        self._by_key = {(q.account, q.name): q for q in self.queues}
        self.plan = plan
        """The plan served: SNS requests read its topics and their subscribers."""

    @classmethod
    def from_plan(cls, plan: Plan) -> Estate:
        streams = {s.name: s for s in plan.streams}
        queues = []
        for resource in plan.resources:
            if resource.kind != "sqs-queue" or not resource.stream or not resource.durables:
                continue
            arn = parse_arn(resource.source_arn)
            stream = streams.get(resource.stream)
            consumer = plan.consumer(resource.stream, resource.durables[0])
            source = {f.attribute: f.value for f in resource.fidelity}
            subject = (resource.publish_subject or "").removesuffix(GROUP_SUFFIX)
            # SQS's own limit, on what SQS counts: the stream's max_msg_size leaves room for
            # the headers (plan/queues.py), so it binds only where it is lower (a mapping's
            # limit, or a plan made before the room was planned).
            sizes = [_int(source.get("MaximumMessageSize"))]
            sizes.append(stream.max_msg_size if stream else 0)
            max_size = min((s for s in sizes if s > 0), default=0)
            queues.append(
                GatewayQueue(
                    name=resource.name,
                    account=arn.account,
                    region=arn.region,
                    arn=resource.source_arn,
                    stream=resource.stream,
                    durables=tuple(resource.durables),
                    subject_base=subject,
                    fifo=resource.name.endswith(".fifo"),
                    visibility_timeout=round(consumer.ack_wait / NS) if consumer else 30,
                    max_message_size=max_size or SQS_MAX_MESSAGE_SIZE,
                    max_receive_count=consumer.max_deliver if consumer else -1,
                    max_in_flight=consumer.max_ack_pending if consumer else 1000,
                    retention_seconds=round(stream.max_age / NS) if stream else 345_600,
                    duplicate_window_seconds=round(stream.duplicate_window / NS) if stream else 120,
                    content_based_deduplication=source.get("ContentBasedDeduplication") == "true",
                    receive_wait_seconds=_int(source.get("ReceiveMessageWaitTimeSeconds")),
                    delay_seconds=_int(source.get("DelaySeconds")),
                    schedules=bool(stream and stream.allow_msg_schedules),
                    recorded=tuple(
                        recorded_attributes(source, fifo=resource.name.endswith(".fifo")).items()
                    ),
                )
            )
        return cls(queues, plan)

    def by_name(self, name: str, account: str | None = None) -> GatewayQueue | None:
        if account:
            return self._by_key.get((account, name))
        return next((q for q in self.queues if q.name == name), None)

    def by_url(self, url: str) -> GatewayQueue | None:
        """The queue a URL names; only its path counts (clients reach the gateway under many
        host names: a load balancer's, a pod's, localhost)."""
        parts = [p for p in urlsplit(url).path.split("/") if p]
        if len(parts) != 2:
            return None
        return self._by_key.get((parts[0], parts[1]))


def recorded_attributes(source: Mapping[str, str | None], *, fifo: bool) -> dict[str, str]:
    """GetQueueAttributes' answers the plan keeps, from its fidelity entries (the queue's
    attributes at scan time), in the form SQS gives them."""
    out: dict[str, str] = {}
    # The plan records SSE only when it is on (a KMS key replaces it), as SQS reports "false"
    # for a queue encrypted with KMS or not at all.
    out["SqsManagedSseEnabled"] = "true" if source.get("SqsManagedSseEnabled") else "false"
    kms = source.get("KmsMasterKeyId")
    if kms:
        out["KmsMasterKeyId"] = kms
        out["KmsDataKeyReusePeriodSeconds"] = source.get("KmsDataKeyReusePeriodSeconds") or "300"
    target = source.get("RedrivePolicy.deadLetterTargetArn")
    count = source.get("RedrivePolicy.maxReceiveCount")
    if target and count:
        policy = {"deadLetterTargetArn": target, "maxReceiveCount": _int(count)}
        out["RedrivePolicy"] = json.dumps(policy, separators=(",", ":"))
    permission = source.get("RedriveAllowPolicy")
    # byQueue names its source queues, which the plan does not keep: better absent than wrong.
    if permission in ("allowAll", "denyAll"):
        out["RedriveAllowPolicy"] = json.dumps(
            {"redrivePermission": permission}, separators=(",", ":")
        )
    if fifo:
        # SQS's defaults, which a queue created before high throughput existed also reports.
        out["DeduplicationScope"] = source.get("DeduplicationScope") or "queue"
        out["FifoThroughputLimit"] = source.get("FifoThroughputLimit") or "perQueue"
    return out


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0
