"""`auth --iam`: identities for the IAM roles and users that may use the estate (pure).

Each role and user whose identity policies let it send to, receive from or publish to one of
the plan's queues and topics (`iam_policy` decides) gets one NATS identity, `iam-role-NAME` or
`iam-user-NAME`, with exactly the grants the queue's producer or consumer, or the topic's
publisher, has. What a resource policy grants the same principal is merged into it (AWS unions
both within an account), less what the principal's policies explicitly deny (a Deny in an
identity policy overrides a resource policy's Allow). Across accounts AWS needs both: an IAM
right on another account's queue counts only when that queue's policy lets the principal (or
its account) in.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from snsq2nats.auth.iam_policy import (
    QUEUE_RIGHTS,
    TOPIC_RIGHTS,
    Right,
    denies,
    right_decision,
)
from snsq2nats.auth.identities import PrincipalGrant, policy_grants, principal_name
from snsq2nats.aws.arns import parse_arn
from snsq2nats.aws.iam import Authorization, Principal
from snsq2nats.plan.identities import safe_name
from snsq2nats.plan.model import Plan, Resource

RIGHT_ROLES: dict[Right, str] = {"send": "producer", "receive": "consumer", "publish": "publisher"}
# What a resource policy's role needs of the principal's own policies not to be denied.
_ROLE_ACTIONS: dict[str, tuple[str, ...]] = {
    "producer": ("sqs:SendMessage",),
    "receiver": ("sqs:ReceiveMessage",),
    "consumer": ("sqs:ReceiveMessage", "sqs:DeleteMessage"),
    "purger": ("sqs:PurgeQueue",),
    "publisher": ("sns:Publish",),
}
_READER_ACTIONS = {
    "sqs-queue": ("sqs:GetQueueAttributes",),
    "sns-topic": ("sns:GetTopicAttributes",),
}


@dataclass(frozen=True)
class ResourceRights:
    resource: str
    """Its ARN."""
    name: str
    rights: tuple[Right, ...]
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class PrincipalRights:
    arn: str
    kind: str
    identity: str | None
    """The NATS identity it gets (None: no right on the estate, from IAM or a resource policy)."""
    resources: tuple[ResourceRights, ...] = ()
    merged: tuple[str, ...] = ()
    """Resource-policy grants merged into its identity (`producer on orders`)."""
    withheld: tuple[str, ...] = ()
    """Resource-policy grants its own policies explicitly deny: not granted."""
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class IamReport:
    principals: tuple[PrincipalRights, ...]
    unused: int
    """Roles and users with no right on any of the plan's queues and topics."""
    problems: tuple[str, ...] = ()
    aliases: dict[str, str] = field(default_factory=dict)
    """The identity a resource policy's principal would have without IAM (`aws-role-X`) →
    the IAM principal's identity it is merged into (`iam-role-X`)."""

    def to_dict(self) -> dict[str, object]:
        return {
            "principals": [_lists(asdict(p)) for p in self.principals],
            "principals_without_rights": self.unused,
            "merged_identities": dict(self.aliases),
            "problems": list(self.problems),
        }


def _lists(value: Any) -> Any:
    """`value` with its tuples as lists, as JSON has them."""
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_lists(v) for v in value]
    return value


def iam_identity_name(arn: str) -> str:
    """`iam-role-orders-worker`, `iam-user-ops` (the role's path left out, as for `aws-*`)."""
    return "iam-" + principal_name(arn).removeprefix("aws-")


def _account(arn: str) -> str:
    try:
        return parse_arn(arn).account
    except ValueError:
        return arn if arn.isdigit() else ""


def _policy_lets_in(resource: Resource, principal: Principal, role: str) -> bool:
    """Does `resource`'s own policy let `principal` (or its whole account) in as `role`?"""
    who = {principal.arn, principal.account, f"arn:aws:iam::{principal.account}:root", "*"}
    return any(
        grant.principal in who and role in grant.roles
        for grant in (resource.access.grants if resource.access else [])
    )


