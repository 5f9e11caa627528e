"""What an AWS error means, decided once for the scan and the bridge.

botocore raises `ClientError` with the service's error code in `response["Error"]["Code"]`;
SQS's query protocol and its JSON protocol, SNS and KMS (through SQS encryption) spell the same
condition differently, so each condition is a set of codes here and callers ask by meaning.
"""

from __future__ import annotations

from typing import Any

# "Slow down / try again", whatever the service or protocol. Server-side failures are in the
# same set: the answer to both is the same backoff and retry.
THROTTLE_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "SlowDown",
        "KMS.ThrottlingException",
        "KMSThrottlingException",
        "ServiceUnavailable",
        "InternalError",
        "InternalFailure",
    }
)
# The queue or topic is not there (deleted, or never created).
MISSING_CODES = frozenset(
    {
        "AWS.SimpleQueueService.NonExistentQueue",
        "QueueDoesNotExist",
        "NonExistentQueue",
        "NotFound",
        "NotFoundException",
        "ResourceNotFound",
    }
)
# The caller's identity may not do this.
DENIED_CODES = frozenset({"AccessDenied", "AccessDeniedException", "AuthorizationError"})
# The credentials themselves are refused.
BAD_CREDENTIALS_CODES = frozenset({"InvalidClientTokenId", "SignatureDoesNotMatch"})
# Batch-level errors caused by the content of some entry: the batch is split so the entry that
# AWS refuses fails alone and the others still go through.
ENTRY_FAULT_CODES = frozenset(
    {
        "InvalidParameterValue",
        "InvalidParameter",
        "InvalidParameterException",
        "ParameterValueInvalid",
        "InvalidMessageContents",
        "InvalidAttributeName",
        "InvalidAttributeValue",
        "BatchRequestTooLong",
        "AWS.SimpleQueueService.BatchRequestTooLong",
        "MissingParameter",
        "ValidationError",
        "ValidationException",
    }
)


def _response(exc: BaseException) -> dict[str, Any]:
    response = getattr(exc, "response", None)
    return response if isinstance(response, dict) else {}


def error_code(exc: BaseException) -> str | None:
    """The AWS error code of `exc`, or None when it is not an AWS service error."""
    code = (_response(exc).get("Error") or {}).get("Code")
    return str(code) if code else None


def http_status(exc: BaseException) -> int | None:
    status = (_response(exc).get("ResponseMetadata") or {}).get("HTTPStatusCode")
    return int(status) if status else None


def is_throttle(exc: BaseException) -> bool:
    return error_code(exc) in THROTTLE_CODES


def is_missing(exc: BaseException) -> bool:
    return error_code(exc) in MISSING_CODES


def is_denied(exc: BaseException) -> bool:
    return error_code(exc) in DENIED_CODES


def is_entry_fault(exc: BaseException) -> bool:
    """AWS refused a batch call for the content of an entry (a 4xx with a validation code)."""
    status = http_status(exc) or 0
    return error_code(exc) in ENTRY_FAULT_CODES and 400 <= status < 500
