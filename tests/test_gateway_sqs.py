"""The SQS API through the gateway, differentially: the same boto3 code runs against moto's
server and against the gateway over a real nats-server holding the applied plan of the same
queues, and what the application sees must be the same.

The estate is seeded into moto and scanned once per module; each test uses queues of its own,
so tests share the applied plan without sharing messages.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from snsq2nats.demo.nats_server import NatsServer
from snsq2nats.plan.model import Plan
from snsq2nats.plan.pipeline import PlanRequest
from tests.fixtures.gateway import (
    ACCESS_KEY,
    SECRET_KEY,
    RunningGateway,
    applied_plan,
    running_gateway,
)

REGION = "us-east-1"
STANDARD = [
    "gw-basic",
    "gw-errors",
    "gw-twice",
    "gw-size",
    "gw-batch",
    "gw-vis",
    "gw-attrs",
    "gw-purge",
    "gw-query",
    "gw-delay",
    "gw-js",
]
DELAYED = {"gw-delay": 2}
SHORT_VISIBILITY = {"gw-vis": 2}
FIFO = ["gw-fifo.fifo", "gw-content.fifo", "gw-parts.fifo"]
CONTENT_BASED = "gw-content.fifo"
PARTITIONED = "gw-parts.fifo"
PARTITIONS = 3
SMALL_QUEUE = "gw-size"
SMALL_SIZE = 1024


@dataclass
class Sides:
    moto: Any
    gateway: Any
    plan: Plan
    nats_url: str
    running: RunningGateway

    def both(self) -> list[tuple[str, Any]]:
        return [("moto", self.moto), ("gateway", self.gateway)]


def _moto_sqs(moto_server: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    ).client("sqs", endpoint_url=moto_server, config=Config(retries={"max_attempts": 1}))


def seed(sqs: Any) -> None:
    for name in STANDARD:
        attributes = {"VisibilityTimeout": "30"}
        if name in DELAYED:
            attributes["DelaySeconds"] = str(DELAYED[name])
        if name in SHORT_VISIBILITY:
            attributes["VisibilityTimeout"] = str(SHORT_VISIBILITY[name])
        if name == SMALL_QUEUE:
            attributes["MaximumMessageSize"] = str(SMALL_SIZE)
        sqs.create_queue(QueueName=name, Attributes=attributes)
    for name in FIFO:
        fifo = {"FifoQueue": "true"}
        if name == CONTENT_BASED:
            fifo["ContentBasedDeduplication"] = "true"
        sqs.create_queue(QueueName=name, Attributes=fifo)


@pytest.fixture(scope="module")
def sides(moto_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sides]:
    import boto3

    from snsq2nats.aws import scan as aws_scan
    from snsq2nats.aws.clients import make_clients
    from snsq2nats.files import document_json

    reset = urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST")
    urllib.request.urlopen(reset, timeout=10).close()
    moto = _moto_sqs(moto_server)
    seed(moto)
    session = boto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    )
    inventory = aws_scan.scan(make_clients(session, [REGION], moto_server))
    folder = tmp_path_factory.mktemp("gateway")
    path = folder / "inventory.json"
    path.write_bytes(document_json(inventory))
    mapping = folder / "partitions.yaml"
    mapping.write_text(f"overrides:\n  - match: {PARTITIONED}\n    partitions: {PARTITIONS}\n")
    with NatsServer(name="gateway") as server:
        plan = applied_plan(server.url, PlanRequest(inventory_path=path, mapping_paths=[mapping]))
        with running_gateway(server.url, plan) as running:
            yield Sides(moto, running.client(), plan, server.url, running)


def url_of(sqs: Any, name: str) -> str:
    return str(sqs.get_queue_url(QueueName=name)["QueueUrl"])


def error_of(call: Callable[[], Any]) -> tuple[str, str, int]:
    """What an application sees of a failure: the code, the SDK's exception class, the status."""
    with pytest.raises(ClientError) as caught:
        call()
    response = caught.value.response
    return (
        response["Error"]["Code"],
        type(caught.value).__name__,
        response["ResponseMetadata"]["HTTPStatusCode"],
    )


ATTRIBUTES = {
    "colour": {"DataType": "String", "StringValue": "blue"},
    "count": {"DataType": "Number", "StringValue": "42"},
    "ratio": {"DataType": "Number.float", "StringValue": "0.5"},
    "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01\xffbytes"},
    "note": {"DataType": "String.custom", "StringValue": "line one\nline two é"},
}


