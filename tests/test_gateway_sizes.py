"""Every message SQS accepts is stored: a message of exactly the queue's MaximumMessageSize,
counted as SQS counts it (body, attribute names, types and values), goes through the gateway
into the queue's stream and comes back whole, however its attributes weigh as headers; one byte
more is refused, as SQS refuses it."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from snsq2nats.demo.nats_server import NatsServer
from snsq2nats.plan.model import Plan
from snsq2nats.plan.pipeline import PlanRequest
from snsq2nats.plan.queues import stored_size
from tests.fixtures.gateway import RunningGateway, applied_plan, running_gateway

REGION = "us-east-1"
LIMIT = 262_144
MIB = 1_048_576
"""SQS's limit for years, and the largest whose worst case fits nats-server's default
max_payload (1 MiB) that the test server runs with."""
QUEUES = {"size-std": LIMIT, "size-small": 1024, "size-fifo.fifo": LIMIT, "size-delay": LIMIT}
LARGE = "size-large"
"""SQS's largest queue (1 MiB): on a server with the default max_payload, the plan calls it
approximate and the gateway refuses what does not fit, without losing its connection."""
DELAYED = "size-delay"
"""Its messages wait as message schedules: the schedule's headers travel with them."""
ATTRIBUTE_BYTES = 20_000
"""Attributes this heavy, escaped, take about 60 KiB of headers: near JetStream's 64 KiB."""


@dataclass
class Estate:
    plan: Plan
    gateway: Any
    running: RunningGateway


@pytest.fixture(scope="module")
def estate(moto_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Estate]:
    import boto3

    from snsq2nats.aws import scan as aws_scan
    from snsq2nats.aws.clients import make_clients
    from snsq2nats.files import document_json

    reset = urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST")
    urllib.request.urlopen(reset, timeout=10).close()
    session = boto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    )
    moto: Any = session.client("sqs", endpoint_url=moto_server)
    for name, size in {**QUEUES, LARGE: MIB}.items():
        attributes: dict[str, Any] = {"MaximumMessageSize": str(size)}
        if name.endswith(".fifo"):
            attributes["FifoQueue"] = "true"
        if name == DELAYED:
            attributes["DelaySeconds"] = "1"
        moto.create_queue(QueueName=name, Attributes=attributes)
    inventory = Path(tmp_path_factory.mktemp("sizes")) / "inventory.json"
    inventory.write_bytes(
        document_json(aws_scan.scan(make_clients(session, [REGION], moto_server)))
    )
    with NatsServer(name="gateway-sizes") as server:
        plan = applied_plan(server.url, PlanRequest(inventory_path=inventory))
        with running_gateway(server.url, plan) as running:
            yield Estate(plan, running.client(), running)


