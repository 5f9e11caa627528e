"""Read an SNS/SQS estate from AWS into an `Inventory`.

The only module that reads AWS. It lists sequentially (pagination is inherently serial) and
describes in parallel on a bounded thread pool: boto3 clients are thread-safe, sessions are not,
so clients are built once per region up front and shared. Raw AWS strings become typed fields
here and nowhere else.
"""

from __future__ import annotations

import functools
import json
import string
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from snsq2nats.aws.arns import arn_name, parse_arn
from snsq2nats.aws.clients import DEFAULT_CONCURRENCY, RegionClients
from snsq2nats.aws.errors import BAD_CREDENTIALS_CODES, DENIED_CODES, MISSING_CODES, error_code
from snsq2nats.errors import AwsConnectError, ScanError
from snsq2nats.inventory import (
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_MAX_RECEIVE_COUNT,
    DEFAULT_RETENTION_PERIOD,
    DEFAULT_VISIBILITY_TIMEOUT,
    ArchivePolicy,
    Inventory,
    Queue,
    RedriveAllowPolicy,
    RedrivePolicy,
    ScanWarning,
    Subscription,
    Topic,
)

if TYPE_CHECKING:
    from mypy_boto3_sns import SNSClient
    from mypy_boto3_sqs import SQSClient

T = TypeVar("T")
R = TypeVar("R")

__all__ = [
    "DEFAULT_CONCURRENCY",
    "AccountClients",
    "AccountOutcome",
    "RegionClients",
    "list_queue_urls",
    "merge_inventory",
    "queue_from_attributes",
    "redact_endpoint",
    "scan",
    "scan_accounts",
]


@dataclass
class _Collector:
    """Results gathered from worker threads; list.append is atomic under the GIL."""

    warnings: list[ScanWarning] = field(default_factory=list)

    def warn(self, code: Any, resource: str, message: str) -> None:
        self.warnings.append(ScanWarning(code=code, resource=resource, message=message))


