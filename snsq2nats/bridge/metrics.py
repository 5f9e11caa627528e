"""Prometheus text exposition of the per-route counters, served on `--metrics-port`.

The format is small enough to write by hand (version 0.0.4 text), which spares a dependency
and a second registry to keep in step with RouteMetrics.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable

from snsq2nats.bridge.context import LATENCY_BUCKETS, BridgeContext, RouteMetrics

PREFIX = "snsq2nats_bridge"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(m: RouteMetrics, **extra: str) -> str:
    pairs = {"route": m.route, "kind": m.kind, **extra}
    return "{" + ",".join(f'{k}="{_label(v)}"' for k, v in pairs.items()) + "}"


def _family(name: str, kind: str, help_text: str) -> list[str]:
    return [f"# HELP {PREFIX}_{name} {help_text}", f"# TYPE {PREFIX}_{name} {kind}"]


def render(metrics: Iterable[RouteMetrics]) -> str:
    routes = sorted(metrics, key=lambda m: m.route)
    lines: list[str] = []
    simple: list[tuple[str, str, str, Callable[[RouteMetrics], int]]] = [
        ("messages_total", "counter", "Messages relayed.", lambda m: m.messages),
        ("bytes_total", "counter", "Payload bytes relayed.", lambda m: m.bytes),
        ("errors_total", "counter", "Errors (retried or not).", lambda m: m.errors),
        ("skipped_total", "counter", "Messages not relayed on purpose.", lambda m: m.skipped),
        ("restarts_total", "counter", "Runner restarts after a failure.", lambda m: m.restarts),
        ("in_flight", "gauge", "Messages received and not yet settled.", lambda m: m.in_flight),
    ]
    for name, kind, help_text, value in simple:
        lines += _family(name, kind, help_text)
        lines += [f"{PREFIX}_{name}{_labels(m)} {value(m)}" for m in routes]
    lines += _family("lag", "gauge", "Backlog waiting at the route's source (when known).")
    lines += [f"{PREFIX}_lag{_labels(m)} {m.lag}" for m in routes if m.lag is not None]
    lines += _family("up", "gauge", "1 while the route's runner is running.")
    lines += [f"{PREFIX}_up{_labels(m)} {int(m.status == 'running')}" for m in routes]
    name = f"{PREFIX}_latency_seconds"
    lines += _family("latency_seconds", "histogram", "Time from receipt to the other side's ack.")
    for m in routes:
        cumulative = 0
        for bound, count in zip(LATENCY_BUCKETS, m.latency_counts, strict=False):
            cumulative += count
            lines.append(f"{name}_bucket{_labels(m, le=f'{bound:g}')} {cumulative}")
        total = sum(m.latency_counts)
        lines.append(f"{name}_bucket{_labels(m, le='+Inf')} {total}")
        lines.append(f"{name}_sum{_labels(m)} {m.latency_sum:.6f}")
        lines.append(f"{name}_count{_labels(m)} {total}")
    return "\n".join(lines) + "\n"


async def serve_metrics(
    ctx: BridgeContext, port: int, host: str = "0.0.0.0"
) -> asyncio.base_events.Server:
    """Start the endpoint (any path answers; /metrics is the convention). Close it when done."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            method = request.split(b" ", 1)[0]
            body = render(ctx.metrics.values()).encode()
            status = b"200 OK" if method in (b"GET", b"HEAD") else b"405 Method Not Allowed"
            head = (
                b"HTTP/1.1 "
                + status
                + b"\r\nContent-Type: "
                + CONTENT_TYPE.encode()
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
