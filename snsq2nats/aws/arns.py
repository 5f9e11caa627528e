"""ARNs, read once: `arn:<partition>:<service>:<region>:<account>:<resource>`.

For SQS and SNS the resource is the queue or topic name (a subscription adds `:<id>`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Arn:
    partition: str
    service: str
    region: str
    account: str
    resource: str


def parse_arn(arn: str) -> Arn:
    """The parts of `arn`; ValueError when it does not have all six."""
    parts = arn.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn":
        raise ValueError(f"not an ARN: {arn!r}")
    return Arn(*parts[1:])


def arn_name(arn: str) -> str:
    """The name a queue or topic ARN ends with (a subscription ARN's id). Lenient: any text
    after its last `:` (all of it when there is none), so a subscription endpoint that is a
    URL or an address is read without raising."""
    return arn.rsplit(":", 1)[-1]


def subscription_topic(arn: str) -> str:
    """The topic ARN a subscription ARN (`<topic ARN>:<id>`) belongs to."""
    return arn.rsplit(":", 1)[0]
