"""The AWS CLI through the gateway, differentially: the same `aws sqs …` and `aws sns …` command
lines run against moto's server and against the gateway over a real nats-server holding the
applied plan of the same estate, and what a shell script sees (the parsed JSON output, the error
code, the exit code) must be the same but for ids, receipt handles and timestamps.

The CLI (v1, from PyPI) bundles its own botocore, which the project's pin would conflict with:
it lives in a venv of its own, made on first use from tests/awscli/requirements.txt, as the
JavaScript SDK is installed by `npm ci` from its lock file.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from snsq2nats.demo.nats_server import NatsServer
from snsq2nats.gateway.sigv4 import SigV4Authenticator
from snsq2nats.plan.pipeline import PlanRequest
from tests.fixtures.gateway import ACCESS_KEY, SECRET_KEY, applied_plan, running_gateway

pytestmark = pytest.mark.slow

REGION = "us-east-1"
ACCOUNT = "123456789012"
QUEUES = ["cli-basic", "cli-batch", "cli-vis", "cli-audit"]
TOPIC = "cli-events"
AUDIT = "cli-audit"
"""The topic's raw subscriber: what `aws sns publish` sends, `aws sqs receive-message` reads."""

REQUIREMENTS = Path(__file__).parent / "awscli" / "requirements.txt"
CLI_VENV = Path(__file__).parent / ".awscli-venv"
ERROR = re.compile(r"An error occurred \(([^)]+)\) when calling the (\w+) operation")


def _install_cli() -> Path:
    """The CLI's venv, (re)made when the requirements changed since it was made."""
    aws = CLI_VENV / "bin" / "aws"
    stamp = CLI_VENV / ".requirements"
    wanted = REQUIREMENTS.read_text()
    # Concurrent test runs of one checkout must not build the venv over each other.
    with open(Path(__file__).parent / ".awscli-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if aws.exists() and stamp.exists() and stamp.read_text() == wanted:
            return aws
        shutil.rmtree(CLI_VENV, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(CLI_VENV)], check=True, timeout=300)
        installed = subprocess.run(
            [
                str(CLI_VENV / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                "-r",
                str(REQUIREMENTS),
            ],
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert installed.returncode == 0, f"installing the AWS CLI failed:\n{installed.stderr}"
        stamp.write_text(wanted)  # last: a half-made venv is made again next time
    return aws


@dataclass(frozen=True)
class Outcome:
    """What a script sees of one command: its exit code, its JSON output, the error's code."""

    exit: int
    output: Any
    error: str | None


@dataclass
class Cli:
    aws: Path

    def run(self, endpoint: str, *args: str, secret: str = SECRET_KEY) -> Outcome:
        # Only what the test names reaches the CLI: no profile, config or endpoint of the host.
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("AWS_") and key not in ("HOME",)
        }
        env.update(
            {
                "HOME": str(CLI_VENV),
                "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": secret,
                "AWS_DEFAULT_REGION": REGION,
                "AWS_CONFIG_FILE": "/nonexistent/aws-config",
                "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
                "AWS_MAX_ATTEMPTS": "1",
                "AWS_RETRY_MODE": "standard",
            }
        )
        done = subprocess.run(
            [str(self.aws), "--endpoint-url", endpoint, "--output", "json", *args],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        found = ERROR.search(done.stderr)
        if done.returncode == 0:
            assert not done.stderr.strip(), done.stderr
        else:
            assert found is not None, done.stderr
        output = json.loads(done.stdout) if done.stdout.strip() else None
        return Outcome(done.returncode, output, found.group(1) if found else None)


@pytest.fixture(scope="module")
def cli() -> Cli:
    aws = _install_cli()
    version = subprocess.run(
        [str(aws), "--version"], capture_output=True, text=True, check=True, timeout=120
    )
    assert version.stdout.startswith("aws-cli/1."), version.stdout
    return Cli(aws)


@dataclass(frozen=True)
class _Key:
    identity: str
    secret: str


@dataclass
class Sides:
    moto: str
    gateway: str

    def both(self) -> list[tuple[str, str]]:
        return [("moto", self.moto), ("gateway", self.gateway)]


def _seed(moto_server: str) -> None:
    import boto3

    session = boto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    )
    sqs = session.client("sqs", endpoint_url=moto_server)
    sns = session.client("sns", endpoint_url=moto_server)
    for name in QUEUES:
        sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "30"})
    topic = sns.create_topic(Name=TOPIC)["TopicArn"]
    sns.subscribe(
        TopicArn=topic,
        Protocol="sqs",
        Endpoint=f"arn:aws:sqs:{REGION}:{ACCOUNT}:{AUDIT}",
        Attributes={"RawMessageDelivery": "true"},
    )


