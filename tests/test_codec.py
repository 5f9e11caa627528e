"""Attributes ↔ headers, and SQS message → NATS message conversion (no servers needed)."""

from __future__ import annotations

import json

from snsq2nats.bridge.aws_to_nats import convert
from snsq2nats.bridge.codec import (
    ATTRIBUTES_HEADER,
    Attribute,
    attributes_to_headers,
    headers_to_attributes,
)
from snsq2nats.plan import Route

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


def test_nats_origin_is_dropped_raw_or_in_an_envelope() -> None:
    raw = {
        "MessageId": "m-3",
        "Body": "x",
        "MessageAttributes": {"snsq2nats.origin": {"DataType": "String", "StringValue": "nats"}},
    }
    assert convert(sqs_route(), raw).drop
    envelope = {
        "Type": "Notification",
        "MessageId": "sns-1",
        "TopicArn": "arn:aws:sns:us-east-1:1:orders",
        "Message": "payload",
        "MessageAttributes": {"snsq2nats.origin": {"Type": "String", "Value": "nats"}},
    }
    assert convert(sqs_route(), {"MessageId": "m-4", "Body": json.dumps(envelope)}).drop


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