def heaviest(limit: int, *, binary: bool) -> dict[str, Any]:
    """A message SQS counts at exactly `limit` bytes whose attributes weigh the most as headers
    that JetStream still stores (64 KiB of them): 10 attributes with long names, text that must
    go into `Snsq2nats-Attributes` escaped (a line break, 2-byte characters: 6 bytes each
    there), or Binary values (base64 there); the body takes what is left."""
    total = min(limit - 1, ATTRIBUTE_BYTES)
    names = [f"attr{i}-" + "n" * min(120, total // 40) for i in range(10)]
    budget = total - sum(len(n) for n in names)
    attributes: dict[str, Any] = {}
    for i, name in enumerate(names):
        data_type = "Binary" if binary and i % 2 else "String"
        share = (budget // (10 - i)) - len(data_type)
        if data_type == "Binary":
            attributes[name] = {"DataType": data_type, "BinaryValue": b"\xff" * share}
        else:
            text = "é" * ((share - 1) // 2) + "\n"
            text += "a" * (share - len(text.encode()))
            attributes[name] = {"DataType": data_type, "StringValue": text}
        budget -= share + len(data_type)
    message = {"MessageBody": "x" * (limit - total), "MessageAttributes": attributes}
    assert sqs_size(message) == limit
    return message


def sqs_size(message: dict[str, Any]) -> int:
    """As SQS counts toward MaximumMessageSize: the body, each attribute's name, type, value."""
    size = len(message["MessageBody"].encode())
    for name, attribute in message.get("MessageAttributes", {}).items():
        value = attribute.get("BinaryValue", attribute.get("StringValue"))
        size += len(name.encode()) + len(attribute["DataType"].encode())
        size += len(value) if isinstance(value, bytes) else len(value.encode())
    return size


def url_of(gateway: Any, name: str) -> str:
    return str(gateway.get_queue_url(QueueName=name)["QueueUrl"])


def received(gateway: Any, url: str) -> dict[str, Any]:
    while True:
        got = gateway.receive_message(
            QueueUrl=url, WaitTimeSeconds=5, MessageAttributeNames=["All"]
        ).get("Messages", [])
        if got:
            (message,) = got
            gateway.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
            return dict(message)


def test_the_room_is_the_worst_case_of_the_header_contract() -> None:
    # Small queues: every byte SQS counts may be an attribute byte taking 3 of headers.
    assert stored_size(1024) == 3 * 1024 + 4096
    # Large ones: JetStream stores no header block over 65,535 bytes.
    assert stored_size(262_144) == 262_144 + 65_535


def test_the_plan_leaves_the_headers_room_and_the_gateway_keeps_sqs_limit(estate: Estate) -> None:
    streams = {s.name: s for s in estate.plan.streams}
    for name, size in QUEUES.items():
        resource = next(r for r in estate.plan.resources if r.name == name)
        assert resource.stream
        assert streams[resource.stream].max_msg_size == stored_size(size) > size
        assert streams[resource.stream].allow_msg_schedules == (True if name == DELAYED else None)
        attributes = estate.gateway.get_queue_attributes(
            QueueUrl=url_of(estate.gateway, name), AttributeNames=["MaximumMessageSize"]
        )["Attributes"]
        assert attributes == {"MaximumMessageSize": str(size)}


@pytest.mark.parametrize("name", ["size-std", "size-small", DELAYED])
@pytest.mark.parametrize("binary", [False, True])
def test_a_message_of_exactly_the_limit_is_stored_and_one_byte_more_refused(
    estate: Estate, name: str, binary: bool
) -> None:
    gateway, url = estate.gateway, url_of(estate.gateway, name)
    message = heaviest(QUEUES[name], binary=binary)
    sent = gateway.send_message(QueueUrl=url, **message)
    got = received(gateway, url)
    assert got["MessageId"] == sent["MessageId"] and got["Body"] == message["MessageBody"]
    assert got["MessageAttributes"] == message["MessageAttributes"]
    assert got["MD5OfMessageAttributes"] == sent["MD5OfMessageAttributes"]

    body_only = {"MessageBody": "b" * QUEUES[name]}
    sent = gateway.send_message(QueueUrl=url, **body_only)
    assert received(gateway, url)["Body"] == body_only["MessageBody"]

    over = dict(message, MessageBody=message["MessageBody"] + "y")
    assert sqs_size(over) == QUEUES[name] + 1
    with pytest.raises(ClientError) as refused:
        gateway.send_message(QueueUrl=url, **over)
    error = refused.value.response["Error"]
    assert error["Code"] == "InvalidParameterValue"
    assert f"shorter than {QUEUES[name]} bytes" in error["Message"]


def test_a_fifo_message_of_exactly_the_limit_with_the_longest_ids_is_stored(
    estate: Estate,
) -> None:
    gateway, url = estate.gateway, url_of(estate.gateway, "size-fifo.fifo")
    message = heaviest(LIMIT, binary=False)
    group, dedup = "g" * 128, "d" * 128  # SQS's longest ids: they travel as headers too
    sent = gateway.send_message(
        QueueUrl=url, MessageGroupId=group, MessageDeduplicationId=dedup, **message
    )
    got: list[Any] = []
    while not got:
        got = gateway.receive_message(
            QueueUrl=url,
            WaitTimeSeconds=5,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["MessageGroupId", "MessageDeduplicationId"],
        ).get("Messages", [])
    (one,) = got
    assert one["MessageId"] == sent["MessageId"]
    assert one["MessageAttributes"] == message["MessageAttributes"]
    assert one["Attributes"] == {"MessageGroupId": group, "MessageDeduplicationId": dedup}


def test_attributes_beyond_jetstreams_headers_are_refused_for_good(estate: Estate) -> None:
    """SQS would take them; JetStream stores no header block over 64 KiB. The answer says so
    and is no ServiceUnavailable, which SDKs retry: retrying cannot help."""
    gateway, url = estate.gateway, url_of(estate.gateway, "size-std")
    heavy = {"DataType": "String", "StringValue": "é" * 12_000 + "\n"}
    with pytest.raises(ClientError) as refused:
        gateway.send_message(
            QueueUrl=url, MessageBody="x", MessageAttributes={"big": heavy, "big2": heavy}
        )
    error = refused.value.response["Error"]
    assert error["Code"] == "InvalidParameterValue", error
    assert "64 KiB of headers" in error["Message"]


def test_a_message_over_the_servers_max_payload_is_refused_and_the_connection_kept(
    estate: Estate,
) -> None:
    resource = next(r for r in estate.plan.resources if r.name == LARGE)
    size = next(f for f in resource.fidelity if f.attribute == "MaximumMessageSize")
    assert (size.value, size.verdict) == (str(MIB), "approximate")
    assert f"raise max_payload to {stored_size(MIB)}" in (size.note or "")
    gateway, url = estate.gateway, url_of(estate.gateway, LARGE)
    # SQS takes it; with its headers it exceeds the server's max_payload (1 MiB).
    with pytest.raises(ClientError) as refused:
        gateway.send_message(QueueUrl=url, MessageBody="b" * MIB)
    error = refused.value.response["Error"]
    assert error["Code"] == "InvalidParameterValue" and "max_payload" in error["Message"], error
    # The server would have closed the connection: the gateway did not send it, so the next
    # message goes through the same connection.
    body = "c" * (MIB - 4096)
    sent = gateway.send_message(QueueUrl=url, MessageBody=body)
    got = received(gateway, url)
    assert (got["MessageId"], got["Body"]) == (sent["MessageId"], body)
