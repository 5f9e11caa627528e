"""The SNS data plane through the gateway's pieces, on a real nats-server with an applied plan.

The estate is made in moto (topics, queues, raw subscriptions), scanned and planned with the
queues' consumers and the producers on NATS, applied to a nats-server whose users are the
identities `auth` generated, and served by a tiny aiohttp front that runs what the gateway runs:
SigV4 over `gateway-keys.json`, one NATS connection per identity, `handle_sns`. boto3 talks to
it as to SNS; the same calls against moto (the AWS emulator the tests use) give the response
shapes to compare with.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import boto3
import pytest
from aiohttp import web
from botocore.config import Config
from botocore.exceptions import ClientError

from snsq2nats.apply import apply_plan
from snsq2nats.auth.config import write_auth
from snsq2nats.auth.identities import identities
from snsq2nats.auth.output import write_identities
from snsq2nats.aws.clients import RegionClients
from snsq2nats.aws.scan import scan
from snsq2nats.bridge.codec import (
    DEDUP_HEADER,
    GROUP_HEADER,
    MSG_ID_HEADER,
    Attribute,
    headers_to_attributes,
)
from snsq2nats.demo.nats_server import NatsServer, nats_server_version
from snsq2nats.errors import GatewayError
from snsq2nats.gateway.connections import IdentityConnections
from snsq2nats.gateway.keys import GatewayKey, load_keys
from snsq2nats.gateway.principal import Principal
from snsq2nats.gateway.sigv4 import SigV4Authenticator
from snsq2nats.gateway.sns import error_xml, handle_sns
from snsq2nats.jetstream.spec import ServerInfo
from snsq2nats.plan.model import Plan
from snsq2nats.plan.pipeline import assemble_plan
from snsq2nats.plan.rules import load_rules
from tests.fixtures.aws import AwsEndpoint
from tests.fixtures.wait import until

PUBLISHER = "sns_gw-events-publisher"
FIFO_PUBLISHER = "snsfifo_gw-ledger-publisher"
AUDIT_PRODUCER = "sqs_gw-audit-producer"
ADMIN = "snsq2nats-admin"
MAPPING = 'overrides:\n  - match: "gw-*"\n    cutover: {consumers: nats, producers: nats}\n'


@dataclass
class Estate:
    url: str
    plan: Plan
    keys: dict[str, GatewayKey]
    conns: IdentityConnections
    aws: AwsEndpoint
    moto_sns: Any
    events: str
    ledger: str
    queues: dict[str, str]

    def sns(self, identity: str = PUBLISHER) -> Any:
        key = self.keys[identity]
        return boto3.client(
            "sns",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=key.access_key_id,
            aws_secret_access_key=key.secret,
            config=Config(retries={"max_attempts": 1}),
        )

    async def admin(self) -> Any:
        return await self.conns.jetstream(ADMIN)

    async def stored(self, stream: str, count: int) -> list[Any]:
        """The first `count` messages of `stream`, once it holds that many."""
        js = await self.admin()

        async def holds() -> bool:
            return int((await js.stream_info(stream)).state.messages) >= count

        await until(holds, what=f"{count} message(s) in {stream}")
        return [await js.get_msg(stream, seq) for seq in range(1, count + 1)]


def _seed(aws: AwsEndpoint) -> tuple[str, str, dict[str, str]]:
    sqs, sns = aws.client("sqs"), aws.client("sns")

    def queue(name: str, **attributes: str) -> str:
        url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        return str(arn["Attributes"]["QueueArn"])

    queues = {
        "billing": queue("gw-billing"),
        "audit": queue("gw-audit"),
        "ledger": queue("gw-ledger.fifo", FifoQueue="true", ContentBasedDeduplication="true"),
    }
    events = sns.create_topic(Name="gw-events")["TopicArn"]
    ledger = sns.create_topic(
        Name="gw-ledger.fifo",
        Attributes={"FifoTopic": "true", "ContentBasedDeduplication": "true"},
    )["TopicArn"]
    raw = {"RawMessageDelivery": "true"}
    billing_filter = {**raw, "FilterPolicy": json.dumps({"event_type": ["order_placed"]})}
    sns.subscribe(
        TopicArn=events, Protocol="sqs", Endpoint=queues["billing"], Attributes=billing_filter
    )
    sns.subscribe(TopicArn=events, Protocol="sqs", Endpoint=queues["audit"], Attributes=raw)
    sns.subscribe(TopicArn=ledger, Protocol="sqs", Endpoint=queues["ledger"], Attributes=raw)
    return events, ledger, queues


@pytest.fixture
async def estate(aws: AwsEndpoint, tmp_path: Path) -> AsyncIterator[Estate]:
    events, ledger, queues = _seed(aws)
    inventory = await asyncio.to_thread(
        scan, [RegionClients(aws.region, aws.client("sqs"), aws.client("sns"))]
    )
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(MAPPING)
    plan = assemble_plan(
        inventory,
        load_rules([mapping]),
        None,
        server=ServerInfo(reachable=False, version=nats_server_version()),
    )
    generated = identities(plan)
    directory = tmp_path / "auth"
    server = NatsServer(name="gateway-sns")
    write_identities(
        generated, directory, fmt="config", credentials="nkey", tls_user="{name}", url=server.url
    )
    server.users = write_auth(generated, directory, mode="nkey", url=server.url).users
    keys = load_keys(directory)
    auth = SigV4Authenticator(keys)
    with server:
        async with IdentityConnections(keys) as conns:
            applied = await apply_plan(await conns.connection(ADMIN), plan, allow_destructive=False)
            assert applied.ok, [o.detail for o in applied.failed]

            async def front(request: web.Request) -> web.Response:
                """What the gateway's server does for an SNS request."""
                request_id = str(uuid.uuid4())
                body = await request.read()
                try:
                    principal = auth.authenticate(
                        request.method,
                        request.raw_path,
                        request.rel_url.raw_query_string,
                        request.headers,
                        body,
                    )
                    params = dict(parse_qsl(body.decode(), keep_blank_values=True))
                    action = params.pop("Action", "")
                    xml = await handle_sns(
                        action,
                        params,
                        js=await conns.jetstream(principal.identity),
                        plan=plan,
                        principal=principal,
                        request_id=request_id,
                    )
                except GatewayError as error:
                    return web.Response(
                        status=error.status,
                        body=error_xml(error, request_id),
                        content_type="text/xml",
                    )
                return web.Response(body=xml, content_type="text/xml")

            app = web.Application()
            app.router.add_post("/", front)
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            try:
                yield Estate(
                    url=f"http://127.0.0.1:{runner.addresses[0][1]}",
                    plan=plan,
                    keys={k.identity: k for k in keys.values()},
                    conns=conns,
                    aws=aws,
                    moto_sns=aws.client("sns"),
                    events=events,
                    ledger=ledger,
                    queues=queues,
                )
            finally:
                await runner.cleanup()


