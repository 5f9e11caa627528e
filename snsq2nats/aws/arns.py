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