@pytest.fixture(scope="module")
def sides(moto_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sides]:
    import boto3

    from snsq2nats.aws import scan as aws_scan
    from snsq2nats.aws.clients import make_clients
    from snsq2nats.files import document_json

    reset = urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST")
    urllib.request.urlopen(reset, timeout=10).close()
    _seed(moto_server)
    session = boto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    )
    inventory = aws_scan.scan(make_clients(session, [REGION], moto_server))
    folder = tmp_path_factory.mktemp("gateway-awscli")
    path = folder / "inventory.json"
    path.write_bytes(document_json(inventory))
    with NatsServer(name="gateway-awscli") as server:
        plan = applied_plan(server.url, PlanRequest(inventory_path=path))
        # The real verifier, not the fixture's stand-in: the CLI's own SigV4 (for sqs and for
        # sns) is what the gateway checks.
        verifier = SigV4Authenticator({ACCESS_KEY: _Key("test-app", SECRET_KEY)})
        with running_gateway(server.url, plan, authenticator=verifier) as running:
            yield Sides(moto_server, running.url)


def queue_url(cli: Cli, endpoint: str, name: str) -> str:
    got = cli.run(endpoint, "sqs", "get-queue-url", "--queue-name", name)
    assert got.exit == 0, got
    return str(got.output["QueueUrl"])


ATTRIBUTES = {
    "colour": {"DataType": "String", "StringValue": "blue é"},
    "count": {"DataType": "Number", "StringValue": "42"},
    "blob": {"DataType": "Binary", "BinaryValue": "binary bytes"},
}
VARYING = ("SentTimestamp", "ApproximateFirstReceiveTimestamp", "SenderId")
"""System attributes whose values are the moment's or the sender's: compared by presence."""


def _message(message: dict[str, Any]) -> dict[str, Any]:
    """A received message without what differs between any two runs (ids, handles, times)."""
    attributes = dict(message.get("Attributes", {}))
    for name in VARYING:
        if name in attributes:
            attributes[name] = "(present)"
    kept = {k: v for k, v in message.items() if k not in ("MessageId", "ReceiptHandle")}
    return {**kept, "Attributes": attributes}


def _sent(outcome: Outcome) -> Outcome:
    output = outcome.output
    if isinstance(output, dict):
        output = {k: v for k, v in output.items() if k not in ("MessageId", "SequenceNumber")}
    return Outcome(outcome.exit, output, outcome.error)


def receive(cli: Cli, endpoint: str, url: str, count: int, *extra: str) -> list[dict[str, Any]]:
    """`count` messages, by as many long polls as it takes."""
    got: list[dict[str, Any]] = []
    while len(got) < count:
        outcome = cli.run(
            endpoint,
            "sqs",
            "receive-message",
            "--queue-url",
            url,
            "--max-number-of-messages",
            "10",
            "--wait-time-seconds",
            "5",
            *extra,
        )
        assert outcome.exit == 0, outcome
        got += (outcome.output or {}).get("Messages", [])
    return got


def nothing_left(cli: Cli, endpoint: str, url: str) -> Outcome:
    return cli.run(
        endpoint, "sqs", "receive-message", "--queue-url", url, "--wait-time-seconds", "1"
    )


def basic_story(cli: Cli, endpoint: str) -> dict[str, Any]:
    url = queue_url(cli, endpoint, "cli-basic")
    sent = [
        cli.run(endpoint, "sqs", "send-message", "--queue-url", url, "--message-body", "plain"),
        cli.run(
            endpoint,
            "sqs",
            "send-message",
            "--queue-url",
            url,
            "--message-body",
            'héllo {"json": 1}',
            "--message-attributes",
            json.dumps(ATTRIBUTES),
        ),
    ]
    got = receive(
        cli, endpoint, url, 2, "--attribute-names", "All", "--message-attribute-names", "All"
    )
    deleted = [
        cli.run(
            endpoint,
            "sqs",
            "delete-message",
            "--queue-url",
            url,
            "--receipt-handle",
            message["ReceiptHandle"],
        )
        for message in got
    ]
    return {
        "path": url.split("/", 3)[3],
        "sent": [_sent(s) for s in sent],
        "ids": sorted(s.output["MessageId"] for s in sent) == sorted(m["MessageId"] for m in got),
        "received": sorted((_message(m) for m in got), key=lambda m: str(m["Body"])),
        "deleted": deleted,
        "after": nothing_left(cli, endpoint, url),
    }


