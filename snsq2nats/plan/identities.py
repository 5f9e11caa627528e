"""What the NATS identities generated for a plan's queues and topics are called.

One rule for two readers: `auth` generates the identities (and their gateway access keys) under
these names, and the cutover's runbook tells an application which identity's key it uses
through the gateway. Both are engines that may not import each other; the rule lives here,
below both.
"""

from __future__ import annotations

import re
from typing import Literal

from snsq2nats.plan.model import Resource
from snsq2nats.plan.states import QUEUE, TOPIC

ResourceRole = Literal["producer", "consumer", "publisher", "subscriber"]
"""The identities of one resource: a queue's producer and consumer, a topic's publisher and
(when the topic has a stream) subscriber."""

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def safe_name(name: str) -> str:
    """`name` as a NATS user name (what an identity generated for it is called)."""
    return _UNSAFE.sub("_", name)


def _topic_base(resource: Resource) -> str:
    """What a topic's identities are named after: its stream, or its subject space when it has
    none (a topic without durable subscribers)."""
    return resource.stream or (resource.publish_subject or resource.name).split(".<")[0]


def resource_identity(resource: Resource, role: ResourceRole) -> str | None:
    """The identity generated for `role` of a queue or topic; None when there is none (a queue
    the plan gives no stream or durable, a role of the other kind, a subscriber of a topic
    without a stream)."""
    if resource.kind == QUEUE:
        if not resource.stream or not resource.consumer or role not in ("producer", "consumer"):
            return None
        return safe_name(f"{resource.stream}-{role}")
    topic_role = role == "publisher" or (role == "subscriber" and bool(resource.stream))
    if resource.kind == TOPIC and topic_role:
        return safe_name(f"{_topic_base(resource)}-{role}")
    return None
