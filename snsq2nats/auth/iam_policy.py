"""What an IAM principal's identity policies let it do to one queue or topic (pure).

Three rights matter to NATS, each the grant of one generated identity kind:

    send     sqs:SendMessage                         a queue's producer
    receive  sqs:ReceiveMessage + sqs:DeleteMessage  a queue's consumer (pull and ack)
    publish  sns:Publish                             a topic's publisher

AWS's evaluation, as far as it can be decided without a request: `*` and `?` wildcards in
Action (case-insensitive) and Resource (case-sensitive), NotAction and NotResource, an explicit
Deny beats any Allow, and a permission boundary intersects (an action needs both the identity
policies and the boundary to allow it, and a Deny in either denies it).

What cannot be decided is resolved towards granting less, and said: a condition on a Deny is
taken as always true (denied), a Resource with a policy variable (`${aws:username}`) matches
for a Deny and not for an Allow. A condition on an Allow cannot be enforced by NATS: the right
is granted and the decision carries the condition, as `auth` does for resource policies.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from snsq2nats.aws.iam import Principal, Statement

Right = Literal["send", "receive", "publish"]
RIGHT_ACTIONS: dict[Right, tuple[str, ...]] = {
    "send": ("sqs:SendMessage",),
    "receive": ("sqs:ReceiveMessage", "sqs:DeleteMessage"),
    "publish": ("sns:Publish",),
}
QUEUE_RIGHTS: tuple[Right, ...] = ("send", "receive")
TOPIC_RIGHTS: tuple[Right, ...] = ("publish",)

Match = Literal["yes", "maybe", "no"]


@dataclass(frozen=True)
class Decision:
    allowed: bool
    notes: tuple[str, ...] = ()
    """Conditions and approximations that shaped it, each with its reason and source."""

    @property
    def approximate(self) -> bool:
        return bool(self.notes)


@lru_cache(maxsize=4096)
def _pattern(glob: str, case_sensitive: bool) -> re.Pattern[str]:
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in glob)
    return re.compile(f"^{body}$", 0 if case_sensitive else re.IGNORECASE | re.DOTALL)


def glob_match(glob: str, value: str, *, case_sensitive: bool = True) -> bool:
    """IAM's wildcard match: `*` any run of characters (`:` and `/` included), `?` one."""
    return _pattern(glob, case_sensitive).match(value) is not None


def _variable(glob: str) -> bool:
    return "${" in glob


def _resource_match(patterns: Iterable[str], resource: str) -> Match:
    listed = list(patterns)
    if any(glob_match(p, resource) for p in listed if not _variable(p)):
        return "yes"
    return "maybe" if any(_variable(p) for p in listed) else "no"


def statement_match(statement: Statement, action: str, resource: str) -> Match:
    """Does `statement` apply to `action` on `resource`? "maybe" when a policy variable in its
    Resource (or NotResource) leaves it open."""
    if not _acts(statement, action):
        return "no"
    if statement.not_resources is not None:
        excluded = _resource_match(statement.not_resources, resource)
        return "no" if excluded == "yes" else "maybe" if excluded == "maybe" else "yes"
    return _resource_match(statement.resources, resource)


def _conditions(statement: Statement) -> str:
    return ", ".join(statement.conditions)


def evaluate(statements: Iterable[Statement], action: str, resource: str) -> Decision:
    """Do `statements` (one principal's policies, or its boundary) allow `action` on
    `resource`, an explicit Deny winning?"""
    allowed_plainly = False
    allow_notes: list[str] = []
    denied = False
    deny_notes: list[str] = []
    for statement in statements:
        match = statement_match(statement, action, resource)
        if match == "no":
            continue
        where = statement.source
        if statement.effect == "Deny":
            denied = True
            if match == "maybe":
                deny_notes.append(
                    f"{where}: Deny with a policy variable in its resource, taken as applying"
                )
            elif statement.conditions:
                deny_notes.append(
                    f"{where}: Deny under conditions ({_conditions(statement)}), taken as "
                    "always applying"
                )
        elif match == "maybe":
            allow_notes.append(
                f"{where}: Allow with a policy variable in its resource, not granted"
            )
        elif statement.conditions:
            allow_notes.append(
                f"{where}: Allow under conditions ({_conditions(statement)}) NATS does not "
                "enforce: granted without them"
            )
        else:
            allowed_plainly = True
    if denied:
        return Decision(False, tuple(deny_notes))
    conditional = [n for n in allow_notes if n.endswith("granted without them")]
    if allowed_plainly:
        return Decision(True)
    if conditional:
        return Decision(True, tuple(conditional))
    return Decision(False, tuple(allow_notes))


def _statements(principal: Principal) -> list[Statement]:
    return [s for policy in principal.policies for s in policy.statements]


def _acts(statement: Statement, action: str) -> bool:
    if statement.not_actions is not None:
        return not any(glob_match(a, action, case_sensitive=False) for a in statement.not_actions)
    return any(glob_match(a, action, case_sensitive=False) for a in statement.actions)


@lru_cache(maxsize=16384)
def _relevant(
    principal: Principal, action: str
) -> tuple[tuple[Statement, ...], tuple[Statement, ...] | None]:
    """The statements of `principal`'s policies and of its boundary (None: it has none) that
    name `action`: sorted out once per principal and action, not once per resource."""
    boundary = principal.boundary
    return (
        tuple(s for s in _statements(principal) if _acts(s, action)),
        None if boundary is None else tuple(s for s in boundary.statements if _acts(s, action)),
    )


def action_decision(principal: Principal, action: str, resource: str) -> Decision:
    """`action` on `resource` for `principal`: its policies, intersected with its permission
    boundary."""
    if principal.missing:
        # What an unread policy allows is unknown, and so is what it denies: grant nothing.
        return Decision(False, tuple(f"{m}: nothing granted" for m in principal.missing))
    statements, boundary = _relevant(principal, action)
    identity = evaluate(statements, action, resource)
    if principal.boundary is None or boundary is None:
        return identity
    bound = evaluate(boundary, action, resource)
    where = f"permission boundary {principal.boundary.name}"
    if not bound.allowed:
        reason = bound.notes or (f"{where} does not allow {action}",)
        return Decision(False, identity.notes + reason if identity.allowed else identity.notes)
    return Decision(identity.allowed, identity.notes + (bound.notes if identity.allowed else ()))


def right_decision(principal: Principal, right: Right, resource: str) -> Decision:
    """A right needs every one of its actions."""
    decisions = {a: action_decision(principal, a, resource) for a in RIGHT_ACTIONS[right]}
    notes = tuple(dict.fromkeys(n for d in decisions.values() for n in d.notes))
    allowed = [a for a, d in decisions.items() if d.allowed]
    if len(allowed) == len(decisions):
        return Decision(True, notes)
    if allowed:
        lacking = [a for a in decisions if a not in allowed]
        notes += (
            f"{' and '.join(allowed)} without {' and '.join(lacking)}: no {right} right "
            "(a NATS consumer acknowledges what it receives)",
        )
    return Decision(False, notes)


def denies(principal: Principal, action: str, resource: str) -> bool:
    """Does any Deny of `principal`'s policies or boundary apply (or may apply) to `action` on
    `resource`? An explicit Deny also overrides what a resource policy allows."""
    statements, boundary = _relevant(principal, action)
    return any(
        s.effect == "Deny" and statement_match(s, action, resource) != "no"
        for s in (*statements, *(boundary or ()))
    )
