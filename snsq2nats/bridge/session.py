"""One bridge run: AWS clients, a NATS connection that never gives up, the routes, the view.

The CLI's `bridge` command and `snsq2nats demo` both run the bridge through here.
"""

from __future__ import annotations

import asyncio
from typing import Any

from snsq2nats.console import Output
from snsq2nats.plan.model import Plan


async def bridge_session(
    out: Output,
    nats: Any,
    plan: Plan,
    routes: list[Any],
    *,
    regions: tuple[str, ...],
    endpoint_url: str | None,
    settings: dict[str, Any],
    duration: float | None,
    metrics_port: int | None,
    cleanup: bool,
    stop: asyncio.Event | None = None,
) -> None:
    """Run the routes until a signal, --duration, --max-messages, or `stop` (for embedders)."""
    import boto3
    from botocore.config import Config

    from snsq2nats.bridge.aws_to_nats import cleanup_sns_to_nats
    from snsq2nats.bridge.context import BridgeContext
    from snsq2nats.bridge.metrics import serve_metrics
    from snsq2nats.bridge.runtime import load_runners, run_bridge
    from snsq2nats.errors import NatsConnectError
    from snsq2nats.jetstream.connect import connect_nats
    from snsq2nats.jetstream.state import stream_names
    from snsq2nats.report.live import run_view, summary

    session = boto3.Session()
    # The routes' own region unless told otherwise: the ARNs say where the resources live.
    region = regions[0] if regions else routes[0].aws_arn.split(":")[3] or session.region_name
    config = Config(
        retries={"mode": "adaptive", "max_attempts": 8},
        max_pool_connections=max(10, settings["pollers"] * len(routes) + 10),
        read_timeout=40,
    )
    client_kwargs: dict[str, Any] = {"region_name": region, "config": config}
    if endpoint_url:
        client_kwargs["endpoint_url"] = endpoint_url

    def log(line: str) -> None:
        out.line(line)

    closing = False

    async def disconnected() -> None:
        if not closing:
            log("NATS disconnected: reconnecting")

    async def reconnected() -> None:
        log("NATS reconnected")

    # A bridge outlives server restarts: reconnect for ever, never give up on the connection.
    nc = await connect_nats(
        nats,
        name="snsq2nats bridge",
        allow_reconnect=True,
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        disconnected_cb=disconnected,
        reconnected_cb=reconnected,
    )
    ctx = BridgeContext(
        plan=plan,
        nc=nc,
        sqs=session.client("sqs", **client_kwargs),
        sns=session.client("sns", **client_kwargs),
        log=log,
        **settings,
    )
    server = None
    try:
        missing = sorted({r.stream for r in routes if r.stream} - await stream_names(nc))
        if missing:
            raise NatsConnectError(
                f"stream(s) {', '.join(missing)} do not exist",
                where=nats.redacted_servers,
                hint="run `snsq2nats apply` with this plan before bridging",
            )
        if cleanup:
            for route in routes:
                if not await cleanup_sns_to_nats(ctx, route):
                    log(f"{route.name}: no bridge queue {route.bridge_queue}")
            return
        if metrics_port is not None:
            server = await serve_metrics(ctx, metrics_port)
            log(f"metrics on :{metrics_port}/metrics")
        runners, unavailable = load_runners()
        log(f"bridging {len(routes)} route(s): {', '.join(r.name for r in routes)}")
        view = asyncio.create_task(run_view(ctx, out))
        relay_stop = asyncio.create_task(_forward(stop, ctx.stopping)) if stop else None
        try:
            await run_bridge(ctx, routes, runners, duration, missing=unavailable)
        finally:
            ctx.stopping.set()
            if relay_stop is not None:
                relay_stop.cancel()
            await view
        for text in summary(ctx):
            log(text)
    finally:
        if server is not None:
            server.close()
        closing = True
        await nc.drain() if nc.is_connected else await nc.close()


async def _forward(source: asyncio.Event, target: asyncio.Event) -> None:
    await source.wait()
    target.set()