def _code(call: Any) -> tuple[str, int]:
    with pytest.raises(ClientError) as caught:
        call()
    response = caught.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


ATTRIBUTES = {
    "event_type": {"DataType": "String", "StringValue": "order_placed"},
    "amount": {"DataType": "Number", "StringValue": "1250.5"},
    "blob": {"DataType": "Binary", "BinaryValue": b"\x00\xffraw"},
    "tags": {"DataType": "String.Array", "StringValue": '["a", "b"]'},
}


# -- publish: the topic stream, then the queues through the plan's routing ----------------------


async def test_publish_reaches_the_topic_stream_and_its_queues(estate: Estate) -> None:
    sns = estate.sns()
    sent = await asyncio.to_thread(
        sns.publish,
        TopicArn=estate.events,
        Message="order 42 placed",
        Subject="Order placed",
        MessageAttributes=ATTRIBUTES,
    )
    assert str(uuid.UUID(sent["MessageId"])) == sent["MessageId"]
    assert "SequenceNumber" not in sent  # a standard topic has none, as with moto
    moto = estate.moto_sns.publish(
        TopicArn=estate.events, Message="order 42 placed", MessageAttributes=ATTRIBUTES
    )
    assert set(sent) == set(moto)

    (stored,) = await estate.stored("sns_gw-events", 1)
    # The subject a NATS producer is told to use: the promoted attribute as its token.
    assert stored.subject == "sns.gw-events.order_placed"
    assert stored.data == b"order 42 placed"
    assert stored.headers["Snsq2nats-Sns-Subject"] == "Order placed"
    # One header contract: the attributes come back with their types from the headers.
    assert headers_to_attributes(stored.headers) == {
        "event_type": Attribute("String", "order_placed"),
        "amount": Attribute("Number", "1250.5"),
        "blob": Attribute("Binary", b"\x00\xffraw"),
        "tags": Attribute("String.Array", '["a", "b"]'),
    }
    assert stored.headers["event_type"] == "order_placed"  # plain header for NATS readers
    # The audit queue takes the topic through its stream source (server-side routing).
    (copied,) = await estate.stored("sqs_gw-audit", 1)
    assert copied.data == b"order 42 placed"
    assert headers_to_attributes(copied.headers)["amount"] == Attribute("Number", "1250.5")

    # MessageStructure=json: queues receive the `sqs` entry (else `default`).
    structured = json.dumps({"default": "fallback", "sqs": "for queues", "email": "hi"})
    await asyncio.to_thread(
        sns.publish, TopicArn=estate.events, Message=structured, MessageStructure="json"
    )
    second = (await estate.stored("sns_gw-events", 2))[1]
    assert second.data == b"for queues"
    assert second.subject == "sns.gw-events.~absent"


