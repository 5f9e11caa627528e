"""The lean SQS transport (`aws.lean`) answers as botocore does: the same replies, the same
exceptions and error codes, botocore's endpoint resolution and credential refresh, retries on
throttling. Against moto's server over HTTP, each call made both ways on the same queue."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from botocore.exceptions import ClientError, EndpointConnectionError

from snsq2nats.aws.clients import async_clients, sqs_transport
from snsq2nats.aws.errors import error_code, is_missing, is_throttle
from snsq2nats.aws.lean import LeanSQS
from snsq2nats.errors import UsageError
from tests.fixtures.aws import AwsEndpoint


def _body(reply: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in reply.items() if k != "ResponseMetadata"}


@contextlib.asynccontextmanager
async def both(aws: AwsEndpoint) -> AsyncIterator[tuple[Any, Any]]:
    async with (
        async_clients(aws.region, aws.url, transport="lean") as lean,
        async_clients(aws.region, aws.url, transport="botocore") as boto,
    ):
        assert isinstance(lean.sqs, LeanSQS)
        assert not isinstance(boto.sqs, LeanSQS)
        yield lean.sqs, boto.sqs


def _entries(first: int, count: int) -> list[dict[str, Any]]:
    return [
        {
            "Id": f"m{i}",
            "MessageBody": f"body-{i}",
            "DelaySeconds": 0,
            "MessageAttributes": {
                "text": {"DataType": "String", "StringValue": f"t{i}"},
                "number": {"DataType": "Number", "StringValue": str(i)},
                "blob": {"DataType": "Binary", "BinaryValue": bytes([i, 0, 255])},
            },
        }
        for i in range(first, first + count)
    ]


def _received(reply: dict[str, Any]) -> list[dict[str, Any]]:
    """What does not depend on the receive itself (handles and receive counts do)."""
    messages = []
    for m in reply.get("Messages") or []:
        messages.append(
            {
                "MessageId": m["MessageId"],
                "Body": m["Body"],
                "MD5OfBody": m["MD5OfBody"],
                "MD5OfMessageAttributes": m.get("MD5OfMessageAttributes"),
                "MessageAttributes": m.get("MessageAttributes"),
                "Attributes": sorted(m.get("Attributes") or {}),
                "keys": sorted(m),
            }
        )
    return sorted(messages, key=lambda m: m["Body"])


async def test_every_hot_call_answers_as_botocore_does(aws: AwsEndpoint) -> None:
    sqs = aws.client("sqs")
    url = sqs.create_queue(QueueName="lean-same", Attributes={"VisibilityTimeout": "30"})[
        "QueueUrl"
    ]
    async with both(aws) as (lean, boto):
        # SendMessageBatch, binary attributes included: each way, then both read back alike.
        sent_lean = await lean.send_message_batch(QueueUrl=url, Entries=_entries(0, 3))
        sent_boto = await boto.send_message_batch(QueueUrl=url, Entries=_entries(3, 3))
        assert sorted(_body(sent_lean)) == sorted(_body(sent_boto))
        assert not sent_lean.get("Failed") and not sent_boto.get("Failed")
        assert sent_lean["ResponseMetadata"]["HTTPStatusCode"] == 200
        assert [s["Id"] for s in sent_lean["Successful"]] == ["m0", "m1", "m2"]
        for ok in sent_lean["Successful"] + sent_boto["Successful"]:
            assert sorted(ok) == sorted(sent_boto["Successful"][0])

        args = {
            "QueueUrl": url,
            "MaxNumberOfMessages": 10,
            "WaitTimeSeconds": 0,
            "VisibilityTimeout": 0,
            "MessageAttributeNames": ["All"],
            "MessageSystemAttributeNames": ["All"],
        }
        got_lean: dict[str, Any] = {"Messages": []}
        got_boto: dict[str, Any] = {"Messages": []}
        for into, client in ((got_lean, lean), (got_boto, boto)):
            seen: set[str] = set()
            while len(seen) < 6:
                reply = await client.receive_message(**args)
                for m in reply.get("Messages") or []:
                    if m["MessageId"] not in seen:
                        seen.add(m["MessageId"])
                        into["Messages"].append(m)
        assert _received(got_lean) == _received(got_boto)
        blobs = {m["Body"]: m["MessageAttributes"]["blob"] for m in got_lean["Messages"]}
        assert blobs["body-4"] == {"DataType": "Binary", "BinaryValue": bytes([4, 0, 255])}

        # GetQueueAttributes.
        names = ["ApproximateNumberOfMessages", "VisibilityTimeout", "QueueArn"]
        attrs_lean = await lean.get_queue_attributes(QueueUrl=url, AttributeNames=names)
        attrs_boto = await boto.get_queue_attributes(QueueUrl=url, AttributeNames=names)
        assert _body(attrs_lean) == _body(attrs_boto)
        assert attrs_lean["Attributes"]["ApproximateNumberOfMessages"] == "6"

        # Visibility and delete, one batch each way, an unknown handle failing in both alike.
        held = await lean.receive_message(**{**args, "VisibilityTimeout": 60})
        handles = [m["ReceiptHandle"] for m in held["Messages"]]
        assert len(handles) == 6

        def batch(hs: list[str], **extra: Any) -> list[dict[str, Any]]:
            return [{"Id": f"e{i}", "ReceiptHandle": h, **extra} for i, h in enumerate(hs)]

        vis_lean = await lean.change_message_visibility_batch(
            QueueUrl=url, Entries=batch(handles[:3], VisibilityTimeout=120)
        )
        vis_boto = await boto.change_message_visibility_batch(
            QueueUrl=url, Entries=batch(handles[3:], VisibilityTimeout=120)
        )
        assert _body(vis_lean) == _body(vis_boto)
        one_lean = await lean.change_message_visibility(
            QueueUrl=url, ReceiptHandle=handles[0], VisibilityTimeout=100
        )
        one_boto = await boto.change_message_visibility(
            QueueUrl=url, ReceiptHandle=handles[1], VisibilityTimeout=100
        )
        assert _body(one_lean) == _body(one_boto) == {}
        del_lean = await lean.delete_message_batch(QueueUrl=url, Entries=batch(handles[:3]))
        del_boto = await boto.delete_message_batch(QueueUrl=url, Entries=batch(handles[3:]))
        assert _body(del_lean) == _body(del_boto)
        assert [s["Id"] for s in del_lean["Successful"]] == ["e0", "e1", "e2"]
        attrs = await lean.get_queue_attributes(
            QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"]
        )
        assert attrs["Attributes"]["ApproximateNumberOfMessagesNotVisible"] == "0"

        # An empty long poll: the reply botocore gives, an empty dict besides the metadata.
        empty_lean = await lean.receive_message(**{**args, "WaitTimeSeconds": 1})
        empty_boto = await boto.receive_message(**{**args, "WaitTimeSeconds": 1})
        assert _body(empty_lean) == _body(empty_boto)
        assert not empty_lean.get("Messages")

        # Everything else is the botocore client's.
        assert (await lean.get_queue_url(QueueName="lean-same"))["QueueUrl"] == url
        assert lean.meta.endpoint_url == boto.meta.endpoint_url == aws.url


async def test_a_missing_queue_raises_what_botocore_raises(aws: AwsEndpoint) -> None:
    url = aws.client("sqs").create_queue(QueueName="lean-gone")["QueueUrl"]
    aws.client("sqs").delete_queue(QueueUrl=url)
    async with both(aws) as (lean, boto):
        caught = []
        for client in (lean, boto):
            with pytest.raises(ClientError) as info:
                await client.receive_message(QueueUrl=url, WaitTimeSeconds=0)
            caught.append(info.value)
            assert isinstance(info.value, client.exceptions.QueueDoesNotExist)
        lean_error, boto_error = caught
        assert lean_error.response["Error"] == boto_error.response["Error"]
        assert error_code(lean_error) == error_code(boto_error)
        assert is_missing(lean_error) and not is_throttle(lean_error)
        assert lean_error.operation_name == boto_error.operation_name == "ReceiveMessage"
        status = lean_error.response["ResponseMetadata"]["HTTPStatusCode"]
        assert status == boto_error.response["ResponseMetadata"]["HTTPStatusCode"]


async def test_an_entry_refused_in_a_batch_is_reported_as_botocore_reports_it(
    aws: AwsEndpoint,
) -> None:
    url = aws.client("sqs").create_queue(QueueName="lean-entries")["QueueUrl"]
    async with both(aws) as (lean, boto):
        bad = [{"Id": "x", "ReceiptHandle": "not-a-handle"}]
        replies = []
        for client in (lean, boto):
            try:
                replies.append(_body(await client.delete_message_batch(QueueUrl=url, Entries=bad)))
            except ClientError as exc:
                replies.append(exc.response["Error"])
        assert replies[0] == replies[1]
        errors = []
        for client in (lean, boto):
            with pytest.raises(ClientError) as info:
                await client.send_message_batch(QueueUrl=url, Entries=[])
            errors.append(info.value)
        assert errors[0].response["Error"] == errors[1].response["Error"]
        # Each client has its own exception classes: the same name, caught by the same except.
        assert type(errors[0]).__name__ == type(errors[1]).__name__ == "EmptyBatchRequest"
        assert isinstance(errors[0], lean.exceptions.EmptyBatchRequest)


async def test_the_endpoint_comes_from_botocore_resolution(
    aws: AwsEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`AWS_ENDPOINT_URL_SQS` wins over `AWS_ENDPOINT_URL`, as in botocore; both honoured."""
    url = aws.client("sqs").create_queue(QueueName="lean-endpoint")["QueueUrl"]
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", aws.url)
    async with async_clients(aws.region, transport="lean") as clients:
        assert clients.sqs.meta.endpoint_url == aws.url
        reply = await clients.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        assert reply["Attributes"]["QueueArn"].endswith(":lean-endpoint")
    monkeypatch.delenv("AWS_ENDPOINT_URL_SQS")
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws.url)
    async with async_clients(aws.region, transport="lean") as clients:
        reply = await clients.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        assert reply["Attributes"]["QueueArn"].endswith(":lean-endpoint")


