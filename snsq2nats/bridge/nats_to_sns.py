"""nats-to-sns: a topic whose publishers moved to NATS, relayed into its SNS topic for the
subscriptions still on AWS (PublishBatch). The relay itself is `nats_to_aws`; what SNS accepted
is recorded in the ledger (`plan.buckets.SENT_LEDGER`) before it is acknowledged."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from snsq2nats.bridge.context import BridgeContext
from snsq2nats.bridge.nats_to_aws import SNS_MAX_BYTES, Target, run_relay
from snsq2nats.plan.buckets import sent_subject
from snsq2nats.plan.model import Route

if TYPE_CHECKING:
    from nats.aio.msg import Msg


class SnsTarget(Target):
    kind = "SNS"
    max_bytes = SNS_MAX_BYTES

    async def prepare(self) -> None:
        response = await self.ctx.call_aws(
            self.ctx.sns.get_topic_attributes, TopicArn=self.route.aws_arn
        )
        self.fifo = (response.get("Attributes") or {}).get("FifoTopic") == "true"

    def origin_attribute(self, msg: Msg) -> dict[str, str]:
        """`nats:<stream>:<seq>`: SNS hands a copy to every subscribed queue, and a queue
        already fed by a source from this topic stream must drop the copy."""
        origin = f"nats:{self.route.stream}:{msg.metadata.sequence.stream}"
        return {"DataType": "String", "StringValue": origin}

    def body_field(self) -> str:
        return "Message"

    def ledger_subject(self) -> str | None:
        """SNS has no duplicate window towards a queue whose consumers are on AWS: a fan-out
        handover must know which in-doubt messages SNS already took."""
        return sent_subject(self.route.stream) if self.route.stream else None

    async def call(self, entries: list[dict[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = await self.ctx.call_aws(
            self.ctx.sns.publish_batch,
            TopicArn=self.route.aws_arn,
            PublishBatchRequestEntries=entries,
        )
        return result


async def run_nats_to_sns(ctx: BridgeContext, route: Route) -> None:
    """Relay the route's durable consumer into the SNS topic `route.aws_arn` (PublishBatch)."""
    await run_relay(ctx, route, SnsTarget)