async def test_fifo_topic_groups_and_deduplicates(estate: Estate) -> None:
    sns = estate.sns(FIFO_PUBLISHER)

    def send(body: str, group: str = "acct-1", **extra: str) -> dict[str, Any]:
        answer: dict[str, Any] = sns.publish(
            TopicArn=estate.ledger, Message=body, MessageGroupId=group, **extra
        )
        return answer

    first = await asyncio.to_thread(send, "debit 10")
    again = await asyncio.to_thread(send, "debit 10")  # content-based: the same body
    other = await asyncio.to_thread(send, "credit 5", "acct-2", MessageDeduplicationId="c-5")
    # The duplicate inside the window answers with the first copy's ids, as SNS does.
    assert (again["MessageId"], again["SequenceNumber"]) == (
        first["MessageId"],
        first["SequenceNumber"],
    )
    assert first["SequenceNumber"] == f"{1:020d}" and other["SequenceNumber"] == f"{2:020d}"
    moto = estate.moto_sns.publish(TopicArn=estate.ledger, Message="debit 10", MessageGroupId="g")
    # SNS answers FIFO publishes with a SequenceNumber too; moto leaves it out.
    assert set(first) == {*moto, "SequenceNumber"}

    stored = await estate.stored("snsfifo_gw-ledger", 2)
    assert [m.data for m in stored] == [b"debit 10", b"credit 5"]
    assert stored[0].headers[GROUP_HEADER] == "acct-1"
    assert stored[1].headers[DEDUP_HEADER] == "c-5" == stored[1].headers[MSG_ID_HEADER]
    copies = await estate.stored("sqsfifo_gw-ledger", 2)
    assert [m.data for m in copies] == [b"debit 10", b"credit 5"]
    info = await (await estate.admin()).stream_info("snsfifo_gw-ledger")
    assert info.state.messages == 2  # the duplicate was dropped by the stream

    # A FIFO batch is stored in its order, each entry after the one before.
    batch = [{"Id": f"e{i}", "Message": f"entry {i}", "MessageGroupId": "acct-3"} for i in range(3)]
    answer = await asyncio.to_thread(
        sns.publish_batch, TopicArn=estate.ledger, PublishBatchRequestEntries=batch
    )
    assert [s["SequenceNumber"] for s in answer["Successful"]] == [
        f"{seq:020d}" for seq in (3, 4, 5)
    ]
    in_order = await estate.stored("snsfifo_gw-ledger", 5)
    assert [m.data for m in in_order[2:]] == [b"entry 0", b"entry 1", b"entry 2"]

    missing = await asyncio.to_thread(
        _code, lambda: sns.publish(TopicArn=estate.ledger, Message="no group")
    )
    # SNS's words (moto says so in PublishBatch; its Publish borrows SQS's MissingParameter).
    assert missing == ("InvalidParameter", 400)


