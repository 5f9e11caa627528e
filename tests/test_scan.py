"""`scan` against moto's server over real HTTP."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from snsq2nats.aws import clients as aws_clients
from snsq2nats.aws import scan as aws_scan
from snsq2nats.aws.clients import make_clients
from snsq2nats.cli import main
from snsq2nats.demo.estate import seed_shop
from snsq2nats.errors import InventoryFileError
from snsq2nats.files import document_json
from snsq2nats.inventory import Inventory, load_inventory
from tests.fixtures.aws import AwsEndpoint


def run_scan(aws: AwsEndpoint, regions: list[str] | None = None, **kwargs: Any) -> Inventory:
    session = aws.session()
    clients = make_clients(session, regions or [aws.region], aws.url)
    return aws_scan.scan(clients, **kwargs)


@pytest.fixture
def shop(aws: AwsEndpoint) -> Any:
    return seed_shop(aws.client("sqs"), aws.client("sns"))


def test_scan_reads_every_queue_topic_and_subscription(aws: AwsEndpoint, shop: Any) -> None:
    inv = run_scan(aws)

    assert {q.arn for q in inv.queues} == set(shop.queues.values())
    assert {t.arn for t in inv.topics} == set(shop.topics.values())
    assert {s.arn for s in inv.subscriptions} == set(shop.subscriptions.values())

    billing = inv.queue(shop.queues["orders-billing"])
    assert billing is not None
    assert billing.visibility_timeout == 60
    assert billing.message_retention_period == 604800
    assert billing.redrive_policy is not None
    assert billing.redrive_policy.dead_letter_target_arn == shop.queues["orders-dlq"]
    assert billing.redrive_policy.max_receive_count == 5
    assert billing.tags == {"team": "shop", "cost-center": "cc-42", "owner": "billing"}
    assert billing.attributes["QueueArn"] == billing.arn

    payments = inv.queue(shop.queues["payments.fifo"])
    assert payments is not None
    assert payments.fifo and payments.content_based_deduplication
    assert payments.name == "payments.fifo"
    assert payments.redrive_policy is not None
    assert payments.redrive_policy.max_receive_count == 3

    delayed = inv.queue(shop.queues["notifications-delayed"])
    assert delayed is not None and delayed.delay_seconds == 30
    analytics = inv.queue(shop.queues["orders-analytics"])
    assert analytics is not None and analytics.maximum_message_size == 262144

    orders = inv.topic(shop.topics["orders"])
    assert orders is not None
    assert orders.tags == {"team": "shop"}
    assert orders.display_name == "Orders"

    by_arn = {s.arn: s for s in inv.subscriptions}
    billing_sub = by_arn[shop.subscriptions["billing"]]
    assert billing_sub.protocol == "sqs"
    assert billing_sub.endpoint == shop.queues["orders-billing"]
    assert billing_sub.raw_message_delivery is True
    assert json.loads(billing_sub.filter_policy or "") == {
        "event_type": ["order_placed", "order_cancelled"]
    }
    assert by_arn[shop.subscriptions["analytics"]].raw_message_delivery is False
    assert by_arn[shop.subscriptions["analytics"]].filter_policy is None
    assert by_arn[shop.subscriptions["webhook"]].protocol == "https"
    assert inv.warnings == []


def test_secrets_in_endpoints_are_redacted(aws: AwsEndpoint, shop: Any) -> None:
    text = document_json(run_scan(aws)).decode()
    assert "s3cr3t" not in text
    assert "https://hooks.example.com/orders?token=%2A%2A%2A" in text


def test_redact_endpoint_hides_userinfo_and_query_values() -> None:
    redacted = aws_scan.redact_endpoint("https://bob:pw@h.example/x?a=1&sig=zzz")
    assert redacted == "https://***@h.example/x?a=%2A%2A%2A&sig=%2A%2A%2A"
    assert aws_scan.redact_endpoint("arn:aws:sqs:us-east-1:1:q") == "arn:aws:sqs:us-east-1:1:q"


def test_prefix_limits_queues_topics_and_their_subscriptions(aws: AwsEndpoint, shop: Any) -> None:
    inv = run_scan(aws, prefix="payments")
    assert sorted(q.name for q in inv.queues) == ["payments-dlq.fifo", "payments.fifo"]
    assert inv.topics == [] and inv.subscriptions == []


def test_dangling_references_are_warnings(aws: AwsEndpoint) -> None:
    sqs, sns = aws.client("sqs"), aws.client("sns")
    dlq_url = sqs.create_queue(QueueName="gone-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sqs.create_queue(
        QueueName="work",
        Attributes={
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2})
        },
    )
    topic = sns.create_topic(Name="events")["TopicArn"]
    sub = sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=dlq_arn)["SubscriptionArn"]
    sqs.delete_queue(QueueUrl=dlq_url)

    inv = run_scan(aws)
    codes = {(w.code, w.resource) for w in inv.warnings}
    work_arn = dlq_arn.replace("gone-dlq", "work")
    assert ("dangling-dlq", work_arn) in codes
    assert ("dangling-endpoint", sub) in codes


def test_queue_deleted_between_listing_and_describing_is_skipped(aws: AwsEndpoint) -> None:
    sqs = aws.client("sqs")
    sqs.create_queue(QueueName="stays")
    doomed = sqs.create_queue(QueueName="doomed")["QueueUrl"]

    def delete_after_listing(n: int, total: int | None) -> None:
        if total is not None:
            sqs.delete_queue(QueueUrl=doomed)

    inv = run_scan(aws, on_progress=delete_after_listing, concurrency=1)
    assert [q.name for q in inv.queues] == ["stays"]
    assert [(w.code, w.resource) for w in inv.warnings] == [("deleted-during-scan", doomed)]


def test_access_denied_on_one_queue_is_a_warning(aws: AwsEndpoint) -> None:
    from botocore.exceptions import ClientError

    sqs = aws.client("sqs")
    sqs.create_queue(QueueName="open")
    secret = sqs.create_queue(QueueName="locked")["QueueUrl"]
    clients = make_clients(aws.session(), [aws.region], aws.url)

    def deny(params: dict[str, Any], **kwargs: Any) -> None:
        # botocore's own hook point: the call fails the way IAM would refuse it.
        if (
            params["body"].get("QueueUrl") == secret
            if isinstance(params["body"], dict)
            else (secret.encode() in params["body"])
        ):
            raise ClientError(
                {"Error": {"Code": "AccessDenied", "Message": "not allowed"}},
                "GetQueueAttributes",
            )

    clients[0].sqs.meta.events.register("before-call.sqs.GetQueueAttributes", deny)
    inv = aws_scan.scan(clients)
    assert [q.name for q in inv.queues] == ["open"]
    assert [(w.code, w.resource) for w in inv.warnings] == [("access-denied", secret)]


def test_many_topics_and_subscriptions_are_paginated(aws: AwsEndpoint) -> None:
    sns, sqs = aws.client("sns"), aws.client("sqs")
    url = sqs.create_queue(QueueName="sink")["QueueUrl"]
    sink = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    topics = [sns.create_topic(Name=f"t{i:03d}")["TopicArn"] for i in range(105)]
    for arn in topics:
        sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=sink)
    # One page holds 100: more than that proves NextToken is followed.
    assert "NextToken" in sns.list_topics()
    inv = run_scan(aws)
    assert len(inv.topics) == 105
    assert len(inv.subscriptions) == 105


def test_several_regions_in_one_scan(aws: AwsEndpoint) -> None:
    aws.client("sqs").create_queue(QueueName="east")
    aws.client("sqs", region="eu-west-1").create_queue(QueueName="west")
    inv = run_scan(aws, regions=["us-east-1", "eu-west-1"])
    assert sorted((q.region, q.name) for q in inv.queues) == [
        ("eu-west-1", "west"),
        ("us-east-1", "east"),
    ]
    assert inv.regions == ["us-east-1", "eu-west-1"]


def test_inventory_round_trips_through_json(aws: AwsEndpoint, shop: Any, tmp_path: Path) -> None:
    inv = run_scan(aws)
    path = tmp_path / "inventory.json"
    path.write_bytes(document_json(inv))
    assert load_inventory(path) == inv


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"format_version": 1, "generated', "not valid JSON"),
        ('{"queues": []}', "no format_version"),
        ('{"format_version": 99, "generated_at": "x", "regions": []}', "format_version 99"),
        (
            '{"format_version": 1, "generated_at": "x", "regions": [], "queues": [{"arn": 1}]}',
            "queues.0",
        ),
    ],
)
def test_bad_inventory_files_are_clear_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "inv.json"
    path.write_text(content)
    with pytest.raises(InventoryFileError) as err:
        load_inventory(path)
    assert message in err.value.one_line()
    assert str(path) in err.value.one_line()


def test_cli_scan_writes_inventory_and_summary(aws: AwsEndpoint, shop: Any, tmp_path: Path) -> None:
    out = tmp_path / "inventory.json"
    result = CliRunner().invoke(main, ["scan", "-o", str(out)])
    assert result.exit_code == 0, result.output
    inv = load_inventory(out)
    assert len(inv.queues) == 8
    assert "queues" in result.stderr and "8" in result.stderr
    assert "https" in result.stderr
    assert "s3cr3t" not in result.output + out.read_text()


def test_cli_scan_json_goes_to_stdout(aws: AwsEndpoint, shop: Any) -> None:
    result = CliRunner().invoke(main, ["scan", "--json"])
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["format_version"] == 1
    assert len(doc["topics"]) == 1


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_cli_unreachable_endpoint_is_one_clear_line(
    aws: AwsEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One retry, not eight: the message after retrying is the same, and eight spend ~40 s in
    # botocore's backoff. The bound itself is test_clients_give_up_after_bounded_retries's.
    monkeypatch.setattr(aws_clients, "MAX_ATTEMPTS", 1)
    url = f"http://127.0.0.1:{_closed_port()}"
    result = CliRunner().invoke(main, ["scan", "--endpoint-url", url])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: cannot reach the SQS endpoint")
    assert url in lines[-1]


def test_clients_give_up_after_bounded_retries(aws: AwsEndpoint) -> None:
    """What keeps an unreachable endpoint from stalling a scan: a short connect timeout and a
    bounded number of (adaptive) attempts."""
    (clients,) = make_clients(aws.session(), [aws.region], aws.url)
    for client in (clients.sqs, clients.sns):
        config = client.meta.config
        # botocore counts the first call too: 8 retries are 9 attempts in all.
        assert config.retries == {"mode": "adaptive", "total_max_attempts": 9}
        assert config.connect_timeout == 5


def test_cli_without_region_says_how_to_set_one(
    aws: AwsEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    result = CliRunner().invoke(main, ["scan"])
    assert result.exit_code == 1
    assert "no AWS region given" in result.stderr and "--region" in result.stderr


def test_aws_region_alone_selects_the_region(
    aws: AwsEndpoint, shop: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    result = CliRunner().invoke(main, ["scan", "--json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["regions"] == ["us-east-1"]


def test_cli_without_credentials_is_a_clear_error(
    aws: AwsEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    result = CliRunner().invoke(main, ["scan"])
    assert result.exit_code == 1
    assert "no AWS credentials found" in result.stderr
