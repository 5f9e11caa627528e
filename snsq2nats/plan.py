"""The plan document: what the estate becomes, how faithfully, and what must change.

`plan -o plan.json` writes it, `apply plan.json` executes exactly it, `bridge --plan` reads its
routes. The JSON shape is a contract (`format_version`); fields are only ever added.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from snsq2nats.errors import InventoryFileError
from snsq2nats.spec import ConsumerSpec, StreamSpec

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


class Desired(Model):
    """The pure translation of an inventory: no live state involved yet."""

    streams: list[StreamSpec] = Field(default_factory=list)
    consumers: list[ConsumerSpec] = Field(default_factory=list)
    resources: list[Resource] = Field(default_factory=list)
    routes: list[Route] = Field(default_factory=list)


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


class ServerInfo(Model):
    reachable: bool
    url: str | None = None
    version: str | None = None
    cluster: str | None = None
    note: str | None = None


class Plan(Model):
    format_version: int = FORMAT_VERSION
    generated_at: str
    inventory_generated_at: str | None = None
    server: ServerInfo
    resources: list[Resource] = Field(default_factory=list)
    changes: list[Change] = Field(default_factory=list)
    routes: list[Route] = Field(default_factory=list)
    streams: list[StreamSpec] = Field(default_factory=list)
    consumers: list[ConsumerSpec] = Field(default_factory=list)

    @property
    def pending(self) -> list[Change]:
        return [c for c in self.changes if c.action != "noop"]

    def counts(self) -> dict[str, int]:
        counts = {a: 0 for a in ("create", "update", "replace", "delete", "noop")}
        for change in self.changes:
            counts[change.action] += 1
        return counts

    def to_json(self) -> str:
        return self.model_dump_json(indent=2) + "\n"


def load_plan(path: Path) -> Plan:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InventoryFileError(
            "plan file not found", where=str(path), hint="run `snsq2nats plan -o FILE` first"
        ) from None
    except json.JSONDecodeError as exc:
        raise InventoryFileError(
            f"plan file is not valid JSON ({exc.msg} at line {exc.lineno})",
            where=str(path),
            hint="the file may be damaged or truncated; run `snsq2nats plan -o FILE` again",
        ) from None
    if not isinstance(raw, dict) or raw.get("format_version") != FORMAT_VERSION:
        raise InventoryFileError(
            f"not a snsq2nats plan of format_version {FORMAT_VERSION}",
            where=str(path),
            hint="pass the file written by `snsq2nats plan -o`",
        )
    try:
        return Plan.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise InventoryFileError(
            f"invalid plan: {first['msg']}",
            where=f"{path}: {loc}",
            hint="run `snsq2nats plan -o FILE` again",
        ) from None
