"""`snsq2nats gateway` as a team runs it: the access keys `auth` wrote, SigV4 on every request,
and each request on NATS as its key's identity (SQS and SNS on one endpoint).

The estate (moto → scan → plan → `auth` identities → a nats-server that knows only them →
apply) is the SNS tests' fixture; here the real command serves it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from snsq2nats.files import document_json
from tests.fixtures.gateway import Gateways
from tests.test_gateway_sns import Estate
from tests.test_gateway_sns import estate as estate  # the fixture

pytestmark = pytest.mark.slow


def _client(service: str, url: str, key: str, secret: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1}),
    )


def _key(estate: Estate, suffix: str) -> Any:
    (key,) = [k for identity, k in estate.keys.items() if identity.endswith(suffix)]
    return key


def _error(call: Any) -> str:
    with pytest.raises(ClientError) as caught:
        call()
    return str(caught.value.response["Error"]["Code"])


async def test_the_command_verifies_keys_and_acts_as_each_identity(
    estate: Estate, tmp_path: Path, gateways: Gateways
) -> None:
    (tmp_path / "plan.json").write_bytes(document_json(estate.plan))
    admin_context = tmp_path / "auth" / "contexts" / "snsq2nats-admin.json"
    assert admin_context.exists(), "auth writes a natscli context per identity"
    gateway = gateways.start(
        *("--plan", "plan.json", "--keys", "auth"),
        *("--context", "auth/contexts/snsq2nats-admin.json", "--listen", "127.0.0.1:0"),
        cwd=tmp_path,
        env={"SNSQ2NATS_GATEWAY_SECRET": "s3cret"},
    )
    url = gateway.wait_listening()

    publisher = _key(estate, "gw-events-publisher")
    consumer = _key(estate, "gw-audit-consumer")
    producer = _key(estate, "gw-audit-producer")
    sns = _client("sns", url, publisher.access_key_id, publisher.secret)
    sent = sns.publish(TopicArn=estate.events, Message="through the command")
    assert sent["MessageId"]

    # The topic's message reaches its raw subscriber's queue; its worker reads it over SQS.
    worker = _client("sqs", url, consumer.access_key_id, consumer.secret)
    queue_url = worker.get_queue_url(QueueName="gw-audit")["QueueUrl"]
    bodies: list[str] = []
    handles: list[str] = []
    while "through the command" not in bodies:
        got = worker.receive_message(QueueUrl=queue_url, WaitTimeSeconds=5)
        for message in got.get("Messages", []):
            bodies.append(message["Body"])
            handles.append(message["ReceiptHandle"])
    for handle in handles:
        worker.delete_message(QueueUrl=queue_url, ReceiptHandle=handle)

    # The queue's producer sends; its worker receives exactly that.
    sender = _client("sqs", url, producer.access_key_id, producer.secret)
    sender.send_message(QueueUrl=queue_url, MessageBody="sent by its producer")
    got = worker.receive_message(QueueUrl=queue_url, WaitTimeSeconds=10)
    assert [m["Body"] for m in got.get("Messages", [])] == ["sent by its producer"]

    # Keys the gateway does not know, or a wrong secret, are AWS's refusals.
    stranger = _client("sqs", url, "AKIANOTAKEY000000000", "nope")
    assert _error(lambda: stranger.list_queues()) == "InvalidClientTokenId"
    forged = _client("sqs", url, producer.access_key_id, "not-the-secret")
    assert _error(lambda: forged.list_queues()) == "SignatureDoesNotMatch"
    forged_sns = _client("sns", url, publisher.access_key_id, "not-the-secret")
    assert _error(lambda: forged_sns.list_topics()) == "SignatureDoesNotMatch"
    assert gateway.stop() == 0, gateway.tail()
    # A secret never reaches the gateway's output.
    assert producer.secret not in gateway.text()