async def test_an_unreachable_endpoint_raises_botocores_connection_error(
    aws: AwsEndpoint,
) -> None:
    from snsq2nats.demo.nats_server import free_ports

    nowhere = f"http://127.0.0.1:{free_ports(1)[0]}"
    async with async_clients(aws.region, nowhere, transport="lean") as clients:
        assert isinstance(clients.sqs, LeanSQS)
        clients.sqs._attempts = 2  # no need to sit out every backoff
        with pytest.raises(EndpointConnectionError):
            await clients.sqs.receive_message(QueueUrl=f"{nowhere}/1/q", WaitTimeSeconds=0)


async def test_credentials_are_refreshed_through_botocores_chain(aws: AwsEndpoint) -> None:
    """Refreshable credentials near expiry are fetched again before the next call is signed."""
    from datetime import UTC, datetime, timedelta

    from aiobotocore.credentials import AioRefreshableCredentials

    url = aws.client("sqs").create_queue(QueueName="lean-refresh")["QueueUrl"]
    fetched: list[str] = []

    async def refresh() -> dict[str, str]:
        fetched.append("x")
        # Always about to expire: every signing has to ask again.
        expiry = datetime.now(UTC) + timedelta(seconds=30)
        return {
            "access_key": f"AKIDREFRESH{len(fetched)}",
            "secret_key": "secret",
            "token": "token",
            "expiry_time": expiry.isoformat(),
        }

    credentials = AioRefreshableCredentials.create_from_metadata(
        await refresh(), refresh_using=refresh, method="test"
    )
    async with async_clients(aws.region, aws.url, transport="lean") as clients:
        assert isinstance(clients.sqs, LeanSQS)
        clients.sqs._credentials = credentials
        before = len(fetched)
        for _ in range(2):
            reply = await clients.sqs.get_queue_attributes(
                QueueUrl=url, AttributeNames=["QueueArn"]
            )
            assert reply["ResponseMetadata"]["HTTPStatusCode"] == 200
        assert len(fetched) >= before + 2
        frozen = await credentials.get_frozen_credentials()
        assert frozen.access_key == f"AKIDREFRESH{len(fetched)}"