def test_send_receive_delete_print_what_they_print_on_sqs(cli: Cli, sides: Sides) -> None:
    stories = {side: basic_story(cli, endpoint) for side, endpoint in sides.both()}
    assert stories["gateway"] == stories["moto"]
    story = stories["gateway"]
    assert story["path"] == f"{ACCOUNT}/cli-basic"
    assert story["ids"] is True
    assert story["sent"][0].output == {"MD5OfMessageBody": hashlib.md5(b"plain").hexdigest()}
    with_attributes, plain = story["received"]
    assert plain["Body"] == "plain"
    assert with_attributes["MessageAttributes"]["blob"] == {
        "DataType": "Binary",
        "BinaryValue": base64.b64encode(b"binary bytes").decode(),
    }
    assert with_attributes["MessageAttributes"]["count"]["StringValue"] == "42"
    assert plain["Attributes"]["ApproximateReceiveCount"] == "1"
    assert set(plain["Attributes"]) >= {"SentTimestamp", "ApproximateFirstReceiveTimestamp"}
    assert story["deleted"] == [Outcome(0, None, None)] * 2
    assert story["after"] == Outcome(0, None, None)


def batch_story(cli: Cli, endpoint: str) -> dict[str, Any]:
    """A batch whose one entry asks a delay SQS refuses: that entry fails, the rest are sent."""
    url = queue_url(cli, endpoint, "cli-batch")
    entries = [
        {"Id": "one", "MessageBody": "first"},
        {"Id": "bad", "MessageBody": "too late", "DelaySeconds": 901},
        {"Id": "two", "MessageBody": "second", "MessageAttributes": {"n": ATTRIBUTES["count"]}},
    ]
    sent = cli.run(
        endpoint,
        "sqs",
        "send-message-batch",
        "--queue-url",
        url,
        "--entries",
        json.dumps(entries),
    )
    got = receive(cli, endpoint, url, 2, "--message-attribute-names", "All")
    for message in got:
        cli.run(
            endpoint,
            "sqs",
            "delete-message",
            "--queue-url",
            url,
            "--receipt-handle",
            message["ReceiptHandle"],
        )
    output = sent.output or {}
    return {
        "exit": sent.exit,
        "successful": sorted(
            ({k: v for k, v in s.items() if k != "MessageId"} for s in output["Successful"]),
            key=lambda s: str(s["Id"]),
        ),
        "failed": [
            {k: v for k, v in f.items() if k != "Message"} for f in output.get("Failed", [])
        ],
        "received": sorted((_message(m) for m in got), key=lambda m: str(m["Body"])),
        "after": nothing_left(cli, endpoint, url),
    }


def test_a_batch_with_a_bad_entry_prints_what_it_prints_on_sqs(cli: Cli, sides: Sides) -> None:
    stories = {side: batch_story(cli, endpoint) for side, endpoint in sides.both()}
    assert stories["gateway"] == stories["moto"]
    story = stories["gateway"]
    assert story["exit"] == 0
    assert [s["Id"] for s in story["successful"]] == ["one", "two"]
    assert story["failed"] == [{"Id": "bad", "SenderFault": True, "Code": "InvalidParameterValue"}]
    assert [m["Body"] for m in story["received"]] == ["first", "second"]
    assert story["after"] == Outcome(0, None, None)


def visibility_story(cli: Cli, endpoint: str) -> dict[str, Any]:
    """A message made visible again by change-message-visibility is received again, counted."""
    url = queue_url(cli, endpoint, "cli-vis")
    cli.run(endpoint, "sqs", "send-message", "--queue-url", url, "--message-body", "twice")
    count = ("--attribute-names", "ApproximateReceiveCount")
    (first,) = receive(cli, endpoint, url, 1, *count)
    hidden = nothing_left(cli, endpoint, url)
    changed = cli.run(
        endpoint,
        "sqs",
        "change-message-visibility",
        "--queue-url",
        url,
        "--receipt-handle",
        first["ReceiptHandle"],
        "--visibility-timeout",
        "0",
    )
    (second,) = receive(cli, endpoint, url, 1, *count)
    cli.run(
        endpoint,
        "sqs",
        "delete-message",
        "--queue-url",
        url,
        "--receipt-handle",
        second["ReceiptHandle"],
    )
    return {
        "first": _message(first),
        "hidden": hidden,
        "changed": changed,
        "second": _message(second),
        "same message": first["MessageId"] == second["MessageId"],
        "after": nothing_left(cli, endpoint, url),
    }


