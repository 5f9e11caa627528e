"""IAM, read once per account: every role and user with the policies that apply to it.

One paginated GetAccountAuthorizationDetails call, filtered to the account's own roles, users,
groups and customer managed policies (unfiltered it returns every AWS managed policy, about
1,400 of them). An AWS managed policy a principal attaches is then read on its own
(GetPolicy + GetPolicyVersion), so only the ones in use are fetched.

A user's policies include those of its groups (AWS evaluates them together). The records are
typed here, at the boundary; deciding what they allow is `snsq2nats.auth.iam_policy`'s job.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from snsq2nats.aws.errors import error_code, is_denied
from snsq2nats.errors import AwsConnectError, ScanError

FILTER = ["Role", "User", "Group", "LocalManagedPolicy"]
PrincipalKind = Literal["role", "user"]


@dataclass(frozen=True)
class Statement:
    """One statement of an identity policy or permission boundary (no Principal: it applies to
    whoever the policy is attached to)."""

    effect: Literal["Allow", "Deny"]
    source: str
    """Where it comes from, for reports: `inline role policy send-orders#2`."""
    actions: tuple[str, ...] = ()
    not_actions: tuple[str, ...] | None = None
    resources: tuple[str, ...] = ()
    not_resources: tuple[str, ...] | None = None
    conditions: tuple[str, ...] = ()
    """`Operator key` pairs of its Condition block (values left out: they may be secrets)."""


@dataclass(frozen=True)
class Policy:
    name: str
    statements: tuple[Statement, ...]
    problems: tuple[str, ...] = ()
    """What could not be read of it (a statement with an unknown Effect, a malformed document):
    reported, and never read as a grant."""


@dataclass(frozen=True, eq=False)
class Principal:
    """One role or user as read (compared and hashed by identity: the evaluator caches what
    it sorted out of its policies per principal read, without hashing them all each time)."""

    arn: str
    kind: PrincipalKind
    name: str
    policies: tuple[Policy, ...]
    """Inline and attached policies, the user's groups' included."""
    boundary: Policy | None = None
    missing: tuple[str, ...] = ()
    """Policies attached but not readable (their rights are not granted; reported)."""

    @property
    def account(self) -> str:
        return self.arn.split(":")[4] if self.arn.count(":") >= 5 else ""


@dataclass(frozen=True)
class Authorization:
    """An account's principals: what `auth --iam` evaluates."""

    principals: tuple[Principal, ...] = ()
    problems: tuple[str, ...] = field(default=())


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _document(raw: Any) -> dict[str, Any] | None:
    """A policy document as botocore returns it: already decoded, or URL-encoded JSON."""
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, str):
        try:
            decoded = json.loads(urllib.parse.unquote(raw))
        except ValueError:
            return None
        return decoded if isinstance(decoded, dict) else None
    return None


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in _list(value))


def parse_policy(name: str, raw: Any) -> Policy:
    """`raw` (a policy document) as typed statements; what cannot be read goes to `problems`."""
    document = _document(raw)
    if document is None:
        return Policy(name, (), (f"{name}: not a JSON policy document",))
    statements: list[Statement] = []
    problems: list[str] = []
    for index, item in enumerate(_list(document.get("Statement")), start=1):
        source = f"{name}#{item.get('Sid') or index}" if isinstance(item, dict) else name
        if not isinstance(item, dict) or item.get("Effect") not in ("Allow", "Deny"):
            problems.append(f"{source}: statement without Effect Allow or Deny, ignored")
            continue
        conditions = tuple(
            f"{operator} {key}"
            for operator, block in (item.get("Condition") or {}).items()
            for key in (block if isinstance(block, dict) else {"?": None})
        )
        statements.append(
            Statement(
                effect=item["Effect"],
                source=source,
                actions=_strings(item.get("Action")),
                not_actions=_strings(item["NotAction"]) if "NotAction" in item else None,
                resources=_strings(item.get("Resource")),
                not_resources=_strings(item["NotResource"]) if "NotResource" in item else None,
                conditions=conditions,
            )
        )
    return Policy(name, tuple(statements), tuple(problems))


def _default_version(versions: Iterable[dict[str, Any]]) -> Any:
    for version in versions:
        if version.get("IsDefaultVersion"):
            return version.get("Document")
    return None


@dataclass
class _Details:
    """The pages of GetAccountAuthorizationDetails, gathered."""

    roles: list[dict[str, Any]] = field(default_factory=list)
    users: list[dict[str, Any]] = field(default_factory=list)
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    managed: dict[str, Policy] = field(default_factory=dict)


def _gather(pages: Iterable[dict[str, Any]]) -> _Details:
    details = _Details()
    for page in pages:
        details.roles += page.get("RoleDetailList") or []
        details.users += page.get("UserDetailList") or []
        for group in page.get("GroupDetailList") or []:
            details.groups[str(group.get("GroupName"))] = group
        for policy in page.get("Policies") or []:
            arn = str(policy.get("Arn"))
            name = policy.get("PolicyName") or arn.rsplit("/", 1)[-1]
            details.managed[arn] = parse_policy(
                f"managed policy {name}",
                _default_version(policy.get("PolicyVersionList") or []),
            )
    return details


