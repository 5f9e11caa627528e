"""What changes with the size of the estate: verify's sample and waves, bounded terminal output.

Speed itself is measured by `benchmarks/bench_estate.py` (10,000 queues); these tests pin the
behaviour that makes it possible.
"""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from snsq2nats.apply import apply_plan
from snsq2nats.cli import main
from snsq2nats.console import Output
from snsq2nats.files import document_json
from snsq2nats.inventory import Inventory, Queue, Subscription, Topic
from snsq2nats.jetstream.connect import NatsOptions, connect_nats
from snsq2nats.jetstream.spec import ServerInfo
from snsq2nats.plan.model import Plan, Resource
from snsq2nats.plan.pipeline import assemble_plan
from snsq2nats.plan.rules import load_rules
from snsq2nats.report.status import TABLE_ROWS, status_line, status_table
from snsq2nats.report.terminal import TERMINAL_ROWS, render_plan
from snsq2nats.status import RouteStatus, SqsBacklog
from snsq2nats.verify import _sampled, _topic_waves, spread

ACCOUNT, REGION = "123456789012", "eu-west-1"


def _inventory(queues: int, topics: int = 0, subscriptions: int = 0) -> Inventory:
    qs = [
        Queue(
            arn=f"arn:aws:sqs:{REGION}:{ACCOUNT}:q{i:04d}",
            name=f"q{i:04d}",
            url=f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/q{i:04d}",
            region=REGION,
            account=ACCOUNT,
        )
        for i in range(queues)
    ]
    ts = [
        Topic(
            arn=f"arn:aws:sns:{REGION}:{ACCOUNT}:t{i:03d}",
            name=f"t{i:03d}",
            region=REGION,
            account=ACCOUNT,
        )
        for i in range(topics)
    ]
    subs = [
        Subscription(
            arn=f"{ts[i % topics].arn}:s{i:04d}",
            topic_arn=ts[i % topics].arn,
            protocol="sqs",
            endpoint=qs[i % queues].arn,
            region=REGION,
            account=ACCOUNT,
            raw_message_delivery=True,
        )
        for i in range(subscriptions)
    ]
    return Inventory(
        generated_at="2026-01-01T00:00:00+00:00",
        regions=[REGION],
        queues=qs,
        topics=ts,
        subscriptions=subs,
    )


def _plan(inventory: Inventory) -> Plan:
    return assemble_plan(inventory, load_rules([]), None, server=ServerInfo(reachable=False))


# --- verify: which checks, in which order -----------------------------------------------------


def test_spread_is_even_and_stable() -> None:
    items = list(range(10))
    assert spread(items, 3) == [0, 3, 6]
    assert spread(items, 3) == spread(items, 3)
    assert spread(items, 10) == items and spread(items, 99) == items
    assert spread(items, 0) == []


def test_sample_keeps_the_proportion_and_one_of_each_kind() -> None:
    plan = _plan(_inventory(100, 10))
    queues = [r for r in plan.resources if r.kind == "sqs-queue"]
    topics = [r for r in plan.resources if r.kind == "sns-topic"]
    q, t = _sampled(queues, topics, 11)
    assert (len(q), len(t)) == (10, 1)
    assert q[0].name == "q0000" and q[-1].name == "q0090", "spread over the whole estate"
    q, t = _sampled(queues, topics, 1)
    assert (len(q), len(t)) == (1, 1)
    assert _sampled(queues, topics, None) == (queues, topics)
    assert _sampled(queues, topics, 500) == (queues, topics)


def test_topics_sharing_a_queue_are_checked_in_different_waves() -> None:
    inventory = _inventory(queues=4, topics=4, subscriptions=4)
    # Subscription i: topic i % 4 -> queue i % 4, so every topic has its own queue; add one
    # that makes t001 also feed q0000, the queue of t000.
    extra = Subscription(
        arn=f"{inventory.topics[1].arn}:extra",
        topic_arn=inventory.topics[1].arn,
        protocol="sqs",
        endpoint=inventory.queues[0].arn,
        region=REGION,
        account=ACCOUNT,
        raw_message_delivery=True,
    )
    plan = _plan(inventory.model_copy(update={"subscriptions": [*inventory.subscriptions, extra]}))
    topics: list[Resource] = [r for r in plan.resources if r.kind == "sns-topic"]
    waves, of_topic = _topic_waves(plan, topics)
    names = [[topics[i].name for i in wave] for wave in waves]
    assert names == [["t000", "t002", "t003"], ["t001"]]
    assert len(of_topic[topics[1].source_arn]) == 2


