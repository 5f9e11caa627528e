"""The gateway's Prometheus metrics: requests and their latency per action, queue and outcome.

One registry per gateway (tests run several in one process). The queue label is the queue's
name from the request's QueueUrl (`-` for actions about no queue); the estate bounds it.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 21)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "snsq2nats_gateway_requests",
            "Requests answered, by action, queue and outcome (ok or the AWS error code).",
            ["action", "queue", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "snsq2nats_gateway_request_seconds",
            "Time to answer a request (long polls included), by action and queue.",
            ["action", "queue"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "snsq2nats_gateway_requests_in_flight",
            "Requests being answered now (long polls included).",
            registry=self.registry,
        )
        self.messages = Counter(
            "snsq2nats_gateway_messages",
            "Messages sent, received and deleted through the gateway, by queue.",
            ["queue", "direction"],
            registry=self.registry,
        )

    def observe(self, action: str, queue: str, outcome: str, seconds: float) -> None:
        self.requests.labels(action, queue, outcome).inc()
        self.latency.labels(action, queue).observe(seconds)

    def count(self, queue: str, direction: str, n: int) -> None:
        if n:
            self.messages.labels(queue, direction).inc(n)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
