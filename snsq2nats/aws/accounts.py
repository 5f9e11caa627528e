"""Which AWS accounts a scan reads, and the credentials it reads each with.

An estate spans accounts: each is reached through a named profile (`--profile`) or through a
role assumed in it from the base credentials (`--assume-role` template × `--account`, or × every
active account AWS Organizations lists, `--organization`). A session
is opened only when the scan reaches the account, so one account's missing role or expired
profile is that account's failure, not the whole scan's. Credentials stay inside the boto3
session: nothing here returns or formats them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from snsq2nats.aws.clients import DEFAULT_CONCURRENCY, make_clients, resolve_regions
from snsq2nats.aws.errors import error_code
from snsq2nats.aws.scan import AccountClients
from snsq2nats.errors import AwsConnectError, ScanError, UsageError

if TYPE_CHECKING:
    import boto3

    from snsq2nats.aws.clients import RegionClients, SqsByAccount

ACCOUNT_RE = re.compile(r"^\d{12}$")
ACCOUNT_FIELD = "{account}"
ROLE_SESSION_NAME = "snsq2nats-scan"
STS_FALLBACK_REGION = "us-east-1"
"""Where STS is asked when no region is configured: any region's STS issues the same keys."""


@dataclass(frozen=True)
class AccountSource:
    """How one account is reached: exactly one of `profile` and `role_arn`."""

    label: str
    """What the operator named it by: the profile, or the account ID."""
    profile: str | None = None
    role_arn: str | None = None
    account: str | None = None
    """Known up front for an assumed role; a profile's is asked of STS."""


@dataclass(frozen=True)
class OrganizationAccount:
    """One account as Organizations ListAccounts lists it."""

    id: str
    name: str
    status: str
    """ACTIVE, SUSPENDED or PENDING_CLOSURE: only an active account is read."""

    @property
    def active(self) -> bool:
        return self.status == "ACTIVE"