def basic_story(sqs: Any) -> dict[str, Any]:
    """Send two messages, receive them with every attribute, delete them: what the app sees."""
    url = url_of(sqs, "gw-basic")
    sent = [
        sqs.send_message(QueueUrl=url, MessageBody="plain body"),
        sqs.send_message(
            QueueUrl=url, MessageBody='héllo {"json": 1}', MessageAttributes=ATTRIBUTES
        ),
    ]
    got: list[dict[str, Any]] = []
    while len(got) < 2:
        got += sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=5,
            MessageAttributeNames=["All"],
            AttributeNames=["ApproximateReceiveCount"],
        ).get("Messages", [])
    by_body = {m["Body"]: m for m in got}
    for message in got:
        sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    empty = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1).get("Messages", [])
    return {
        "path": url.split("/", 3)[3],
        "sent": [
            {k: s.get(k) for k in ("MD5OfMessageBody", "MD5OfMessageAttributes")} for s in sent
        ],
        "ids": [s["MessageId"] for s in sent]
        == [by_body[b]["MessageId"] for b in ("plain body", 'héllo {"json": 1}')],
        "received": {
            body: {
                "MD5OfBody": m["MD5OfBody"],
                "MD5OfMessageAttributes": m.get("MD5OfMessageAttributes"),
                "MessageAttributes": m.get("MessageAttributes"),
                "Attributes": m.get("Attributes"),
            }
            for body, m in sorted(by_body.items())
        },
        "after_delete": empty,
    }


def test_send_receive_delete_are_what_sqs_answers(sides: Sides) -> None:
    stories = {side: basic_story(sqs) for side, sqs in sides.both()}
    assert stories["gateway"] == stories["moto"]
    story = stories["gateway"]
    assert story["path"] == "123456789012/gw-basic"
    assert story["ids"] is True
    assert story["received"]["plain body"]["MD5OfBody"] == hashlib.md5(b"plain body").hexdigest()
    assert (
        story["received"]['héllo {"json": 1}']["MessageAttributes"]["blob"]["BinaryValue"]
        == b"\x00\x01\xffbytes"
    )
    assert story["after_delete"] == []


def test_queue_urls_are_the_gateways_own_and_reachable(sides: Sides) -> None:
    url = url_of(sides.gateway, "gw-basic")
    assert url == f"{sides.running.url}/123456789012/gw-basic"
    listed = {
        side: sorted(
            u.split("/", 3)[3] for u in sqs.list_queues(QueueNamePrefix="gw-")["QueueUrls"]
        )
        for side, sqs in sides.both()
    }
    assert listed["gateway"] == listed["moto"]
    assert listed["gateway"] == sorted(f"123456789012/{q}" for q in STANDARD + FIFO)
    assert "QueueUrls" not in sides.gateway.list_queues(QueueNamePrefix="nothing-")


def error_story(sqs: Any) -> dict[str, Any]:
    url = url_of(sqs, "gw-errors")
    missing_url = url.rsplit("/", 1)[0] + "/gw-nowhere"
    return {
        "unknown name": error_of(lambda: sqs.get_queue_url(QueueName="gw-nowhere")),
        "unknown url": error_of(lambda: sqs.send_message(QueueUrl=missing_url, MessageBody="x")),
        "bad handle": error_of(lambda: sqs.delete_message(QueueUrl=url, ReceiptHandle="forged")),
        "too many": error_of(lambda: sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=11)),
        "bad attribute type": error_of(
            lambda: sqs.send_message(
                QueueUrl=url,
                MessageBody="x",
                MessageAttributes={"a": {"DataType": "Text", "StringValue": "v"}},
            )
        ),
        "invalid attribute name": error_of(
            lambda: sqs.send_message(
                QueueUrl=url,
                MessageBody="x",
                MessageAttributes={"bad name!": {"DataType": "String", "StringValue": "v"}},
            )
        ),
    }


def test_errors_are_what_sqs_answers(sides: Sides) -> None:
    stories = {side: error_story(sqs) for side, sqs in sides.both()}
    assert stories["gateway"] == stories["moto"]
    assert stories["gateway"]["unknown name"] == (
        "AWS.SimpleQueueService.NonExistentQueue",
        "QueueDoesNotExist",
        400,
    )
    assert stories["gateway"]["bad handle"][0] == "ReceiptHandleIsInvalid"