async def test_publish_batch_reports_partial_failures(estate: Estate) -> None:
    sns = estate.sns()
    entries = [
        {
            "Id": "ok-1",
            "Message": "one",
            "MessageAttributes": {"event_type": ATTRIBUTES["event_type"]},
        },
        {
            "Id": "bad",
            "Message": "two",
            "MessageAttributes": {"x": {"DataType": "Date", "StringValue": "1"}},
        },
        {"Id": "ok-2", "Message": "three"},
    ]
    answer = await asyncio.to_thread(
        sns.publish_batch, TopicArn=estate.events, PublishBatchRequestEntries=entries
    )
    assert [s["Id"] for s in answer["Successful"]] == ["ok-1", "ok-2"]
    assert all(uuid.UUID(s["MessageId"]) for s in answer["Successful"])
    (failure,) = answer["Failed"]
    assert failure["Id"] == "bad" and failure["Code"] == "ParameterValueInvalid"
    assert failure["SenderFault"] is True and "invalid message attribute type" in failure["Message"]
    stored = await estate.stored("sns_gw-events", 2)
    assert sorted(m.data for m in stored) == [b"one", b"three"]

    good = [entries[0], entries[2]]
    ours = await asyncio.to_thread(
        sns.publish_batch, TopicArn=estate.events, PublishBatchRequestEntries=good
    )
    moto = estate.moto_sns.publish_batch(TopicArn=estate.events, PublishBatchRequestEntries=good)
    assert set(ours) == set(moto)
    assert [set(s) for s in ours["Successful"]] == [set(s) for s in moto["Successful"]]

    eleven = [{"Id": f"m{i}", "Message": "x"} for i in range(11)]
    twice = [{"Id": "same", "Message": "x"}, {"Id": "same", "Message": "y"}]
    for batch in (eleven, twice):
        ours_code = await asyncio.to_thread(
            _code,
            lambda b=batch: sns.publish_batch(TopicArn=estate.events, PublishBatchRequestEntries=b),
        )
        moto_code = _code(
            lambda b=batch: estate.moto_sns.publish_batch(
                TopicArn=estate.events, PublishBatchRequestEntries=b
            )
        )
        assert ours_code == moto_code


async def test_topics_attributes_and_subscriptions_read_like_sns(estate: Estate) -> None:
    sns = estate.sns()
    ours = await asyncio.to_thread(sns.list_topics)
    moto = estate.moto_sns.list_topics()
    assert sorted(t["TopicArn"] for t in ours["Topics"]) == sorted(
        t["TopicArn"] for t in moto["Topics"]
    )

    for topic in (estate.events, estate.ledger):
        attributes = (await asyncio.to_thread(sns.get_topic_attributes, TopicArn=topic))[
            "Attributes"
        ]
        expected = estate.moto_sns.get_topic_attributes(TopicArn=topic)["Attributes"]
        assert set(attributes) <= set(expected)
        for name in ("TopicArn", "Owner", "FifoTopic", "ContentBasedDeduplication"):
            assert attributes.get(name) == expected.get(name), name

    listed = await asyncio.to_thread(sns.list_subscriptions_by_topic, TopicArn=estate.events)
    on_moto = estate.moto_sns.list_subscriptions_by_topic(TopicArn=estate.events)

    def rows(answer: dict[str, Any]) -> list[tuple[str, ...]]:
        return sorted(
            (s["SubscriptionArn"], s["Protocol"], s["Endpoint"], s["TopicArn"], s["Owner"])
            for s in answer["Subscriptions"]
        )

    assert rows(listed) == rows(on_moto)
    assert {s["Endpoint"] for s in listed["Subscriptions"]} == {
        estate.queues["billing"],
        estate.queues["audit"],
    }


