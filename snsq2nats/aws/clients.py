"""AWS clients: boto3 for the scan, aiobotocore for the bridge; one configuration, adaptive retries.

The bridge's clients are asyncio-native (aiobotocore over the same botocore): a long poll holds
a socket, not a thread, so a thousand idle queues cost a thousand sockets and one event loop.

Adaptive retries make botocore slow down on throttling (a client-side rate limiter plus
backoff) instead of failing the call; that is the only AWS backoff the scan needs, and the
bridge's own retries come on top of it only for what botocore cannot retry (a batch entry).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from snsq2nats.errors import UsageError

if TYPE_CHECKING:
    import boto3
    from botocore.config import Config
    from mypy_boto3_sns import SNSClient
    from mypy_boto3_sqs import SQSClient
    from types_aiobotocore_sns import SNSClient as AsyncSNSClient
    from types_aiobotocore_sqs import SQSClient as AsyncSQSClient

DEFAULT_CONCURRENCY = 16
MAX_ATTEMPTS = 8
# The switch between the lean SQS transport (`aws.lean`) and botocore's for the bridge.
TRANSPORT_ENV = "SNSQ2NATS_SQS_TRANSPORT"
TRANSPORTS = ("lean", "botocore")


@dataclass
class RegionClients:
    region: str
    sqs: SQSClient
    sns: SNSClient


def client_config(pool: int, *, read_timeout: float = 30) -> Config:
    """`pool` connections: one per thread that may call at once. `read_timeout` must exceed
    the longest long poll a client makes."""
    from botocore.config import Config

    return Config(
        retries={"mode": "adaptive", "max_attempts": MAX_ATTEMPTS},
        max_pool_connections=max(10, pool),
        connect_timeout=5,
        read_timeout=read_timeout,
    )


def make_clients(
    session: boto3.Session,
    regions: Iterable[str],
    endpoint_url: str | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    *,
    read_timeout: float = 30,
) -> list[RegionClients]:
    """One SQS and one SNS client per region (boto3 clients are thread-safe, sessions are not),
    with a connection per concurrent call."""
    config = client_config(concurrency, read_timeout=read_timeout)
    clients = []
    for region in regions:
        kwargs: dict[str, Any] = {"region_name": region, "config": config}
        if endpoint_url:
            kwargs["endpoint_url"] = endpoint_url
        clients.append(
            RegionClients(
                region=region,
                sqs=session.client("sqs", **kwargs),
                sns=session.client("sns", **kwargs),
            )
        )
    return clients


@dataclass
class AsyncClients:
    region: str
    sqs: AsyncSQSClient
    sns: AsyncSNSClient


@contextlib.asynccontextmanager
async def async_clients(
    region: str | None,
    endpoint_url: str | None = None,
    connections: int = DEFAULT_CONCURRENCY,
    *,
    read_timeout: float = 30,
    transport: str | None = None,
    session: Any = None,
) -> AsyncIterator[AsyncClients]:
    """An SQS and an SNS client on the running loop, closed on exit, configured as
    `client_config` says; `connections`: how many calls may be at AWS at once (every long poll
    holds one for its whole wait, so one per poll that may be out, plus the other calls).

    The credential chain, profiles and `AWS_ENDPOINT_URL` are botocore's, as for boto3. The
    SQS client's hot calls take the lean transport (`aws.lean`) unless `transport` (default:
    the `SNSQ2NATS_SQS_TRANSPORT` environment variable) is `botocore`. `session`: an
    aiobotocore session acting in another account (`aws.accounts.async_session`), else the
    base credentials'.
    """
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    session = session or get_session()
    region = region or session.get_config_variable("region") or os.environ.get("AWS_REGION")
    config = AioConfig(
        retries={"mode": "adaptive", "max_attempts": MAX_ATTEMPTS},
        max_pool_connections=max(10, connections),
        connect_timeout=5,
        read_timeout=read_timeout,
    )
    kwargs: dict[str, Any] = {"region_name": region, "config": config}
    if endpoint_url:
        kwargs["endpoint_url"] = endpoint_url
    lean = sqs_transport(transport) == "lean"
    async with (
        session.create_client("sqs", **kwargs) as sqs,
        session.create_client("sns", **kwargs) as sns,
    ):
        if not lean:
            yield AsyncClients(region=str(region), sqs=sqs, sns=sns)
            return
        from snsq2nats.aws.lean import LeanSQS

        wrapped = LeanSQS(
            sqs,
            await session.get_credentials(),
            connections=max(10, connections),
            connect_timeout=5,
            read_timeout=read_timeout,
            max_attempts=MAX_ATTEMPTS + 1,
        )
        try:
            # Stands for the aiobotocore client: same calls, same replies and errors.
            yield AsyncClients(region=str(region), sqs=cast("AsyncSQSClient", wrapped), sns=sns)
        finally:
            await wrapped.close()


async def caller_account(region: str | None, endpoint_url: str | None = None) -> str:
    """The AWS account the base credentials act in (STS GetCallerIdentity, which needs no
    permission)."""
    from aiobotocore.session import get_session
    from botocore.exceptions import BotoCoreError, ClientError

    from snsq2nats.errors import AwsConnectError

    session = get_session()
    region = region or session.get_config_variable("region") or "us-east-1"
    try:
        async with session.create_client(
            "sts", region_name=region, endpoint_url=endpoint_url
        ) as sts:
            return str((await sts.get_caller_identity())["Account"])
    except (BotoCoreError, ClientError) as exc:
        # The message may quote configuration: only the class is shown.
        raise AwsConnectError(
            f"cannot tell which AWS account the base credentials act in ({exc.__class__.__name__})",
            where="STS GetCallerIdentity",
            hint="check the base credentials and --endpoint-url: the routes span several "
            "accounts, and those of the base credentials' own account use them",
        ) from None


def sqs_transport(transport: str | None = None) -> str:
    """`lean` or `botocore`: the bridge's SQS transport, `transport` else the environment's
    SNSQ2NATS_SQS_TRANSPORT, `lean` when neither says."""
    chosen = (transport or os.environ.get(TRANSPORT_ENV) or "lean").strip().lower()
    if chosen not in TRANSPORTS:
        raise UsageError(
            f"unknown SQS transport {chosen!r}",
            where=TRANSPORT_ENV if transport is None else "transport",
            hint=f"use one of: {', '.join(TRANSPORTS)}",
        )
    return chosen


def resolve_regions(session: boto3.Session, regions: Iterable[str]) -> list[str]:
    # botocore reads AWS_DEFAULT_REGION and profiles; the other SDKs' AWS_REGION counts too.
    fallback = session.region_name or os.environ.get("AWS_REGION")
    chosen = list(dict.fromkeys(regions)) or ([fallback] if fallback else [])
    if not chosen:
        raise UsageError(
            "no AWS region given",
            hint="pass --region, or set AWS_REGION / AWS_DEFAULT_REGION or a profile's region",
        )
    return chosen


def clients_for_arns(
    regions: Sequence[str], arns: Sequence[str], endpoint_url: str | None = None
) -> RegionClients | None:
    """SQS/SNS clients for one region: the first of `regions` given, else where the first of
    `arns` lives, else the session's; None when none of them names one."""
    import boto3

    from snsq2nats.aws.arns import parse_arn

    session = boto3.Session()
    region = regions[0] if regions else parse_arn(arns[0]).region if arns else session.region_name
    if not region:
        return None
    (clients,) = make_clients(session, [region], endpoint_url)
    return clients