@pytest.mark.parametrize(
    "attributes",
    [
        {"a": {"DataType": "Number", "StringValue": "many"}},
        {"AWS.trace": {"DataType": "String", "StringValue": "v"}},
        {f"a{i}": {"DataType": "String", "StringValue": "v"} for i in range(11)},
    ],
    ids=["not a number", "reserved name", "eleven"],
)
def test_attributes_sqs_refuses_are_refused(sides: Sides, attributes: dict[str, Any]) -> None:
    # SQS refuses these; moto does not check them, so they are the gateway's alone.
    url = url_of(sides.gateway, "gw-errors")
    assert error_of(
        lambda: sides.gateway.send_message(
            QueueUrl=url, MessageBody="x", MessageAttributes=attributes
        )
    ) == ("InvalidParameterValue", "ClientError", 400)


def test_a_handle_for_another_queue_or_tampered_with_is_invalid(sides: Sides) -> None:
    sqs = sides.gateway
    url = url_of(sqs, "gw-twice")
    sqs.send_message(QueueUrl=url, MessageBody="one")
    got: list[dict[str, Any]] = []
    while not got:
        got = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=5).get("Messages", [])
    handle = got[0]["ReceiptHandle"]
    other = url_of(sqs, "gw-errors")
    assert error_of(lambda: sqs.delete_message(QueueUrl=other, ReceiptHandle=handle))[0] == (
        "ReceiptHandleIsInvalid"
    )
    payload, mac = handle.split(".")
    forged = (
        base64.urlsafe_b64encode(
            base64.urlsafe_b64decode(payload + "==").replace(b"gw-twice", b"gw-basic")
        )
        .decode()
        .rstrip("=")
    )
    assert error_of(lambda: sqs.delete_message(QueueUrl=url, ReceiptHandle=f"{forged}.{mac}"))[
        0
    ] == ("ReceiptHandleIsInvalid")
    # SQS answers a second delete of the same handle as the first.
    sqs.delete_message(QueueUrl=url, ReceiptHandle=handle)
    sqs.delete_message(QueueUrl=url, ReceiptHandle=handle)
    assert sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1).get("Messages", []) == []


def test_a_body_over_the_queues_maximum_size_is_refused(sides: Sides) -> None:
    answers = {}
    for side, sqs in sides.both():
        url = url_of(sqs, SMALL_QUEUE)
        # Not quite the limit: the stream's max_msg_size counts the gateway's headers too
        # (docs/gateway.md, "What differs").
        sqs.send_message(QueueUrl=url, MessageBody="x" * (SMALL_SIZE - 256))
        answers[side] = error_of(
            functools.partial(sqs.send_message, QueueUrl=url, MessageBody="x" * (SMALL_SIZE + 1))
        )
    assert answers["gateway"] == answers["moto"]
    assert answers["gateway"][0] == "InvalidParameterValue"


def test_control_plane_actions_say_the_plan_manages_the_estate(sides: Sides) -> None:
    code, _, status = error_of(lambda: sides.gateway.create_queue(QueueName="gw-new"))
    assert (code, status) == ("AWS.SimpleQueueService.UnsupportedOperation", 400)
    with pytest.raises(ClientError) as caught:
        sides.gateway.create_queue(QueueName="gw-new")
    assert "snsq2nats apply" in caught.value.response["Error"]["Message"]


def test_an_unknown_access_key_is_refused(sides: Sides) -> None:
    stranger = sides.running.client(key="AKIDSTRANGER")
    code, _, status = error_of(lambda: stranger.list_queues())
    assert (code, status) == ("InvalidClientTokenId", 403)


def receive_all(sqs: Any, url: str, count: int, **kw: Any) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    kw = {"MaxNumberOfMessages": 10, **kw}
    while len(got) < count:
        got += sqs.receive_message(QueueUrl=url, WaitTimeSeconds=5, **kw).get("Messages", [])
    return got


