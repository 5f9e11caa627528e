"""The AWS clients the commands build: one configuration (adaptive retries, timeouts, a pool
as large as the calls made at once) and the region picked from what the user and plan say."""

from __future__ import annotations

import pytest

from snsq2nats.aws.clients import MAX_ATTEMPTS, clients_for_arns, sqs_by_region

QUEUE_ARN = "arn:aws:sqs:eu-west-3:123456789012:orders"


def test_status_sqs_clients_take_the_shared_configuration() -> None:
    sqs_for = sqs_by_region("http://127.0.0.1:1", 32)
    client = sqs_for("eu-west-1")
    config = client.meta.config
    assert config.retries is not None
    assert config.retries["mode"] == "adaptive"
    # botocore counts the first call too: MAX_ATTEMPTS retries.
    assert config.retries["total_max_attempts"] == MAX_ATTEMPTS + 1
    assert config.max_pool_connections == 32
    assert (config.connect_timeout, config.read_timeout) == (5, 30)
    assert client.meta.endpoint_url == "http://127.0.0.1:1"
    # One client per region, made once.
    assert sqs_for("eu-west-1") is client
    assert sqs_for("us-east-2").meta.region_name == "us-east-2"


def test_a_region_given_wins_then_the_queues_then_the_session(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "ap-south-1")
    given = clients_for_arns(["us-west-2", "eu-north-1"], [QUEUE_ARN])
    assert given is not None and given.region == "us-west-2"
    from_arn = clients_for_arns([], [QUEUE_ARN])
    assert from_arn is not None and from_arn.region == "eu-west-3"
    assert from_arn.sqs.meta.config.retries is not None
    assert from_arn.sqs.meta.config.retries["mode"] == "adaptive"
    session = clients_for_arns([], [])
    assert session is not None and session.region == "ap-south-1"


def test_no_region_anywhere_gives_no_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    assert clients_for_arns([], []) is None
