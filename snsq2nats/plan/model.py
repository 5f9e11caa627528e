"""The plan document: what the estate becomes, how faithfully, and what must change.

`plan -o plan.json` writes it, `apply plan.json` executes exactly it, `bridge --plan` reads its
routes. The JSON shape is a contract (`format_version`); fields are only ever added.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from snsq2nats.jetstream.spec import ConsumerSpec, ServerInfo, StreamSpec
from snsq2nats.plan.access import Access
from snsq2nats.plan.names import partition_durables

FORMAT_VERSION = 1

Verdict = Literal["exact", "approximate", "emulated", "unsupported"]
VERDICT_ORDER: dict[str, int] = {"unsupported": 0, "emulated": 1, "approximate": 2, "exact": 3}
ResourceKind = Literal["sqs-queue", "sns-topic", "sns-subscription"]
Action = Literal["create", "update", "replace", "delete", "noop"]
RouteKind = Literal[
    "sqs-to-nats", "sns-to-nats", "nats-to-sqs", "nats-to-sns", "dlq-mover", "filter-router"
]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Fidelity(Model):
    """One source attribute and what it became."""

    attribute: str
    value: str | None = None
    verdict: Verdict
    target: str | None = None
    note: str
    manual_step: str | None = None


class Resource(Model):
    source_arn: str
    kind: ResourceKind
    name: str
    stream: str | None = None
    consumer: str | None = None
    publish_subject: str | None = None
    subject_tokens: list[str] = Field(default_factory=list)
    filter_subjects: list[str] | None = None
    fidelity: list[Fidelity] = Field(default_factory=list)
    # Where the resource's producers and (queues) consumers live now, from the cutover state.
    producers: Literal["aws", "nats", "both"] | None = None
    consumers: Literal["aws", "nats"] | None = None
    # Who its resource policy lets in, as NATS roles (queues and topics with a policy).
    access: Access | None = None
    # A partitioned FIFO queue: its worker durables, partition i at index i (`consumer` is
    # partition 0's). Left out of the document for every other resource.
    partition_consumers: list[str] | None = Field(default=None, exclude_if=lambda v: v is None)

    @property
    def durables(self) -> list[str]:
        """The durables its workers bind to: one, or one per partition."""
        if self.partition_consumers:
            return list(self.partition_consumers)
        return [self.consumer] if self.consumer else []

    @property
    def worst_verdict(self) -> Verdict:
        if not self.fidelity:
            return "exact"
        return min((f.verdict for f in self.fidelity), key=lambda v: VERDICT_ORDER[v])


class Route(Model):
    """A live-traffic path the bridge runs during cutover."""

    name: str
    kind: RouteKind
    source_arn: str
    aws_arn: str
    stream: str | None = None
    consumer: str | None = None
    subject: str | None = None
    fifo: bool = False
    raw_delivery: bool = True
    filter_policy: str | None = None
    filter_policy_scope: str = "MessageAttributes"
    subject_tokens: list[str] = Field(default_factory=list)
    target_stream: str | None = None
    # nats-to-sqs: the queue's own subjects (copies sourced from topics are not relayed);
    # nats-to-sns / filter-router: the topic's NATS-origin space; sns-to-nats: the `aws.` space.
    relay_subjects: list[str] = Field(default_factory=list)
    # sns-to-nats: the SQS queue the bridge owns, subscribed to the topic with raw delivery.
    bridge_queue: str | None = None
    # dlq-mover: the durable on the advisory stream that holds this route's MAX_DELIVERIES
    # advisories while no bridge runs.
    advisory_stream: str | None = None
    advisory_consumer: str | None = None
    # nats-to-sqs: topics whose NATS-published messages reach the queue stream directly (a
    # source or a filter router), so the relay runs while they have producers on NATS.
    feeds: list[str] = Field(default_factory=list)
    # nats-to-sqs / dlq-mover of a partitioned FIFO queue: `consumer` is the base name and the
    # route reads each partition's durable (see `durables`). Left out of the document when 1.
    partitions: int = Field(default=1, exclude_if=lambda v: v == 1)
    # filter-router of a topic fanning out through SNS until `cutover finish` switches it to
    # stream sources: runs from the switch on, from the sequence the switch sets its consumer
    # to. Left out of the document when False.
    at_finish: bool = Field(default=False, exclude_if=lambda v: not v)
    # nats-to-sns / filter-router: attributes a filter policy of the topic compares as numbers;
    # a producer's plain header of one is a Number when it parses as one
    # (`filterpolicy.PLAIN_HEADER_RULE`). Left out of the document when empty.
    number_attributes: list[str] = Field(default_factory=list, exclude_if=lambda v: not v)

    @property
    def durables(self) -> list[str]:
        """The queue durables the route reads: `consumer`, or one per partition."""
        return partition_durables(self.consumer, self.partitions) if self.consumer else []


class Desired(Model):
    """The pure translation of an inventory: no live state involved yet."""

    streams: list[StreamSpec] = Field(default_factory=list)
    consumers: list[ConsumerSpec] = Field(default_factory=list)
    resources: list[Resource] = Field(default_factory=list)
    routes: list[Route] = Field(default_factory=list)
    candidate_routes: list[Route] = Field(default_factory=list)


class FieldDiff(Model):
    field: str
    live: Any = None
    desired: Any = None


class Change(Model):
    action: Action
    type: Literal["stream", "consumer"]
    name: str
    stream: str
    source_arn: str | None = None
    reason: str
    diff: list[FieldDiff] = Field(default_factory=list)
    config: dict[str, Any] | None = None
    live_messages: int | None = None


class Grant(Model):
    """One export (in the origin account) or import (in the sourcing account)."""

    type: Literal["service", "stream"]
    subject: str
    """The subject in the exporting account."""
    local_subject: str | None = None
    """Imports: where the subject shows in the importing account (None: the same subject)."""


class Crossing(Model):
    """An edge between two AWS accounts and how it crosses between their NATS accounts."""

    kind: Literal["subscription"] = "subscription"
    source_arn: str
    """The topic (the edge's origin)."""
    target_arn: str
    """The queue it fans out to."""
    from_account: str
    to_account: str
    how: Literal["stream-source", "bridge"]
    """`stream-source`: the queue stream sources the topic stream across accounts with the
    exports and imports below; `bridge`: the bridge relays it (filter router, SNS fan-out), with
    one connection per account (not crossed on NATS)."""
    origin_stream: str | None = None
    target_stream: str | None = None
    exports: list[Grant] = Field(default_factory=list)
    imports: list[Grant] = Field(default_factory=list)


class NatsAccount(Model):
    """One NATS account of a per-account plan, with what it holds and its JetStream limits."""

    name: str
    aws_account: str | None = None
    streams: list[str] = Field(default_factory=list)
    consumers: list[str] = Field(default_factory=list)
    """`<stream>/<durable>`."""
    max_streams: int = 0
    max_consumers: int = 0
    disk_storage: int = 0
    memory_storage: int = 0


class Plan(Model):
    format_version: int = FORMAT_VERSION
    generated_at: str
    inventory_generated_at: str | None = None
    server: ServerInfo
    resources: list[Resource] = Field(default_factory=list)
    changes: list[Change] = Field(default_factory=list)
    routes: list[Route] = Field(default_factory=list)
    """The routes the bridge runs in the plan's cutover state."""
    candidate_routes: list[Route] = Field(default_factory=list)
    """Every route some cutover state runs: a bridge following the live cutover state (the
    `snsq2nats_cutover` bucket) picks from these without a new plan."""
    cutover_origin: dict[str, str] = Field(default_factory=dict)
    """Where each moved resource's cutover state came from ("live" or "mapping"), by ARN."""
    streams: list[StreamSpec] = Field(default_factory=list)
    consumers: list[ConsumerSpec] = Field(default_factory=list)
    # `accounts: {nats: per-account}` (plan.accounts): the NATS accounts and every edge between
    # two AWS accounts. Left out of the document otherwise, so one-account plans stay as were.
    nats_accounts: list[NatsAccount] = Field(default_factory=list, exclude_if=lambda v: not v)
    crossings: list[Crossing] = Field(default_factory=list, exclude_if=lambda v: not v)

    def account_of(self, stream: str) -> str | None:
        """The NATS account holding `stream` in a per-account plan (None: one account)."""
        return next((a.name for a in self.nats_accounts if stream in a.streams), None)

    @property
    def pending(self) -> list[Change]:
        return [c for c in self.changes if c.action != "noop"]

    def consumer(self, stream: str | None, durable: str | None) -> ConsumerSpec | None:
        """The planned consumer `durable` of `stream`, if the plan has it."""
        return next(
            (c for c in self.consumers if (c.stream_name, c.durable_name) == (stream, durable)),
            None,
        )

    def counts(self) -> dict[str, int]:
        counts = {a: 0 for a in ("create", "update", "replace", "delete", "noop")}
        for change in self.changes:
            counts[change.action] += 1
        return counts

    def to_json(self) -> dict[str, Any]:
        """JSON values, for the caller to serialise (the file's text: `files.document_json`)."""
        return self.model_dump(mode="json")


def load_plan(path: Path) -> Plan:
    from snsq2nats.files import read_document

    return read_document(
        path,
        Plan,
        what="plan",
        remedy="run `snsq2nats plan -o FILE` (with this version of snsq2nats) and pass that file",
        version=FORMAT_VERSION,
    )
