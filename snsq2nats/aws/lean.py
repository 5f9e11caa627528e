"""The lean SQS transport: the bridge's hot SQS calls without botocore's per-request model work.

Profiling the bridge showed most of its CPU per AWS call in botocore's model-driven request
serialisation, response parsing and event hooks, not in signing or on the wire. SQS speaks a
JSON protocol (`X-Amz-Target: AmazonSQS.<Action>`, the shape of the request is the parameters
as given), so the calls the bridge makes per message and per idle poll go out here as one JSON
body over a pool of kept-alive connections (`aws.lean_http`), signed with botocore's SigV4
(`aws.sigv4`: byte for byte botocore's signature, with what does not change between requests
worked out once) with the credentials of botocore's chain (refreshed as botocore refreshes
them), and their replies are read with orjson. Everything botocore decides that matters to a
caller is kept:

- the endpoint and region are the botocore client's own (its resolution, `--endpoint-url`,
  `AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_SQS`, profiles);
- an error is the exception class botocore raises for it (`client.exceptions.from_code`), with
  the same `response["Error"]` (the query-compatible `Code`, `QueryErrorCode`, `Type`), so
  `aws.errors` classifies it the same;
- retries: up to the client's attempts, botocore's exponential backoff with jitter (throttling
  at full scale, other transient failures at botocore's smaller scale, `x-amz-retry-after`
  honoured), and adaptive rate limiting built from botocore's own parts (a CUBIC rate
  calculator and a token bucket that switches on at the first throttle);
- timeouts: botocore's connect and read timeouts, a failure to connect or read raised as the
  botocore exception for it after the retries.

Only the hot calls are here (`LEAN_CALLS`); every other attribute is the botocore client's, so
the wrapper stands wherever the bridge holds an aiobotocore SQS client.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson

from snsq2nats.aws.errors import THROTTLE_CODES
from snsq2nats.aws.lean_http import ConnectTimeout, HttpPool, ReadTimeout, TransportError
from snsq2nats.aws.sigv4 import JsonRequestSigner

if TYPE_CHECKING:
    from aiobotocore.credentials import AioCredentials
    from types_aiobotocore_sqs import SQSClient

log = logging.getLogger(__name__)

# The calls the bridge makes per message or per idle poll; everything else stays on botocore.
LEAN_CALLS = frozenset(
    {
        "receive_message",
        "delete_message_batch",
        "send_message_batch",
        "change_message_visibility",
        "change_message_visibility_batch",
        "get_queue_attributes",
    }
)

# botocore's standard retry mode: what is worth another attempt besides throttling.
_TRANSIENT_CODES = frozenset(
    {"RequestTimeout", "RequestTimeoutException", "PriorRequestNotComplete"}
)
_TRANSIENT_STATUS = frozenset({500, 502, 503, 504})
# botocore's throttle codes on top of the ones `aws.errors` names (they overlap mostly).
_THROTTLE_CODES = THROTTLE_CODES | {
    "BandwidthLimitExceeded",
    "LimitExceededException",
    "ProvisionedThroughputExceededException",
    "EC2ThrottledException",
    "TransactionInProgressException",
}
_MAX_BACKOFF = 20.0
_THROTTLE_SCALE = 1.0
_TRANSIENT_SCALE = 0.05
_RETRY_AFTER_MAX_ADDITIONAL = 5.0


class _Adaptive:
    """botocore's adaptive mode on the loop: off until the first throttle, then every request
    waits for a token of a bucket whose rate a CUBIC calculator lowers on each throttle and
    raises again on success."""

    _MAX_RATE_ADJUST_SCALE = 2.0

    def __init__(self) -> None:
        from aiobotocore.retries.bucket import AsyncTokenBucket
        from botocore.retries.adaptive import RateClocker
        from botocore.retries.bucket import Clock
        from botocore.retries.throttling import CubicCalculator

        self._clock = Clock()
        self._cubic = CubicCalculator(starting_max_rate=0, start_time=self._clock.current_time())
        self._bucket = AsyncTokenBucket(max_rate=1, clock=self._clock)
        self._rate = RateClocker(self._clock)
        self.enabled = False

    async def before_send(self) -> None:
        if self.enabled:
            await self._bucket.acquire()

    async def after_response(self, throttled: bool) -> None:
        measured = self._rate.record()
        now = self._clock.current_time()
        if not throttled:
            new_rate = self._cubic.success_received(now)
        else:
            rate = min(measured, self._bucket.max_rate) if self.enabled else measured
            new_rate = self._cubic.error_received(rate, now)
            self.enabled = True
        if self.enabled:
            await self._bucket.set_max_rate(min(new_rate, self._MAX_RATE_ADJUST_SCALE * measured))


def _b64(value: Any) -> str:
    raw = value.encode() if isinstance(value, str) else bytes(value)
    return base64.b64encode(raw).decode("ascii")


def _encode_attributes(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """Binary attribute values are base64 in the JSON protocol (botocore encodes them too)."""
    encoded = {}
    for name, value in attributes.items():
        if "BinaryValue" in value or "BinaryListValues" in value:
            value = dict(value)
            if "BinaryValue" in value:
                value["BinaryValue"] = _b64(value["BinaryValue"])
            if "BinaryListValues" in value:
                value["BinaryListValues"] = [_b64(v) for v in value["BinaryListValues"]]
        encoded[name] = value
    return encoded


def _encode_entries(entries: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    out: list[Mapping[str, Any]] = []
    for entry in entries:
        if entry.get("MessageAttributes") or entry.get("MessageSystemAttributes"):
            entry = dict(entry)
            for key in ("MessageAttributes", "MessageSystemAttributes"):
                if entry.get(key):
                    entry[key] = _encode_attributes(entry[key])
        out.append(entry)
    return out


def _decode_messages(messages: list[dict[str, Any]]) -> None:
    """Binary attribute values back to bytes, as botocore's parser hands them over."""
    for message in messages:
        for value in (message.get("MessageAttributes") or {}).values():
            if "BinaryValue" in value:
                value["BinaryValue"] = base64.b64decode(value["BinaryValue"])
            if "BinaryListValues" in value:
                value["BinaryListValues"] = [base64.b64decode(v) for v in value["BinaryListValues"]]


