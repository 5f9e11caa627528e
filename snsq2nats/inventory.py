"""The inventory: everything a migration needs to know about an SNS/SQS estate, as typed data.

`aws_scan` produces it from live AWS; `plan --inventory FILE` reads it back. The JSON shape is a
contract (`format_version`), so fields are only ever added; AWS's own attribute strings are kept
verbatim in `attributes` so nothing the scanner did not model is lost.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

FORMAT_VERSION = 1

# SQS defaults (developer guide): used when an attribute is absent from the answer.
DEFAULT_VISIBILITY_TIMEOUT = 30
DEFAULT_RETENTION_PERIOD = 345_600
DEFAULT_MAX_MESSAGE_SIZE = 1_048_576
DEFAULT_MAX_RECEIVE_COUNT = 10


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RedrivePolicy(Model):
    dead_letter_target_arn: str
    max_receive_count: int = DEFAULT_MAX_RECEIVE_COUNT


class RedriveAllowPolicy(Model):
    redrive_permission: Literal["allowAll", "denyAll", "byQueue"] = "allowAll"
    source_queue_arns: list[str] = Field(default_factory=list)


class Queue(Model):
    arn: str
    name: str
    url: str
    region: str
    account: str
    fifo: bool = False
    content_based_deduplication: bool = False
    deduplication_scope: Literal["messageGroup", "queue"] | None = None
    fifo_throughput_limit: Literal["perQueue", "perMessageGroupId"] | None = None
    visibility_timeout: int = DEFAULT_VISIBILITY_TIMEOUT
    message_retention_period: int = DEFAULT_RETENTION_PERIOD
    maximum_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    delay_seconds: int = 0
    receive_message_wait_time_seconds: int = 0
    redrive_policy: RedrivePolicy | None = None
    redrive_allow_policy: RedriveAllowPolicy | None = None
    kms_master_key_id: str | None = None
    kms_data_key_reuse_period_seconds: int | None = None
    sqs_managed_sse_enabled: bool = False
    policy: dict[str, Any] | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    approximate_messages: int = 0
    approximate_messages_not_visible: int = 0
    approximate_messages_delayed: int = 0
    created_timestamp: int | None = None
    last_modified_timestamp: int | None = None
    attributes: dict[str, str] = Field(default_factory=dict)


class ArchivePolicy(Model):
    message_retention_days: int


class Topic(Model):
    arn: str
    name: str
    region: str
    account: str
    fifo: bool = False
    content_based_deduplication: bool = False
    fifo_throughput_scope: Literal["Topic", "MessageGroup"] | None = None
    archive_policy: ArchivePolicy | None = None
    display_name: str | None = None
    delivery_policy: dict[str, Any] | None = None
    kms_master_key_id: str | None = None
    policy: dict[str, Any] | None = None
    tracing_config: str | None = None
    signature_version: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    attributes: dict[str, str] = Field(default_factory=dict)


Protocol = Literal[
    "sqs", "http", "https", "email", "email-json", "sms", "application", "lambda", "firehose"
]


class Subscription(Model):
    arn: str
    topic_arn: str
    protocol: str
    endpoint: str
    region: str
    account: str
    pending_confirmation: bool = False
    raw_message_delivery: bool = False
    filter_policy: str | None = None
    filter_policy_scope: Literal["MessageAttributes", "MessageBody"] = "MessageAttributes"
    redrive_policy: RedrivePolicy | None = None
    delivery_policy: dict[str, Any] | None = None
    replay_policy: dict[str, Any] | None = None
    subscription_role_arn: str | None = None
    attributes: dict[str, str] = Field(default_factory=dict)


WarningCode = Literal[
    "dangling-dlq",
    "dangling-endpoint",
    "dangling-topic",
    "dangling-policy",
    "deleted-during-scan",
    "access-denied",
    "unreadable-attribute",
    "pending-confirmation",
    "account-failed",
]


class ScanWarning(Model):
    code: WarningCode
    resource: str
    message: str


class Inventory(Model):
    format_version: int = FORMAT_VERSION
    generated_at: str
    regions: list[str]
    # Left out when empty: a one-account inventory keeps the shape it always had.
    accounts: list[str] = Field(default_factory=list, exclude_if=lambda v: not v)
    """The AWS accounts a several-account scan read in full (empty for a one-account scan,
    whose account is the one each resource names)."""
    queues: list[Queue] = Field(default_factory=list)
    topics: list[Topic] = Field(default_factory=list)
    subscriptions: list[Subscription] = Field(default_factory=list)
    warnings: list[ScanWarning] = Field(default_factory=list)

    def queue(self, arn: str) -> Queue | None:
        return next((q for q in self.queues if q.arn == arn), None)

    def topic(self, arn: str) -> Topic | None:
        return next((t for t in self.topics if t.arn == arn), None)

    def subscriptions_of(self, topic_arn: str) -> list[Subscription]:
        return [s for s in self.subscriptions if s.topic_arn == topic_arn]

    def account_ids(self) -> list[str]:
        """Every account the inventory holds a resource of, or read without finding one."""
        found = {q.account for q in self.queues} | {t.account for t in self.topics}
        found |= {s.account for s in self.subscriptions}
        return sorted(found | set(self.accounts))

    def to_json(self) -> dict[str, Any]:
        """JSON values, for the caller to serialise (the file's text: `files.document_json`)."""
        return self.model_dump(mode="json")

    def summary(self) -> dict[str, Any]:
        protocols: dict[str, int] = {}
        for sub in self.subscriptions:
            protocols[sub.protocol] = protocols.get(sub.protocol, 0) + 1
        return {
            "queues": len(self.queues),
            "fifo_queues": sum(q.fifo for q in self.queues),
            "queues_with_dlq": sum(q.redrive_policy is not None for q in self.queues),
            "topics": len(self.topics),
            "fifo_topics": sum(t.fifo for t in self.topics),
            "subscriptions": len(self.subscriptions),
            "subscriptions_by_protocol": dict(sorted(protocols.items())),
            "filtered_subscriptions": sum(s.filter_policy is not None for s in self.subscriptions),
            "warnings": len(self.warnings),
        }


def load_inventory(path: Path) -> Inventory:
    from snsq2nats.files import read_document

    return read_document(
        path,
        Inventory,
        what="inventory",
        remedy="run `snsq2nats scan -o FILE` (with this version of snsq2nats) and pass that file",
        version=FORMAT_VERSION,
    )
