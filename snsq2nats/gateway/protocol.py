"""The SQS wire shapes: which action a request names and how an answer or an error looks.

Errors follow what the SDKs parse (AWS's recorded answers): the JSON protocol's `__type` names
the error shape the SDK raises (`QueueDoesNotExist`), and the header `x-amzn-query-error:
CODE;Sender` carries the Query-era code the SDKs report as the error code
(`AWS.SimpleQueueService.NonExistentQueue`). The Query protocol puts both in `ErrorResponse`.
"""

from __future__ import annotations

import json
from typing import Any

from snsq2nats.errors import GatewayError

JSON_CONTENT_TYPE = "application/x-amz-json-1.0"
TARGET_PREFIX = "AmazonSQS."
SQS_TYPE_PREFIX = "com.amazonaws.sqs#"
CORAL_TYPE_PREFIX = "com.amazon.coral.service#"

# Query-era code → the JSON protocol's error shape, where they differ (the SDKs' error classes).
_SHAPES = {
    "AWS.SimpleQueueService.NonExistentQueue": "QueueDoesNotExist",
    "InvalidParameterValue": "InvalidParameterValueException",
    "MissingParameter": "MissingRequiredParameterException",
    "AWS.SimpleQueueService.UnsupportedOperation": "UnsupportedOperation",
    "AWS.SimpleQueueService.BatchEntryIdsNotDistinct": "BatchEntryIdsNotDistinct",
    "AWS.SimpleQueueService.TooManyEntriesInBatchRequest": "TooManyEntriesInBatchRequest",
    "AWS.SimpleQueueService.EmptyBatchRequest": "EmptyBatchRequest",
    "AWS.SimpleQueueService.InvalidBatchEntryId": "InvalidBatchEntryId",
    "AWS.SimpleQueueService.BatchRequestTooLong": "BatchRequestTooLong",
    "AWS.SimpleQueueService.PurgeQueueInProgress": "PurgeQueueInProgress",
    "AWS.SimpleQueueService.MessageNotInflight": "MessageNotInflight",
}
# Errors of the service framework rather than of SQS: no Query-era code, a coral shape.
_CORAL = {
    "InvalidAction": "UnknownOperationException",
    "SerializationException": "SerializationException",
    "InternalFailure": "InternalFailure",
    "ServiceUnavailable": "ServiceUnavailable",
    "MissingAuthenticationToken": "MissingAuthenticationTokenException",
    "IncompleteSignature": "IncompleteSignatureException",
    "InvalidClientTokenId": "InvalidClientTokenId",
    "SignatureDoesNotMatch": "SignatureDoesNotMatch",
    "RequestExpired": "RequestExpired",
    "AccessDenied": "AccessDeniedException",
}


def error_shape(code: str) -> str:
    if code in _CORAL:
        return CORAL_TYPE_PREFIX + _CORAL[code]
    return SQS_TYPE_PREFIX + _SHAPES.get(code, code.rsplit(".", 1)[-1])


def json_error(error: GatewayError) -> tuple[bytes, dict[str, str]]:
    """The body and headers of a JSON protocol error."""
    body = json.dumps({"__type": error_shape(error.code), "message": error.message}).encode()
    fault = "Sender" if error.sender else "Receiver"
    return body, {"x-amzn-query-error": f"{error.code};{fault}"}


def json_params(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        params = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise GatewayError(
            "SerializationException", "The request body is not valid JSON."
        ) from None
    if not isinstance(params, dict):
        raise GatewayError("SerializationException", "The request body must be a JSON object.")
    return params


def json_body(result: dict[str, Any]) -> bytes:
    return json.dumps(result, separators=(",", ":")).encode()


CONTROL_PLANE = frozenset(
    {
        "AddPermission",
        "CancelMessageMoveTask",
        "CreateQueue",
        "DeleteQueue",
        "ListDeadLetterSourceQueues",
        "ListMessageMoveTasks",
        "ListQueueTags",
        "RemovePermission",
        "SetQueueAttributes",
        "StartMessageMoveTask",
        "TagQueue",
        "UntagQueue",
    }
)


def control_plane_error(action: str) -> GatewayError:
    return GatewayError(
        "AWS.SimpleQueueService.UnsupportedOperation",
        f"{action} is not served by the snsq2nats gateway: the queues are the applied plan. "
        "Change them in AWS or in the mapping, then run `snsq2nats plan` and `snsq2nats apply`.",
    )


def unknown_action(action: str) -> GatewayError:
    return GatewayError("InvalidAction", f"The action {action} is not valid for this endpoint.")