def _rights_on(principal: Principal, resource: Resource) -> ResourceRights | None:
    rights: list[Right] = []
    notes: list[str] = []
    elsewhere = _account(resource.source_arn) != principal.account
    for right in QUEUE_RIGHTS if resource.kind == "sqs-queue" else TOPIC_RIGHTS:
        decision = right_decision(principal, right, resource.source_arn)
        notes += decision.notes
        if not decision.allowed:
            continue
        if elsewhere and not _policy_lets_in(resource, principal, RIGHT_ROLES[right]):
            notes.append(
                f"{right}: {resource.name} is in account {_account(resource.source_arn)}, "
                "whose resource policy does not let this principal in: not granted"
            )
            continue
        rights.append(right)
    if not rights and not notes:
        return None
    return ResourceRights(resource.source_arn, resource.name, tuple(rights), tuple(notes))


def _role_actions(role: str, kind: str) -> tuple[str, ...]:
    if role == "reader":
        return _READER_ACTIONS.get(kind, ())
    return _ROLE_ACTIONS.get(role, ())


def _kept_roles(principal: Principal, grant: PrincipalGrant) -> tuple[tuple[str, ...], list[str]]:
    """The roles of a resource policy's `grant` that `principal`'s own policies do not deny,
    and a description of each one they do."""
    kept: list[str] = []
    lost: list[str] = []
    arn = grant.resource.source_arn
    for role in grant.roles:
        denied = [a for a in _role_actions(role, grant.resource.kind) if denies(principal, a, arn)]
        if not denied:
            kept.append(role)
        elif role == "consumer" and denied == ["sqs:DeleteMessage"]:
            # Receiving stays allowed: pull without acknowledging, as the policy's receivers.
            kept.append("receiver")
            lost.append("consumer (sqs:DeleteMessage denied: receiver only)")
        else:
            lost.append(role)
    return tuple(dict.fromkeys(kept)), lost


def _same_principal(grant: PrincipalGrant, principal: Principal) -> bool:
    """Does a resource policy's `grant` name `principal` (its ARN, or a session of the role)?"""
    return grant.name == principal_name(principal.arn) and _account(grant.principal) == (
        principal.account
    )


def iam_grants(plan: Plan, authorization: Authorization) -> tuple[list[PrincipalGrant], IamReport]:
    """Every AWS principal's grants (resource policies' and IAM's, merged per principal) for
    `identities`, and the report of what IAM gave whom."""
    resources = [
        r
        for r in sorted(plan.resources, key=lambda r: (r.kind, r.name))
        if r.kind in ("sqs-queue", "sns-topic")
    ]
    by_arn = {r.source_arn: r for r in resources}
    from_policies = policy_grants(plan)
    grants: list[PrincipalGrant] = []
    taken: set[int] = set()
    reports: list[PrincipalRights] = []
    aliases: dict[str, str] = {}
    unused = 0
    for principal in authorization.principals:
        name = iam_identity_name(principal.arn)
        # A principal with a policy that could not be read gets nothing from IAM (its notes say
        # why, once, not once per queue).
        evaluated = () if principal.missing else resources
        on = [r for r in (_rights_on(principal, res) for res in evaluated) if r is not None]
        merged: list[str] = []
        withheld: list[str] = []
        mine: list[PrincipalGrant] = []
        for index, grant in enumerate(from_policies):
            if not _same_principal(grant, principal):
                continue
            taken.add(index)
            aliases[safe_name(grant.name)] = safe_name(name)
            kept, lost = _kept_roles(principal, grant)
            withheld += [f"{r} on {grant.resource.name}" for r in lost]
            if kept:
                merged.append(f"{'+'.join(kept)} on {grant.resource.name}")
                mine.append(replace(grant, name=name, principal=principal.arn, roles=kept))
        for rights in on:
            roles = tuple(RIGHT_ROLES[r] for r in rights.rights)
            if roles:
                mine.append(
                    PrincipalGrant(name, principal.arn, by_arn[rights.resource], roles, "IAM")
                )
        if not on and not merged and not withheld and not principal.missing:
            unused += 1
            continue
        reports.append(
            PrincipalRights(
                arn=principal.arn,
                kind=principal.kind,
                identity=name if mine else None,
                resources=tuple(on),
                merged=tuple(merged),
                withheld=tuple(withheld),
                notes=principal.missing,
            )
        )
        grants += mine
    # The resource policies' other principals (other accounts, account roots) stay as they are.
    grants = [g for i, g in enumerate(from_policies) if i not in taken] + grants
    report = IamReport(tuple(reports), unused, authorization.problems, aliases)
    return grants, report