def batch_story(sqs: Any) -> dict[str, Any]:
    url = url_of(sqs, "gw-batch")
    sent = sqs.send_message_batch(
        QueueUrl=url,
        Entries=[
            {"Id": "one", "MessageBody": "first", "MessageAttributes": ATTRIBUTES},
            {"Id": "two", "MessageBody": "second"},
        ],
    )
    got = receive_all(sqs, url, 2, MessageAttributeNames=["All"])
    deleted = sqs.delete_message_batch(
        QueueUrl=url,
        Entries=[
            *({"Id": f"d{i}", "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)),
            {"Id": "forged", "ReceiptHandle": "forged"},
        ],
    )
    entry = {"Id": "x", "MessageBody": "x"}
    return {
        "successful": sorted(
            (s["Id"], s["MD5OfMessageBody"], s.get("MD5OfMessageAttributes"))
            for s in sent["Successful"]
        ),
        "failed": [(f["Id"], f["SenderFault"], f["Code"]) for f in sent.get("Failed", [])],
        "received": sorted((m["Body"], m.get("MD5OfMessageAttributes")) for m in got),
        "deleted": sorted(s["Id"] for s in deleted["Successful"]),
        "not deleted": [(f["Id"], f["Code"]) for f in deleted.get("Failed", [])],
        "empty": error_of(lambda: sqs.send_message_batch(QueueUrl=url, Entries=[])),
        "eleven": error_of(
            lambda: sqs.send_message_batch(
                QueueUrl=url, Entries=[{**entry, "Id": f"e{i}"} for i in range(11)]
            )
        ),
        "same ids": error_of(lambda: sqs.send_message_batch(QueueUrl=url, Entries=[entry, entry])),
        "after": sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1).get("Messages", []),
    }


def test_batches_fail_entry_by_entry_as_sqs_does(sides: Sides) -> None:
    stories = {side: batch_story(sqs) for side, sqs in sides.both()}
    assert stories["gateway"] == stories["moto"]
    story = stories["gateway"]
    assert [s[0] for s in story["successful"]] == ["one", "two"]
    assert story["failed"] == []
    assert story["not deleted"] == [("forged", "ReceiptHandleIsInvalid")]
    assert story["eleven"][0] == "AWS.SimpleQueueService.TooManyEntriesInBatchRequest"
    assert story["after"] == []


def test_a_bad_entry_fails_alone(sides: Sides) -> None:
    # moto fails the whole request instead: this one is the gateway's alone.
    sqs = sides.gateway
    url = url_of(sqs, "gw-batch")
    bad_type = {"a": {"DataType": "Text", "StringValue": "v"}}
    sent = sqs.send_message_batch(
        QueueUrl=url,
        Entries=[
            {"Id": "good", "MessageBody": "kept"},
            {"Id": "bad", "MessageBody": "refused", "MessageAttributes": bad_type},
        ],
    )
    assert [s["Id"] for s in sent["Successful"]] == ["good"]
    assert [(f["Id"], f["SenderFault"], f["Code"]) for f in sent["Failed"]] == [
        ("bad", True, "InvalidParameterValue")
    ]
    got = receive_all(sqs, url, 1)
    assert [m["Body"] for m in got] == ["kept"]
    sqs.delete_message(QueueUrl=url, ReceiptHandle=got[0]["ReceiptHandle"])


def visibility_story(sqs: Any) -> dict[str, Any]:
    """Visibility 0 on receive and by ChangeMessageVisibility: back at once, counted."""
    url = url_of(sqs, "gw-vis")
    sqs.send_message(QueueUrl=url, MessageBody="seen thrice")
    counts = ["ApproximateReceiveCount"]
    first = receive_all(sqs, url, 1, VisibilityTimeout=0, AttributeNames=counts)[0]
    second = receive_all(sqs, url, 1, AttributeNames=counts)[0]
    sqs.change_message_visibility(
        QueueUrl=url, ReceiptHandle=second["ReceiptHandle"], VisibilityTimeout=0
    )
    third = receive_all(sqs, url, 1, AttributeNames=counts)[0]
    sqs.delete_message(QueueUrl=url, ReceiptHandle=third["ReceiptHandle"])
    return {
        "counts": [m["Attributes"]["ApproximateReceiveCount"] for m in (first, second, third)],
        "ids": len({m["MessageId"] for m in (first, second, third)}),
        "bad value": error_of(
            lambda: sqs.change_message_visibility(
                QueueUrl=url, ReceiptHandle=third["ReceiptHandle"], VisibilityTimeout=43201
            )
        )[0],
    }


def test_visibility_zero_returns_the_message_at_once(sides: Sides) -> None:
    stories = {side: visibility_story(sqs) for side, sqs in sides.both()}
    assert stories["gateway"] == stories["moto"]
    assert stories["gateway"]["counts"] == ["1", "2", "3"]
    assert stories["gateway"]["ids"] == 1


def test_visibility_extends_past_the_ack_wait_and_holds_the_handle(sides: Sides) -> None:
    """The queue's VisibilityTimeout (the ack wait) is 2 s; the message is made invisible for
    6 s: it does not come back when the ack wait ends, it does after the 6 s, and the handle
    of the first receive still deletes it before then."""
    sqs = sides.gateway
    url = url_of(sqs, "gw-vis")
    extended = 6
    for delete_first in (False, True):
        sqs.send_message(QueueUrl=url, MessageBody=f"held {delete_first}")
        message = receive_all(sqs, url, 1)[0]
        changed = time.monotonic()
        sqs.change_message_visibility(
            QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=extended
        )
        # Past the ack wait, before the new deadline (asserted only when the call returned in
        # time: a slow machine makes this check say nothing rather than fail).
        sleep_until(changed + SHORT_VISIBILITY["gw-vis"] + 1)
        early = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0).get("Messages", [])
        if time.monotonic() < changed + extended:
            assert early == []
        if delete_first:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
            sleep_until(changed + extended + 1)
            assert sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1).get("Messages", []) == []
        else:
            back = receive_all(sqs, url, 1, AttributeNames=["ApproximateReceiveCount"])[0]
            assert time.monotonic() >= changed + extended
            assert back["Body"] == "held False"
            assert back["Attributes"]["ApproximateReceiveCount"] == "2"
            sqs.delete_message(QueueUrl=url, ReceiptHandle=back["ReceiptHandle"])
    # A deleted message's visibility cannot change (SQS: InvalidParameterValue).
    assert (
        error_of(
            lambda: sqs.change_message_visibility(
                QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=5
            )
        )[0]
        == "InvalidParameterValue"
    )