async def test_throttling_is_retried_then_classified(aws: AwsEndpoint) -> None:
    """A throttled call is retried with backoff (adaptive limiting switched on) and succeeds;
    one throttled on every attempt raises what `aws.errors` calls a throttle."""
    throttles = {"left": 2}
    calls: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        calls.append(request.headers["X-Amz-Target"])
        assert request.headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=")
        if throttles["left"] > 0:
            throttles["left"] -= 1
            return web.json_response(
                {"__type": "com.amazonaws.sqs#RequestThrottled", "message": "slow down"},
                status=400,
                headers={"x-amzn-query-error": "RequestThrottled;Sender"},
                content_type="application/x-amz-json-1.0",
            )
        return web.json_response(
            {"Attributes": {"QueueArn": "arn:aws:sqs:us-east-1:1:q"}},
            content_type="application/x-amz-json-1.0",
        )

    app = web.Application()
    app.router.add_post("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    endpoint = f"http://127.0.0.1:{port}"
    try:
        async with async_clients(aws.region, endpoint, transport="lean") as clients:
            sqs = clients.sqs
            assert isinstance(sqs, LeanSQS)
            reply = await sqs.get_queue_attributes(QueueUrl=f"{endpoint}/1/q")
            assert reply["Attributes"]["QueueArn"].endswith(":q")
            assert reply["ResponseMetadata"]["RetryAttempts"] == 2
            assert calls == ["AmazonSQS.GetQueueAttributes"] * 3
            assert sqs._adaptive.enabled
            throttles["left"] = 10**6
            sqs._attempts = 3
            with pytest.raises(ClientError) as info:
                await sqs.get_queue_attributes(QueueUrl=f"{endpoint}/1/q")
            assert is_throttle(info.value)
            assert error_code(info.value) == "RequestThrottled"
            assert info.value.response["ResponseMetadata"]["RetryAttempts"] == 2
    finally:
        await runner.cleanup()


def test_the_switch_names_the_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SNSQ2NATS_SQS_TRANSPORT", raising=False)
    assert sqs_transport() == "lean"
    monkeypatch.setenv("SNSQ2NATS_SQS_TRANSPORT", "botocore")
    assert sqs_transport() == "botocore"
    assert sqs_transport("lean") == "lean"
    monkeypatch.setenv("SNSQ2NATS_SQS_TRANSPORT", "fast")
    with pytest.raises(UsageError, match="unknown SQS transport"):
        sqs_transport()


async def test_the_environment_switch_gives_botocores_client(
    aws: AwsEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SNSQ2NATS_SQS_TRANSPORT", "botocore")
    async with async_clients(aws.region, aws.url) as clients:
        assert not isinstance(clients.sqs, LeanSQS)
    monkeypatch.delenv("SNSQ2NATS_SQS_TRANSPORT")
    async with async_clients(aws.region, aws.url) as clients:
        assert isinstance(clients.sqs, LeanSQS)
    await asyncio.sleep(0)


@pytest.mark.parametrize(
    "url", ["https://sqs.eu-west-1.amazonaws.com/", "http://127.0.0.1:4566", "https://sqs.x:8443"]
)
def test_the_signature_is_botocores(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    """At the same instant, the lean request carries exactly the Authorization (and signed
    headers) botocore's own signer gives the same request: on the first call, on the next
    ones that reuse the derived signing key, across a day change, with and without a session
    token, and with credentials refreshed in the middle of a day."""
    import datetime as dt

    import botocore.auth
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    from snsq2nats.aws.sigv4 import JsonRequestSigner

    now = [dt.datetime(2026, 5, 4, 3, 2, 1)]
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: now[0])
    body = b'{"QueueUrl":"https://sqs.eu-west-1.amazonaws.com/1/q","WaitTimeSeconds":20}'
    signer = JsonRequestSigner(url, "eu-west-1", "sqs")
    derived: list[object] = []

    def check(creds: Credentials, action: str) -> dict[str, str]:
        frozen = creds.get_frozen_credentials()
        headers = {
            "Content-Type": "application/x-amz-json-1.0",
            "X-Amz-Target": f"AmazonSQS.{action}",
            "x-amzn-query-mode": "true",
        }
        theirs = AWSRequest(method="POST", url=url, data=body, headers=headers)
        SigV4Auth(frozen, "sqs", "eu-west-1").add_auth(theirs)
        ours = signer.headers(f"AmazonSQS.{action}", body, frozen)
        expected = {k.lower(): v for k, v in theirs.headers.items()}
        assert ours == expected
        derived.append(signer._key_for)
        return ours

    first = Credentials("AKIDEXAMPLE", "secret", "session-token")
    signed = check(first, "ReceiveMessage")
    assert signed["authorization"].startswith(
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260504/eu-west-1/sqs/aws4_request, "
        "SignedHeaders=content-type;host;x-amz-date;x-amz-security-token;x-amz-target;"
        "x-amzn-query-mode, Signature="
    )
    now[0] += dt.timedelta(hours=20, seconds=7)  # the same day: the cached key
    check(first, "DeleteMessageBatch")
    assert derived[-1] == derived[-2] == ("20260504", "secret")
    now[0] += dt.timedelta(hours=1)  # past midnight: a new day, a new key
    signed = check(first, "ReceiveMessage")
    assert derived[-1] == ("20260505", "secret")
    assert "/20260505/eu-west-1/sqs/aws4_request" in signed["authorization"]
    # Refreshed credentials mid-day: a new key at once, and no token header without a token.
    refreshed = Credentials("AKIDOTHER", "other-secret")
    signed = check(refreshed, "ReceiveMessage")
    assert derived[-1] == ("20260505", "other-secret")
    assert "x-amz-security-token" not in signed
    check(first, "SendMessageBatch")  # and back: the key follows the credentials signing
    assert derived[-1] == ("20260505", "secret")


async def test_a_reply_slower_than_the_read_timeout_raises_botocores_timeout(
    aws: AwsEndpoint,
) -> None:
    from botocore.exceptions import ReadTimeoutError

    calls: list[float] = []
    release = asyncio.Event()

    async def handler(request: web.Request) -> web.Response:
        calls.append(asyncio.get_running_loop().time())
        await release.wait()  # never answers in time
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    endpoint = f"http://127.0.0.1:{port}"
    try:
        async with async_clients(aws.region, endpoint, read_timeout=0.5, transport="lean") as c:
            assert isinstance(c.sqs, LeanSQS)
            c.sqs._attempts = 2
            with pytest.raises(ReadTimeoutError):
                await c.sqs.receive_message(QueueUrl=f"{endpoint}/1/q", WaitTimeSeconds=0)
            assert len(calls) == 2, "a timed-out call is retried like any transient failure"
    finally:
        release.set()
        await runner.cleanup()


# -- the HTTP client under the lean transport (`aws.lean_http`), against a scripted server


class _Scripted:
    """A loopback HTTP server answering each request with the next scripted reply (raw
    bytes, or None: never answer); records each connection and the requests on it."""

    def __init__(self, replies: list[bytes | None]) -> None:
        self.replies = replies
        self.connections = 0
        self.requests: list[tuple[int, bytes, bytes]] = []  # (connection, head, body)
        self.close_after: set[int] = set()  # request numbers after which the server hangs up
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length)
                self.requests.append((number, head, body))
                reply = self.replies.pop(0)
                if reply is None:
                    await asyncio.Event().wait()
                    return
                writer.write(reply)
                await writer.drain()
                if len(self.requests) in self.close_after:
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *_: object) -> None:
        assert self.server is not None
        self.server.close()


