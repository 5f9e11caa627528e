"""The metadata snsq2nats writes on the streams and consumers it creates, and reads back.

Two kinds of objects, told apart by their keys (DESIGN.md §2):

- a queue's or topic's own stream and a queue's worker consumer carry `snsq2nats.source` = the
  source ARN. Exactly one consumer per queue carries it, the one its workers bind to, so a
  script looking up "the consumer of this queue" by metadata finds exactly that one;
- bridge-owned objects (the advisory stream, a DLQ mover's advisory consumer, the to-sns and
  filter-router consumers) carry `snsq2nats.route` = the owning route's name and
  `snsq2nats.for` = the ARN of the resource that route serves, never `snsq2nats.source`.

Either key makes an object managed: plans create, update and prune it and never mistake it
for a foreign object. Bridge-owned objects applied by earlier versions carry both `source` and
`route`: they count as bridge-owned (the route wins), so the next plan updates their metadata.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from snsq2nats.jetstream.spec import FOR_KEY, ROUTE_KEY, SOURCE_KEY

EVERY = "*"
"""`snsq2nats.for` of an object every route of its kind shares (the advisory stream)."""


def for_source(arn: str, tags: dict[str, str] | None = None) -> dict[str, str]:
    """A queue's or topic's object: the source ARN, and the AWS tags as `aws.tag.<key>`."""
    metadata = {SOURCE_KEY: arn}
    metadata.update({f"aws.tag.{k}": v for k, v in sorted((tags or {}).items())})
    return metadata


def for_route(route: str, serves: str) -> dict[str, str]:
    """A bridge-owned object: the route that owns it and the ARN of what that route serves."""
    return {ROUTE_KEY: route, FOR_KEY: serves}


@dataclass(frozen=True, order=True)
class Owner:
    """What a managed object belongs to: a source ARN, or a bridge route."""

    kind: Literal["source", "route"]
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.name}"


def _value(metadata: object, key: str) -> str | None:
    if not isinstance(metadata, Mapping):
        return None
    value = metadata.get(key)
    return str(value) if value else None


def owner(metadata: object) -> Owner | None:
    """The owner of an object with this metadata; None for an object snsq2nats did not create."""
    route = _value(metadata, ROUTE_KEY)
    if route is not None:
        return Owner("route", route)
    source = _value(metadata, SOURCE_KEY)
    return Owner("source", source) if source is not None else None


def is_managed(metadata: object) -> bool:
    return owner(metadata) is not None


def served_arn(metadata: object) -> str | None:
    """The ARN an object stands for: its source, or for a bridge-owned object what it serves.

    None for an object shared by every route of its kind: it stands for no one resource.
    """
    if _value(metadata, ROUTE_KEY) is not None:
        served = _value(metadata, FOR_KEY) or _value(metadata, SOURCE_KEY)
        return None if served == EVERY else served
    return _value(metadata, SOURCE_KEY)