def sleep_until(moment: float) -> None:
    while time.monotonic() < moment:
        time.sleep(min(0.1, max(0.0, moment - time.monotonic())))


def attributes_story(sqs: Any) -> dict[str, Any]:
    url = url_of(sqs, "gw-attrs")
    for body in ("a", "b"):
        sqs.send_message(QueueUrl=url, MessageBody=body)
    receive_all(sqs, url, 1, MaxNumberOfMessages=1)
    names = [
        "QueueArn",
        "VisibilityTimeout",
        "MaximumMessageSize",
        "MessageRetentionPeriod",
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesNotVisible",
    ]
    return {
        "attributes": sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"],
        "unknown": error_of(
            lambda: sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Colour"])
        ),
    }


def test_queue_attributes_and_counts_are_what_sqs_answers(sides: Sides) -> None:
    stories = {side: attributes_story(sqs) for side, sqs in sides.both()}
    assert stories["gateway"] == stories["moto"]
    attributes = stories["gateway"]["attributes"]
    assert attributes["QueueArn"] == "arn:aws:sqs:us-east-1:123456789012:gw-attrs"
    assert (
        attributes["ApproximateNumberOfMessages"],
        attributes["ApproximateNumberOfMessagesNotVisible"],
    ) == ("1", "1")


def test_purge_empties_the_queue(sides: Sides) -> None:
    for _, sqs in sides.both():
        url = url_of(sqs, "gw-purge")
        sqs.send_message(QueueUrl=url, MessageBody="gone")
        receive_all(sqs, url, 1, VisibilityTimeout=0)
        sqs.purge_queue(QueueUrl=url)
        assert sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1).get("Messages", []) == []


# -- the Query protocol (form posts, XML answers) ---------------------------------------------

# Ids differ by nature; moto adds a lower-case `message` of its own to Query errors.
IGNORED = {"RequestId", "ResponseMetadata", "ReceiptHandle", "MessageId", "Detail", "message"}


