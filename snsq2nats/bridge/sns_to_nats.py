"""sns-to-nats: an SNS topic relayed into its topic stream through a queue the bridge owns.

The bridge queue is subscribed to the topic with raw delivery, so attributes arrive as SQS
attributes; it is created on start, reused across restarts (a tag names the topic it serves),
and removed by `cleanup_sns_to_nats`: unsubscribe, relay what is left, delete. From the queue on,
the relay is the one `sqs_to_nats` uses (`aws_to_nats.Relay`).

`cutover finish` of a topic detaches the queue (`detach_bridge_queue`) before the bridges stop
its relay, not after: a stopped relay's cancelled long poll lives on in SQS for up to its wait
(20 s) and takes whatever reaches the queue meanwhile, invisible for the visibility timeout
(30 s), and the removal must wait for it to come back (measured: 32 s for one message that
arrived after the stop). Detached first, nothing reaches the queue once the relays stop; the
removal waits only for messages a member took and never finished (one killed mid-batch).
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from snsq2nats.aws.errors import is_missing
from snsq2nats.bridge.aws_to_nats import Relay
from snsq2nats.bridge.context import BridgeContext
from snsq2nats.plan.model import Plan, Route

if TYPE_CHECKING:
    from mypy_boto3_sns import SNSClient as BlockingSNSClient
    from mypy_boto3_sqs import SQSClient as BlockingSQSClient
    from nats.aio.client import Client
    from types_aiobotocore_sns import SNSClient
    from types_aiobotocore_sqs import SQSClient

log = logging.getLogger(__name__)

BRIDGE_TAG = "snsq2nats.bridge"


def _queue_policy(queue_arn: str, topic_arn: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "snsq2nats-bridge",
                    "Effect": "Allow",
                    "Principal": {"Service": "sns.amazonaws.com"},
                    "Action": "sqs:SendMessage",
                    "Resource": queue_arn,
                    "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}},
                }
            ],
        }
    )


async def _bridge_queue(
    ctx: BridgeContext, route: Route, *, create: bool
) -> tuple[str, str] | None:
    """(url, arn) of the route's bridge queue; created when missing if `create`."""
    name = route.bridge_queue
    if not name:
        raise ValueError(f"route {route.name} names no bridge queue")
    try:
        url = str((await ctx.call_aws(ctx.sqs.get_queue_url, QueueName=name))["QueueUrl"])
    except Exception as exc:
        if not is_missing(exc):
            raise
        if not create:
            return None
        attributes = {"FifoQueue": "true"} if route.fifo else {}
        reply = await ctx.call_aws(
            ctx.sqs.create_queue,
            QueueName=name,
            Attributes=attributes,
            tags={BRIDGE_TAG: route.aws_arn},
        )
        url = str(reply["QueueUrl"])
    attrs = await ctx.call_aws(
        ctx.sqs.get_queue_attributes, QueueUrl=url, AttributeNames=["QueueArn"]
    )
    return url, str(attrs["Attributes"]["QueueArn"])


async def _subscriptions_to(
    ctx: BridgeContext, topic_arn: str, queue_arn: str
) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        kwargs: dict[str, Any] = {"TopicArn": topic_arn}
        if token:
            kwargs["NextToken"] = token
        reply = await ctx.call_aws(ctx.sns.list_subscriptions_by_topic, **kwargs)
        found += [
            s
            for s in reply.get("Subscriptions", [])
            if s.get("Protocol") == "sqs" and s.get("Endpoint") == queue_arn
        ]
        token = reply.get("NextToken")
        if not token:
            return found


async def ensure_bridge_queue(ctx: BridgeContext, route: Route) -> str:
    """Create or reuse the topic's bridge queue and its raw subscription; returns the URL."""
    found = await _bridge_queue(ctx, route, create=True)
    assert found is not None
    url, arn = found
    await ctx.call_aws(
        ctx.sqs.set_queue_attributes,
        QueueUrl=url,
        Attributes={"Policy": _queue_policy(arn, route.aws_arn)},
    )
    subs = await _subscriptions_to(ctx, route.aws_arn, arn)
    if not subs:
        await ctx.call_aws(
            ctx.sns.subscribe,
            TopicArn=route.aws_arn,
            Protocol="sqs",
            Endpoint=arn,
            Attributes={"RawMessageDelivery": "true"},
            ReturnSubscriptionArn=True,
        )
        log.info("%s: subscribed bridge queue %s to the topic", route.name, route.bridge_queue)
    else:
        for sub in subs:
            # Someone turned raw delivery off: attributes would arrive inside an envelope.
            await ctx.call_aws(
                ctx.sns.set_subscription_attributes,
                SubscriptionArn=sub["SubscriptionArn"],
                AttributeName="RawMessageDelivery",
                AttributeValue="true",
            )
    return url


