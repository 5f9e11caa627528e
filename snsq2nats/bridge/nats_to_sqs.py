"""nats-to-sqs: a queue whose producers moved to NATS, relayed into its SQS queue for the
consumers still on AWS (SendMessageBatch). The relay itself is `nats_to_aws`."""

from __future__ import annotations

import asyncio
from typing import Any

from snsq2nats.aws.arns import parse_arn
from snsq2nats.bridge.codec import MAX_SQS_ATTRIBUTES
from snsq2nats.bridge.context import BridgeContext
from snsq2nats.bridge.nats_to_aws import SQS_MAX_BYTES, Target, run_relay
from snsq2nats.errors import SnsqError
from snsq2nats.plan.model import Route


class SqsTarget(Target):
    kind = "SQS"
    max_bytes = SQS_MAX_BYTES
    max_attributes = MAX_SQS_ATTRIBUTES

    def __init__(self, ctx: BridgeContext, route: Route) -> None:
        super().__init__(ctx, route)
        self.queue_url = ""

    async def prepare(self) -> None:
        try:
            queue = parse_arn(self.route.aws_arn)
        except ValueError:
            queue = None
        if queue is None or queue.service != "sqs":
            raise SnsqError(
                f"{self.route.aws_arn!r} is not an SQS queue ARN", where=f"route {self.route.name}"
            )
        response = await self.ctx.call_aws(
            self.ctx.sqs.get_queue_url,
            QueueName=queue.resource,
            QueueOwnerAWSAccountId=queue.account,
        )
        self.queue_url = str(response["QueueUrl"])
        # The queue's real type decides the entry shape: a plan that disagrees would otherwise
        # turn every message into an AWS validation error (and a TERM).
        attrs = await self.ctx.call_aws(
            self.ctx.sqs.get_queue_attributes,
            QueueUrl=self.queue_url,
            AttributeNames=["FifoQueue"],
        )
        self.fifo = (attrs.get("Attributes") or {}).get("FifoQueue") == "true"

    def body_field(self) -> str:
        return "MessageBody"

    async def call(self, entries: list[dict[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = await self.ctx.call_aws(
            self.ctx.sqs.send_message_batch, QueueUrl=self.queue_url, Entries=entries
        )
        return result


async def run_nats_to_sqs(ctx: BridgeContext, route: Route) -> None:
    """Relay the route's durable consumer into the SQS queue `route.aws_arn`.

    A partitioned FIFO queue has one durable per partition: each gets its own relay, one message
    in flight as always for FIFO, so a group (which lives in one partition) reaches the SQS
    FIFO queue in order while the partitions' groups are sent in parallel. One failing relay
    stops the others (the route fails as a whole, as an unpartitioned one does).
    """
    if route.partitions <= 1:
        await run_relay(ctx, route, SqsTarget)
        return
    async with asyncio.TaskGroup() as group:
        for durable in route.durables:
            one = route.model_copy(update={"consumer": durable, "partitions": 1})
            group.create_task(run_relay(ctx, one, SqsTarget))
