"""SigV4 verification: requests signed by botocore's own signers pass, tampered ones fail with
AWS's error codes, and no error ever carries the secret.

The signers are the real ones (`SigV4Auth`, `SigV4QueryAuth`, a boto3 client): the verifier
must rebuild byte for byte what the SDKs sign, so it is checked against them rather than
against vectors of its own making.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
from aiohttp import web
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from snsq2nats.errors import GatewayAuthError
from snsq2nats.gateway.principal import Authenticator
from snsq2nats.gateway.sigv4 import (
    SigV4Authenticator,
    SigV4Principal,
    canonical_query,
    canonical_uri,
    credential_service,
)

ACCESS_KEY = "AKSNSQ2NATSTEST00001"
SECRET = "s3cr3t-" + secrets.token_urlsafe(24)
OTHER_SECRET = "other-" + secrets.token_urlsafe(24)


@dataclass(frozen=True)
class Key:
    identity: str
    secret: str


KEYS = {ACCESS_KEY: Key("sqs_orders-producer", SECRET)}


def verifier(shift: timedelta = timedelta(0)) -> SigV4Authenticator:
    return SigV4Authenticator(KEYS, now=lambda: datetime.now(UTC) + shift)


def signed(
    *,
    method: str = "POST",
    url: str = "http://127.0.0.1:9324/",
    data: bytes | str | dict[str, str] = b"Action=ListQueues&Version=2012-11-05",
    headers: dict[str, str] | None = None,
    service: str = "sqs",
    secret: str = SECRET,
    access_key: str = ACCESS_KEY,
    presign: bool = False,
    expires: int = 300,
) -> AWSRequest:
    """A request signed by botocore exactly as an SDK call would be."""
    sent = {"Content-Type": "application/x-www-form-urlencoded"} if data else {}
    request = AWSRequest(method=method, url=url, data=data, headers={**sent, **(headers or {})})
    credentials = Credentials(access_key, secret)
    if presign:
        SigV4QueryAuth(credentials, service, "eu-west-1", expires=expires).add_auth(request)
    else:
        SigV4Auth(credentials, service, "eu-west-1").add_auth(request)
    return request


def check(
    request: AWSRequest,
    auth: SigV4Authenticator | None = None,
    *,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> SigV4Principal:
    """Verify `request` as the server would receive it (Host from the URL, raw path/query)."""
    prepared = request.prepare()
    parts = urlsplit(prepared.url)
    sent = {"Host": parts.netloc, **dict(prepared.headers), **(headers or {})}
    payload = prepared.body or b""
    if isinstance(payload, str):
        payload = payload.encode()
    return (auth or verifier()).authenticate(
        prepared.method, parts.path, parts.query, sent, payload if body is None else body
    )


def refused(call: Callable[[], Any]) -> GatewayAuthError:
    with pytest.raises(GatewayAuthError) as caught:
        call()
    error = caught.value
    assert error.status == 403
    for text in (str(error), error.message, error.one_line()):
        assert SECRET not in text and OTHER_SECRET not in text
    return error


# -- signed by botocore's signers ----------------------------------------------------------------


def test_header_signed_request_passes_and_names_the_scope() -> None:
    principal = check(signed())
    assert principal == SigV4Principal(
        access_key_id=ACCESS_KEY,
        identity="sqs_orders-producer",
        region="eu-west-1",
        service="sqs",
    )
    auth: Authenticator = verifier()  # the server's seam
    assert auth.authenticate is not None


def test_scope_service_routes_sns_too() -> None:
    request = signed(data=b"Action=ListTopics&Version=2010-03-31", service="sns")
    assert check(request).service == "sns"
    prepared = request.prepare()
    assert credential_service("", dict(prepared.headers)) == "sns"
    assert credential_service("", {}) is None


def test_presigned_query_passes() -> None:
    request = signed(
        method="GET",
        url="http://127.0.0.1:9324/000000000000/orders?Action=ReceiveMessage&Version=2012-11-05"
        "&MessageAttributeName.1=All",
        data=b"",
        presign=True,
    )
    query = urlsplit(request.prepare().url).query
    assert "X-Amz-Signature=" in query
    assert credential_service(query, {}) == "sqs"
    assert check(request).identity == "sqs_orders-producer"


def test_presigned_moves_a_form_body_into_the_query_and_still_verifies() -> None:
    request = signed(
        data={"Action": "SendMessage", "MessageBody": "héllo w/rld ~*+", "Version": "2012-11-05"},
        presign=True,
    )
    assert check(request).service == "sqs"


def test_canonical_path_is_normalised_and_encoded_twice() -> None:
    # SQS signs paths the way every non-S3 service does: the encoded path encoded again.
    url = "http://127.0.0.1:9324/000000000000/a%20queue/./x//y/../z:1"
    assert check(signed(url=url)).identity == "sqs_orders-producer"
    assert canonical_uri("/a%20b/./c//d/../e/") == "/a%2520b/c/e/"
    assert canonical_uri("") == "/"
    assert canonical_query([("b", "x y"), ("a", "~*/"), ("a", "1")]) == "a=1&a=~%2A%2F&b=x%20y"


def test_header_values_are_trimmed_and_spaces_collapsed() -> None:
    request = signed(headers={"X-Amz-Meta-Note": "  two   words  "})
    # A proxy or the HTTP parser may strip the outer spaces; SigV4 ignores them either way.
    assert check(request, headers={"X-Amz-Meta-Note": "two words"}).service == "sqs"


def test_a_repeated_header_is_signed_as_its_values_joined_by_commas() -> None:
    from multidict import CIMultiDict

    request = signed(headers={"X-Amz-Meta-Tag": "red,blue"})
    prepared = request.prepare()
    sent: CIMultiDict[str] = CIMultiDict(Host=urlsplit(prepared.url).netloc)
    for name, value in prepared.headers.items():
        if name.lower() != "x-amz-meta-tag":
            sent.add(name, value)
    sent.add("X-Amz-Meta-Tag", " red ")  # the same header twice, as an HTTP server keeps it
    sent.add("x-amz-meta-tag", "blue")
    body = prepared.body if isinstance(prepared.body, bytes) else prepared.body.encode()
    assert verifier().authenticate("POST", "/", "", sent, body).service == "sqs"


def test_unsigned_payload_is_taken_as_declared() -> None:
    request = signed(headers={"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"})
    assert check(request).service == "sqs"
    # The client chose not to sign the body: another body still verifies (TLS protects it).
    assert check(request, body=b"Action=PurgeQueue").service == "sqs"


def test_a_declared_payload_hash_must_be_the_bodys() -> None:
    import hashlib

    body = b"Action=ListQueues&Version=2012-11-05"
    request = signed(data=body, headers={"X-Amz-Content-SHA256": hashlib.sha256(body).hexdigest()})
    assert check(request).service == "sqs"
    error = refused(lambda: check(request, body=b"Action=PurgeQueue&Version=2012-11-05"))
    assert error.code == "SignatureDoesNotMatch"


# -- tampered requests fail with AWS's codes -----------------------------------------------------


def test_tampered_body_fails() -> None:
    request = signed()
    error = refused(lambda: check(request, body=b"Action=PurgeQueue&Version=2012-11-05"))
    assert error.code == "SignatureDoesNotMatch"
    assert "does not match the signature you provided" in error.message


def test_tampered_signed_header_fails() -> None:
    request = signed(headers={"X-Amz-Target": "AmazonSQS.ListQueues"})
    assert check(request).service == "sqs"
    error = refused(lambda: check(request, headers={"X-Amz-Target": "AmazonSQS.PurgeQueue"}))
    assert error.code == "SignatureDoesNotMatch"


def test_tampered_date_fails() -> None:
    request = signed()
    moved = (datetime.now(UTC) - timedelta(minutes=1)).strftime("%Y%m%dT%H%M%SZ")
    error = refused(lambda: check(request, headers={"X-Amz-Date": moved}))
    assert error.code == "SignatureDoesNotMatch"


def test_tampered_query_fails() -> None:
    request = signed(
        method="GET",
        url="http://127.0.0.1:9324/?Action=ListQueues&QueueNamePrefix=orders",
        data=b"",
        presign=True,
    )
    prepared = request.prepare()
    parts = urlsplit(prepared.url)
    query = parts.query.replace("QueueNamePrefix=orders", "QueueNamePrefix=payments")
    error = refused(
        lambda: verifier().authenticate("GET", parts.path, query, {"Host": parts.netloc}, b"")
    )
    assert error.code == "SignatureDoesNotMatch"


def test_wrong_secret_fails_and_unknown_key_is_named_invalid() -> None:
    error = refused(lambda: check(signed(secret=OTHER_SECRET)))
    assert error.code == "SignatureDoesNotMatch"
    error = refused(lambda: check(signed(access_key="AKUNKNOWN00000000000")))
    assert error.code == "InvalidClientTokenId"
    assert "security token included in the request is invalid" in error.message


def test_skew_beyond_fifteen_minutes_is_expired_both_ways() -> None:
    request = signed()
    assert check(request, verifier(timedelta(minutes=14))).service == "sqs"
    late = refused(lambda: check(request, verifier(timedelta(minutes=16))))
    assert late.code == "RequestExpired"
    assert late.message.startswith("Signature expired:")
    early = refused(lambda: check(request, verifier(-timedelta(minutes=16))))
    assert early.code == "RequestExpired"
    assert "not yet current" in early.message


def test_presigned_url_expires() -> None:
    request = signed(
        method="GET",
        url="http://127.0.0.1:9324/?Action=ListQueues",
        data=b"",
        presign=True,
        expires=60,
    )
    assert check(request, verifier(timedelta(seconds=30))).service == "sqs"
    error = refused(lambda: check(request, verifier(timedelta(seconds=90))))
    assert error.code == "RequestExpired"


def test_missing_and_incomplete_signatures() -> None:
    auth = verifier()
    error = refused(lambda: auth.authenticate("POST", "/", "", {"Host": "h"}, b""))
    assert error.code == "MissingAuthenticationToken"
    now = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    incomplete = {
        "Authorization": f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/{now[:8]}/eu-west-1/sqs/"
        "aws4_request, SignedHeaders=host;x-amz-date",
        "X-Amz-Date": now,
        "Host": "h",
    }
    error = refused(lambda: auth.authenticate("POST", "/", "", incomplete, b""))
    assert error.code == "IncompleteSignature"
    assert "'Signature'" in error.message
    short_scope = dict(incomplete)
    short_scope["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/{now[:8]}/sqs, "
        "SignedHeaders=host;x-amz-date, Signature=00"
    )
    assert refused(lambda: auth.authenticate("POST", "/", "", short_scope, b"")).code == (
        "IncompleteSignature"
    )
    undated = {k: v for k, v in incomplete.items() if k != "X-Amz-Date"}
    undated["Authorization"] += ", Signature=00"
    error = refused(lambda: auth.authenticate("POST", "/", "", undated, b""))
    assert error.code == "IncompleteSignature"
    assert "X-Amz-Date" in error.message
    sigv2 = {"Authorization": f"AWS {ACCESS_KEY}:c2lnbmF0dXJl", "Host": "h"}
    assert refused(lambda: auth.authenticate("GET", "/", "", sigv2, b"")).code == (
        "IncompleteSignature"
    )


# -- a boto3 client against a tiny server that runs the verifier ---------------------------------


@dataclass
class TinyServer:
    url: str
    seen: list[SigV4Principal]


def _sqs_error(error: GatewayAuthError) -> web.Response:
    return web.Response(
        status=error.status,
        body=json.dumps({"__type": error.code, "message": error.message}).encode(),
        headers={
            "Content-Type": "application/x-amz-json-1.0",
            "x-amzn-query-error": f"{error.code};Sender",
        },
    )


def _sns_error(error: GatewayAuthError) -> web.Response:
    from xml.sax.saxutils import escape

    body = (
        "<ErrorResponse><Error><Type>Sender</Type>"
        f"<Code>{escape(error.code)}</Code><Message>{escape(error.message)}</Message>"
        "</Error><RequestId>r-1</RequestId></ErrorResponse>"
    )
    return web.Response(status=error.status, body=body.encode(), content_type="text/xml")


@pytest.fixture
async def tiny_server() -> AsyncIterator[TinyServer]:
    """Answers ListQueues (SQS JSON) and ListTopics (SNS Query) after verifying SigV4, with the
    principal's identity in the answer so the test sees who the verifier found."""
    auth = verifier()
    seen: list[SigV4Principal] = []

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        service = credential_service(request.rel_url.raw_query_string, request.headers)
        try:
            principal = auth.authenticate(
                request.method,
                request.raw_path,
                request.rel_url.raw_query_string,
                request.headers,
                body,
            )
        except GatewayAuthError as error:
            return _sns_error(error) if service == "sns" else _sqs_error(error)
        seen.append(principal)
        if principal.service == "sns":
            xml = (
                '<ListTopicsResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/">'
                "<ListTopicsResult><Topics><member><TopicArn>arn:aws:sns:eu-west-1:"
                f"000000000000:{principal.identity}</TopicArn></member></Topics>"
                "</ListTopicsResult><ResponseMetadata><RequestId>r-1</RequestId>"
                "</ResponseMetadata></ListTopicsResponse>"
            )
            return web.Response(body=xml.encode(), content_type="text/xml")
        answer = {"QueueUrls": [f"{request.scheme}://{request.host}/0/{principal.identity}"]}
        return web.Response(
            body=json.dumps(answer).encode(),
            headers={"Content-Type": "application/x-amz-json-1.0"},
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield TinyServer(f"http://127.0.0.1:{port}", seen)
    finally:
        await runner.cleanup()


def _client(server: TinyServer, service: str, key: str = ACCESS_KEY, secret: str = SECRET) -> Any:
    return boto3.client(
        service,  # type: ignore[call-overload]
        endpoint_url=server.url,
        region_name="eu-west-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1}),
    )


async def test_boto3_clients_pass_the_verifier(tiny_server: TinyServer) -> None:
    sqs = _client(tiny_server, "sqs")
    urls = (await asyncio.to_thread(sqs.list_queues))["QueueUrls"]
    assert urls[0].endswith("/0/sqs_orders-producer")
    sns = _client(tiny_server, "sns")
    topics = (await asyncio.to_thread(sns.list_topics))["Topics"]
    assert topics[0]["TopicArn"].endswith(":sqs_orders-producer")
    assert [p.service for p in tiny_server.seen] == ["sqs", "sns"]


async def test_boto3_sees_aws_codes_for_bad_keys(tiny_server: TinyServer) -> None:
    wrong = _client(tiny_server, "sqs", secret=OTHER_SECRET)
    with pytest.raises(ClientError) as caught:
        await asyncio.to_thread(wrong.list_queues)
    assert caught.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    unknown = _client(tiny_server, "sns", key="AKUNKNOWN00000000000")
    with pytest.raises(ClientError) as caught:
        await asyncio.to_thread(unknown.list_topics)
    assert caught.value.response["Error"]["Code"] == "InvalidClientTokenId"
    assert SECRET not in str(caught.value) and OTHER_SECRET not in str(caught.value)
    assert tiny_server.seen == []


async def test_a_presigned_url_fetched_over_http(tiny_server: TinyServer) -> None:
    request = signed(
        method="GET",
        url=f"{tiny_server.url}/000000000000/orders?Action=ListQueues&Version=2012-11-05",
        data=b"",
        presign=True,
    )
    url = request.prepare().url

    def fetch(target: str) -> int:
        try:
            with urllib.request.urlopen(target, timeout=30) as answer:
                return int(answer.status)
        except urllib.error.HTTPError as error:
            return int(error.code)

    assert await asyncio.to_thread(fetch, url) == 200
    forged = url.replace("Action=ListQueues", "Action=PurgeQueue")
    assert await asyncio.to_thread(fetch, forged) == 403
    assert len(tiny_server.seen) == 1