class LeanSQS:
    """An aiobotocore SQS client whose hot calls (`LEAN_CALLS`) take the lean transport.

    Made by `open_lean_sqs` and closed by `close`; every other attribute (`meta`,
    `exceptions`, the other calls) is the wrapped client's.
    """

    def __init__(
        self,
        client: SQSClient,
        credentials: AioCredentials | None,
        *,
        connections: int,
        connect_timeout: float,
        read_timeout: float,
        max_attempts: int,
    ) -> None:
        self._client = client
        self._credentials = credentials
        self._url = client.meta.endpoint_url
        self._region = client.meta.region_name
        self._attempts = max_attempts
        self._adaptive = _Adaptive()
        self._signer = JsonRequestSigner(self._url, self._region, "sqs")
        import botocore

        # One pool of kept-alive connections: a long poll holds one for its wait, as with
        # botocore (`aws.lean_http`: the request as bytes, the reply read whole).
        self._http = HttpPool(
            self._url,
            limit=connections,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            user_agent=f"snsq2nats-lean botocore/{botocore.__version__}",
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    @property
    def botocore_client(self) -> SQSClient:
        return self._client

    async def close(self) -> None:
        await self._http.close()

    # -- the hot calls, named and shaped as botocore's

    async def receive_message(self, **params: Any) -> dict[str, Any]:
        reply = await self._call("ReceiveMessage", params)
        messages = reply.get("Messages")
        if messages:
            _decode_messages(messages)
        return reply

    async def delete_message_batch(self, **params: Any) -> dict[str, Any]:
        return await self._call("DeleteMessageBatch", params)

    async def send_message_batch(self, **params: Any) -> dict[str, Any]:
        if "Entries" in params:
            params = {**params, "Entries": _encode_entries(params["Entries"])}
        return await self._call("SendMessageBatch", params)

    async def change_message_visibility(self, **params: Any) -> dict[str, Any]:
        return await self._call("ChangeMessageVisibility", params)

    async def change_message_visibility_batch(self, **params: Any) -> dict[str, Any]:
        return await self._call("ChangeMessageVisibilityBatch", params)

    async def get_queue_attributes(self, **params: Any) -> dict[str, Any]:
        return await self._call("GetQueueAttributes", params)

    # -- one call: sign, send, retry, parse

    async def _headers(self, action: str, body: bytes) -> dict[str, str]:
        from botocore.exceptions import NoCredentialsError

        if self._credentials is None:
            raise NoCredentialsError()
        # Refreshes the chain's temporary credentials when they near expiry, as botocore does.
        frozen = await self._credentials.get_frozen_credentials()
        return self._signer.headers(f"AmazonSQS.{action}", body, frozen)

    async def _call(self, action: str, params: Mapping[str, Any]) -> dict[str, Any]:
        body = orjson.dumps(params)
        attempt = 0
        while True:
            await self._adaptive.before_send()
            headers = await self._headers(action, body)
            try:
                status, reply_headers, raw = await self._http.post(headers, body)
            except TransportError as exc:
                await self._adaptive.after_response(throttled=False)
                attempt += 1
                if attempt >= self._attempts:
                    raise self._transport_error(exc) from exc
                await asyncio.sleep(
                    random.random() * min(_TRANSIENT_SCALE * 2 ** (attempt - 1), _MAX_BACKOFF)
                )
                continue
            if status < 300:
                await self._adaptive.after_response(throttled=False)
                parsed: dict[str, Any] = orjson.loads(raw) if raw else {}
                parsed["ResponseMetadata"] = self._metadata(status, reply_headers, attempt)
                return parsed
            error = self._error(status, raw, reply_headers, attempt)
            code = error["Error"].get("Code", "")
            throttled = code in _THROTTLE_CODES
            await self._adaptive.after_response(throttled=throttled)
            retryable = throttled or code in _TRANSIENT_CODES or status in _TRANSIENT_STATUS
            attempt += 1
            if not retryable or attempt >= self._attempts:
                error["ResponseMetadata"]["RetryAttempts"] = attempt - 1
                kind = error["Error"].get("QueryErrorCode") or code
                error_class: Any = self._client.exceptions.from_code(kind)
                raise error_class(error, action)
            scale = _THROTTLE_SCALE if throttled else _TRANSIENT_SCALE
            delay = random.random() * min(scale * 2 ** (attempt - 1), _MAX_BACKOFF)
            retry_after = reply_headers.get("x-amz-retry-after")
            if retry_after is not None:
                try:
                    wanted = int(retry_after) / 1000.0
                except ValueError:
                    wanted = -1
                if wanted >= 0:
                    delay = max(delay, min(wanted, _RETRY_AFTER_MAX_ADDITIONAL + delay))
            await asyncio.sleep(delay)

    @staticmethod
    def _metadata(status: int, headers: Mapping[str, str], attempt: int) -> dict[str, Any]:
        lowered = {k.lower(): v for k, v in headers.items()}
        metadata: dict[str, Any] = {
            "HTTPStatusCode": status,
            "HTTPHeaders": lowered,
            "RetryAttempts": attempt,
        }
        if "x-amzn-requestid" in lowered:
            metadata["RequestId"] = lowered["x-amzn-requestid"]
        return metadata

    def _error(
        self, status: int, raw: bytes, headers: Mapping[str, str], attempt: int
    ) -> dict[str, Any]:
        """The error as botocore's JSON parser reads it, query-compatible code included."""
        try:
            body = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            body = {"message": raw.decode("utf-8", "replace")}
        if not isinstance(body, dict):
            body = {}
        error: dict[str, Any] = {"Message": body.get("message", body.get("Message", ""))}
        code = body.get("__type") or str(status)
        if ":" in code:
            code = code.split(":", 1)[0]
        if "#" in code:
            code = code.rsplit("#", 1)[1]
        query_error = headers.get("x-amzn-query-error")
        if query_error:
            parts = query_error.split(";")
            if len(parts) == 2 and parts[0]:
                error["QueryErrorCode"] = code
                error["Type"] = parts[1]
                code = parts[0]
        error["Code"] = code
        return {"Error": error, "ResponseMetadata": self._metadata(status, headers, attempt)}

    def _transport_error(self, exc: BaseException) -> Exception:
        """What botocore raises when the endpoint cannot be reached or does not answer."""
        from botocore.exceptions import (
            ConnectTimeoutError,
            EndpointConnectionError,
            ReadTimeoutError,
        )

        if isinstance(exc, ConnectTimeout):
            return ConnectTimeoutError(endpoint_url=self._url, error=exc)
        if isinstance(exc, ReadTimeout):
            return ReadTimeoutError(endpoint_url=self._url, error=exc)
        return EndpointConnectionError(endpoint_url=self._url, error=exc)
