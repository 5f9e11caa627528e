"""Every command that lists JetStream objects sees past the first API page.

The shop estate is applied, then pushed off the first pages by foreign objects that sort before
it: 1,100 streams (STREAM.LIST pages at 256 infos, STREAM.NAMES at 1,024 names) and 300
consumers on the advisory stream that holds the plan's DLQ-mover consumers (CONSUMER.LIST pages
at 256). A reader that stopped at page one would see the plan's objects as missing: plan would
want to create them, status would call routes broken, verify would compare fewer streams and
the bridge would refuse to start.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from snsq2nats import status as status_lib
from snsq2nats.apply import apply_plan
from snsq2nats.cli import main
from snsq2nats.demo.estate import seed_shop
from snsq2nats.demo.nats_server import NatsServer
from snsq2nats.jetstream.api import api
from snsq2nats.jetstream.connect import NatsOptions, connect_nats
from snsq2nats.plan.model import Plan, load_plan
from tests.fixtures.aws import AwsEndpoint, point_at, reset

CUTOVER = """
overrides:
  - match: "orders-billing"
    cutover: {consumers: nats}
  - match: "orders-shipping"
    cutover: {producers: nats, consumers: aws}
"""
FOREIGN_STREAMS = 1100  # more than one page of names (1,024), four of infos (256)
FOREIGN_CONSUMERS = 300  # more than one page of consumer infos (256)
ADVISORIES = "snsq2nats_advisories"


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


async def _crowd(url: str) -> None:
    nc = await connect_nats(NatsOptions(servers=[url]), name="pytest crowd")
    gate = asyncio.Semaphore(32)

    async def one(subject: str, body: dict[str, Any]) -> None:
        async with gate:
            await api(nc, subject, body, 30.0)

    try:
        # "A…" sorts before every name the plan gives ("KV_", "sns_", "sqs_", "snsq2nats_").
        await asyncio.gather(
            *(
                one(
                    f"$JS.API.STREAM.CREATE.A{i:04d}",
                    {"name": f"A{i:04d}", "subjects": [f"foreign.A{i:04d}"], "storage": "memory"},
                )
                for i in range(FOREIGN_STREAMS)
            ),
            *(
                one(
                    f"$JS.API.CONSUMER.CREATE.{ADVISORIES}.a{i:03d}",
                    {
                        "stream_name": ADVISORIES,
                        "config": {"durable_name": f"a{i:03d}", "ack_policy": "explicit"},
                    },
                )
                for i in range(FOREIGN_CONSUMERS)
            ),
        )
        # Otherwise this no longer tests paging: the plan's objects are past the first pages.
        infos = await api(nc, "$JS.API.STREAM.LIST", {"offset": 0})
        assert all(s["config"]["name"].startswith("A") for s in infos["streams"])
        names = await api(nc, "$JS.API.STREAM.NAMES", {"offset": 0})
        assert all(n.startswith("A") for n in names["streams"])
        assert names["total"] > len(names["streams"])
        consumers = await api(nc, f"$JS.API.CONSUMER.LIST.{ADVISORIES}", {"offset": 0})
        assert all(c["name"].startswith("a") for c in consumers["consumers"])
        assert consumers["total"] > len(consumers["consumers"])
    finally:
        await nc.close()


@pytest.fixture(scope="module")
def crowded_server() -> Iterator[NatsServer]:
    """The server the module's tests share: crowding it takes 1,400 API calls, made once."""
    with NatsServer(name="crowded") as server:
        yield server


@pytest.fixture(scope="module")
def crowded_estate(
    moto_server: str, crowded_server: NatsServer, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path, str, Plan]:
    """(mapping, plan file, NATS URL, plan): the shop planned and applied, then crowded."""
    directory = tmp_path_factory.mktemp("crowded")
    rules = directory / "cutover.yaml"
    rules.write_text(CUTOVER)
    plan_file = directory / "plan.json"
    url = crowded_server.url
    with pytest.MonkeyPatch.context() as monkeypatch:
        aws = point_at(moto_server, monkeypatch)
        seed_shop(aws.client("sqs"), aws.client("sns"))
        result = invoke("plan", "--mapping", str(rules), "-s", url, "-o", str(plan_file))
    reset(moto_server)
    assert result.exit_code == 0, result.stderr
    plan = load_plan(plan_file)
    assert any(c.stream_name == ADVISORIES for c in plan.consumers)

    async def apply() -> None:
        nc = await connect_nats(NatsOptions(servers=[url]), name="pytest apply")
        try:
            outcome = await apply_plan(nc, plan, allow_destructive=False)
            assert outcome.ok, outcome
        finally:
            await nc.close()

    asyncio.run(apply())
    asyncio.run(_crowd(url))
    return rules, plan_file, url, plan


