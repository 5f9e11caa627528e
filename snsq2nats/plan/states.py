"""The live cutover state: where each queue's and topic's producers and consumers run now.

One record per moved resource in the JetStream KV bucket `snsq2nats_cutover`, replicated like
the streams, so every bridge process, `plan`, `status` and `runbook` read the same truth while
teams move over weeks. `snsq2nats cutover` writes it; a resource without a record is where the
mapping file's `cutover:` keys (or the default, everything on AWS) put it. The bucket keeps
each key's history, so every change says who made it, when, and from what to what.

Pure: records in, a `CutoverView` out (`current_view`: what the bridges and every command
run under). The bucket I/O lives with its users; the moves that change it are `cutover.moves`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from snsq2nats.aws.arns import parse_arn
from snsq2nats.plan.model import Plan
from snsq2nats.plan.routes import CutoverView
from snsq2nats.plan.rules import Cutover

CUTOVER_BUCKET = "snsq2nats_cutover"
CUTOVER_HISTORY = 64
"""Changes kept per resource (the KV history): a migration moves a resource a handful of times."""
RESOURCE_PREFIX = "resource."
QUEUE, TOPIC = "sqs-queue", "sns-topic"
"""The resource kinds a cutover moves."""

ResourceKindName = Literal["queue", "topic"]


class Change(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    by: str
    at: str
    command: str
    previous: Cutover


class CutoverRecord(BaseModel):
    """One resource's cutover state as stored (JSON); unknown fields are kept for later."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    arn: str
    kind: ResourceKindName
    name: str
    state: Cutover
    change: Change | None = None
    revision: int = 0
    """The bucket revision the record was read at (not stored)."""

    def to_bytes(self) -> bytes:
        return self.model_dump_json(exclude={"revision"}).encode()

    @classmethod
    def from_bytes(cls, data: bytes, revision: int) -> CutoverRecord:
        return cls.model_validate_json(data).model_copy(update={"revision": revision})


def parse_records(values: Mapping[str, Any]) -> dict[str, CutoverRecord]:
    """The bucket's `resource.*` values (`jetstream.state.KvValue`s) as records by ARN."""
    records = {}
    for entry in values.values():
        record = CutoverRecord.from_bytes(entry.value, entry.revision)
        records[record.arn] = record
    return records


def record_key(arn: str) -> str:
    """`resource.<sqs|sns>.<region>.<account>.<name>`: unique per resource, valid as a KV key."""
    parts = parse_arn(arn)
    return f"{RESOURCE_PREFIX}{parts.service}.{parts.region}.{parts.account}.{parts.resource}"


def view_of(records: Iterable[CutoverRecord], base: Mapping[str, Cutover]) -> CutoverView:
    """The state routes run under: the records over `base` (the plan's own state by ARN)."""
    states = dict(base)
    moved = set()
    for record in records:
        states[record.arn] = record.state
        moved.add(record.arn)
    return CutoverView(states, frozenset(moved))


def base_states(plan: Plan) -> dict[str, Cutover]:
    """Each queue's and topic's cutover state as the plan has it (mapping file or default)."""
    return {
        r.source_arn: Cutover(producers=r.producers or "aws", consumers=r.consumers or "aws")
        for r in plan.resources
        if r.kind in (QUEUE, TOPIC)
    }


def current_view(plan: Plan, records: Mapping[str, CutoverRecord]) -> CutoverView:
    return view_of(records.values(), base_states(plan))