def query(base: str, params: dict[str, str], path: str = "/") -> tuple[int, Any]:
    """A signed Query request, as the SDKs of the Query era send it; the status and the XML."""
    import urllib.error
    import xml.etree.ElementTree as ET
    from urllib.parse import urlencode

    body = urlencode({**params, "Version": "2012-11-05"}).encode()
    content_type = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
    request = signed_post(base + path, body, content_type)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, ET.fromstring(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, ET.fromstring(exc.read())


def signed_post(url: str, body: bytes, headers: dict[str, str]) -> urllib.request.Request:
    """A POST signed with SigV4 as the SDKs sign it (with the test's access key)."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    signed = AWSRequest(method="POST", url=url, data=body, headers=headers)
    SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "sqs", REGION).add_auth(signed)
    return urllib.request.Request(
        url, data=body, headers=dict(signed.headers.items()), method="POST"
    )


def simplify(element: Any) -> Any:
    """An XML answer as comparable data: namespaces, ids and order of elements left out."""
    children = [c for c in element if c.tag.split("}")[-1] not in IGNORED]
    if not children:
        return (element.text or "").strip()
    return sorted(
        ((c.tag.split("}")[-1], simplify(c)) for c in children), key=lambda pair: repr(pair)
    )


def find(element: Any, tag: str) -> list[Any]:
    return [e for e in element.iter() if e.tag.split("}")[-1] == tag]


def query_story(base: str) -> dict[str, Any]:
    status, answer = query(base, {"Action": "GetQueueUrl", "QueueName": "gw-query"})
    url = find(answer, "QueueUrl")[0].text
    path = "/" + url.split("/", 3)[3]
    blob = base64.b64encode(b"\x00\xffraw").decode()
    attributes = {
        "MessageAttribute.1.Name": "colour",
        "MessageAttribute.1.Value.DataType": "String",
        "MessageAttribute.1.Value.StringValue": "blue & <green>",
        "MessageAttribute.2.Name": "raw",
        "MessageAttribute.2.Value.DataType": "Binary",
        "MessageAttribute.2.Value.BinaryValue": blob,
    }
    _, sent = query(
        base,
        {"Action": "SendMessage", "MessageBody": "posted to the queue URL", **attributes},
        path,
    )
    _, batch = query(
        base,
        {
            "Action": "SendMessageBatch",
            "QueueUrl": url,
            "SendMessageBatchRequestEntry.1.Id": "a",
            "SendMessageBatchRequestEntry.1.MessageBody": "batch a",
            "SendMessageBatchRequestEntry.2.Id": "b",
            "SendMessageBatchRequestEntry.2.MessageBody": "batch b",
        },
    )
    messages: list[Any] = []
    while len(messages) < 3:
        _, received = query(
            base,
            {
                "Action": "ReceiveMessage",
                "QueueUrl": url,
                "MaxNumberOfMessages": "10",
                "WaitTimeSeconds": "5",
                "AttributeName.1": "ApproximateReceiveCount",
                "MessageAttributeName.1": "All",
            },
        )
        messages += find(received, "Message")
    last = len(messages) + 1
    handles = {f"DeleteMessageBatchRequestEntry.{last}.Id": "forged"}
    handles[f"DeleteMessageBatchRequestEntry.{last}.ReceiptHandle"] = "forged"
    for i, message in enumerate(messages, 1):
        handles[f"DeleteMessageBatchRequestEntry.{i}.Id"] = f"m{i}"
        handles[f"DeleteMessageBatchRequestEntry.{i}.ReceiptHandle"] = find(
            message, "ReceiptHandle"
        )[0].text
    _, deleted = query(base, {"Action": "DeleteMessageBatch", "QueueUrl": url, **handles})
    missing = query(base, {"Action": "GetQueueUrl", "QueueName": "gw-nowhere"})
    _, visibility = query(
        base,
        {"Action": "GetQueueAttributes", "QueueUrl": url, "AttributeName.1": "VisibilityTimeout"},
    )
    return {
        "status": status,
        "path": path,
        "sent": simplify(sent),
        "batch": simplify(batch),
        "received": sorted((simplify(m) for m in messages), key=repr),
        "deleted": simplify(deleted),
        "missing": (missing[0], simplify(missing[1])),
        "attributes": simplify(visibility),
    }


def test_the_query_protocol_answers_as_sqs_does(sides: Sides, moto_server: str) -> None:
    moto = query_story(moto_server)
    gateway = query_story(sides.running.url)
    assert gateway == moto
    assert gateway["path"] == "/123456789012/gw-query"
    assert ("Code", "AWS.SimpleQueueService.NonExistentQueue") in gateway["missing"][1][0][1]
    assert gateway["missing"][0] == 400
    assert len(gateway["received"]) == 3


def test_query_errors_are_xml(sides: Sides) -> None:
    status, answer = query(sides.running.url, {"Action": "CreateQueue", "QueueName": "x"})
    assert status == 400
    assert answer.tag == "{http://queue.amazonaws.com/doc/2012-11-05/}ErrorResponse"
    assert find(answer, "Code")[0].text == "AWS.SimpleQueueService.UnsupportedOperation"
    assert find(answer, "Type")[0].text == "Sender"
    assert find(answer, "RequestId")[0].text


def test_malformed_json_is_a_serialization_error(sides: Sides) -> None:
    import json
    import urllib.error

    request = signed_post(
        sides.running.url + "/",
        b'{"QueueName": "gw-basic"',
        {"X-Amz-Target": "AmazonSQS.GetQueueUrl", "Content-Type": "application/x-amz-json-1.0"},
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=30)
    assert caught.value.code == 400
    assert caught.value.headers["x-amzn-RequestId"]
    assert json.loads(caught.value.read())["__type"].endswith("#SerializationException")


# -- FIFO ---------------------------------------------------------------------------------------


def fifo_story(sqs: Any, name: str) -> dict[str, Any]:
    """Two groups, an explicit duplicate; received one at a time and deleted: per-group order,
    the duplicate answered with the original's id, the system attributes SQS gives."""
    url = url_of(sqs, name)
    content_based = name == CONTENT_BASED
    sent = []
    for i, group in enumerate(["a", "b", "a", "b", "a"]):
        entry: dict[str, Any] = {"MessageBody": f"{group}{i}", "MessageGroupId": group}
        if not content_based:
            entry["MessageDeduplicationId"] = f"d{i}"
        sent.append(sqs.send_message(QueueUrl=url, **entry))
    again: dict[str, Any] = {"MessageBody": "a0", "MessageGroupId": "a"}
    if not content_based:
        again["MessageDeduplicationId"] = "d0"
    duplicate = sqs.send_message(QueueUrl=url, **again)
    order: dict[str, list[str]] = {"a": [], "b": []}
    sequences: list[int] = []
    dedup_ids = set()
    while sum(len(v) for v in order.values()) < 5:
        for message in sqs.receive_message(
            QueueUrl=url, WaitTimeSeconds=5, AttributeNames=["All"]
        ).get("Messages", []):
            attributes = message["Attributes"]
            order[attributes["MessageGroupId"]].append(message["Body"])
            sequences.append(int(attributes.get("SequenceNumber", -1)))
            dedup_ids.add(attributes["MessageDeduplicationId"])
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return {
        "order": order,
        "duplicate is the original": duplicate["MessageId"] == sent[0]["MessageId"],
        "sequence numbers": all(len(s.get("SequenceNumber", "")) == 20 for s in sent),
        "increasing": [int(s.get("SequenceNumber", -1)) for s in sent]
        == sorted(int(s.get("SequenceNumber", -1)) for s in sent),
        "received sequences sent": set(sequences)
        <= {int(s.get("SequenceNumber", -1)) for s in sent},
        "dedup ids": len(dedup_ids),
        "left": sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1).get("Messages", []),
        "no group": error_of(lambda: sqs.send_message(QueueUrl=url, MessageBody="x")),
    }


