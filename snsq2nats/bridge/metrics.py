"""The bridge's Prometheus metrics through prometheus-client, and its health endpoints.

One registry per bridge: a collector that reads the per-route counters at scrape time (the
relays only bump plain integers, nothing per message goes through the client library), plus
the standard `process_*` and `python_*` collectors. Served on `--metrics-port` by the bridge's
own event loop (no extra thread): `/metrics`, `/healthz` (the process answers) and `/readyz`.

As a fleet member, every route series carries the `member` label (`<host>-<pid>-<random>`), and
`snsq2nats_bridge_fleet_*` gauges say what the member sees: the live members and the routes it
holds. `/readyz` answers 200 once the member is connected to NATS, has joined the fleet, and
every route it holds is running, and no route the fleet gives it failed to be acquired or
started (a member refused its lease, say for lack of a grant, answers 503 with why). Routes
it handed to another member (status `released`) and routes it never held do not count, so a
member holding nothing (more members than routes) is ready: a standby that takes routes over
when another member goes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from snsq2nats.bridge.context import LATENCY_BUCKETS, RouteMetrics

if TYPE_CHECKING:
    from snsq2nats.bridge.context import BridgeContext

PREFIX = "snsq2nats_bridge"
CONTENT_TYPE = CONTENT_TYPE_LATEST
LABELS = ["route", "kind"]
RELEASED = "released"
"""A route's status once this process stopped it alone (handed to another fleet member, or no
longer wanted): not a failure, and not something /readyz waits for."""


class FleetState(Protocol):
    """What the metrics read of a fleet member (`bridge.fleet.Fleet`)."""

    member: str
    joined: bool
    owned: dict[str, int]
    blocked: dict[str, str]

    def live_members(self) -> list[str]: ...


_COUNTERS: list[tuple[str, str, Callable[[RouteMetrics], int]]] = [
    ("messages", "Messages relayed.", lambda m: m.messages),
    ("bytes", "Payload bytes relayed.", lambda m: m.bytes),
    ("errors", "Errors (retried or not).", lambda m: m.errors),
    ("skipped", "Messages not relayed on purpose.", lambda m: m.skipped),
    ("restarts", "Runner restarts after a failure.", lambda m: m.restarts),
]


_BY_CAUSE: list[tuple[str, str, Callable[[RouteMetrics], dict[str, int]]]] = [
    (
        "skipped_by_cause",
        "Messages not relayed on purpose, by cause (no-match: what SNS would not deliver).",
        lambda m: m.skipped_by,
    ),
    (
        "undeliverable",
        "Messages neither delivered nor rightly skipped, by cause (recorded for status).",
        lambda m: m.undeliverable_by,
    ),
    (
        "rerouted",
        "Messages routed by their headers against their subject, by cause.",
        lambda m: m.rerouted_by,
    ),
]
"""Per-cause counters: a route's series appears with its first message of that cause."""


_GAUGES: list[tuple[str, str, Callable[[RouteMetrics], int]]] = [
    ("in_flight", "Messages received and not yet settled.", lambda m: m.in_flight),
    ("up", "1 while the route's runner is running.", lambda m: int(m.status == "running")),
]