def test_change_message_visibility_does_what_it_does_on_sqs(cli: Cli, sides: Sides) -> None:
    stories = {side: visibility_story(cli, endpoint) for side, endpoint in sides.both()}
    assert stories["gateway"] == stories["moto"]
    story = stories["gateway"]
    assert story["hidden"] == Outcome(0, None, None)
    assert story["changed"] == Outcome(0, None, None)
    assert [story[k]["Attributes"]["ApproximateReceiveCount"] for k in ("first", "second")] == [
        "1",
        "2",
    ]
    assert story["same message"] is True
    assert story["after"] == Outcome(0, None, None)


def error_story(cli: Cli, endpoint: str) -> dict[str, Outcome]:
    url = queue_url(cli, endpoint, "cli-basic")
    missing = url.rsplit("/", 1)[0] + "/cli-nowhere"
    return {
        "unknown name": cli.run(endpoint, "sqs", "get-queue-url", "--queue-name", "cli-nowhere"),
        "unknown url": cli.run(
            endpoint, "sqs", "send-message", "--queue-url", missing, "--message-body", "x"
        ),
        "forged handle": cli.run(
            endpoint,
            "sqs",
            "change-message-visibility",
            "--queue-url",
            url,
            "--receipt-handle",
            "forged",
            "--visibility-timeout",
            "0",
        ),
    }


def test_errors_are_the_codes_and_exit_codes_of_sqs(cli: Cli, sides: Sides) -> None:
    stories = {side: error_story(cli, endpoint) for side, endpoint in sides.both()}
    assert stories["gateway"] == stories["moto"]
    story = stories["gateway"]
    # The CLI v1 exits 255 whatever failed (v2 tells a service's error apart with 254).
    assert story["unknown name"] == Outcome(255, None, "AWS.SimpleQueueService.NonExistentQueue")
    assert story["unknown url"] == Outcome(255, None, "AWS.SimpleQueueService.NonExistentQueue")
    assert story["forged handle"] == Outcome(255, None, "ReceiptHandleIsInvalid")


def publish_story(cli: Cli, endpoint: str) -> dict[str, Any]:
    """`aws sns publish` to a topic, then its raw subscriber's queue read with `aws sqs`."""
    topic = f"arn:aws:sns:{REGION}:{ACCOUNT}:{TOPIC}"
    published = cli.run(
        endpoint,
        "sns",
        "publish",
        "--topic-arn",
        topic,
        "--message",
        "published by the CLI",
        "--message-attributes",
        json.dumps({"kind": {"DataType": "String", "StringValue": "order"}}),
    )
    url = queue_url(cli, endpoint, AUDIT)
    got = receive(cli, endpoint, url, 1, "--message-attribute-names", "All")
    for message in got:
        cli.run(
            endpoint,
            "sqs",
            "delete-message",
            "--queue-url",
            url,
            "--receipt-handle",
            message["ReceiptHandle"],
        )
    unknown = cli.run(
        endpoint, "sns", "publish", "--topic-arn", f"{topic}-nowhere", "--message", "x"
    )
    return {
        "published": (published.exit, sorted(published.output or {}), published.error),
        "received": [_message(m) for m in got],
        "unknown topic": unknown,
    }


def test_sns_publish_reaches_the_subscriber_as_on_aws(cli: Cli, sides: Sides) -> None:
    stories = {side: publish_story(cli, endpoint) for side, endpoint in sides.both()}
    assert stories["gateway"] == stories["moto"]
    story = stories["gateway"]
    assert story["published"] == (0, ["MessageId"], None)
    (received,) = story["received"]
    assert received["Body"] == "published by the CLI"
    assert received["MD5OfBody"] == hashlib.md5(b"published by the CLI").hexdigest()
    assert received["MessageAttributes"] == {"kind": {"DataType": "String", "StringValue": "order"}}
    assert story["unknown topic"] == Outcome(255, None, "NotFound")


def test_a_wrong_secret_is_refused_for_sqs_and_for_sns(cli: Cli, sides: Sides) -> None:
    # moto accepts any signature: this is the gateway's alone, as AWS answers it.
    topic = f"arn:aws:sns:{REGION}:{ACCOUNT}:{TOPIC}"
    wrong = "not-the-secret"
    sqs = cli.run(sides.gateway, "sqs", "get-queue-url", "--queue-name", "cli-basic", secret=wrong)
    sns = cli.run(
        sides.gateway, "sns", "publish", "--topic-arn", topic, "--message", "x", secret=wrong
    )
    assert sqs == Outcome(255, None, "SignatureDoesNotMatch")
    assert sns == Outcome(255, None, "SignatureDoesNotMatch")
    # The same command lines with the right secret are served.
    assert cli.run(sides.gateway, "sqs", "get-queue-url", "--queue-name", "cli-basic").exit == 0