async def _unsubscribe(ctx: BridgeContext, route: Route, arn: str) -> int:
    """Remove every subscription of the topic to the bridge queue; how many there were."""
    subs = await _subscriptions_to(ctx, route.aws_arn, arn)
    for sub in subs:
        await ctx.call_aws(ctx.sns.unsubscribe, SubscriptionArn=sub["SubscriptionArn"])
    return len(subs)


async def _in_flight(ctx: BridgeContext, url: str) -> int:
    """Messages of the queue received by someone and neither deleted nor visible again."""
    reply = await ctx.call_aws(
        ctx.sqs.get_queue_attributes,
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessagesNotVisible"],
    )
    return int((reply.get("Attributes") or {}).get("ApproximateNumberOfMessagesNotVisible", 0))


async def cleanup_sns_to_nats(ctx: BridgeContext, route: Route) -> bool:
    """Unsubscribe, relay what the queue still holds, then delete it; False if nothing existed."""
    found = await _bridge_queue(ctx, route, create=False)
    if found is None:
        return False
    url, arn = found
    await _unsubscribe(ctx, route, arn)
    held = await _in_flight(ctx, url)
    if held:
        # Only SQS knows what they are (an echo of a NATS message, or one an AWS publisher
        # sent): the queue goes once they are back and relayed, never before.
        log.info(
            "%s: %d message(s) of bridge queue %s are in flight (taken by a relay that stopped "
            "or died): waiting for their visibility timeout to relay them",
            route.name,
            held,
            route.bridge_queue,
        )
    # Deleting a queue with messages in it would lose them: relay until it is empty.
    await Relay(ctx, route, url, until_empty=True).run()
    if ctx.stopping.is_set():
        log.warning("%s: stopped before the bridge queue drained; it was kept", route.name)
        return True
    await ctx.call_aws(ctx.sqs.delete_queue, QueueUrl=url)
    log.info("%s: removed bridge queue %s", route.name, route.bridge_queue)
    return True


async def detach_bridge_queue(
    nc: Client,
    plan: Plan,
    sqs: SQSClient | BlockingSQSClient,
    sns: SNSClient | BlockingSNSClient,
    route: Route,
) -> bool:
    """Unsubscribe the topic's bridge queue while its relay still runs (`cutover finish`,
    before the bridges stop it): nothing new reaches the queue, and the running relay goes on
    draining what is there. False if there is no such queue."""
    ctx = BridgeContext(plan=plan, nc=nc, sqs=sqs, sns=sns)
    found = await _bridge_queue(ctx, route, create=False)
    if found is None:
        return False
    if await _unsubscribe(ctx, route, found[1]):
        log.info("%s: bridge queue %s unsubscribed from the topic", route.name, route.bridge_queue)
    return True


async def remove_bridge_queue(
    nc: Client,
    plan: Plan,
    sqs: SQSClient | BlockingSQSClient,
    sns: SNSClient | BlockingSNSClient,
    route: Route,
) -> bool:
    """`cleanup_sns_to_nats` outside a running bridge (a finished topic's cutover): the same
    unsubscribe, relay and delete, on a context of its own; False if nothing existed."""
    ctx = BridgeContext(plan=plan, nc=nc, sqs=sqs, sns=sns)
    try:
        return await cleanup_sns_to_nats(ctx, route)
    finally:
        ctx.stopping.set()


async def run_sns_to_nats(ctx: BridgeContext, route: Route) -> None:
    """Relay the topic `route.aws_arn` into `route.stream` through the route's bridge queue."""
    url = await ensure_bridge_queue(ctx, route)
    await Relay(ctx, route, url).run()