def sqs_by_region(endpoint_url: str | None, pool: int) -> Callable[[str], SQSClient]:
    """An SQS client per region, made on first use and configured as `client_config` says;
    `pool`: how many calls may be at AWS at once (botocore's default pool of 10 would drop
    the rest)."""
    import boto3

    session = boto3.Session()
    config = client_config(pool)
    clients: dict[str, SQSClient] = {}

    def sqs_for(region: str) -> SQSClient:
        if region not in clients:
            clients[region] = session.client(
                "sqs", region_name=region, endpoint_url=endpoint_url, config=config
            )
        return clients[region]

    return sqs_for


class SqsByAccount:
    """An SQS client per account × region, made on first use: the base credentials' for their
    own account (and for any account when none other is reachable), a session per other
    account from `session_for` (None: that account has no credentials of its own)."""

    def __init__(
        self,
        endpoint_url: str | None,
        pool: int,
        session_for: Callable[[str, str], boto3.Session | None],
        base_account: Callable[[], str | None],
    ) -> None:
        self._base = sqs_by_region(endpoint_url, pool)
        self._endpoint_url = endpoint_url
        self._config = client_config(pool)
        self._session_for = session_for
        self._base_account = base_account
        self._clients: dict[tuple[str, str], SQSClient] = {}

    def __call__(self, region: str, account: str | None = None) -> SQSClient:
        if not account or account == self._base_account():
            return self._base(region)
        key = (account, region)
        if key not in self._clients:
            session = self._session_for(account, region)
            if session is None:
                return self._base(region)
            self._clients[key] = session.client(
                "sqs", region_name=region, endpoint_url=self._endpoint_url, config=self._config
            )
        return self._clients[key]