def organization_accounts(
    endpoint_url: str | None = None,
    regions: Sequence[str] = (),
    *,
    base: boto3.Session | None = None,
    page_size: int | None = None,
) -> list[OrganizationAccount]:
    """Every account of the organization the base credentials belong to (ListAccounts, every
    page), in the order listed. Only the management account or a delegated administrator may
    list them; without that nothing can be scanned, so it is an error, not a warning."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    where = "AWS Organizations ListAccounts"
    session = base or boto3.Session()
    try:
        client = session.client(
            "organizations", region_name=_sts_region(session, regions), endpoint_url=endpoint_url
        )
        listed: list[OrganizationAccount] = []
        paging = {"PageSize": page_size} if page_size else {}
        pages = client.get_paginator("list_accounts").paginate(PaginationConfig=paging)
        for page in pages:
            listed.extend(
                OrganizationAccount(str(a["Id"]), str(a.get("Name", "")), str(a.get("Status")))
                for a in page.get("Accounts", [])
            )
    except ClientError as exc:
        code = error_code(exc) or "ClientError"
        raise ScanError(
            f"cannot list the organization's accounts ({code})",
            where=where,
            hint="run with the management account's credentials or a delegated administrator's "
            "(organizations:ListAccounts), or name the accounts with --account",
        ) from None
    except BotoCoreError as exc:
        # The message may quote configuration: only the class is shown.
        raise AwsConnectError(
            f"cannot open AWS credentials ({exc.__class__.__name__})",
            where=where,
            hint="check the base credentials and --endpoint-url",
        ) from None
    return listed


def account_sources(
    profiles: Sequence[str],
    role_template: str | None,
    accounts: Sequence[str],
    *,
    organization: bool = False,
) -> list[AccountSource]:
    """The accounts named on the command line, checked before anything is read.

    With `organization` the accounts come from Organizations later (`organization_sources`):
    only the role template is checked here."""
    if organization:
        if accounts:
            raise UsageError(
                "--organization and --account cannot be combined",
                hint="--organization reads every active account of the organization; drop it "
                "to read only the accounts named",
            )
        if not role_template:
            raise UsageError(
                "--organization needs --assume-role",
                hint="pass --assume-role 'arn:aws:iam::{account}:role/NAME' to say which role "
                "to assume in each account of the organization",
            )
        _check_template(role_template)
        return [AccountSource(label=p, profile=p) for p in dict.fromkeys(profiles)]
    if accounts and not role_template:
        raise UsageError(
            "--account needs --assume-role",
            hint="pass --assume-role 'arn:aws:iam::{account}:role/NAME' to say which role "
            "to assume in each account, or use --profile per account",
        )
    if role_template and not accounts:
        raise UsageError(
            "--assume-role needs at least one --account",
            hint="repeat --account ID for every account to read",
        )
    sources = [AccountSource(label=p, profile=p) for p in dict.fromkeys(profiles)]
    if role_template:
        _check_template(role_template)
        for account in dict.fromkeys(accounts):
            if not ACCOUNT_RE.match(account):
                raise UsageError(
                    f"--account {account!r} is not an AWS account ID",
                    hint="an account ID is 12 digits",
                )
            role = role_template.replace(ACCOUNT_FIELD, account)
            sources.append(AccountSource(label=account, role_arn=role, account=account))
    return sources


def organization_sources(
    role_template: str, listed: Sequence[OrganizationAccount]
) -> list[AccountSource]:
    """The role assumed in each active account the organization lists (the others are not
    read: a suspended account's API refuses every call)."""
    _check_template(role_template)
    return [
        AccountSource(label=a.id, role_arn=role_template.replace(ACCOUNT_FIELD, a.id), account=a.id)
        for a in listed
        if a.active
    ]


def _check_template(role_template: str) -> None:
    if ACCOUNT_FIELD not in role_template or not role_template.startswith("arn:"):
        raise UsageError(
            f"--assume-role {role_template!r} is not a role ARN template",
            hint="write it as 'arn:aws:iam::{account}:role/NAME'; {account} is filled "
            "with each account ID",
        )


def account_clients(
    source: AccountSource,
    regions: Sequence[str],
    endpoint_url: str | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    *,
    base: boto3.Session | None = None,
) -> AccountClients:
    """The account's clients, opened when the scan calls `connect` (in its own thread)."""

    def connect() -> tuple[str, list[RegionClients]]:
        session, account = _open(source, regions, endpoint_url, base)
        chosen = resolve_regions(session, regions)
        return account, make_clients(session, chosen, endpoint_url, concurrency)

    return AccountClients(label=source.label, connect=connect)


def _open(
    source: AccountSource,
    regions: Sequence[str],
    endpoint_url: str | None,
    base: boto3.Session | None,
) -> tuple[boto3.Session, str]:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError, ProfileNotFound

    where = f"account {source.label}"
    try:
        if source.profile is not None:
            session = boto3.Session(profile_name=source.profile)
            account = _caller_account(session, regions, endpoint_url)
            return session, account
        # `account_sources` gives every source without a profile a role and its account.
        role_arn, account = str(source.role_arn), str(source.account)
        base = base or boto3.Session()
        sts = base.client("sts", region_name=_sts_region(base, regions), endpoint_url=endpoint_url)
        creds = sts.assume_role(RoleArn=role_arn, RoleSessionName=ROLE_SESSION_NAME)["Credentials"]
        session = boto3.Session(
            aws_access_key_id=creds["AccessKeyId"],
            aws_secret_access_key=creds["SecretAccessKey"],
            aws_session_token=creds["SessionToken"],
            region_name=base.region_name,
        )
        return session, account
    except ProfileNotFound:
        raise AwsConnectError(
            f"AWS profile {source.profile!r} is not configured",
            where=where,
            hint="check the profile name in ~/.aws/config (or AWS_CONFIG_FILE)",
        ) from None
    except ClientError as exc:
        code = error_code(exc) or "ClientError"
        if source.role_arn is not None:
            raise ScanError(
                f"cannot assume {source.role_arn} ({code})",
                where=where,
                hint="check that the role exists in the account and trusts the base "
                "credentials (sts:AssumeRole)",
            ) from None
        raise ScanError(
            f"AWS refused profile {source.profile!r} ({code})",
            where=where,
            hint="refresh the profile's credentials",
        ) from None
    except BotoCoreError as exc:
        # No credentials, a failing credential_process, an unreachable endpoint: the class
        # says which, the message may quote configuration, so only the class is shown.
        raise AwsConnectError(
            f"cannot open AWS credentials ({exc.__class__.__name__})",
            where=where,
            hint="check the profile or the base credentials and --endpoint-url",
        ) from None


def _caller_account(
    session: boto3.Session, regions: Sequence[str], endpoint_url: str | None
) -> str:
    """Which account a profile's credentials act in: an incremental scan replaces exactly it."""
    sts = session.client(
        "sts", region_name=_sts_region(session, regions), endpoint_url=endpoint_url
    )
    return str(sts.get_caller_identity()["Account"])


def _sts_region(session: boto3.Session, regions: Sequence[str]) -> str:
    return (regions[0] if regions else None) or session.region_name or STS_FALLBACK_REGION


BRIDGE_SESSION_NAME = "snsq2nats-bridge"


@dataclass(frozen=True)
class RouteAccounts:
    """How the bridge and `status` reach the AWS accounts of the plan's routes other than the
    base credentials' own: a profile named for the account (`--profile NAME=ACCOUNT`), else the
    role of `--assume-role` assumed in it from the base credentials. A route's account is in
    its ARN, so no account list is needed."""

    role_template: str | None = None
    profiles: tuple[tuple[str, str], ...] = ()
    """(account, profile) pairs."""

    @property
    def given(self) -> bool:
        return bool(self.role_template or self.profiles)

    def source(self, account: str) -> AccountSource | None:
        """How `account` is reached; None when neither option covers it."""
        for named, profile in self.profiles:
            if named == account:
                return AccountSource(label=profile, profile=profile, account=account)
        if self.role_template:
            role = self.role_template.replace(ACCOUNT_FIELD, account)
            return AccountSource(label=account, role_arn=role, account=account)
        return None


def route_accounts(profiles: Sequence[str], role_template: str | None) -> RouteAccounts:
    """The bridge's account options, checked before anything connects."""
    pairs: dict[str, str] = {}
    for given in profiles:
        name, sep, account = given.rpartition("=")
        if not sep or not name or not ACCOUNT_RE.match(account):
            raise UsageError(
                f"--profile {given!r} does not say which account the profile acts in",
                hint="write it as --profile NAME=ACCOUNT_ID (12 digits): the bridge picks the "
                "profile for the routes of that account",
            )
        if pairs.get(account, name) != name:
            raise UsageError(
                f"account {account} is given two profiles ({pairs[account]}, {name})",
                hint="name one --profile per account",
            )
        pairs[account] = name
    if role_template:
        _check_template(role_template)
    return RouteAccounts(role_template=role_template, profiles=tuple(pairs.items()))


def no_credentials_hint(account: str) -> str:
    return (
        f"pass --assume-role 'arn:aws:iam::{{account}}:role/NAME' (a role in {account} the base "
        f"credentials may assume) or --profile NAME={account}"
    )


def blocking_session(source: AccountSource, endpoint_url: str | None, region: str | None) -> Any:
    """A boto3 session acting in the source's account, opened without a call: a profile as
    configured, a role assumed from the base credentials on first use and again before its
    keys expire (botocore's refreshable credentials)."""
    import boto3
    import botocore.session
    from botocore.credentials import (
        AssumeRoleCredentialFetcher,
        CredentialProvider,
        CredentialResolver,
        DeferredRefreshableCredentials,
    )

    if source.profile is not None:
        return boto3.Session(profile_name=source.profile, region_name=region)
    base = botocore.session.Session()
    sts_region = region or base.get_config_variable("region") or STS_FALLBACK_REGION

    def sts(service: str, **kwargs: Any) -> Any:
        return base.create_client(
            service, region_name=sts_region, endpoint_url=endpoint_url, **kwargs
        )

    fetcher = AssumeRoleCredentialFetcher(
        client_creator=sts,
        source_credentials=base.get_credentials(),
        role_arn=str(source.role_arn),
        extra_args={"RoleSessionName": BRIDGE_SESSION_NAME},
    )
    credentials = DeferredRefreshableCredentials(fetcher.fetch_credentials, "assume-role")

    class Assumed(CredentialProvider):
        METHOD = "assume-role"

        def load(self) -> Any:
            return credentials

    assumed = botocore.session.Session()
    assumed.register_component("credential_provider", CredentialResolver([Assumed()]))
    return boto3.Session(botocore_session=assumed, region_name=region)


async def async_session(source: AccountSource, endpoint_url: str | None, region: str | None) -> Any:
    """An aiobotocore session acting in the source's account, as `blocking_session` opens it:
    the role is assumed on the first call made with it, once for all its clients, and again
    before the keys expire."""
    from aiobotocore.credentials import (
        AioAssumeRoleCredentialFetcher,
        AioCredentialResolver,
        AioDeferredRefreshableCredentials,
    )
    from aiobotocore.session import AioSession, get_session
    from botocore.credentials import CredentialProvider

    if source.profile is not None:
        return AioSession(profile=source.profile)
    base: Any = get_session()
    sts_region = region or base.get_config_variable("region") or STS_FALLBACK_REGION

    def sts(service: str, **kwargs: Any) -> Any:
        return base.create_client(
            service, region_name=sts_region, endpoint_url=endpoint_url, **kwargs
        )

    fetcher = AioAssumeRoleCredentialFetcher(
        client_creator=sts,
        source_credentials=await base.get_credentials(),
        role_arn=str(source.role_arn),
        extra_args={"RoleSessionName": BRIDGE_SESSION_NAME},
    )
    credentials = AioDeferredRefreshableCredentials(fetcher.fetch_credentials, "assume-role")

    class Assumed(CredentialProvider):
        METHOD = "assume-role"

        async def load(self) -> Any:
            return credentials

    assumed = get_session()
    assumed.register_component("credential_provider", AioCredentialResolver([Assumed()]))
    return assumed


def status_sqs(endpoint_url: str | None, pool: int, accounts: RouteAccounts) -> SqsByAccount:
    """`status`'s SQS clients: each queue read in its own account (`accounts` says how), the
    base credentials' account (asked of STS once, when first needed) with the base clients."""
    import boto3

    from snsq2nats.aws.clients import SqsByAccount

    sessions: dict[str, Any] = {}
    base: list[str] = []

    def base_account() -> str:
        if not base:
            session = boto3.Session()
            base.append(_caller_account(session, (), endpoint_url))
        return base[0]

    def session_for(account: str, region: str) -> Any:
        source = accounts.source(account)
        if source is None:
            return None
        if account not in sessions:
            sessions[account] = blocking_session(source, endpoint_url, region)
        return sessions[account]

    return SqsByAccount(endpoint_url, pool, session_for, base_account)


ClientsFor = Callable[[str], "RegionClients"]
"""The SQS/SNS clients acting in the account and region an ARN names."""


def clients_by_arn(
    endpoint_url: str | None, accounts: RouteAccounts, regions: Sequence[str] = ()
) -> ClientsFor:
    """`cutover`'s clients, as the bridge's: one SQS/SNS pair per account × region, made on
    first use, in the region the ARN names. The base credentials serve their own account (asked
    of STS once, and only when an account option is given) and every account neither option
    covers, as before; a profile or the assumed role serves the others. `regions`: where an ARN
    without a region (none SQS or SNS issues) is looked for."""
    import boto3

    from snsq2nats.aws.arns import parse_arn
    from snsq2nats.aws.clients import make_clients

    base = boto3.Session()
    pairs: dict[tuple[str | None, str], RegionClients] = {}
    sessions: dict[str, Any] = {}
    known: list[str] = []

    def base_account() -> str:
        if not known:
            known.append(_caller_account(base, regions, endpoint_url))
        return known[0]

    def clients(arn: str) -> RegionClients:
        parts = parse_arn(arn)
        region = parts.region or _sts_region(base, regions)
        source = None
        if accounts.given and parts.account and parts.account != base_account():
            source = accounts.source(parts.account)
        key = (parts.account if source is not None else None, region)
        if key not in pairs:
            session = base
            if source is not None:
                if parts.account not in sessions:
                    sessions[parts.account] = blocking_session(source, endpoint_url, region)
                session = sessions[parts.account]
            (pairs[key],) = make_clients(session, [region], endpoint_url)
        return pairs[key]

    return clients
