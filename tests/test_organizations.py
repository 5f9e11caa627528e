"""`scan --organization`: the accounts come from AWS Organizations ListAccounts, read from the
base credentials, and the role is assumed in each active one. moto's server serves
Organizations (the base credentials act in its management account) and its AssumeRole keys act
in the role's account, so every account here is a real, separate moto account."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from snsq2nats.aws.accounts import (
    OrganizationAccount,
    account_sources,
    organization_accounts,
    organization_sources,
)
from snsq2nats.cli import main
from snsq2nats.errors import UsageError
from snsq2nats.inventory import load_inventory
from tests.fixtures.aws import AwsEndpoint

ROLE = "arn:aws:iam::{account}:role/snsq2nats-scan"


def _organization(aws: AwsEndpoint, members: int) -> tuple[str, list[str]]:
    """An organization with `members` accounts besides the management one: (management, ids)."""
    orgs = aws.client("organizations")
    orgs.create_organization(FeatureSet="ALL")
    ids = [
        orgs.create_account(Email=f"team{n}@example.com", AccountName=f"team{n}")[
            "CreateAccountStatus"
        ]["AccountId"]
        for n in range(members)
    ]
    management = aws.client("sts").get_caller_identity()["Account"]
    return management, ids


def test_organization_is_listed_page_by_page(aws: AwsEndpoint) -> None:
    management, ids = _organization(aws, 5)
    listed = organization_accounts(aws.url, (aws.region,), page_size=2)
    assert sorted(a.id for a in listed) == sorted([management, *ids])
    assert all(a.active for a in listed)
    assert {a.name for a in listed if a.id in ids} == {f"team{n}" for n in range(5)}


def test_scan_reads_every_active_account_of_the_organization(
    aws: AwsEndpoint, tmp_path: Path
) -> None:
    management, (dev, prod, closed) = _organization(aws, 3)
    aws.client("organizations").close_account(AccountId=closed)
    for account, name in ((dev, "orders"), (prod, "orders"), (prod, "audit"), (closed, "gone")):
        aws.assumed(account).client("sqs", endpoint_url=aws.url).create_queue(QueueName=name)

    out = tmp_path / "inventory.json"
    result = CliRunner().invoke(
        main,
        ["scan", "--organization", "--assume-role", ROLE, "--region", aws.region, "-o", str(out)],
    )
    assert result.exit_code == 0, result.output
    inv = load_inventory(out)
    # The management account is read as well (its role assumed like the others'); the
    # suspended one is not, and says so.
    assert inv.accounts == sorted([management, dev, prod])
    assert sorted((q.account, q.name) for q in inv.queues) == sorted(
        [(dev, "orders"), (prod, "audit"), (prod, "orders")]
    )
    assert f"account {closed} not read: its status is SUSPENDED" in result.stderr
    assert f"account {prod}: 2 queues" in result.stderr


def test_the_role_is_assumed_in_active_accounts_only() -> None:
    listed = [
        OrganizationAccount("111111111111", "dev", "ACTIVE"),
        OrganizationAccount("222222222222", "old", "SUSPENDED"),
        OrganizationAccount("333333333333", "leaving", "PENDING_CLOSURE"),
    ]
    sources = organization_sources(ROLE, listed)
    assert [(s.label, s.account, s.role_arn) for s in sources] == [
        ("111111111111", "111111111111", ROLE.format(account="111111111111"))
    ]


def test_an_organization_without_active_accounts_fails_the_scan_with_the_fix(
    aws: AwsEndpoint,
) -> None:
    """moto lists no account where no organization was created (AWS refuses the call)."""
    assert organization_accounts(aws.url, (aws.region,)) == []
    result = CliRunner().invoke(
        main, ["scan", "--organization", "--assume-role", ROLE, "--region", aws.region]
    )
    assert result.exit_code == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the organization lists no active account")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--organization",), "--organization needs --assume-role"),
        (
            ("--organization", "--assume-role", ROLE, "--account", "111111111111"),
            "--organization and --account cannot be combined",
        ),
        (
            ("--organization", "--assume-role", "arn:aws:iam::1:role/fixed"),
            "is not a role ARN template",
        ),
    ],
)
def test_organization_options_are_checked_before_anything_is_read(
    args: tuple[str, ...], message: str
) -> None:
    flags = list(args)
    template = flags[flags.index("--assume-role") + 1] if "--assume-role" in flags else None
    accounts = [flags[flags.index("--account") + 1]] if "--account" in flags else []
    with pytest.raises(UsageError) as err:
        account_sources((), template, accounts, organization=True)
    assert message in str(err.value)