def scan(
    clients: list[RegionClients],
    *,
    prefix: str | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    on_progress: Callable[[int, int | None], None] | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Inventory:
    """Scan every region's queues, topics and subscriptions into one inventory.

    `concurrency=1` gives the one-call-at-a-time scan the benchmark compares against.
    """
    collector = _Collector()
    advance = on_progress or (lambda n, total: None)
    found = _Found()
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        for region in clients:
            found.add(
                _scan_region(region, prefix, pool, collector, advance, lambda total: total, None)
            )
    _cross_reference(found.queues, found.topics, found.subscriptions, collector)
    return _inventory(found, [c.region for c in clients], collector, now)


@dataclass
class _Found:
    queues: list[Queue] = field(default_factory=list)
    topics: list[Topic] = field(default_factory=list)
    subscriptions: list[Subscription] = field(default_factory=list)

    def add(self, other: _Found) -> None:
        self.queues += other.queues
        self.topics += other.topics
        self.subscriptions += other.subscriptions


def _inventory(
    found: _Found,
    regions: list[str],
    collector: _Collector,
    now: Callable[[], datetime],
    accounts: list[str] | None = None,
) -> Inventory:
    return Inventory(
        generated_at=now().isoformat(timespec="seconds"),
        regions=regions,
        accounts=accounts or [],
        queues=sorted(found.queues, key=lambda q: q.arn),
        topics=sorted(found.topics, key=lambda t: t.arn),
        subscriptions=sorted(found.subscriptions, key=lambda s: (s.topic_arn, s.arn)),
        warnings=sorted(collector.warnings, key=lambda w: (w.resource, w.code)),
    )


def _scan_region(
    region: RegionClients,
    prefix: str | None,
    pool: ThreadPoolExecutor,
    collector: _Collector,
    advance: Callable[[int, int | None], None],
    add_total: Callable[[int], int],
    scanned_accounts: frozenset[str] | None,
) -> _Found:
    """One account's region: listed here, described on `pool`.

    `scanned_accounts`: in a several-account scan, subscriptions this account owns on another
    scanned account's topic are kept too (SNS lists a subscription under the account that made
    it, which for a cross-account fan-out is often the queue's)."""
    queue_urls = _guard(region, "sqs", functools.partial(list_queue_urls, region.sqs, prefix))
    topic_arns = _guard(region, "sns", functools.partial(_list_topic_arns, region.sns, prefix))
    own = set(topic_arns)

    def wanted(topic_arn: str) -> bool:
        if topic_arn in own:
            return True
        if scanned_accounts is None:
            return False
        try:
            account = parse_arn(topic_arn).account
        except ValueError:
            return False
        return account in scanned_accounts and (
            not prefix or arn_name(topic_arn).startswith(prefix)
        )

    raw_subs = _guard(region, "sns", functools.partial(_list_subscriptions, region.sns, wanted))
    advance(0, add_total(len(queue_urls) + len(topic_arns) + len(raw_subs)))

    def describe_queue(url: str) -> Queue | None:
        return _describe_queue(region, url, collector)

    def describe_topic(arn: str) -> Topic | None:
        return _describe_topic(region, arn, collector)

    def describe_sub(raw: dict[str, str]) -> Subscription | None:
        return _describe_subscription(region, raw, collector)

    return _Found(
        queues=_run(pool, describe_queue, queue_urls, advance),
        topics=_run(pool, describe_topic, topic_arns, advance),
        subscriptions=_run(pool, describe_sub, raw_subs, advance),
    )


@dataclass(frozen=True)
class AccountClients:
    """One AWS account of a several-account scan. `connect` opens its session (a profile, or a
    role assumed now) and returns the account ID with a client pair per region; it may fail,
    and then only this account is missing from the scan."""

    label: str
    connect: Callable[[], tuple[str, list[RegionClients]]]


@dataclass(frozen=True)
class AccountOutcome:
    """What the scan read of one account, for progress lines: counts, or why it failed."""

    label: str
    account: str | None
    queues: int = 0
    topics: int = 0
    subscriptions: int = 0
    failures: tuple[str, ...] = ()
    regions_read: tuple[str, ...] = ()


def scan_accounts(
    accounts: list[AccountClients],
    *,
    prefix: str | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    on_progress: Callable[[int, int | None], None] | None = None,
    on_account: Callable[[AccountOutcome], None] | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Inventory:
    """Scan several accounts' regions as one estate: every account × region is listed at once
    (up to `concurrency`), the describes share one pool of `concurrency` threads.

    An account (or one of its regions) that cannot be read is an `account-failed` warning and
    the others complete; only when none could be read at all is it a `ScanError`. References
    between the accounts (a topic in one fanning out to a queue in another, a dead-letter queue
    elsewhere) resolve across the whole estate.
    """
    from snsq2nats.errors import SnsqError

    advance = on_progress or (lambda n, total: None)
    tell = on_account or (lambda outcome: None)
    collector = _Collector()
    lock = threading.Lock()
    totals = [0]

    def add_total(n: int) -> int:
        with lock:
            totals[0] += n
            return totals[0]

    def connect(acct: AccountClients) -> tuple[str, list[RegionClients]] | str:
        try:
            return acct.connect()
        except SnsqError as err:
            return err.one_line()

    lanes = max(1, min(concurrency, len(accounts)))
    with ThreadPoolExecutor(max_workers=lanes) as outer:
        connected = list(outer.map(connect, accounts))
    ids = frozenset(c[0] for c in connected if not isinstance(c, str))
    jobs = [
        (index, region)
        for index, got in enumerate(connected)
        if not isinstance(got, str)
        for region in got[1]
    ]

    def read(job: tuple[int, RegionClients]) -> tuple[_Found, _Collector] | str:
        # Each region's warnings are kept apart until it completes, so a region that fails
        # half-way leaves no half of its warnings behind.
        own = _Collector()
        try:
            return _scan_region(job[1], prefix, pool, own, advance, add_total, ids), own
        except SnsqError as err:
            return err.one_line()

    found = _Found()
    outcomes: dict[int, AccountOutcome] = {}
    for index, got in enumerate(connected):
        label = accounts[index].label
        if isinstance(got, str):
            outcomes[index] = AccountOutcome(label, None, failures=(got,))
            tell(outcomes[index])
        else:
            outcomes[index] = AccountOutcome(label, got[0])
    remaining = Counter(index for index, _ in jobs)
    with (
        ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool,
        ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(jobs)))) as outer,
    ):
        pending = {outer.submit(read, job): job for job in jobs}
        # Folded in as each region completes, so an account is told as soon as it is done.
        for future in as_completed(pending):
            index, region = pending[future]
            result = future.result()
            outcome = outcomes[index]
            if isinstance(result, str):
                outcome = replace(
                    outcome, failures=(*outcome.failures, f"{region.region}: {result}")
                )
            else:
                part, own = result
                found.add(part)
                collector.warnings.extend(own.warnings)
                outcome = replace(
                    outcome,
                    queues=outcome.queues + len(part.queues),
                    topics=outcome.topics + len(part.topics),
                    subscriptions=outcome.subscriptions + len(part.subscriptions),
                    regions_read=(*outcome.regions_read, region.region),
                )
            outcomes[index] = outcome
            remaining[index] -= 1
            if not remaining[index]:
                tell(outcome)
    read_in_full: set[str] = set()
    for outcome in outcomes.values():
        for failure in outcome.failures:
            collector.warn(
                "account-failed",
                f"account {outcome.label}",
                f"not read, the other accounts were: {failure}",
            )
        if outcome.account is not None and not outcome.failures:
            read_in_full.add(outcome.account)
    if not any(o.regions_read for o in outcomes.values()):
        raise ScanError(
            "no account could be read",
            where=", ".join(f"account {o.label}" for o in outcomes.values()),
            hint="; ".join(f"{o.label}: {o.failures[0]}" for o in outcomes.values() if o.failures),
        )
    found.subscriptions = list({s.arn: s for s in found.subscriptions}.values())
    _cross_reference(found.queues, found.topics, found.subscriptions, collector)
    _cross_reference_policies(found.queues, found.topics, collector)
    regions = list(dict.fromkeys(region.region for _, region in jobs))
    return _inventory(found, regions, collector, now, sorted(read_in_full))


