"""An SQS queue's backlog, read one way for `status` and for `cutover --wait`.

SQS's counts are approximate and eventually consistent: callers that decide on them (drained or
not) read them more than once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.literals import QueueAttributeFilterType

COUNT_ATTRIBUTES: list[QueueAttributeFilterType] = [
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
]


@dataclass(frozen=True)
class QueueCounts:
    visible: int = 0
    not_visible: int = 0
    """In flight: received, not yet deleted."""
    delayed: int = 0

    @property
    def total(self) -> int:
        return self.visible + self.not_visible + self.delayed


def queue_backlog(
    sqs: SQSClient, name: str, account: str | None = None, *, url: str | None = None
) -> QueueCounts:
    """The approximate counts of queue `name` (owned by `account`; `url` when already known
    saves a GetQueueUrl). Blocking; AWS errors propagate for the caller to classify
    (`aws.errors.is_missing` for a queue that does not exist)."""
    if url is None:
        lookup = {"QueueOwnerAWSAccountId": account} if account else {}
        url = sqs.get_queue_url(QueueName=name, **lookup)["QueueUrl"]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=COUNT_ATTRIBUTES)["Attributes"]
    return QueueCounts(
        visible=int(attrs.get("ApproximateNumberOfMessages", 0)),
        not_visible=int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0)),
        delayed=int(attrs.get("ApproximateNumberOfMessagesDelayed", 0)),
    )
