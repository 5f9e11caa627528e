"""sqs-to-nats: an SQS queue relayed into its queue stream while producers still write to SQS.

The relay (long polls, pipelined publishes, delete after the PubAck) is `aws_to_nats.Relay`.
"""

from __future__ import annotations

from snsq2nats.bridge.aws_to_nats import Relay, queue_url_for
from snsq2nats.bridge.context import BridgeContext
from snsq2nats.plan.model import Route


async def run_sqs_to_nats(ctx: BridgeContext, route: Route) -> None:
    """Relay the SQS queue `route.aws_arn` into `route.stream`."""
    url = await queue_url_for(ctx, route.aws_arn)
    await Relay(ctx, route, url).run()