@pytest.mark.parametrize("name", FIFO)
def test_fifo_order_and_deduplication_are_what_sqs_does(sides: Sides, name: str) -> None:
    stories = {side: fifo_story(sqs, name) for side, sqs in sides.both()}
    # SQS answers a duplicate with the original's MessageId, numbers a queue's messages in
    # increasing order and gives every received FIFO message its SequenceNumber; moto does not
    # always, so these are the gateway's alone.
    story = stories["gateway"]
    own = (
        "duplicate is the original",
        "sequence numbers",
        "increasing",
        "received sequences sent",
    )
    for key in own:
        assert story.pop(key) is True, key
        stories["moto"].pop(key)
    assert stories["gateway"] == stories["moto"]
    assert story["order"] == {"a": ["a0", "a2", "a4"], "b": ["b1", "b3"]}


def test_fifo_without_deduplication_id_is_refused_as_sqs_does(sides: Sides) -> None:
    answers = {
        side: error_of(
            functools.partial(
                sqs.send_message,
                QueueUrl=url_of(sqs, "gw-fifo.fifo"),
                MessageBody="x",
                MessageGroupId="g",
            )
        )
        for side, sqs in sides.both()
    }
    assert answers["gateway"] == answers["moto"]
    assert answers["gateway"][0] == "InvalidParameterValue"


