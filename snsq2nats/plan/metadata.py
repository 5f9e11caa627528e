"""The metadata snsq2nats writes on the streams and consumers it creates."""

from __future__ import annotations

from snsq2nats.jetstream.spec import SOURCE_KEY


def for_source(arn: str, tags: dict[str, str] | None = None) -> dict[str, str]:
    """A queue's or topic's object: the source ARN, and the AWS tags as `aws.tag.<key>`."""
    metadata = {SOURCE_KEY: arn}
    metadata.update({f"aws.tag.{k}": v for k, v in sorted((tags or {}).items())})
    return metadata