def _json_reply(body: bytes, extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.0\r\n"
        b"x-amzn-RequestId: r-1\r\n" + extra + b"Content-Length: %d\r\n\r\n" % len(body) + body
    )


def _pool(url: str, limit: int = 4, connect_timeout: float = 5) -> Any:
    from snsq2nats.aws.lean_http import HttpPool

    return HttpPool(
        url, limit=limit, connect_timeout=connect_timeout, read_timeout=5, user_agent="test"
    )


async def test_requests_share_a_kept_alive_connection() -> None:
    server = _Scripted([_json_reply(b'{"n":1}'), _json_reply(b'{"n":2}')])
    async with server as url:
        pool = _pool(url)
        try:
            first = await pool.post({"x-amz-target": "AmazonSQS.ReceiveMessage"}, b'{"a":1}')
            second = await pool.post({"x-amz-target": "AmazonSQS.ReceiveMessage"}, b"{}")
        finally:
            await pool.close()
    assert first == (
        200,
        {
            "content-type": "application/x-amz-json-1.0",
            "x-amzn-requestid": "r-1",
            "content-length": "7",
        },
        b'{"n":1}',
    )
    assert second[2] == b'{"n":2}'
    assert server.connections == 1
    (_, head, body), _ = server.requests
    port = url.rsplit(":", 1)[1]
    assert head.startswith(f"POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n".encode())
    assert b"\r\nx-amz-target: AmazonSQS.ReceiveMessage\r\n" in head
    assert body == b'{"a":1}'