def test_partitions_give_parallel_groups(sides: Sides) -> None:
    """Groups in different partitions are in flight at once (one durable per partition, one
    message each), and a group's next message waits for its predecessor's delete."""
    sqs = sides.gateway
    url = url_of(sqs, PARTITIONED)
    groups = [f"g{i}" for i in range(12)]
    for group in groups:
        for n in range(2):
            sqs.send_message(
                QueueUrl=url,
                MessageBody=f"{group}-{n}",
                MessageGroupId=group,
                MessageDeduplicationId=f"{group}-{n}",
            )
    held: list[dict[str, Any]] = []
    while len(held) < PARTITIONS:
        held += sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=5).get(
            "Messages", []
        )
    bodies = [m["Body"] for m in held]
    assert len(bodies) == PARTITIONS  # one in flight per partition
    assert all(b.endswith("-0") for b in bodies)  # each group's first comes first
    received = list(bodies)
    for message in held:
        sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    while len(received) < 2 * len(groups):
        for message in sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=5
        ).get("Messages", []):
            received.append(message["Body"])
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    assert sorted(received) == sorted(f"{g}-{n}" for g in groups for n in range(2))
    for group in groups:
        assert received.index(f"{group}-0") < received.index(f"{group}-1")


# -- delays -------------------------------------------------------------------------------------


def delay_story(sqs: Any) -> dict[str, Any]:
    """The queue's delay, then a message's own (shorter) one: neither arrives early."""
    url = url_of(sqs, "gw-delay")
    out: dict[str, Any] = {}
    for label, extra, delay in (
        ("queue", {}, DELAYED["gw-delay"]),
        ("own", {"DelaySeconds": 1}, 1),
    ):
        sent = time.monotonic()
        sqs.send_message(QueueUrl=url, MessageBody=label, **extra)
        early = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0).get("Messages", [])
        if time.monotonic() < sent + delay:  # else the check says nothing (a slow machine)
            assert early == [], label
        got = receive_all(sqs, url, 1, MessageAttributeNames=["All"])
        out[label] = (got[0]["Body"], time.monotonic() - sent >= delay)
        sqs.delete_message(QueueUrl=url, ReceiptHandle=got[0]["ReceiptHandle"])
    out["attribute"] = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["DelaySeconds"])[
        "Attributes"
    ]
    return out


def test_delays_are_kept_as_sqs_keeps_them(sides: Sides) -> None:
    stories = {side: delay_story(sqs) for side, sqs in sides.both()}
    assert stories["gateway"] == stories["moto"]
    assert stories["gateway"]["queue"] == ("queue", True)
    assert stories["gateway"]["own"] == ("own", True)
    assert stories["gateway"]["attribute"] == {"DelaySeconds": "2"}


def test_a_delay_the_queue_cannot_keep_is_refused_not_ignored(sides: Sides) -> None:
    # gw-basic has no DelaySeconds, so its stream takes no schedules: moto would delay, the
    # gateway says it cannot rather than deliver early.
    url = url_of(sides.gateway, "gw-basic")
    code, _, status = error_of(
        lambda: sides.gateway.send_message(QueueUrl=url, MessageBody="x", DelaySeconds=5)
    )
    assert (code, status) == ("AWS.SimpleQueueService.UnsupportedOperation", 400)


# -- the JavaScript SDK v3 ----------------------------------------------------------------------

JS_APP = Path(__file__).parent / "js"


@pytest.fixture(scope="module")
def node_app() -> Path:
    """The JS application with its SDK installed (`npm ci` from the lock file, once)."""
    if not (JS_APP / "node_modules" / "@aws-sdk" / "client-sqs").is_dir():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"], cwd=JS_APP, check=True, timeout=600
        )
    return JS_APP


def js_story(app: Path, endpoint: str) -> dict[str, Any]:
    done = subprocess.run(
        ["node", "story.mjs", endpoint, "gw-js"],
        cwd=app,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY},
    )
    assert done.returncode == 0, done.stderr
    story: dict[str, Any] = json.loads(done.stdout)
    return story


def test_the_javascript_sdk_sees_what_it_sees_on_sqs(
    sides: Sides, moto_server: str, node_app: Path
) -> None:
    moto = js_story(node_app, moto_server)
    gateway = js_story(node_app, sides.running.url)
    assert gateway == moto
    assert gateway["path"] == "/123456789012/gw-js"
    assert gateway["unknownQueue"] == {
        "name": "QueueDoesNotExist",
        "code": "AWS.SimpleQueueService.NonExistentQueue",
        "status": 400,
    }
    assert gateway["notDeleted"] == [["forged", "ReceiptHandleIsInvalid", True]]
    assert [m["ApproximateReceiveCount"] for m in gateway["again"]] == ["2"]
    assert gateway["left"] == []
