"""FIFO partitions without a server: the setting's validation, the plan's handling of a
partition change on a live queue, where a group goes (`subject --durable`), and the exports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from snsq2nats.cli import main
from snsq2nats.errors import MappingError
from snsq2nats.export.targets import export_plan
from snsq2nats.files import document_json
from snsq2nats.inventory import Inventory
from snsq2nats.jetstream.spec import LiveState, LiveStream, ServerInfo
from snsq2nats.jetstream.subjects import partition_of
from snsq2nats.plan.diff import diff
from snsq2nats.plan.model import Plan
from snsq2nats.plan.pipeline import assemble_plan, worker_durables
from snsq2nats.plan.rules import load_rules
from snsq2nats.plan.translate import translate
from tests.test_mapping import case_inventory

ARN = "arn:aws:sqs:us-east-1:123456789012:jobs.fifo"


def inventory(*names: str) -> Inventory:
    return case_inventory({"queues": [{"name": n} for n in names or ("jobs.fifo",)]})


def rules_file(tmp_path: Path, body: dict[str, Any]) -> Path:
    path = tmp_path / "partitions.yaml"
    path.write_text(yaml.safe_dump(body), encoding="utf-8")
    return path


def partitioned(tmp_path: Path, n: int) -> Path:
    return rules_file(tmp_path, {"overrides": [{"match": "jobs.fifo", "partitions": n}]})


def offline_plan(tmp_path: Path, n: int) -> Plan:
    return assemble_plan(
        inventory(),
        load_rules([partitioned(tmp_path, n)]),
        None,
        server=ServerInfo(reachable=False),
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "greater than or equal to 1"),
        (1025, "less than or equal to 1024"),
        ("4", "valid integer"),
        (2.5, "valid integer"),
        (True, "valid integer"),
    ],
)
def test_partitions_must_be_a_whole_number_in_range(
    tmp_path: Path, value: Any, message: str
) -> None:
    path = rules_file(tmp_path, {"overrides": [{"match": "jobs.fifo", "partitions": value}]})
    with pytest.raises(MappingError) as caught:
        load_rules([path])
    line = caught.value.one_line()
    assert "overrides.0.partitions" in line
    assert message in line
    assert "a whole number of partitions from 1 to 1024" in line


def test_default_partitions_are_validated_too(tmp_path: Path) -> None:
    with pytest.raises(MappingError, match="greater than or equal to 1"):
        load_rules([rules_file(tmp_path, {"defaults": {"fifo_partitions": 0}})])


def test_a_standard_queue_with_partitions_1_is_fine(tmp_path: Path) -> None:
    """1 means "as today": harmless on any queue, so a glob setting it back never errors."""
    path = rules_file(tmp_path, {"overrides": [{"match": "*", "partitions": 1}]})
    desired = translate(inventory("orders", "jobs.fifo"), load_rules([path]))
    assert sorted(c.key for c in desired.consumers) == ["sqs_orders/orders", "sqsfifo_jobs/jobs"]


def test_partition_of_is_the_servers_fnv1a_modulo() -> None:
    # FNV-1a 32 of "a" is 0xe40c292c; the live tests check the server agrees on many groups.
    assert partition_of("a", 1 << 32) == 0xE40C292C
    assert partition_of("", 7) == 0x811C9DC5 % 7
    assert partition_of("anything", 1) == 0


def live_state_from(plan: Plan, messages: int) -> LiveState:
    """The server as if `plan` had been applied, with `messages` in each stream."""
    streams = {
        s.name: LiveStream(
            config=s.to_api(),
            messages=messages,
            consumers={
                c.durable_name: c.to_api() for c in plan.consumers if c.stream_name == s.name
            },
        )
        for s in plan.streams
    }
    return LiveState(streams=streams, server=ServerInfo(reachable=True))


@pytest.mark.parametrize(("before", "after"), [(1, 4), (4, 2), (4, 1)])
def test_changing_partitions_on_a_live_queue_is_a_replace_that_says_drain_first(
    tmp_path: Path, before: int, after: int
) -> None:
    live = live_state_from(offline_plan(tmp_path, before), messages=7)
    desired = translate(inventory(), load_rules([partitioned(tmp_path, after)]))
    changes = {(c.type, c.name): c for c in diff(desired, live)}
    stream = changes[("stream", "sqsfifo_jobs")]
    assert stream.action == "replace"
    assert "the partitions change" in stream.reason
    assert "drain the queue" in stream.reason
    assert "7 messages" in stream.reason
    assert stream.live_messages == 7
    new = [c for c in desired.consumers]
    for consumer in new:
        assert changes[("consumer", consumer.durable_name)].action == "create"
    old = {c.durable_name for c in offline_plan(tmp_path, before).consumers}
    for name in old - {c.durable_name for c in new}:
        # Gone with the stream: not a delete apply would run after the stream is recreated.
        assert changes[("consumer", name)].action == "noop"
        assert "deleted with its stream" in changes[("consumer", name)].reason


def test_an_unchanged_partitioned_queue_plans_nothing(tmp_path: Path) -> None:
    plan = offline_plan(tmp_path, 4)
    live = live_state_from(plan, messages=3)
    desired = translate(inventory(), load_rules([partitioned(tmp_path, 4)]))
    assert {c.action for c in diff(desired, live)} == {"noop"}


def test_worker_durables_name_the_groups_partition(tmp_path: Path) -> None:
    plan = offline_plan(tmp_path, 4)
    every = worker_durables(plan, "jobs.fifo", [])
    assert every == [("sqsfifo_jobs", f"jobs-p{i}") for i in range(4)]
    for group in ("a", "b", "order-17", "g/1"):
        (one,) = worker_durables(plan, ARN, [f"MessageGroupId={group}"])
        assert one in every
    (slash,) = worker_durables(plan, ARN, ["MessageGroupId=g/1"])
    # The server hashes the subject token, which is the encoded group.
    from snsq2nats.filterpolicy import encode_token

    assert slash[1] == f"jobs-p{partition_of(encode_token('g/1'), 4)}"


def test_subject_cli_prints_the_subject_and_the_durable(tmp_path: Path) -> None:
    plan_path = tmp_path / "plan.json"
    plan_path.write_bytes(document_json(offline_plan(tmp_path, 4)))
    runner = CliRunner()
    subject = runner.invoke(
        main, ["subject", "jobs.fifo", "--attr", "MessageGroupId=a", "--plan", str(plan_path)]
    )
    assert subject.exit_code == 0, subject.output
    # Producers publish as they always did: the transform places the message.
    assert subject.stdout.strip() == "sqsfifo.jobs.a"
    durable = runner.invoke(
        main,
        [
            "subject",
            "jobs.fifo",
            "--attr",
            "MessageGroupId=a",
            "--durable",
            "--plan",
            str(plan_path),
        ],
    )
    assert durable.exit_code == 0, durable.output
    assert durable.stdout.strip() == f"sqsfifo_jobs jobs-p{partition_of('a', 4)}"
    every = runner.invoke(main, ["subject", "jobs.fifo", "--durable", "--plan", str(plan_path)])
    assert every.stdout.split("\n")[:4] == [f"sqsfifo_jobs jobs-p{i}" for i in range(4)]


def test_plan_json_carries_the_partition_consumers_and_route_partitions(tmp_path: Path) -> None:
    path = rules_file(
        tmp_path,
        {"overrides": [{"match": "jobs.fifo", "partitions": 2, "cutover": {"producers": "nats"}}]},
    )
    plan = assemble_plan(inventory(), load_rules([path]), None, server=ServerInfo(reachable=False))
    doc = plan.to_json()
    (queue,) = [r for r in doc["resources"] if r["kind"] == "sqs-queue"]
    assert queue["consumer"] == "jobs-p0"
    assert queue["partition_consumers"] == ["jobs-p0", "jobs-p1"]
    (route,) = doc["routes"]
    assert route["partitions"] == 2
    (stream,) = [s for s in doc["streams"] if s["name"] == "sqsfifo_jobs"]
    assert stream["subject_transform"]["dest"] == "sqsfifo.jobs.{{partition(2,1)}}.{{wildcard(1)}}"
    again = Plan.model_validate_json(document_json(plan))
    assert again.routes[0].durables == ["jobs-p0", "jobs-p1"]


@pytest.mark.parametrize("target", ["natscli", "nack", "terraform"])
def test_every_export_target_carries_the_transform(tmp_path: Path, target: str) -> None:
    """All three targets can express a stream subject transform (natscli's server JSON,
    NACK's `subjectTransform`, the provider's `subject_transform` block): no note needed."""
    result = export_plan(offline_plan(tmp_path, 4), target, bundle=True)
    text = "\n".join(f.text for f in result.files)
    assert "{{partition(4,1)}}" in text
    assert not [n for n in result.notes if "transform" in n.message]
    for i in range(4):
        assert f"jobs-p{i}" in text


def test_identities_grant_every_partition_durable(tmp_path: Path) -> None:
    """The queue's worker identity and the bridge may pull from every partition durable (and
    the worker from nothing else); the bridge's relay reads them all."""
    from snsq2nats.auth.identities import identities, pull_subjects
    from snsq2nats.auth.record import covers

    path = rules_file(
        tmp_path,
        {"overrides": [{"match": "jobs.fifo", "partitions": 3, "cutover": {"producers": "nats"}}]},
    )
    plan = assemble_plan(inventory(), load_rules([path]), None, server=ServerInfo(reachable=False))
    by_name = {i.name: i for i in identities(plan)}
    worker = by_name["sqsfifo_jobs-consumer"]
    for i in range(3):
        assert set(pull_subjects("sqsfifo_jobs", f"jobs-p{i}")) <= set(worker.publish)
    assert not [s for s in worker.publish if s.endswith(".sqsfifo_jobs.jobs")]
    bridge = next(i for i in by_name.values() if i.role == "bridge")
    for i in range(3):
        wanted = pull_subjects("sqsfifo_jobs", f"jobs-p{i}")
        assert all(any(covers(g, s) for g in bridge.publish) for s in wanted), wanted