class _Managed:
    """Managed policies by ARN: the account's from the details, AWS's read when first used."""

    def __init__(self, iam: Any, known: dict[str, Policy]) -> None:
        self.iam, self.known = iam, known
        self.unreadable: dict[str, str] = {}

    def get(self, arn: str) -> Policy | None:
        if arn in self.known or arn in self.unreadable:
            return self.known.get(arn)
        if self.iam is None:
            self.unreadable[arn] = f"managed policy {arn} not read (no IAM client)"
            return None
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            meta = self.iam.get_policy(PolicyArn=arn)["Policy"]
            version = self.iam.get_policy_version(
                PolicyArn=arn, VersionId=meta["DefaultVersionId"]
            )["PolicyVersion"]
        except (ClientError, BotoCoreError) as exc:
            # Reported by the caller, and never read as a grant.
            self.unreadable[arn] = f"managed policy {arn} not readable ({exc})"
            return None
        self.known[arn] = parse_policy(
            f"managed policy {meta.get('PolicyName')}", version.get("Document")
        )
        return self.known.get(arn)


def _inline(kind: str, entries: Iterable[dict[str, Any]]) -> list[Policy]:
    return [
        parse_policy(f"inline {kind} policy {p.get('PolicyName')}", p.get("PolicyDocument"))
        for p in entries
    ]


def _attached(
    entries: Iterable[dict[str, Any]], managed: _Managed, missing: list[str]
) -> list[Policy]:
    out = []
    for entry in entries:
        arn = str(entry.get("PolicyArn"))
        policy = managed.get(arn)
        if policy is None:
            missing.append(managed.unreadable.get(arn, f"managed policy {arn} not found"))
        else:
            out.append(policy)
    return out


def _principal(
    detail: dict[str, Any], kind: PrincipalKind, details: _Details, managed: _Managed
) -> Principal:
    missing: list[str] = []
    policies = _inline(kind, detail.get(f"{kind.capitalize()}PolicyList") or [])
    policies += _attached(detail.get("AttachedManagedPolicies") or [], managed, missing)
    for group_name in detail.get("GroupList") or []:
        group = details.groups.get(str(group_name))
        if group is None:
            missing.append(f"group {group_name} not in the authorization details")
            continue
        policies += _inline(f"group {group_name}", group.get("GroupPolicyList") or [])
        policies += _attached(group.get("AttachedManagedPolicies") or [], managed, missing)
    boundary: Policy | None = None
    boundary_arn = (detail.get("PermissionsBoundary") or {}).get("PermissionsBoundaryArn")
    if boundary_arn:
        boundary = managed.get(str(boundary_arn))
        if boundary is None:
            # A boundary that cannot be read allows nothing we can prove: nothing is granted.
            missing.append(
                "permission boundary "
                + managed.unreadable.get(str(boundary_arn), f"{boundary_arn} not found")
            )
            boundary = Policy(f"unreadable boundary {boundary_arn}", ())
    return Principal(
        arn=str(detail.get("Arn")),
        kind=kind,
        name=str(detail.get(f"{kind.capitalize()}Name")),
        policies=tuple(policies),
        boundary=boundary,
        missing=tuple(missing),
    )


def authorization_from_pages(pages: Iterable[dict[str, Any]], iam: Any = None) -> Authorization:
    """The principals of GetAccountAuthorizationDetails `pages`; `iam` (a client) reads the AWS
    managed policies they attach (without it, those are reported as not readable)."""
    details = _gather(pages)
    managed = _Managed(iam, details.managed)
    principals = [_principal(r, "role", details, managed) for r in details.roles]
    principals += [_principal(u, "user", details, managed) for u in details.users]
    problems = sorted(
        {p for principal in principals for policy in principal.policies for p in policy.problems}
    )
    return Authorization(tuple(sorted(principals, key=lambda p: (p.kind, p.arn))), tuple(problems))


def read_authorization(iam: Any) -> Authorization:
    """Every role and user of the account `iam` (a boto3 IAM client) reads, with its policies."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
    )

    endpoint = iam.meta.endpoint_url
    paginator = iam.get_paginator("get_account_authorization_details")
    try:
        pages = list(paginator.paginate(Filter=FILTER))
    except (NoCredentialsError, PartialCredentialsError):
        raise AwsConnectError(
            "no AWS credentials found",
            where="iam",
            hint="set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
        ) from None
    except EndpointConnectionError:
        raise AwsConnectError(
            "cannot reach the IAM endpoint",
            where=endpoint,
            hint="check --endpoint-url / AWS_ENDPOINT_URL",
        ) from None
    except ClientError as exc:
        code = error_code(exc) or "ClientError"
        raise ScanError(
            f"IAM refused GetAccountAuthorizationDetails ({code})"
            if is_denied(exc)
            else f"IAM error reading the account's authorization details: {code}",
            where=endpoint,
            hint="auth --iam needs iam:GetAccountAuthorizationDetails, and iam:GetPolicy and "
            "iam:GetPolicyVersion for the AWS managed policies principals attach",
        ) from None
    except BotoCoreError as exc:
        raise AwsConnectError(
            f"cannot talk to the IAM endpoint ({exc.__class__.__name__})",
            where=endpoint,
            hint="check --endpoint-url / AWS_ENDPOINT_URL and the network",
        ) from None
    return authorization_from_pages(pages, iam)


def iam_client(endpoint_url: str | None) -> Any:
    """An IAM client from the default credential chain (IAM is global: one per account)."""
    import boto3

    from snsq2nats.aws.clients import client_config

    session = boto3.Session()
    # IAM is global; its endpoint is the partition's, which the session's region names.
    kwargs: dict[str, Any] = {
        "config": client_config(4),
        "region_name": session.region_name or "us-east-1",
    }
    if endpoint_url:
        kwargs["endpoint_url"] = endpoint_url
    return session.client("iam", **kwargs)
