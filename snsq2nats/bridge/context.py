"""What every route runner gets: connections, the stop signal, metrics, timings, limits.

Runners are `async def run(ctx: BridgeContext, route: Route) -> None` coroutines. A runner works
until `ctx.stopping` is set, then drains: it finishes (or safely abandons) what it holds, never
acknowledging on one side what the other side has not accepted, and returns. Every wait a
runner makes goes through `ctx.pause`, so a stop is noticed at once, and every retry delay
comes from `backoff`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from snsq2nats.plan.model import Plan, Route

if TYPE_CHECKING:
    from mypy_boto3_sns import SNSClient as BlockingSNSClient
    from mypy_boto3_sqs import SQSClient as BlockingSQSClient
    from nats.aio.client import Client
    from types_aiobotocore_sns import SNSClient
    from types_aiobotocore_sqs import SQSClient

    from snsq2nats.bridge.nats_accounts import AccountConnections

# AWS calls other than long polls at once, all routes together: what an instant of work on
# thousands of routes (one message to each) queues for instead of opening a connection each.
MAX_AWS_CALLS = 64

# Latency buckets in seconds, shared by the Prometheus histogram and the live view.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class RouteMetrics:
    """Counters for one route; the metrics endpoint and the live view read these."""

    route: str
    kind: str
    messages: int = 0
    bytes: int = 0
    errors: int = 0
    skipped: int = 0
    in_flight: int = 0
    lag: int | None = None
    # "starting", "running", "restarting", "stopped", "finished" or "not available: <why>".
    status: str = "starting"
    restarts: int = 0
    latency_counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    latency_sum: float = 0.0
    started: float = field(default_factory=time.monotonic)
    skipped_by: dict[str, int] = field(default_factory=dict)
    """`skipped` by cause (e.g. the filter router's `no-match`, `aws-origin`, `canary`)."""
    undeliverable_by: dict[str, int] = field(default_factory=dict)
    """Messages a route could neither deliver nor rightly skip, by cause: never silent."""
    rerouted_by: dict[str, int] = field(default_factory=dict)
    """Messages delivered by their headers although the subject said otherwise, by cause."""

    def delivered(self, count: int, size: int, latency: float | None = None) -> None:
        self.messages += count
        self.bytes += size
        if latency is not None:
            self.latency_sum += latency * count
            index = next(
                (i for i, bound in enumerate(LATENCY_BUCKETS) if latency <= bound),
                len(LATENCY_BUCKETS),
            )
            self.latency_counts[index] += count

    def error(self, count: int = 1) -> None:
        self.errors += count

    def skip(self, cause: str) -> None:
        self.skipped += 1
        self.skipped_by[cause] = self.skipped_by.get(cause, 0) + 1

    def undeliverable(self, cause: str) -> None:
        self.undeliverable_by[cause] = self.undeliverable_by.get(cause, 0) + 1

    @property
    def undeliverable_total(self) -> int:
        return sum(self.undeliverable_by.values())

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.messages / elapsed if elapsed > 0 else 0.0


def backoff(attempt: int, *, base: float = 0.2, cap: float = 10.0) -> float:
    """The bridge's one retry delay: exponential in `attempt` (0 = first retry), capped at
    `cap`, half of it fixed and half random.

    The random half keeps several pollers or bridge processes hit by one throttle from retrying
    in step; the fixed half keeps a delay from collapsing to nearly nothing, as full jitter can.
    """
    delay = min(cap, base * 2.0 ** min(max(0, attempt), 30))
    return delay / 2 + random.uniform(0, delay / 2)


@dataclass(frozen=True)
class Timings:
    """How long the bridge waits for things. The defaults are for production; tests pass
    shorter ones (a stop is noticed within `fetch_wait`, so it bounds a test's teardown)."""

    # One pull request's wait on the server. An empty fetch is the normal idle state, so this
    # bounds both the idle request rate and how long a stop takes to notice.
    fetch_wait: float = 2.0
    # Re-check a pull consumer after this much idle time: a pull subscription can go silent
    # after a server restart without raising anything (nats.py #504).
    idle_recheck: float = 30.0
    # The server's answer to a batch of acks.
    ack_timeout: float = 2.0
    # A JetStream PubAck; nats-py futures may never resolve, so every publish is bounded.
    publish_timeout: float = 5.0
    # How often a queue's backlog is read for the view and the metrics.
    lag_interval: float = 5.0
    # A crashed runner restarts after restart_base, doubling per crash up to restart_cap; one
    # that stayed up healthy_after seconds had recovered and starts afresh.
    restart_base: float = 1.0
    restart_cap: float = 60.0
    healthy_after: float = 60.0


@dataclass(frozen=True)
class RelaySettings:
    """The bridge command's tuning of its relays (`bridge --pollers …`), as `BridgeContext`
    takes it."""

    pollers: int = 4
    max_in_flight: int = 256
    wait_time_seconds: int = 20
    visibility_timeout: int = 30
    max_messages: int | None = None


@dataclass
class BridgeContext:
    plan: Plan
    nc: Client
    # aiobotocore's (`aws.clients.async_clients`); boto3's still work, each call on a thread.
    sqs: SQSClient | BlockingSQSClient
    sns: SNSClient | BlockingSNSClient
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    metrics: dict[str, RouteMetrics] = field(default_factory=dict)
    max_messages: int | None = None
    max_in_flight: int = 256
    # Sees every AWS call (`fn` one of the clients' methods, and its arguments) and makes it.
    aws_call: Callable[..., Awaitable[Any]] | None = None
    aws_calls: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(MAX_AWS_CALLS))
    timings: Timings = field(default_factory=Timings)
    # AWS → NATS tuning. Long polls of 20 s never busy-loop; the visibility given on receive
    # is what the bridge extends while a publish is slow.
    pollers: int = 4
    wait_time_seconds: int = 20
    visibility_timeout: int = 30
    # On a route's own context (`for_route`): the bridge's context. Its `stopping` is the
    # bridge-wide stop; the route's `stopping` is set by that one and by a stop of the route
    # alone (the fleet handing it to another member).
    bridge: BridgeContext | None = None
    # The SQS and SNS clients acting in a route's own AWS account and region
    # (`bridge.session.AccountPool`); None: `sqs` and `sns` serve every route.
    clients_for: Callable[[Route], tuple[Any, Any]] | None = None
    # A per-account plan's connections to the NATS accounts other than the home one
    # (`bridge.nats_accounts`): a route's runner gets its account's as `nc`. None: `nc` serves
    # every route.
    nats_accounts: AccountConnections | None = None
    # A route publishing into another NATS account than it reads (a filter router whose topic
    # and queue are in two accounts): that account's connection; None: `nc` for both.
    target_nc: Client | None = None

    @classmethod
    def tuned(
        cls, settings: RelaySettings, *, plan: Plan, nc: Client, sqs: Any, sns: Any
    ) -> BridgeContext:
        return cls(
            plan=plan,
            nc=nc,
            sqs=sqs,
            sns=sns,
            pollers=settings.pollers,
            max_in_flight=settings.max_in_flight,
            wait_time_seconds=settings.wait_time_seconds,
            visibility_timeout=settings.visibility_timeout,
            max_messages=settings.max_messages,
        )

    def for_route(self, route: Route | None = None) -> BridgeContext:
        """A context for one route: everything shared, except a stop signal of its own, so a
        runner drains when the route alone is stopped exactly as when the whole bridge is; and
        the clients of the route's own AWS account when the routes span several."""
        child = dataclasses.replace(self, stopping=asyncio.Event(), bridge=self.bridge or self)
        if route is not None and self.clients_for is not None:
            child.sqs, child.sns = self.clients_for(route)
        return child

    @property
    def home_nc(self) -> Client:
        """The bridge's own connection, in the account holding the fleet's buckets (the
        cutover state, the revision, leases and records): a route's `nc` may be another
        account's (`bridge.nats_accounts`)."""
        return (self.bridge or self).nc

    async def pause(self, seconds: float) -> bool:
        """Sleep `seconds`, waking early when the bridge stops; True if it is stopping."""
        if seconds > 0 and not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), timeout=seconds)
        return self.stopping.is_set()

    def route_metrics(self, route: Route) -> RouteMetrics:
        metrics = self.metrics.get(route.name)
        if metrics is None:
            metrics = self.metrics[route.name] = RouteMetrics(route.name, route.kind)
        return metrics

    def total_delivered(self) -> int:
        return sum(m.messages for m in self.metrics.values())

    def count_and_check_limit(self) -> None:
        """Stop the bridge once --max-messages deliveries have happened in total."""
        if self.max_messages is not None and self.total_delivered() >= self.max_messages:
            (self.bridge or self).stopping.set()

    async def call_aws(self, fn: Callable[..., Any], /, **kwargs: Any) -> Any:
        """One AWS call on the loop (the clients are aiobotocore's): a long poll waits on its
        socket, so an idle route costs no thread however many there are. Long polls are one
        per poller; the other calls share MAX_AWS_CALLS places."""
        call = self.aws_call or _direct
        if kwargs.get("WaitTimeSeconds"):
            return await call(fn, **kwargs)
        async with self.aws_calls:
            return await call(fn, **kwargs)


async def _direct(fn: Callable[..., Any], /, **kwargs: Any) -> Any:
    from aiobotocore.client import AioBaseClient

    # aiobotocore's, or the lean SQS transport's (`aws.lean`) standing in for it.
    if isinstance(getattr(fn, "__self__", None), AioBaseClient) or inspect.iscoroutinefunction(fn):
        return await fn(**kwargs)
    # A blocking boto3 client (an embedder's): off the loop, on asyncio's default pool.
    return await asyncio.to_thread(fn, **kwargs)