@pytest.fixture
def crowded(
    aws: AwsEndpoint, crowded_estate: tuple[Path, Path, str, Plan]
) -> tuple[Path, Path, str, Plan]:
    """The crowded estate, with the shop seeded afresh in this test's clean AWS account (the
    same names, so the same ARNs and URLs the plan holds): no test sees another's SQS traffic.
    The tests only read the crowded server (verify's canaries are cleaned up, a bridge run
    leaves the fleet), so its state is the same for each."""
    seed_shop(aws.client("sqs"), aws.client("sns"))
    return crowded_estate


def test_live_plan_and_apply_see_every_page(crowded: tuple[Path, Path, str, Plan]) -> None:
    rules, _, url, _ = crowded
    replan = invoke("plan", "--mapping", str(rules), "-s", url, "--detailed-exitcode", "--json")
    assert replan.exit_code == 0, replan.stderr
    doc = json.loads(replan.stdout)
    assert {c["action"] for c in doc["changes"]} == {"noop"}
    managed = [c for c in doc["changes"] if c["type"] == "consumer" and c["stream"] == ADVISORIES]
    assert managed and all(c["reason"] == "up to date" for c in managed)

    applied = invoke("apply", "--mapping", str(rules), "-s", url, "--auto-approve")
    assert applied.exit_code == 0, applied.stderr
    assert "No changes" in applied.stderr


@pytest.mark.parametrize("listed", [True, False], ids=["paged-listing", "info-per-stream"])
def test_status_sees_every_page(
    crowded: tuple[Path, Path, str, Plan], listed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, plan_file, url, plan = crowded
    # The shop has few routes, which status reads one INFO (and GetQueueUrl) each; from this
    # many on, it lists streams (and queues) instead.
    monkeypatch.setattr(status_lib, "LIST_STREAMS_FROM", 1 if listed else 10_000)
    monkeypatch.setattr(status_lib, "LIST_QUEUES_FROM", 1 if listed else 10_000)
    result = invoke("status", "--plan", str(plan_file), "-s", url, "--json")
    assert result.exit_code == 0, result.stdout + result.stderr
    routes = json.loads(result.stdout)["routes"]
    assert len(routes) == len(plan.routes)
    assert all(r["nats"] is None or r["nats"]["exists"] for r in routes), routes
    by_name = {r["route"]: r for r in routes}
    assert by_name["to-sqs:orders-shipping"]["aws"]["exists"] is True
    # The bridge creates an SNS route's queue when it starts: none yet.
    assert by_name["sns:orders"]["aws"]["exists"] is False


def test_verify_compares_every_stream(crowded: tuple[Path, Path, str, Plan]) -> None:
    _, plan_file, url, plan = crowded
    result = invoke("verify", "--plan", str(plan_file), "-s", url, "--json")
    assert result.exit_code == 0, result.stdout + result.stderr
    doc = json.loads(result.stdout)
    (cleanup,) = [r for r in doc["results"] if r["check"] == "no canary left behind"]
    assert cleanup["result"] == "ok"
    assert f"message counts as before in {len(plan.streams)} stream(s)" in cleanup["detail"]


def test_bridge_start_check_sees_every_page(crowded: tuple[Path, Path, str, Plan]) -> None:
    _, plan_file, url, _ = crowded
    result = invoke(
        "bridge",
        "--plan",
        str(plan_file),
        "-s",
        url,
        "--route",
        "to-sqs:orders-shipping",
        "--duration",
        "0.5",
        "--poll-wait",
        "1",
    )
    assert result.exit_code == 0, result.stderr
    assert "do not exist" not in result.stderr


def test_status_from_listed_queues_counts_the_backlog(
    crowded: tuple[Path, Path, str, Plan], aws: AwsEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, plan_file, url, _ = crowded
    monkeypatch.setattr(status_lib, "LIST_STREAMS_FROM", 1)
    monkeypatch.setattr(status_lib, "LIST_QUEUES_FROM", 1)
    sqs = aws.client("sqs")
    queue_url = sqs.get_queue_url(QueueName="orders-billing")["QueueUrl"]
    sqs.send_message(QueueUrl=queue_url, MessageBody="order 1")
    result = invoke("status", "--plan", str(plan_file), "-s", url, "--json")
    assert result.exit_code == 1, result.stdout + result.stderr
    by_name = {r["route"]: r for r in json.loads(result.stdout)["routes"]}
    billing = by_name["sqs:orders-billing"]
    assert billing["drained"] is False and billing["aws"]["visible"] == 1
