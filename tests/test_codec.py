"""Attributes ↔ headers, and SQS message → NATS message conversion (no servers needed)."""

from __future__ import annotations

import json
from typing import Any

from snsq2nats.bridge.aws_to_nats import convert, parse_origin
from snsq2nats.bridge.codec import (
    ATTRIBUTES_HEADER,
    Attribute,
    attributes_to_headers,
    headers_to_attributes,
)
from snsq2nats.plan.model import Route

ATTRS = {
    "kind": Attribute("String", "order_placed"),
    "amount": Attribute("Number", "12.50"),
    "count": Attribute("Number.int", "7"),
    "blob": Attribute("Binary", b"\x00\xffraw"),
    "note": Attribute("String", "two\nlines"),
    "Nats-Msg-Id": Attribute("String", "not-a-dedup-id"),
}


def test_round_trip_keeps_values_and_data_types() -> None:
    headers = attributes_to_headers(ATTRS)
    assert headers["kind"] == "order_placed" and headers["count"] == "7"
    # Values a header cannot hold, and reserved names, travel only in the description.
    assert "note" not in headers and "Nats-Msg-Id" not in headers and "blob" not in headers
    assert headers_to_attributes(headers) == ATTRS


def test_plain_nats_headers_become_string_attributes() -> None:
    assert headers_to_attributes({"region": "eu"}) == {"region": Attribute("String", "eu")}


def sqs_route(fifo: bool = False) -> Route:
    return Route(
        name="sqs:jobs",
        kind="sqs-to-nats",
        source_arn="arn:aws:sqs:us-east-1:1:jobs",
        aws_arn="arn:aws:sqs:us-east-1:1:jobs",
        stream="sqs_jobs",
        subject="sqsfifo.jobs" if fifo else "sqs.jobs",
        fifo=fifo,
    )


def test_standard_message_dedups_on_the_sqs_message_id() -> None:
    relayed = convert(
        sqs_route(),
        {
            "MessageId": "m-1",
            "Body": "hello",
            "MessageAttributes": {"kind": {"DataType": "String", "StringValue": "x"}},
        },
    )
    assert relayed.subject == "sqs.jobs" and relayed.payload == b"hello"
    assert relayed.headers["Nats-Msg-Id"] == "m-1"
    assert relayed.headers["Snsq2nats-Origin"] == "aws"
    assert relayed.headers["Snsq2nats-Aws-Message-Id"] == "m-1"
    assert not relayed.drop


def test_fifo_group_becomes_a_token_and_dedup_id_the_msg_id() -> None:
    relayed = convert(
        sqs_route(fifo=True),
        {
            "MessageId": "m-2",
            "Body": "{}",
            "Attributes": {"MessageGroupId": "cust 42", "MessageDeduplicationId": "d-9"},
        },
    )
    assert relayed.subject == "sqsfifo.jobs.cust~2042"
    assert relayed.headers["Nats-Msg-Id"] == "d-9"
    assert relayed.headers["Snsq2nats-Group-Id"] == "cust 42"
    assert relayed.headers["Snsq2nats-Deduplication-Id"] == "d-9"


def _origin_raw(value: str, message_id: str = "m-3") -> dict[str, Any]:
    return {
        "MessageId": message_id,
        "Body": "x",
        "MessageAttributes": {"snsq2nats.origin": {"DataType": "String", "StringValue": value}},
    }


def _origin_envelope(value: str) -> dict[str, Any]:
    envelope = {
        "Type": "Notification",
        "MessageId": "sns-1",
        "TopicArn": "arn:aws:sns:us-east-1:1:orders",
        "Message": "payload",
        "MessageAttributes": {"snsq2nats.origin": {"Type": "String", "Value": value}},
    }
    return {"MessageId": "m-4", "Body": json.dumps(envelope)}


def test_parse_origin_names_the_topic_stream_and_sequence() -> None:
    assert parse_origin("nats:sns_orders:42") == ("sns_orders", 42)
    assert parse_origin(b"nats:sns_orders:7") == ("sns_orders", 7)
    # Only the last colon splits: the stream part is everything in between.
    assert parse_origin("nats:a:b:3") == ("a:b", 3)
    for value in (None, "", "nats", "aws", "nats:", "nats:sns_orders", "nats::5", "nats:s:x"):
        assert parse_origin(value) is None, value


def bridge_queue_route(stream: str = "sns_orders") -> Route:
    return Route(
        name="sns:orders",
        kind="sns-to-nats",
        source_arn="arn:aws:sns:us-east-1:1:orders",
        aws_arn="arn:aws:sns:us-east-1:1:orders",
        stream=stream,
        subject="aws.sns.orders",
        bridge_queue="snsq2nats-bridge-orders",
    )


