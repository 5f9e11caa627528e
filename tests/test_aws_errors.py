"""The one AWS error classifier, on the exceptions botocore really raises."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from snsq2nats.aws.errors import (
    error_code,
    http_status,
    is_denied,
    is_entry_fault,
    is_missing,
    is_throttle,
)


def client_error(code: str, status: int = 400) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "SendMessageBatch",
    )


@pytest.mark.parametrize(
    "code",
    [
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "TooManyRequestsException",
        "KMS.ThrottlingException",
        "KMSThrottlingException",
        "SlowDown",
        "RequestLimitExceeded",
        "ServiceUnavailable",
    ],
)
def test_every_spelling_of_throttling(code: str) -> None:
    assert is_throttle(client_error(code, 503))


def test_code_and_status() -> None:
    exc = client_error("AWS.SimpleQueueService.NonExistentQueue")
    assert (error_code(exc), http_status(exc)) == ("AWS.SimpleQueueService.NonExistentQueue", 400)
    assert is_missing(exc) and not is_throttle(exc) and not is_denied(exc)
    assert is_denied(client_error("AccessDenied", 403))


def test_not_an_aws_error() -> None:
    exc = EndpointConnectionError(endpoint_url="http://x")
    assert error_code(exc) is None and http_status(exc) is None
    assert not (is_throttle(exc) or is_missing(exc) or is_entry_fault(exc))
    assert error_code(ValueError("x")) is None


def test_entry_fault_needs_a_client_status() -> None:
    assert is_entry_fault(client_error("InvalidParameterValue", 400))
    assert not is_entry_fault(client_error("InvalidParameterValue", 500))
    assert not is_entry_fault(client_error("ThrottlingException", 400))