class RouteCollector:
    """Reads the routes' counters when Prometheus scrapes, never on the relay's hot path."""

    def __init__(
        self, routes: Callable[[], Iterable[RouteMetrics]], fleet: FleetState | None = None
    ) -> None:
        self._routes = routes
        self._fleet = fleet
        self._labels = [*LABELS, "member"] if fleet is not None else LABELS
        self._extra = [fleet.member] if fleet is not None else []

    def collect(self) -> Iterator[Metric]:
        routes = sorted(self._routes(), key=lambda m: m.route)
        labels, extra = self._labels, self._extra
        for name, help_text, value in _COUNTERS:
            counter = CounterMetricFamily(f"{PREFIX}_{name}", help_text, labels=labels)
            for m in routes:
                counter.add_metric([m.route, m.kind, *extra], value(m))
            yield counter
        for name, help_text, causes in _BY_CAUSE:
            counter = CounterMetricFamily(
                f"{PREFIX}_{name}", help_text, labels=[*labels[:2], "cause", *labels[2:]]
            )
            for m in routes:
                for cause, count in sorted(causes(m).items()):
                    counter.add_metric([m.route, m.kind, cause, *extra], count)
            yield counter
        for name, help_text, read in _GAUGES:
            gauge = GaugeMetricFamily(f"{PREFIX}_{name}", help_text, labels=labels)
            for m in routes:
                gauge.add_metric([m.route, m.kind, *extra], read(m))
            yield gauge
        lag = GaugeMetricFamily(
            f"{PREFIX}_lag", "Backlog waiting at the route's source (when known).", labels=labels
        )
        for m in routes:
            if m.lag is not None:
                lag.add_metric([m.route, m.kind, *extra], m.lag)
        yield lag
        latency = HistogramMetricFamily(
            f"{PREFIX}_latency_seconds", "Time from receipt to the other side's ack.", labels=labels
        )
        for m in routes:
            cumulative, buckets = 0, []
            for bound, count in zip(LATENCY_BUCKETS, m.latency_counts, strict=False):
                cumulative += count
                buckets.append((f"{bound:g}", cumulative))
            buckets.append(("+Inf", sum(m.latency_counts)))
            latency.add_metric([m.route, m.kind, *extra], buckets, m.latency_sum)
        yield latency
        if self._fleet is not None:
            yield from self._fleet_gauges(self._fleet)

    @staticmethod
    def _fleet_gauges(fleet: FleetState) -> Iterator[Metric]:
        for name, help_text, value in (
            ("fleet_members", "Live fleet members this member sees.", len(fleet.live_members())),
            ("fleet_routes_held", "Routes whose lease this member holds.", len(fleet.owned)),
            ("fleet_joined", "1 once this member has joined the fleet.", int(fleet.joined)),
            (
                "fleet_routes_blocked",
                "Routes this member should run but cannot acquire or run (see /readyz).",
                len(fleet.blocked),
            ),
        ):
            gauge = GaugeMetricFamily(f"{PREFIX}_{name}", help_text, labels=["member"])
            gauge.add_metric([fleet.member], value)
            yield gauge


def registry_for(
    routes: Callable[[], Iterable[RouteMetrics]], fleet: FleetState | None = None
) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RouteCollector(routes, fleet))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


def render(metrics: Iterable[RouteMetrics]) -> str:
    """The exposition text for these routes (the standard format, with process metrics)."""
    fixed = list(metrics)
    return generate_latest(registry_for(lambda: fixed)).decode()


def ready(ctx: BridgeContext, fleet: FleetState | None = None) -> str | None:
    """None when ready; otherwise why not."""
    if ctx.nc is None or not ctx.nc.is_connected:
        return "not connected to NATS"
    if fleet is not None and not fleet.joined:
        return "not yet a member of the bridge fleet"
    if fleet is not None and fleet.blocked:
        # Routes the fleet gives this member that it cannot acquire or run: nobody runs them.
        return "routes this member should run but cannot: " + "; ".join(
            f"{name}: {why}" for name, why in sorted(fleet.blocked.items())
        )
    waiting = sorted(
        m.route
        for m in ctx.metrics.values()
        if m.status not in ("running", RELEASED) and (fleet is None or m.route in fleet.owned)
    )
    return f"routes not running: {', '.join(waiting)}" if waiting else None


# Loopback unless asked: the endpoint answers anyone who reaches it (metrics name every queue
# and route), so it is opened wider only on purpose (`--metrics-host 0.0.0.0` in a pod).
DEFAULT_METRICS_HOST = "127.0.0.1"


async def serve_metrics(
    ctx: BridgeContext,
    port: int,
    host: str = DEFAULT_METRICS_HOST,
    *,
    fleet: FleetState | None = None,
) -> asyncio.base_events.Server:
    """Start the endpoint: /metrics (any other path too), /healthz, /readyz. Close it when done."""
    registry = registry_for(lambda: ctx.metrics.values(), fleet)

    def answer(path: bytes) -> tuple[bytes, str, bytes]:
        if path.startswith(b"/healthz"):
            return b"200 OK", "text/plain; charset=utf-8", b"ok\n"
        if path.startswith(b"/readyz"):
            why = ready(ctx, fleet)
            if why is None:
                return b"200 OK", "text/plain; charset=utf-8", b"ready\n"
            return b"503 Service Unavailable", "text/plain; charset=utf-8", f"{why}\n".encode()
        return b"200 OK", CONTENT_TYPE, generate_latest(registry)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            method, _, rest = request.partition(b" ")
            path = rest.split(b" ", 1)[0]
            if method in (b"GET", b"HEAD"):
                status, content_type, body = answer(path)
            else:
                status, content_type, body = b"405 Method Not Allowed", "text/plain", b""
            head = (
                b"HTTP/1.1 "
                + status
                + b"\r\nContent-Type: "
                + content_type.encode()
                + b"\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\nConnection: close\r\n\r\n"
            )
            writer.write(head + (body if method == b"GET" else b""))
            await writer.drain()
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()

    return await asyncio.start_server(handle, host, port)