@pytest.fixture
def applied_estate(nats_server: Any, tmp_path: Path) -> tuple[Path, str, Plan]:
    """Twenty queues, three topics fanning out to them, applied to a real server."""
    plan = _plan(_inventory(queues=20, topics=3, subscriptions=20))
    plan_file = tmp_path / "plan.json"
    plan_file.write_bytes(document_json(plan))

    async def apply() -> None:
        nc = await connect_nats(NatsOptions(servers=[nats_server.url]), name="pytest apply")
        try:
            outcome = await apply_plan(nc, plan, allow_destructive=False)
            assert outcome.ok, outcome
        finally:
            await nc.close()

    asyncio.run(apply())
    return plan_file, nats_server.url, plan


def test_verify_sample_checks_that_many_and_still_sweeps(
    applied_estate: tuple[Path, str, Plan],
) -> None:
    plan_file, url, plan = applied_estate
    result = CliRunner().invoke(
        main,
        ["verify", "--plan", str(plan_file), "-s", url, "--json", "--sample", "5"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.stdout + result.stderr
    doc = json.loads(result.stdout)
    checked = {r["resource"] for r in doc["results"]}
    queues = {r for r in checked if r.startswith("q")}
    topics = checked & {"t000", "t001", "t002"}  # (their subscriptions are results too)
    assert (len(queues), len(topics)) == (4, 1), checked
    (cleanup,) = [r for r in doc["results"] if r["resource"] == "(verify)"]
    assert cleanup["result"] == "ok"
    assert f"message counts as before in {len(plan.streams)} stream(s)" in cleanup["detail"]


def test_verify_all_with_a_small_concurrency_checks_everything(
    applied_estate: tuple[Path, str, Plan],
) -> None:
    plan_file, url, _ = applied_estate
    result = CliRunner().invoke(
        main,
        ["verify", "--plan", str(plan_file), "-s", url, "--json", "--concurrency", "2"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.stdout + result.stderr
    doc = json.loads(result.stdout)
    checked = {r["resource"] for r in doc["results"]}
    assert {f"q{i:04d}" for i in range(20)} <= checked
    assert {"t000", "t001", "t002"} <= checked
    assert doc["counts"]["failed"] == 0


# --- terminal output stays readable -----------------------------------------------------------


def test_terminal_plan_lists_at_most_a_screenful_of_changes() -> None:
    plan = _plan(_inventory(queues=TERMINAL_ROWS))  # a stream and a durable each
    err = io.StringIO()
    render_plan(Output(err=err), plan)
    text = err.getvalue()
    shown = [line for line in text.splitlines() if line.startswith("  +  ")]
    assert len(shown) == TERMINAL_ROWS
    more = len(plan.pending) - TERMINAL_ROWS  # the queues' and the two state buckets'
    assert f"and {more} more changes not listed ({more} create)" in text
    # -v asks for everything.
    err = io.StringIO()
    render_plan(Output(err=err), plan, verbose=True)
    listed = [ln for ln in err.getvalue().splitlines() if ln.startswith("  +  ")]
    assert len(listed) == len(plan.pending)


def _route(i: int, drained: bool) -> RouteStatus:
    return RouteStatus(
        route=f"sqs:q{i:04d}",
        kind="sqs-to-nats",
        drained=drained,
        reason="SQS queue empty" if drained else "1 message(s) still in SQS",
        aws=SqsBacklog(queue=f"q{i:04d}", visible=0 if drained else 1),
    )


def test_status_table_lists_what_is_not_drained_first_and_counts_the_rest() -> None:
    statuses = [_route(i, drained=i != TABLE_ROWS + 10) for i in range(TABLE_ROWS + 50)]
    err = io.StringIO()
    Output(err=err).info(status_table(statuses))
    text = err.getvalue()
    assert text.index(f"sqs:q{TABLE_ROWS + 10:04d}") < text.index("sqs:q0000")
    assert "50 more route(s) not listed (50 drained, 0 not)" in text
    assert f"sqs:q{TABLE_ROWS + 49:04d}" not in text
    waiting = [_route(i, drained=False) for i in range(30)]
    assert status_line(waiting).endswith("q0019 and 10 more")


def test_files_are_written_as_the_models_render_them(tmp_path: Path) -> None:
    from snsq2nats.files import write_atomic

    inventory = _inventory(queues=3, topics=1, subscriptions=3)
    plan = _plan(inventory)
    for doc in (plan, inventory):
        assert document_json(doc) == (doc.model_dump_json(indent=2) + "\n").encode()
        assert json.loads(document_json(doc)) == doc.to_json()
    target = tmp_path / "plan.json"
    write_atomic(target, "é" * 3_000_000)  # more than one chunk, a character on a boundary
    assert target.read_text(encoding="utf-8") == "é" * 3_000_000