async def test_errors_are_snss(estate: Estate) -> None:
    sns = estate.sns()
    missing = f"{estate.events}-nope"

    def both(call: Any) -> tuple[tuple[str, int], tuple[str, int]]:
        return _code(lambda: call(sns)), _code(lambda: call(estate.moto_sns))

    ours, moto = await asyncio.to_thread(both, lambda c: c.publish(TopicArn=missing, Message="m"))
    assert ours == moto == ("NotFound", 404)
    ours, moto = await asyncio.to_thread(both, lambda c: c.get_topic_attributes(TopicArn=missing))
    assert ours == moto == ("NotFound", 404)
    ours, _ = await asyncio.to_thread(
        both,
        lambda c: c.publish(
            TopicArn=estate.events,
            Message="m",
            MessageAttributes={"n": {"DataType": "Number", "StringValue": "ten"}},
        ),
    )
    assert ours == ("ParameterValueInvalid", 400)  # AWS's code (moto says InvalidParameter)
    ours, moto = await asyncio.to_thread(
        both, lambda c: c.publish(TopicArn=estate.events, Message="{}", MessageStructure="json")
    )
    assert ours == ("InvalidParameter", 400)
    ours, moto = await asyncio.to_thread(
        both, lambda c: c.publish(TopicArn=estate.events, Message="x" * 262_145)
    )
    assert ours == ("InvalidParameter", 400)

    # The control plane belongs to plan/apply: an AWS-shaped refusal that says so.
    with pytest.raises(ClientError) as refused:
        await asyncio.to_thread(sns.create_topic, Name="shadow")
    error = refused.value.response["Error"]
    assert error["Code"] == "AuthorizationError"
    assert "snsq2nats plan" in error["Message"] and "snsq2nats apply" in error["Message"]
    assert await asyncio.to_thread(
        _code,
        lambda: sns.subscribe(
            TopicArn=estate.events, Protocol="sqs", Endpoint=estate.queues["billing"]
        ),
    ) == ("AuthorizationError", 403)
    # Nothing of the refused requests reached the topic stream.
    info = await (await estate.admin()).stream_info("sns_gw-events")
    assert info.state.messages == 0


async def test_nats_enforces_the_keys_identity(estate: Estate) -> None:
    # A queue producer's key may send to its queue, not publish to a topic: NATS refuses it.
    producer = estate.sns(AUDIT_PRODUCER)
    code = await asyncio.to_thread(
        _code, lambda: producer.publish(TopicArn=estate.events, Message="not mine")
    )
    assert code == ("AuthorizationError", 403)
    # The FIFO topic's publisher may not publish to the standard topic either.
    other = estate.sns(FIFO_PUBLISHER)
    assert await asyncio.to_thread(
        _code, lambda: other.publish(TopicArn=estate.events, Message="not mine")
    ) == ("AuthorizationError", 403)
    # Reading the plan's topics needs no NATS grant: any key lists them.
    assert (await asyncio.to_thread(producer.list_topics))["Topics"]
    info = await (await estate.admin()).stream_info("sns_gw-events")
    assert info.state.messages == 0
    assert await asyncio.to_thread(
        lambda: estate.sns().publish(TopicArn=estate.events, Message="mine")["MessageId"]
    )


async def test_filter_router_delivers_what_the_policy_matches(estate: Estate) -> None:
    """gw-billing's filter policy is served by the bridge's filter router: gateway-published
    messages take that road as any NATS producer's do, and only the matching one arrives."""
    from snsq2nats.bridge.context import BridgeContext
    from snsq2nats.bridge.filter_router import run_filter_router
    from tests.fixtures.bridge import FAST

    sns = estate.sns()
    for event in ("order_placed", "order_cancelled"):
        attributes = {"event_type": {"DataType": "String", "StringValue": event}}
        await asyncio.to_thread(
            sns.publish, TopicArn=estate.events, Message=event, MessageAttributes=attributes
        )
    (route,) = [r for r in estate.plan.routes if r.kind == "filter-router"]
    assert route.target_stream == "sqs_gw-billing"
    # The router runs as the bridge identity `auth` generated, as a bridge process would.
    nc = await estate.conns.connection("snsq2nats-bridge")
    ctx = BridgeContext(plan=estate.plan, nc=nc, sqs=None, sns=None, timings=FAST)
    task = asyncio.create_task(run_filter_router(ctx, route))
    try:
        (routed,) = await estate.stored("sqs_gw-billing", 1)
        js = await estate.admin()

        async def drained() -> bool:
            info = await js.consumer_info(route.stream, route.consumer)
            return bool(info.num_pending == 0 and info.num_ack_pending == 0)

        await until(drained, what="the filter router to have read both messages")
    finally:
        ctx.stopping.set()
        await asyncio.wait_for(task, timeout=30)
    assert routed.data == b"order_placed"
    assert headers_to_attributes(routed.headers)["event_type"] == Attribute(
        "String", "order_placed"
    )
    assert (await js.stream_info("sqs_gw-billing")).state.messages == 1