def merge_inventory(
    base: Inventory,
    update: Inventory,
    *,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Inventory:
    """`base` with the accounts `update` read in full replaced by what it read of them.

    Accounts `update` could not read keep their part of `base` (its failure stays a warning).
    The references between accounts are checked again over the result, as one scan would.
    """
    replaced = set(update.accounts)

    def kept(account: str) -> bool:
        return account not in replaced

    # What `update` read of an account it could not read in full is left out: that account
    # keeps its previous part whole rather than half old, half new.
    found = _Found(
        queues=[q for q in base.queues if kept(q.account)]
        + [q for q in update.queues if not kept(q.account)],
        topics=[t for t in base.topics if kept(t.account)]
        + [t for t in update.topics if not kept(t.account)],
    )
    # A subscription is listed by the account that made it, which may be the queue's: one
    # that a re-read account made on a kept account's topic comes with the update.
    fresh = {
        s.arn: s
        for s in update.subscriptions
        if not kept(s.account) or not kept(_account_of(s.endpoint))
    }
    old = {s.arn: s for s in base.subscriptions if kept(s.account) and s.arn not in fresh}
    found.subscriptions = [*old.values(), *fresh.values()]
    collector = _Collector()
    # Dangling references are recomputed below, over the merged estate.
    collector.warnings += [
        w
        for w in base.warnings
        if not w.code.startswith("dangling-") and kept(_account_of(w.resource))
    ]
    collector.warnings += [
        w
        for w in update.warnings
        if w.code == "account-failed"
        or (not w.code.startswith("dangling-") and not kept(_account_of(w.resource)))
    ]
    # The same failure seen by the previous scan and by this one is one warning.
    collector.warnings = list(
        {(w.code, w.resource, w.message): w for w in collector.warnings}.values()
    )
    _cross_reference(found.queues, found.topics, found.subscriptions, collector)
    _cross_reference_policies(found.queues, found.topics, collector)
    regions = list(dict.fromkeys([*base.regions, *update.regions]))
    accounts = sorted(set(base.accounts) | replaced)
    return _inventory(found, regions, collector, now, accounts)


def _account_of(resource: str) -> str:
    """The account a warning's resource (an ARN, a queue URL, `account X`) lives in, or ''."""
    if resource.startswith("arn:"):
        try:
            return parse_arn(resource.split("#", 1)[0]).account
        except ValueError:
            return ""
    if resource.startswith(("http://", "https://")):
        parts = urlsplit(resource).path.strip("/").split("/")
        return parts[-2] if len(parts) >= 2 else ""
    return resource.removeprefix("account ")


def _run(
    pool: ThreadPoolExecutor,
    fn: Callable[[T], R | None],
    items: list[T],
    advance: Callable[[int, int | None], None],
) -> list[R]:
    results: list[R] = []
    for result in pool.map(fn, items):
        advance(1, None)
        if result is not None:
            results.append(result)
    return results


def _guard(region: RegionClients, service: str, call: Callable[[], T]) -> T:
    """Turn whole-scan failures (no endpoint, no credentials, listing denied) into one line."""
    from botocore.exceptions import (
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
    )

    client = region.sqs if service == "sqs" else region.sns
    endpoint = client.meta.endpoint_url
    try:
        return call()
    except (NoCredentialsError, PartialCredentialsError):
        raise AwsConnectError(
            "no AWS credentials found",
            where=f"{service} {region.region}",
            hint="set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
        ) from None
    except EndpointConnectionError:
        raise AwsConnectError(
            f"cannot reach the {service.upper()} endpoint",
            where=endpoint,
            hint="check --endpoint-url / AWS_ENDPOINT_URL and the region",
        ) from None
    except ClientError as exc:
        code = _code(exc)
        if code in DENIED_CODES or code in BAD_CREDENTIALS_CODES:
            raise ScanError(
                f"AWS refused to list {service.upper()} resources ({code})",
                where=f"{service} {region.region}",
                hint="the scan needs sqs:ListQueues, sqs:GetQueueAttributes, sqs:ListQueueTags, "
                "sns:ListTopics, sns:GetTopicAttributes, sns:ListSubscriptions, "
                "sns:GetSubscriptionAttributes and sns:ListTagsForResource",
            ) from None
        raise ScanError(
            f"AWS error while listing {service.upper()} resources: {code}",
            where=f"{service} {region.region}",
        ) from None
    except Exception as exc:  # urllib3/botocore transport errors have many shapes
        if exc.__class__.__module__.startswith(("botocore", "urllib3")):
            raise AwsConnectError(
                f"cannot talk to the {service.upper()} endpoint ({exc.__class__.__name__})",
                where=endpoint,
                hint="check --endpoint-url / AWS_ENDPOINT_URL and the network",
            ) from None
        raise


def _code(exc: Exception) -> str:
    return error_code(exc) or exc.__class__.__name__


_QUEUE_PAGE = 1000  # ListQueues' largest MaxResults
# What a queue name may continue with: letters, digits, `-`, `_`, and `.` of `.fifo`.
_QUEUE_NAME_CHARS = string.ascii_letters + string.digits + "-_."


def list_queue_urls(sqs: SQSClient, prefix: str | None) -> list[str]:
    """Every queue URL in the client's account and region (names starting with `prefix`)."""
    # ListQueues returns NextToken only when MaxResults is set: without it real AWS stops at 1,000.
    paginator = sqs.get_paginator("list_queues")
    kwargs: dict[str, Any] = {"PaginationConfig": {"PageSize": _QUEUE_PAGE}}
    if prefix:
        kwargs["QueueNamePrefix"] = prefix
    urls: list[str] = []
    pages = 0
    for page in paginator.paginate(**kwargs):
        pages += 1
        urls.extend(page.get("QueueUrls", []))
    found = dict.fromkeys(urls)
    if pages == 1 and len(urls) == _QUEUE_PAGE:
        # A full page and no NextToken: an endpoint that does not paginate (emulators such as
        # fauxqs) cut the list there. Silently scanning 1,000 of 10,000 queues is the worst
        # outcome, so list again by every longer prefix: each holds fewer queues, recursively.
        for char in _QUEUE_NAME_CHARS:
            found.update(dict.fromkeys(list_queue_urls(sqs, (prefix or "") + char)))
        if prefix:
            found.update(dict.fromkeys(_queue_named(sqs, prefix)))
    return list(found)


def _queue_named(sqs: SQSClient, name: str) -> list[str]:
    """The URL of the queue called exactly `name` (no longer prefix lists it), if there is one."""
    from botocore.exceptions import ClientError

    try:
        return [sqs.get_queue_url(QueueName=name)["QueueUrl"]]
    except ClientError as exc:
        if _code(exc) in MISSING_CODES:
            return []
        raise


def _list_topic_arns(sns: SNSClient, prefix: str | None) -> list[str]:
    arns: list[str] = []
    for page in sns.get_paginator("list_topics").paginate():
        for topic in page.get("Topics", []):
            arn = topic["TopicArn"]
            if not prefix or arn_name(arn).startswith(prefix):
                arns.append(arn)
    return arns


def _list_subscriptions(sns: SNSClient, wanted: Callable[[str], bool]) -> list[dict[str, str]]:
    """Account-wide listing: 100 per call, far fewer calls than listing per topic."""
    found: list[dict[str, str]] = []
    for page in sns.get_paginator("list_subscriptions").paginate():
        for sub in page.get("Subscriptions", []):
            if wanted(sub.get("TopicArn", "")):
                found.append({k: str(v) for k, v in sub.items()})
    return found


def _skip_missing_or_denied(
    arn: str, what: str, collector: _Collector, call: Callable[[], T]
) -> T | None:
    from botocore.exceptions import ClientError

    try:
        return call()
    except ClientError as exc:
        code = _code(exc)
        if code in MISSING_CODES:
            collector.warn(
                "deleted-during-scan", arn, f"{what} disappeared between listing and describing"
            )
            return None
        if code in DENIED_CODES:
            collector.warn("access-denied", arn, f"access denied reading {what} ({code}); skipped")
            return None
        raise ScanError(f"AWS error reading {what}: {code}", where=arn) from None


def _describe_queue(region: RegionClients, url: str, collector: _Collector) -> Queue | None:
    def read() -> tuple[dict[str, str], dict[str, str]]:
        attrs = region.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
        tags = region.sqs.list_queue_tags(QueueUrl=url)
        return {str(k): v for k, v in attrs.get("Attributes", {}).items()}, dict(
            tags.get("Tags", {})
        )

    got = _skip_missing_or_denied(url, "queue", collector, read)
    if got is None:
        return None
    attrs, tags = got
    arn = attrs.get("QueueArn") or _queue_arn_from_url(url, region.region)
    return queue_from_attributes(arn, url, attrs, tags, collector)


def queue_from_attributes(
    arn: str,
    url: str,
    attrs: dict[str, str],
    tags: dict[str, str],
    collector: _Collector | None = None,
) -> Queue:
    """The boundary: SQS's all-strings attribute map to a typed `Queue`."""
    warn = collector.warn if collector else (lambda *a: None)
    redrive = _json_attr(attrs, "RedrivePolicy", arn, warn)
    allow = _json_attr(attrs, "RedriveAllowPolicy", arn, warn)
    _, _, _, region, account, name = _split_arn(arn)
    return Queue(
        arn=arn,
        name=name,
        url=url,
        region=region,
        account=account,
        fifo=_bool(attrs.get("FifoQueue")),
        content_based_deduplication=_bool(attrs.get("ContentBasedDeduplication")),
        deduplication_scope=attrs.get("DeduplicationScope"),  # type: ignore[arg-type]
        fifo_throughput_limit=attrs.get("FifoThroughputLimit"),  # type: ignore[arg-type]
        visibility_timeout=_int(attrs, "VisibilityTimeout", DEFAULT_VISIBILITY_TIMEOUT),
        message_retention_period=_int(attrs, "MessageRetentionPeriod", DEFAULT_RETENTION_PERIOD),
        maximum_message_size=_int(attrs, "MaximumMessageSize", DEFAULT_MAX_MESSAGE_SIZE),
        delay_seconds=_int(attrs, "DelaySeconds", 0),
        receive_message_wait_time_seconds=_int(attrs, "ReceiveMessageWaitTimeSeconds", 0),
        redrive_policy=_redrive(redrive),
        redrive_allow_policy=RedriveAllowPolicy(
            redrive_permission=allow.get("redrivePermission", "allowAll"),
            source_queue_arns=list(allow.get("sourceQueueArns", [])),
        )
        if allow
        else None,
        kms_master_key_id=attrs.get("KmsMasterKeyId") or None,
        kms_data_key_reuse_period_seconds=_int(attrs, "KmsDataKeyReusePeriodSeconds", None)
        if attrs.get("KmsMasterKeyId")
        else None,
        sqs_managed_sse_enabled=_bool(attrs.get("SqsManagedSseEnabled")),
        policy=_json_attr(attrs, "Policy", arn, warn) or None,
        tags=tags,
        approximate_messages=_int(attrs, "ApproximateNumberOfMessages", 0),
        approximate_messages_not_visible=_int(attrs, "ApproximateNumberOfMessagesNotVisible", 0),
        approximate_messages_delayed=_int(attrs, "ApproximateNumberOfMessagesDelayed", 0),
        created_timestamp=_int(attrs, "CreatedTimestamp", None),
        last_modified_timestamp=_int(attrs, "LastModifiedTimestamp", None),
        attributes=attrs,
    )


def _describe_topic(region: RegionClients, arn: str, collector: _Collector) -> Topic | None:
    def read() -> tuple[dict[str, str], dict[str, str]]:
        attrs = region.sns.get_topic_attributes(TopicArn=arn)
        tags = region.sns.list_tags_for_resource(ResourceArn=arn)
        return dict(attrs.get("Attributes", {})), {t["Key"]: t["Value"] for t in tags["Tags"]}

    got = _skip_missing_or_denied(arn, "topic", collector, read)
    if got is None:
        return None
    attrs, tags = got
    warn = collector.warn
    archive = _json_attr(attrs, "ArchivePolicy", arn, warn)
    _, _, _, region_name, account, name = _split_arn(arn)
    return Topic(
        arn=arn,
        name=name,
        region=region_name,
        account=account,
        fifo=_bool(attrs.get("FifoTopic")),
        content_based_deduplication=_bool(attrs.get("ContentBasedDeduplication")),
        fifo_throughput_scope=attrs.get("FifoThroughputScope"),  # type: ignore[arg-type]
        archive_policy=ArchivePolicy(message_retention_days=int(archive["MessageRetentionPeriod"]))
        if archive.get("MessageRetentionPeriod")
        else None,
        display_name=attrs.get("DisplayName") or None,
        delivery_policy=_json_attr(attrs, "DeliveryPolicy", arn, warn) or None,
        kms_master_key_id=attrs.get("KmsMasterKeyId") or None,
        policy=_json_attr(attrs, "Policy", arn, warn) or None,
        tracing_config=attrs.get("TracingConfig") or None,
        signature_version=attrs.get("SignatureVersion") or None,
        tags=tags,
        attributes=attrs,
    )


def _describe_subscription(
    region: RegionClients, raw: dict[str, str], collector: _Collector
) -> Subscription | None:
    arn = raw["SubscriptionArn"]
    topic_arn = raw["TopicArn"]
    endpoint = redact_endpoint(raw.get("Endpoint", ""))
    _, _, _, region_name, account, _ = _split_arn(topic_arn)
    if not arn.startswith("arn:"):
        # Unconfirmed subscriptions have no ARN and no readable attributes.
        collector.warn(
            "pending-confirmation",
            topic_arn,
            f"{raw.get('Protocol')} subscription to {endpoint} is pending confirmation",
        )
        return Subscription(
            arn=f"{topic_arn}#pending:{raw.get('Protocol')}:{endpoint}",
            topic_arn=topic_arn,
            protocol=raw.get("Protocol", ""),
            endpoint=endpoint,
            region=region_name,
            account=account,
            pending_confirmation=True,
        )

    def read() -> dict[str, str]:
        return dict(region.sns.get_subscription_attributes(SubscriptionArn=arn)["Attributes"])

    attrs = _skip_missing_or_denied(arn, "subscription", collector, read)
    if attrs is None:
        return None
    return subscription_from_attributes(arn, raw, attrs, collector)


def subscription_from_attributes(
    arn: str, raw: dict[str, str], attrs: dict[str, str], collector: _Collector | None = None
) -> Subscription:
    warn = collector.warn if collector else (lambda *a: None)
    topic_arn = attrs.get("TopicArn", raw["TopicArn"])
    _, _, _, region_name, account, _ = _split_arn(topic_arn)
    if "Endpoint" in attrs:
        attrs = {**attrs, "Endpoint": redact_endpoint(attrs["Endpoint"])}
    return Subscription(
        arn=arn,
        topic_arn=topic_arn,
        protocol=attrs.get("Protocol", raw.get("Protocol", "")),
        endpoint=redact_endpoint(attrs.get("Endpoint", raw.get("Endpoint", ""))),
        region=region_name,
        account=account,
        pending_confirmation=_bool(attrs.get("PendingConfirmation")),
        raw_message_delivery=_bool(attrs.get("RawMessageDelivery")),
        filter_policy=attrs.get("FilterPolicy") or None,
        filter_policy_scope=attrs.get("FilterPolicyScope") or "MessageAttributes",  # type: ignore[arg-type]
        redrive_policy=_redrive(_json_attr(attrs, "RedrivePolicy", arn, warn)),
        delivery_policy=_json_attr(attrs, "DeliveryPolicy", arn, warn) or None,
        replay_policy=_json_attr(attrs, "ReplayPolicy", arn, warn) or None,
        subscription_role_arn=attrs.get("SubscriptionRoleArn") or None,
        attributes=attrs,
    )


def _cross_reference(
    queues: list[Queue],
    topics: list[Topic],
    subscriptions: list[Subscription],
    collector: _Collector,
) -> None:
    queue_arns = {q.arn for q in queues}
    topic_arns = {t.arn for t in topics}
    for queue in queues:
        if queue.redrive_policy and queue.redrive_policy.dead_letter_target_arn not in queue_arns:
            collector.warn(
                "dangling-dlq",
                queue.arn,
                f"dead-letter queue {queue.redrive_policy.dead_letter_target_arn} "
                "was not found among the scanned queues",
            )
    for sub in subscriptions:
        if sub.topic_arn not in topic_arns:
            collector.warn("dangling-topic", sub.arn, f"topic {sub.topic_arn} was not found")
        if sub.protocol == "sqs" and sub.endpoint not in queue_arns:
            collector.warn(
                "dangling-endpoint",
                sub.arn,
                f"subscribed queue {sub.endpoint} was not found among the scanned queues",
            )
        if sub.redrive_policy and sub.redrive_policy.dead_letter_target_arn not in queue_arns:
            collector.warn(
                "dangling-dlq",
                sub.arn,
                f"subscription dead-letter queue {sub.redrive_policy.dead_letter_target_arn} "
                "was not found among the scanned queues",
            )


def _cross_reference_policies(
    queues: list[Queue], topics: list[Topic], collector: _Collector
) -> None:
    """A queue policy letting a topic send (`aws:SourceArn`) names the topic it serves; in a
    several-account estate that topic is usually another account's, and is looked up across
    them all. (One-account scans leave policies unchecked, as they always did.)"""
    topic_arns = {t.arn for t in topics}
    for queue in queues:
        for source in policy_source_arns(queue.policy):
            wildcard = any(c in source for c in "*?")
            if ":sns:" in source and not wildcard and source not in topic_arns:
                collector.warn(
                    "dangling-policy",
                    queue.arn,
                    f"the queue policy lets topic {source} send, which was not found "
                    "among the scanned topics",
                )


def policy_source_arns(policy: dict[str, Any] | None) -> list[str]:
    """Every `aws:SourceArn` value an Allow statement of a resource policy conditions on."""
    found: list[str] = []
    statements = (policy or {}).get("Statement", [])
    for statement in statements if isinstance(statements, list) else [statements]:
        if not isinstance(statement, dict) or statement.get("Effect") != "Allow":
            continue
        condition = statement.get("Condition")
        for operands in (condition or {}).values() if isinstance(condition, dict) else []:
            if not isinstance(operands, dict):
                continue
            for key, value in operands.items():
                if key.lower() == "aws:sourcearn":
                    found += [str(v) for v in (value if isinstance(value, list) else [value])]
    return found


def redact_endpoint(endpoint: str) -> str:
    """HTTP endpoints may carry credentials in userinfo or query tokens: keep only the shape."""
    if not endpoint.startswith(("http://", "https://")):
        return endpoint
    parts = urlsplit(endpoint)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = urlencode([(k, "***") for k, _ in parse_qsl(parts.query, keep_blank_values=True)])
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _split_arn(arn: str) -> tuple[str, str, str, str, str, str]:
    try:
        parts = parse_arn(arn)
    except ValueError:
        raise ScanError(f"unexpected ARN shape {arn!r}") from None
    return "arn", parts.partition, parts.service, parts.region, parts.account, parts.resource


def _queue_arn_from_url(url: str, region: str) -> str:
    path = urlsplit(url).path.strip("/").split("/")
    account, name = (path[-2], path[-1]) if len(path) >= 2 else ("000000000000", path[-1])
    return f"arn:aws:sqs:{region}:{account}:{name}"


def _bool(value: str | None) -> bool:
    return str(value).lower() == "true"


def _int(attrs: dict[str, str], key: str, default: Any) -> Any:
    value = attrs.get(key)
    try:
        return int(value) if value not in (None, "") else default
    except ValueError:
        return default


def _json_attr(
    attrs: dict[str, str], key: str, arn: str, warn: Callable[[Any, str, str], None]
) -> dict[str, Any]:
    text = attrs.get(key)
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        warn("unreadable-attribute", arn, f"{key} is not valid JSON; kept verbatim in attributes")
        return {}
    return value if isinstance(value, dict) else {}


def _redrive(policy: dict[str, Any]) -> RedrivePolicy | None:
    target = policy.get("deadLetterTargetArn")
    if not target:
        return None
    return RedrivePolicy(
        dead_letter_target_arn=target,
        max_receive_count=int(policy.get("maxReceiveCount", DEFAULT_MAX_RECEIVE_COUNT)),
    )
