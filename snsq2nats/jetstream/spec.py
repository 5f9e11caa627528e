"""Desired JetStream objects: the fields snsq2nats manages, in the server's own JSON shape.

Keys are the server's snake_case config keys and durations are integer nanoseconds, so a spec
goes to `$JS.API.STREAM.CREATE` unchanged and a live config compares field by field. Only the
fields listed here are managed; anything else on a live object is the server's or a person's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

NS = 1_000_000_000
SOURCE_KEY = "snsq2nats.source"
"""Metadata on a queue's or topic's own stream and on a queue's worker consumer: the source ARN."""
ROUTE_KEY = "snsq2nats.route"
"""Metadata on a bridge-owned stream or consumer: the name of the route that owns it."""
FOR_KEY = "snsq2nats.for"
"""Metadata on a bridge-owned stream or consumer: the ARN of the resource its route serves."""
PARTITION_KEY = "snsq2nats.partition"
"""Metadata on each worker durable of a partitioned FIFO queue: its partition, `0`…`N-1`."""
PARTITIONS_KEY = "snsq2nats.partitions"
"""Metadata next to `snsq2nats.partition`: how many partitions the queue has."""


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def to_api(self) -> dict[str, Any]:
        """The request body the JetStream API takes (unset optional fields left out)."""
        return self.model_dump(mode="json", exclude_none=True)


class SubjectTransform(Spec):
    src: str
    dest: str


class ExternalSource(Spec):
    """A stream of another NATS account: the prefix its JetStream API is imported under and
    the subject prefix the sourcing consumer delivers on (both imported from that account)."""

    api: str
    deliver: str


class StreamSource(Spec):
    name: str
    opt_start_seq: int | None = None
    """Set by apply when a source is added to a stream, never by the mapping (see apply)."""
    filter_subject: str | None = None
    subject_transforms: list[SubjectTransform] | None = None
    # A source in another NATS account (`accounts: {nats: per-account}`), and where apply
    # starts it (its origin's sequence is not readable from here); left out otherwise.
    opt_start_time: str | None = Field(default=None, exclude_if=lambda v: v is None)
    external: ExternalSource | None = Field(default=None, exclude_if=lambda v: v is None)


class Placement(Spec):
    cluster: str | None = None
    tags: list[str] | None = None


class StreamSpec(Spec):
    name: str
    description: str | None = None
    subjects: list[str] = Field(default_factory=list)
    retention: Literal["limits", "interest", "workqueue"] = "limits"
    storage: Literal["file", "memory"] = "file"
    num_replicas: int = 1
    max_age: int = 0
    max_msgs: int = -1
    max_bytes: int = -1
    max_msg_size: int = -1
    max_msgs_per_subject: int | None = None
    discard: Literal["old", "new"] = "old"
    duplicate_window: int = 120 * NS
    allow_msg_schedules: bool | None = None
    allow_rollup_hdrs: bool | None = None
    allow_direct: bool | None = None
    sources: list[StreamSource] | None = None
    placement: Placement | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    # Left out of every document when unset, so plans without partitions stay as they were.
    subject_transform: SubjectTransform | None = Field(default=None, exclude_if=lambda v: v is None)
    """A partitioned FIFO queue: `<base>.<group>` stored as `<base>.<partition>.<group>`."""


class ConsumerSpec(Spec):
    stream_name: str
    durable_name: str
    description: str | None = None
    deliver_policy: Literal["all", "new", "last", "by_start_sequence"] = "all"
    opt_start_seq: int | None = None
    """Set by apply when it anchors a bridge consumer planned as "new" (see apply)."""
    ack_policy: Literal["explicit", "none", "all"] = "explicit"
    ack_wait: int = 30 * NS
    max_deliver: int = -1
    max_ack_pending: int = 1000
    filter_subjects: list[str] | None = None
    num_replicas: int = 0
    metadata: dict[str, str] = Field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.stream_name}/{self.durable_name}"

    def to_api(self) -> dict[str, Any]:
        """The consumer config; the stream is part of the request subject, not the config."""
        body = super().to_api()
        del body["stream_name"]
        return body


class ServerInfo(Spec):
    reachable: bool
    url: str | None = None
    version: str | None = None
    cluster: str | None = None
    note: str | None = None


@dataclass
class LiveStream:
    """A stream as the server reports it; configs stay raw dicts so nothing is lost."""

    config: dict[str, Any]
    messages: int = 0
    bytes: int = 0
    consumers: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class LiveState:
    streams: dict[str, LiveStream]
    server: ServerInfo


def version_tuple(version: str | None) -> tuple[int, ...] | None:
    """`2.12.1` / `v2.12` as numbers; None when there is no version or it does not parse."""
    if not version:
        return None
    match = re.match(r"v?(\d+)\.(\d+)(?:\.(\d+))?", version.strip())
    if match is None:
        return None
    return tuple(int(g or 0) for g in match.groups())
