"""The options several commands share, each group handed to the command as one typed value.

`aws_options` gives a command `aws: AwsInputs`, `nats_options` gives `nats: NatsInputs`,
`plan_options` gives `inputs: PlanInputs`: the command names what it uses instead of taking
`**kwargs`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from snsq2nats.jetstream.connect import NatsOptions
    from snsq2nats.plan.pipeline import PlanRequest

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class AwsInputs:
    regions: tuple[str, ...]
    endpoint_url: str | None


@dataclass
class NatsInputs:
    server: str | None
    context: str | None
    _resolved: NatsOptions | None = None

    @property
    def options(self) -> NatsOptions:
        """The connection options (URL, context, credentials from the environment), resolved
        on first use and then kept."""
        if self._resolved is None:
            from snsq2nats.jetstream.connect import NatsOptions

            self._resolved = NatsOptions.resolve(self.server, self.context)
        return self._resolved


@dataclass(frozen=True)
class PlanInputs:
    """Where inventory and rules come from, as `plan` takes them."""

    aws: AwsInputs
    inventory_path: Path | None
    prefix: str | None
    mapping_paths: tuple[Path, ...]
    replicas: int | None

    def request(self, *, prune: bool = False, offline: bool = False) -> PlanRequest:
        from snsq2nats.plan.pipeline import PlanRequest

        return PlanRequest(
            inventory_path=self.inventory_path,
            regions=self.aws.regions,
            endpoint_url=self.aws.endpoint_url,
            prefix=self.prefix,
            mapping_paths=list(self.mapping_paths),
            replicas=self.replicas,
            prune=prune,
            offline=offline,
        )

    def given_flags(self) -> list[str]:
        """The planning-only flags given (they mean nothing beside a saved plan)."""
        return [flag for flag, value in self._planning_only() if value]

    def as_args(self) -> list[str]:
        """These inputs as options to another command (`auth`)."""
        args: list[str] = []
        pairs = [*self._planning_only(), ("--endpoint-url", self.aws.endpoint_url)]
        for flag, value in pairs:
            for item in value if isinstance(value, tuple) else [value]:
                if item not in (None, ""):
                    args += [flag, str(item)]
        return args

    def _planning_only(self) -> list[tuple[str, Any]]:
        return [
            ("--inventory", self.inventory_path),
            ("--prefix", self.prefix),
            ("--mapping", self.mapping_paths),
            ("--replicas", self.replicas),
            ("--region", self.aws.regions),
        ]


def option_group(*options: Callable[[F], F]) -> Callable[[F], F]:
    """Several click options applied as one decorator, in the order they are listed."""

    def apply(fn: F) -> F:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return apply


def gather(name: str, build: Callable[..., Any], params: tuple[str, ...]) -> Callable[[F], F]:
    """Hand the command the click values `params` as one argument `name`, built by `build`."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            kwargs[name] = build(*(kwargs.pop(p) for p in params))
            return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


_aws_flags = option_group(
    click.option(
        "--region",
        "regions",
        multiple=True,
        metavar="REGION",
        help="AWS region to read (repeatable). Default: AWS_REGION or the profile's region.",
    ),
    click.option(
        "--endpoint-url",
        envvar="AWS_ENDPOINT_URL",
        metavar="URL",
        help="Custom AWS endpoint (e.g. a local emulator). Env: AWS_ENDPOINT_URL.",
    ),
)

aws_options = option_group(_aws_flags, gather("aws", AwsInputs, ("regions", "endpoint_url")))


def _route_accounts(profiles: tuple[str, ...], role_template: str | None) -> Any:
    from snsq2nats.aws.accounts import route_accounts

    return route_accounts(profiles, role_template)


account_options = option_group(
    click.option(
        "--assume-role",
        "role_template",
        metavar="ARN",
        help="Reach the AWS accounts of routes other than the base credentials' through this "
        "role, assumed from the base credentials: 'arn:aws:iam::{account}:role/NAME'.",
    ),
    click.option(
        "--profile",
        "profiles",
        multiple=True,
        metavar="NAME=ACCOUNT",
        help="Reach the routes of AWS account ACCOUNT with this profile (repeatable; before "
        "--assume-role).",
    ),
    gather("accounts", _route_accounts, ("profiles", "role_template")),
)
"""`accounts: RouteAccounts` (`aws.accounts`): how the bridge and `status` act in each route's own
AWS account."""

nats_options = option_group(
    click.option(
        "-s",
        "--server",
        envvar="NATS_URL",
        metavar="URL",
        help="NATS server URL(s), comma-separated. Env: NATS_URL.",
    ),
    click.option(
        "--context",
        "nats_context",
        envvar="NATS_CONTEXT",
        metavar="NAME",
        help="natscli context name or file. Env: NATS_CONTEXT. "
        "Credentials: NATS_CREDS, NATS_NKEY, NATS_USER/NATS_PASSWORD, NATS_TOKEN, "
        "NATS_CERT/NATS_KEY/NATS_CA.",
    ),
    gather("nats", NatsInputs, ("server", "nats_context")),
)


def _plan_inputs(
    regions: tuple[str, ...],
    endpoint_url: str | None,
    inventory_path: Path | None,
    prefix: str | None,
    mapping_paths: tuple[Path, ...],
    replicas: int | None,
) -> PlanInputs:
    return PlanInputs(
        AwsInputs(regions, endpoint_url), inventory_path, prefix, mapping_paths, replicas
    )


# What plan, apply, verify, subject, bridge and status share: where inventory and rules come from.
plan_options = option_group(
    _aws_flags,
    click.option(
        "--inventory",
        "inventory_path",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Plan from this inventory file (from `scan -o`) instead of scanning AWS.",
    ),
    click.option("--prefix", metavar="P", help="When scanning: only names starting with P."),
    click.option(
        "--mapping",
        "mapping_paths",
        multiple=True,
        type=click.Path(dir_okay=False, path_type=Path),
        help="Mapping rules file (repeatable; later files win).",
    ),
    click.option(
        "--replicas",
        type=click.IntRange(1, 5),
        help="Default stream replicas (overrides the mapping defaults).",
    ),
    gather(
        "inputs",
        _plan_inputs,
        ("regions", "endpoint_url", "inventory_path", "prefix", "mapping_paths", "replicas"),
    ),
)


def plan_file_option(purpose: str) -> Callable[[F], F]:
    """`--plan FILE`: work from a saved plan instead of planning now."""
    return click.option(
        "--plan",
        "plan_path",
        type=click.Path(dir_okay=False, path_type=Path),
        help=f"{purpose} this plan file instead of planning now.",
    )
