"""NATS names and subjects for AWS resources: valid, deterministic, never merging two sources.

SQS and SNS names use `[A-Za-z0-9_-]` plus a `.fifo` suffix; JetStream stream and consumer
names allow `[A-Za-z0-9_-]`. The only character to drop is the dot of `.fifo`, so FIFO resources
get their own template (`sqsfifo_…`) instead of a rewritten name: `payments.fifo` and
`payments_fifo` become `sqsfifo_payments` and `sqs_payments_fifo`, distinct by construction.
Whatever a user's rename or template produces is still checked: an invalid name or a name two
sources share is an error that names both sources, never a silent merge.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from snsq2nats.errors import MappingError

SCHEDULE_TOKEN = "_sched"
"""The subject token under which a delayed queue takes scheduled messages."""
NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")
TOKEN_RE = re.compile(r"^[^.*>\s]+$")
MAX_NAME_LENGTH = 255
PARTITION_SUFFIX = "-p"
"""A partitioned FIFO queue's durables: `<consumer>-p0` … `<consumer>-p<N-1>`."""


def partition_durables(consumer: str, partitions: int) -> list[str]:
    """The worker durables of a queue: its one consumer, or one per partition."""
    if partitions <= 1:
        return [consumer]
    return [f"{consumer}{PARTITION_SUFFIX}{i}" for i in range(partitions)]


def partition_transform_dest(subject_base: str, partitions: int) -> str:
    """Where the stream stores `<base>.<group>`: the partition token goes before the group, so
    the group stays the last token (what workers, the bridge and the DLQ mover read)."""
    # The mapping's arguments are wildcard positions, not token positions: `<base>.*` has one.
    return f"{subject_base}.{{{{partition({partitions},1)}}}}.{{{{wildcard(1)}}}}"


def partition_subject(subject_base: str, partition: int) -> str:
    """The stored subjects of one partition, which its durable filters on."""
    return f"{subject_base}.{partition}.*"


def topic_pattern(subject: str, promoted: Sequence[str]) -> str:
    """The subjects the plan tells producers to publish on: one `*` per promoted attribute."""
    return ".".join([subject, *("*" for _ in promoted)])


def topic_subjects(subject: str) -> list[str]:
    """Every subject a topic's messages may be published on, whatever attributes are promoted
    to tokens: the bare subject and any tokens after it.

    Headers decide routing, tokens only repeat them for subscribers that select by subject. So
    a re-plan that promotes another attribute changes the subject `snsq2nats subject` prints,
    never what the topic stream takes or what its readers (sources, filter routers, the SNS
    relay) select: producers still on the previous scheme keep working, and nothing already
    published falls outside a reader's filter when apply updates it.
    """
    return [subject, f"{subject}.>"]


def base_name(aws_name: str) -> tuple[str, bool]:
    """The name without `.fifo`, and whether it was FIFO."""
    if aws_name.endswith(".fifo"):
        return aws_name[: -len(".fifo")], True
    return aws_name, False


def render(template: str, *, name: str, region: str, account: str, where: str) -> str:
    try:
        return template.format(name=name, region=region, account=account)
    except (KeyError, IndexError, ValueError) as exc:
        raise MappingError(
            f"naming template {template!r} cannot be filled ({exc})",
            where=where,
            hint="templates may use {name}, {region} and {account}",
        ) from None


def check_name(name: str, *, what: str, source: str) -> str:
    if not NAME_RE.match(name) or len(name) > MAX_NAME_LENGTH:
        raise MappingError(
            f"{what} name {name!r} is not a valid JetStream name",
            where=source,
            hint="use only letters, digits, '_' and '-' (at most 255 characters)",
        )
    return name


def check_subject(subject: str, *, source: str) -> str:
    tokens = subject.split(".")
    if not subject or not all(TOKEN_RE.match(t) for t in tokens):
        raise MappingError(
            f"subject {subject!r} is not a valid NATS subject",
            where=source,
            hint="tokens are separated by '.', non-empty, without '*', '>' or whitespace",
        )
    return subject


@dataclass
class NameRegistry:
    """Remembers which source took which name, so a second claimant is caught."""

    what: str

    def __post_init__(self) -> None:
        self._owners: dict[str, str] = {}

    def claim(self, name: str, source: str) -> str:
        owner = self._owners.setdefault(name, source)
        if owner != source:
            accounts = {_account(owner), _account(source)} - {""}
            hint = (
                "they are in different AWS accounts: set `accounts: prefix` in a --mapping "
                "file (every name then starts with the account or its alias from "
                "`accounts: {aliases: …}`), or rename one of them (`rename:`)"
                if len(accounts) == 2
                else "rename one of them with a mapping override (`rename:`), or add "
                "{region}/{account} to the naming template when scanning several regions"
            )
            raise MappingError(
                f"{self.what} name {name!r} would be shared by {owner} and {source}",
                where="naming",
                hint=hint,
            )
        return name


def _account(arn: str) -> str:
    parts = arn.split(":")
    return parts[4] if len(parts) > 5 and parts[0] == "arn" else ""