def _failed(outcome: Outcome) -> Any:
    """A batch's failures as a script tells them apart: by id, code and whose fault."""
    output = outcome.output or {}
    failed = [(f["Id"], f["Code"], f["SenderFault"]) for f in output.get("Failed", [])]
    return (outcome.exit, output.get("Successful"), failed, outcome.error)


def more_story(cli: Cli, endpoint: str) -> dict[str, Any]:
    url = queue_url(cli, endpoint, "cli-batch")
    topic = f"arn:aws:sns:{REGION}:{ACCOUNT}:{TOPIC}"
    listed = cli.run(endpoint, "sqs", "list-queues", "--queue-name-prefix", "cli-")
    attributes = cli.run(
        endpoint, "sqs", "get-queue-attributes", "--queue-url", url, "--attribute-names", "All"
    )
    forged = [{"Id": "f", "ReceiptHandle": "forged"}]
    structured = cli.run(
        endpoint,
        "sns",
        "publish",
        "--topic-arn",
        topic,
        "--message-structure",
        "json",
        "--message",
        json.dumps({"default": "for everyone", "sqs": "for queues"}),
    )
    (delivered,) = receive(cli, endpoint, queue_url(cli, endpoint, AUDIT), 1)
    cli.run(
        endpoint,
        "sqs",
        "delete-message",
        "--queue-url",
        queue_url(cli, endpoint, AUDIT),
        "--receipt-handle",
        delivered["ReceiptHandle"],
    )
    return {
        "listed": (listed.exit, sorted(u.split("/", 3)[3] for u in listed.output["QueueUrls"])),
        "attributes": (attributes.exit, attributes.output["Attributes"]),
        "delete batch": _failed(
            cli.run(
                endpoint,
                "sqs",
                "delete-message-batch",
                "--queue-url",
                url,
                "--entries",
                json.dumps(forged),
            )
        ),
        "visibility batch": _failed(
            cli.run(
                endpoint,
                "sqs",
                "change-message-visibility-batch",
                "--queue-url",
                url,
                "--entries",
                json.dumps([{**forged[0], "VisibilityTimeout": 0}]),
            )
        ),
        "too many": cli.run(
            endpoint, "sqs", "receive-message", "--queue-url", url, "--max-number-of-messages", "11"
        ),
        "bad attribute type": cli.run(
            endpoint,
            "sqs",
            "send-message",
            "--queue-url",
            url,
            "--message-body",
            "x",
            "--message-attributes",
            json.dumps({"a": {"DataType": "Text", "StringValue": "v"}}),
        ),
        "structured": (structured.exit, sorted(structured.output or {}), delivered["Body"]),
    }


def test_more_of_the_cli_answers_as_on_sqs(cli: Cli, sides: Sides) -> None:
    stories = {side: more_story(cli, endpoint) for side, endpoint in sides.both()}
    # The same attributes with moto's values, but for the queue's creation and change times,
    # which are the stream's on the gateway (docs/gateway.md).
    moto_code, moto_attributes = stories["moto"].pop("attributes")
    code, attributes = stories["gateway"].pop("attributes")
    stamps = ("CreatedTimestamp", "LastModifiedTimestamp")
    assert code == moto_code
    assert sorted(attributes) == sorted(moto_attributes)
    assert {k: v for k, v in attributes.items() if k not in stamps} == {
        k: v for k, v in moto_attributes.items() if k not in stamps
    }
    assert {"ApproximateNumberOfMessages", "VisibilityTimeout", "QueueArn"} <= set(attributes)
    assert stories["gateway"] == stories["moto"]
    story = stories["gateway"]
    assert story["listed"] == (0, [f"{ACCOUNT}/{q}" for q in sorted(QUEUES)])
    assert story["delete batch"] == (0, [], [("f", "ReceiptHandleIsInvalid", True)], None)
    assert story["visibility batch"] == story["delete batch"]
    assert story["too many"] == Outcome(255, None, "InvalidParameterValue")
    assert story["bad attribute type"] == Outcome(255, None, "InvalidParameterValue")
    assert story["structured"] == (0, ["MessageId"], "for queues")


def test_the_control_plane_is_refused_not_diverged_from(cli: Cli, sides: Sides) -> None:
    # moto creates the queue; the gateway says the estate is the plan's (issue 19).
    made = cli.run(sides.gateway, "sqs", "create-queue", "--queue-name", "cli-new")
    assert made == Outcome(255, None, "AWS.SimpleQueueService.UnsupportedOperation")
    missing = cli.run(sides.gateway, "sqs", "get-queue-url", "--queue-name", "cli-new")
    assert missing == Outcome(255, None, "AWS.SimpleQueueService.NonExistentQueue")