async def test_chunked_interim_and_close_delimited_replies_are_read_whole() -> None:
    chunked = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'4\r\n{"Me\r\n11;ext=1\r\nssages":[],"x":1}\r\n0\r\nTrailer: t\r\n\r\n'
    )
    to_close = b'HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{"y":2}'
    server = _Scripted([chunked, to_close, _json_reply(b"{}")])
    server.close_after = {2}
    async with server as url:
        pool = _pool(url)
        try:
            status, _, body = await pool.post({}, b"{}")
            assert (status, body) == (200, b'{"Messages":[],"x":1}')
            status, headers, body = await pool.post({}, b"{}")
            assert (status, body) == (200, b'{"y":2}')
            assert headers["connection"] == "close"
            await pool.post({}, b"{}")
        finally:
            await pool.close()
    # The first two shared a connection; the one after the close needed a new one.
    assert [c for c, _, _ in server.requests] == [1, 1, 2]


async def test_a_connection_the_server_dropped_is_replaced_and_the_call_answers(
    aws: AwsEndpoint,
) -> None:
    """A kept-alive connection closed by the endpoint between calls costs no failed call."""
    reply = _json_reply(b'{"Attributes":{"QueueArn":"arn:aws:sqs:us-east-1:1:q"}}')
    server = _Scripted([reply, reply])
    server.close_after = {1}
    async with server as url, async_clients(aws.region, url, transport="lean") as clients:
        sqs = clients.sqs
        assert isinstance(sqs, LeanSQS)
        for _ in range(2):
            answer = await sqs.get_queue_attributes(QueueUrl=f"{url}/1/q")
            assert answer["Attributes"]["QueueArn"].endswith(":q")
        while server.connections < 2:  # the server saw the second call on a new connection
            await asyncio.sleep(0.01)
    assert [c for c, _, _ in server.requests] == [1, 2]


async def test_a_cancelled_request_frees_its_connection_slot() -> None:
    """A poll cut by a stop is cancelled mid-request: its connection is closed (its reply
    would come to nobody) and the pool's only slot is free for the next request."""
    from snsq2nats.aws.lean_http import ConnectTimeout

    server = _Scripted([None, _json_reply(b'{"ok":true}')])
    async with server as url:
        pool = _pool(url, limit=1, connect_timeout=0.2)
        try:
            hanging = asyncio.create_task(pool.post({}, b"{}"))
            while not server.requests:
                await asyncio.sleep(0.01)
            with pytest.raises(ConnectTimeout):  # the only slot is taken
                await pool.post({}, b"{}")
            hanging.cancel()
            with pytest.raises(asyncio.CancelledError):
                await hanging
            assert (await pool.post({}, b"{}"))[2] == b'{"ok":true}'
        finally:
            await pool.close()
    assert [c for c, _, _ in server.requests] == [1, 2]
