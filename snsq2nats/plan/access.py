"""Who a queue's or topic's resource policy lets in, and as what (pure).

A resource policy is only part of the picture: same-account access granted by IAM identity
policies never appears in it (AWS unions both within an account), so the plan says what the
policy shows and what it cannot. What it shows becomes NATS grants by role:

    sqs:SendMessage                          producer   publish on the queue's subjects
    sqs:ReceiveMessage                       receiver   pull from the queue's durable
    sqs:DeleteMessage / ChangeMessageVisibility  + ack (ack, nak, in-progress share one subject)
    sqs:GetQueueAttributes / GetQueueUrl     reader     stream and consumer info
    sqs:PurgeQueue                           purger     stream purge
    sns:Publish                              publisher  publish on the topic's subjects
    sns:GetTopicAttributes / ListSubscriptionsByTopic  reader

The SNS→SQS statement that lets a topic deliver into a queue (`Service: sns.amazonaws.com`
with `aws:SourceArn` = the topic) is plumbing — the stream source — not a user; the default
topic policy's `*` restricted by `AWS:SourceOwner` means the owner account, not everyone.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["producer", "receiver", "consumer", "reader", "purger", "publisher"]

_SQS_ROLES: dict[str, tuple[Role, ...]] = {
    "sendmessage": ("producer",),
    "sendmessagebatch": ("producer",),
    "receivemessage": ("receiver",),
    "deletemessage": ("consumer",),
    "deletemessagebatch": ("consumer",),
    "changemessagevisibility": ("consumer",),
    "changemessagevisibilitybatch": ("consumer",),
    "getqueueattributes": ("reader",),
    "getqueueurl": ("reader",),
    "listdeadlettersourcequeues": ("reader",),
    "purgequeue": ("purger",),
    "*": ("producer", "receiver", "consumer", "reader", "purger"),
}
_SNS_ROLES: dict[str, tuple[Role, ...]] = {
    "publish": ("publisher",),
    "gettopicattributes": ("reader",),
    "listsubscriptionsbytopic": ("reader",),
    "*": ("publisher", "reader"),
}
_OWNER_KEYS = ("aws:sourceowner", "aws:sourceaccount", "aws:principalaccount")


class Grant(BaseModel):
    """One principal's access to one queue or topic, as NATS roles."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    principal: str
    """An IAM ARN or account id, `owner-account`, or `*` (anyone)."""
    roles: list[Role]
    conditions: list[str] = Field(default_factory=list)
    """Condition keys NATS permissions do not enforce (reported, never dropped)."""


class Access(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    grants: list[Grant] = Field(default_factory=list)
    plumbing: list[str] = Field(default_factory=list)
    """SNS topics allowed to deliver (the stream sources), not users."""
    unmapped: list[str] = Field(default_factory=list)
    """What the policy says that has no NATS grant (denies, admin actions, services)."""


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _conditions(statement: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for operator, block in (statement.get("Condition") or {}).items():
        if not isinstance(block, dict):
            continue
        for key, values in block.items():
            out[key.lower()] = [str(v) for v in _as_list(values)]
            out[f"{key.lower()}@op"] = [str(operator)]
    return out


def _principals(statement: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(AWS principals, service principals) of a statement."""
    principal = statement.get("Principal")
    if principal == "*" or principal == {"AWS": "*"}:
        return ["*"], []
    if not isinstance(principal, dict):
        return [], []
    return (
        [str(p) for p in _as_list(principal.get("AWS"))],
        [str(s) for s in _as_list(principal.get("Service"))],
    )


def _roles(actions: Iterable[str], service: str) -> tuple[list[Role], list[str]]:
    table = _SQS_ROLES if service == "sqs" else _SNS_ROLES
    roles: list[Role] = []
    other: list[str] = []
    for action in actions:
        prefix, _, name = action.partition(":") if action != "*" else (service, "", "*")
        if prefix.lower() != service or name.lower() not in table:
            other.append(action)
            continue
        roles += [r for r in table[name.lower()] if r not in roles]
    # Consuming is receiving and deleting; deleting alone cannot be granted (an ack needs the
    # message first), so it is reported instead.
    if "consumer" in roles:
        if "receiver" in roles:
            roles.remove("receiver")
        else:
            roles.remove("consumer")
            other.append("DeleteMessage/ChangeMessageVisibility without ReceiveMessage")
    return roles, other


def analyse(
    policy: dict[str, Any] | None, *, service: Literal["sqs", "sns"], account: str
) -> Access:
    """What a resource policy grants, as NATS roles per principal (pure)."""
    if not policy:
        return Access()
    grants: dict[tuple[str, tuple[str, ...]], list[Role]] = {}
    plumbing: list[str] = []
    unmapped: list[str] = []
    for raw in _as_list(policy.get("Statement")):
        if not isinstance(raw, dict):
            continue
        sid = str(raw.get("Sid") or "statement")
        conditions = _conditions(raw)
        aws, services = _principals(raw)
        actions = [str(a) for a in _as_list(raw.get("Action"))]
        if raw.get("Effect") == "Deny":
            unmapped.append(
                f"{sid}: explicit Deny (NATS denies whatever is not granted; "
                + ("conditional, review it" if conditions else "nothing to add")
                + ")"
            )
            continue
        source_arn = conditions.get("aws:sourcearn", [])
        if "sns.amazonaws.com" in services and source_arn:
            plumbing += source_arn
            continue
        for svc in services:
            unmapped.append(
                f"{sid}: the AWS service {svc} cannot act on NATS; it stays on AWS (the bridge "
                "relays what it sends)"
            )
        roles, other = _roles(actions, service)
        if other:
            unmapped.append(f"{sid}: {', '.join(other)} (admin only, or no NATS equivalent)")
        if not roles:
            continue
        for principal in aws:
            who = principal
            unenforced = sorted(k for k in conditions if not k.endswith("@op"))
            if principal == "*" and any(account in conditions.get(key, []) for key in _OWNER_KEYS):
                who = "owner-account"
                unenforced = [k for k in unenforced if k not in _OWNER_KEYS]
            elif principal in (account, f"arn:aws:iam::{account}:root"):
                who = "owner-account"
            key = (who, tuple(unenforced))
            merged = grants.setdefault(key, [])
            merged += [r for r in roles if r not in merged]
    return Access(
        grants=[
            Grant(principal=who, roles=roles, conditions=list(conds))
            for (who, conds), roles in sorted(grants.items())
        ],
        plumbing=sorted(set(plumbing)),
        unmapped=unmapped,
    )