def test_nats_topic_origin_in_a_queue_is_its_one_copy_relayed_under_the_topic_id() -> None:
    """SNS delivered a topic message published on NATS into a queue: that is the queue's only
    copy (the topic fans out through SNS, or nats-to-sqs relayed it there), raw or enveloped,
    relayed under the id every path gives that topic message."""
    for seq in (1, 5, 1000):
        for message in (
            _origin_raw(f"nats:sns_orders:{seq}"),
            _origin_envelope(f"nats:sns_orders:{seq}"),
        ):
            relayed = convert(sqs_route(), message)
            assert not relayed.drop, seq
            assert relayed.msg_id == f"sns_orders:{seq}"
            assert relayed.headers["Nats-Msg-Id"] == f"sns_orders:{seq}"
            assert "snsq2nats.origin" not in relayed.headers
            assert relayed.headers["Snsq2nats-Origin"] == "aws"
            assert relayed.headers["Snsq2nats-Aws-Message-Id"] == message["MessageId"]
    assert convert(sqs_route(), _origin_envelope("nats:sns_orders:4")).payload == b"payload"


def test_the_topic_bridge_queue_drops_the_echo_of_its_own_stream() -> None:
    """The nats-to-sns relay's copy comes back through the topic's bridge queue: the topic
    stream has the original, so that echo is dropped; another topic's messages are not."""
    assert convert(bridge_queue_route(), _origin_raw("nats:sns_orders:7")).drop
    assert convert(bridge_queue_route(), _origin_envelope("nats:sns_orders:7")).drop
    assert not convert(bridge_queue_route("sns_other"), _origin_raw("nats:sns_orders:7")).drop
    assert not convert(bridge_queue_route(), {"MessageId": "m-1", "Body": "x"}).drop


def test_plain_nats_origin_is_relayed() -> None:
    """`nats` alone is a queue message NATS handed SQS while the consumers were on AWS: it has
    not been consumed yet, so when the consumers move back it must come along."""
    relayed = convert(sqs_route(), _origin_raw("nats"))
    assert not relayed.drop
    assert relayed.headers["Nats-Msg-Id"] == "m-3"
    assert "snsq2nats.origin" not in relayed.headers
    assert not convert(sqs_route(), _origin_envelope("nats")).drop


def test_fifo_topic_origin_keeps_the_topic_message_id() -> None:
    """The filter router's copy of a FIFO topic message carries `<stream>:<seq>`; so does the
    SNS copy, whatever deduplication id SNS handed SQS, or the two would not deduplicate."""
    message = {
        **_origin_raw("nats:snsfifo_ledger:3"),
        "Attributes": {"MessageGroupId": "acct-1", "MessageDeduplicationId": "producer-id"},
    }
    relayed = convert(sqs_route(fifo=True), message)
    assert not relayed.drop
    assert relayed.headers["Nats-Msg-Id"] == "snsfifo_ledger:3"
    assert relayed.headers["Snsq2nats-Deduplication-Id"] == "producer-id"
    assert relayed.subject == "sqsfifo.jobs.acct-1"


def test_envelope_is_unwrapped_for_nats_consumers() -> None:
    envelope = {
        "Type": "Notification",
        "MessageId": "sns-2",
        "TopicArn": "arn:aws:sns:us-east-1:1:orders",
        "Message": "payload",
        "MessageAttributes": {"amount": {"Type": "Number", "Value": "3"}},
    }
    relayed = convert(sqs_route(), {"MessageId": "m-5", "Body": json.dumps(envelope)})
    assert relayed.payload == b"payload" and not relayed.drop
    assert relayed.headers["amount"] == "3"
    assert json.loads(relayed.headers[ATTRIBUTES_HEADER])["amount"] == {"t": "Number"}
    assert relayed.headers["Snsq2nats-Sns-Message-Id"] == "sns-2"


def test_sns_route_fills_promoted_tokens_on_the_relay_space() -> None:
    route = Route(
        name="sns:orders",
        kind="sns-to-nats",
        source_arn="arn:aws:sns:us-east-1:1:orders",
        aws_arn="arn:aws:sns:us-east-1:1:orders",
        stream="sns_orders",
        subject="aws.sns.orders",
        subject_tokens=["event_type", "region"],
    )
    relayed = convert(
        route,
        {
            "MessageId": "m-6",
            "Body": "x",
            "MessageAttributes": {"event_type": {"DataType": "String", "StringValue": "placed"}},
        },
    )
    assert relayed.subject == "aws.sns.orders.placed.~absent"