# -- the Query/XML protocol itself, read back by botocore's own parser --------------------------


def _parsed(action: str, body: bytes, status: int = 200) -> dict[str, Any]:
    import botocore.parsers
    import botocore.session

    model = botocore.session.get_session().get_service_model("sns")
    output = model.operation_model(action).output_shape
    parser = botocore.parsers.QueryParser()
    parsed: dict[str, Any] = parser.parse(
        {"body": body, "headers": {}, "status_code": status}, output
    )
    return parsed


def _synthetic_plan(topics: int) -> Plan:
    from snsq2nats.plan.model import Resource

    return Plan(
        generated_at="test",
        server=ServerInfo(reachable=False),
        resources=[
            Resource(
                source_arn=f"arn:aws:sns:us-east-1:123456789012:t{i:03d}",
                kind="sns-topic",
                name=f"t{i:03d}",
                publish_subject=f"sns.t{i:03d}",
            )
            for i in range(topics)
        ],
    )


PRINCIPAL = Principal(access_key_id="AKSQTEST", identity="tester")


async def test_list_topics_pages_by_a_hundred() -> None:
    plan = _synthetic_plan(150)
    first = _parsed(
        "ListTopics",
        await handle_sns("ListTopics", {}, js=None, plan=plan, principal=PRINCIPAL),
    )
    assert len(first["Topics"]) == 100 and first["NextToken"]
    second = _parsed(
        "ListTopics",
        await handle_sns(
            "ListTopics",
            {"NextToken": first["NextToken"]},
            js=None,
            plan=plan,
            principal=PRINCIPAL,
            request_id="rid-2",
        ),
    )
    arns = [t["TopicArn"] for t in first["Topics"] + second["Topics"]]
    assert arns == [r.source_arn for r in plan.resources]
    assert "NextToken" not in second
    assert second["ResponseMetadata"]["RequestId"] == "rid-2"


async def test_refusals_render_as_snss_error_response() -> None:
    plan = _synthetic_plan(1)

    async def refusal(action: str, params: dict[str, str]) -> GatewayError:
        with pytest.raises(GatewayError) as caught:
            await handle_sns(action, params, js=None, plan=plan, principal=PRINCIPAL)
        error = caught.value
        parsed = _parsed("Publish", error_xml(error, "rid-e"), error.status)
        assert parsed["Error"]["Code"] == error.code
        assert parsed["Error"]["Message"] == error.message
        assert parsed["Error"]["Type"] == ("Sender" if error.sender else "Receiver")
        return error

    assert (await refusal("CreateTopic", {"Name": "x"})).status == 403
    assert (await refusal("Frobnicate", {})).code == "InvalidAction"
    missing = await refusal("Publish", {"TopicArn": plan.resources[0].source_arn})
    assert (missing.code, missing.status) == ("ValidationError", 400)
    assert "'message'" in missing.message
    bad_b64 = {
        "TopicArn": plan.resources[0].source_arn,
        "Message": "m",
        "MessageAttributes.entry.1.Name": "b",
        "MessageAttributes.entry.1.Value.DataType": "Binary",
        "MessageAttributes.entry.1.Value.BinaryValue": "%%%",
    }
    assert (await refusal("Publish", bad_b64)).code == "InvalidParameter"
