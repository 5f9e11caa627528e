"""The migration runbook: the order of the moves, what each team changes, the progress marks.

The estate: a topic `orders` with two raw-delivery queues (`billing`, filtered, with the
dead-letter queue `billing-dlq`; `shipping`) that fans out through stream sources; a topic
`alerts` with an https subscriber next to its queue `audit` (so it fans out through SNS); a
partitioned FIFO queue `jobs.fifo` with its own FIFO DLQ; and a lone queue `reports`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from snsq2nats.cli import main
from snsq2nats.cutover.moves import Blocker, BlockerKind, TeamKind, plan_finish, plan_moves
from snsq2nats.cutover.runbook import GateKind, Runbook, Step, make_runbook
from snsq2nats.demo.nats_server import NatsServer
from snsq2nats.files import document_json
from snsq2nats.inventory import Inventory, Queue, RedrivePolicy, Subscription, Topic
from snsq2nats.jetstream.spec import ServerInfo
from snsq2nats.plan.model import Plan
from snsq2nats.plan.pipeline import assemble_plan
from snsq2nats.plan.rules import Cutover, Override, Rules
from snsq2nats.plan.states import CutoverRecord
from snsq2nats.report.cutover import team_step_text
from snsq2nats.report.runbook import (
    WordedStep,
    runbook_json,
    runbook_markdown,
    runbook_table,
    worded,
)

ACCOUNT, REGION = "123456789012", "us-east-1"


def qarn(name: str) -> str:
    return f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}"


def tarn(name: str) -> str:
    return f"arn:aws:sns:{REGION}:{ACCOUNT}:{name}"


def queue(name: str, **kw: Any) -> Queue:
    return Queue(
        arn=qarn(name),
        name=name,
        url=f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{name}",
        region=REGION,
        account=ACCOUNT,
        fifo=name.endswith(".fifo"),
        **kw,
    )


def topic(name: str) -> Topic:
    return Topic(arn=tarn(name), name=name, region=REGION, account=ACCOUNT)


def sub(topic_name: str, sid: str, endpoint: str, protocol: str = "sqs", **kw: Any) -> Subscription:
    return Subscription(
        arn=f"{tarn(topic_name)}:{sid}",
        topic_arn=tarn(topic_name),
        protocol=protocol,
        endpoint=endpoint,
        region=REGION,
        account=ACCOUNT,
        **kw,
    )


def estate() -> Inventory:
    return Inventory(
        generated_at="2026-11-01T00:00:00+00:00",
        regions=[REGION],
        queues=[
            queue("billing-dlq"),
            queue(
                "billing",
                redrive_policy=RedrivePolicy(
                    dead_letter_target_arn=qarn("billing-dlq"), max_receive_count=3
                ),
            ),
            queue("shipping"),
            queue("audit"),
            queue("jobs-dlq.fifo"),
            queue(
                "jobs.fifo",
                content_based_deduplication=True,
                redrive_policy=RedrivePolicy(dead_letter_target_arn=qarn("jobs-dlq.fifo")),
            ),
            queue("reports"),
        ],
        topics=[topic("orders"), topic("alerts")],
        subscriptions=[
            sub(
                "orders",
                "s-billing",
                qarn("billing"),
                raw_message_delivery=True,
                filter_policy=json.dumps({"event_type": ["order_placed"]}),
            ),
            sub("orders", "s-shipping", qarn("shipping"), raw_message_delivery=True),
            sub("alerts", "s-audit", qarn("audit"), raw_message_delivery=True),
            sub("alerts", "s-hook", "https://hooks.example.com/alerts", protocol="https"),
        ],
    )


RULES = Rules(overrides=[Override(match="jobs.fifo", partitions=2)])


def make_plan(inventory: Inventory | None = None, rules: Rules = RULES) -> Plan:
    return assemble_plan(
        inventory or estate(),
        rules,
        None,
        server=ServerInfo(reachable=False, version="2.12.0"),
    )


@pytest.fixture(scope="module")
def plan() -> Plan:
    return make_plan()


def moves_of(book: Runbook) -> list[tuple[str, str, str | None]]:
    return [(s.resource, s.action, s.to) for s in book.steps]


def step(book: Runbook, resource: str, action: str, to: str | None = None) -> Step:
    (found,) = [
        s for s in book.steps if (s.resource, s.action) == (resource, action) and s.to == to
    ]
    return found


def words(book: Runbook, resource: str, action: str, to: str | None = None) -> WordedStep:
    """The step as people read it (`report.runbook` words the planner's data)."""
    return worded(step(book, resource, action, to))


def record(plan: Plan, name: str, **state: Any) -> CutoverRecord:
    resource = next(r for r in plan.resources if r.name == name and r.kind != "sns-subscription")
    return CutoverRecord(
        arn=resource.source_arn,
        kind="queue" if resource.kind == "sqs-queue" else "topic",
        name=name,
        state=Cutover(**state),
        revision=1,
    )


# --- the order ------------------------------------------------------------------------------------


def test_the_estate_moves_topic_by_topic_consumers_first_then_producers_then_finish(
    plan: Plan,
) -> None:
    book = make_runbook(plan)
    assert [g.title for g in book.groups] == [
        "topic alerts",
        "topic orders",
        "queue jobs.fifo",
        "queue reports",
    ]
    assert moves_of(book) == [
        # alerts: its queue's consumers, its producers, the queue's producers, finish.
        ("audit", "consumers", "nats"),
        ("alerts", "producers", "both"),
        ("alerts", "producers", "nats"),
        ("audit", "producers", "nats"),
        ("audit", "finish", None),
        ("alerts", "finish", None),
        # orders: both queues' consumers (the DLQ right after its queue) before the topic's
        # producers; the DLQ finishes after its queue.
        ("billing", "consumers", "nats"),
        ("billing-dlq", "consumers", "nats"),
        ("shipping", "consumers", "nats"),
        ("orders", "producers", "both"),
        ("orders", "producers", "nats"),
        ("billing", "producers", "nats"),
        ("billing-dlq", "producers", "nats"),
        ("shipping", "producers", "nats"),
        ("billing", "finish", None),
        ("billing-dlq", "finish", None),
        ("shipping", "finish", None),
        ("orders", "finish", None),
        # a queue no topic feeds: consumers, producers, finish; its DLQ with it.
        ("jobs.fifo", "consumers", "nats"),
        ("jobs-dlq.fifo", "consumers", "nats"),
        ("jobs.fifo", "producers", "nats"),
        ("jobs-dlq.fifo", "producers", "nats"),
        ("jobs.fifo", "finish", None),
        ("jobs-dlq.fifo", "finish", None),
        ("reports", "consumers", "nats"),
        ("reports", "producers", "nats"),
        ("reports", "finish", None),
    ]
    assert [s.number for s in book.steps] == list(range(1, len(book.steps) + 1))
    assert step(book, "billing-dlq", "consumers", "nats").dead_letter_of == "billing"
    assert words(book, "billing-dlq", "consumers", "nats").role == "dead-letter queue of billing"


def test_each_step_is_the_exact_command(plan: Plan) -> None:
    book = make_runbook(plan)
    assert step(book, "shipping", "consumers", "nats").command == (
        "snsq2nats cutover consumers shipping --to nats --wait"
    )
    assert step(book, "orders", "producers", "both").command == (
        "snsq2nats cutover producers orders --to both"
    )
    assert step(book, "orders", "producers", "nats").command == (
        "snsq2nats cutover producers orders --to nats"
    )
    assert step(book, "billing", "finish").command == "snsq2nats cutover finish billing --wait"
    assert step(book, "orders", "finish").command == "snsq2nats cutover finish orders"
    assert step(book, "jobs.fifo", "finish").command == "snsq2nats cutover finish jobs.fifo --wait"


def test_every_command_is_a_move_cutover_accepts_in_that_order(plan: Plan) -> None:
    """Replay the runbook through `cutover.moves` as `snsq2nats cutover` would, recording as it
    goes: no step is refused, and every move changes something."""
    records: dict[str, CutoverRecord] = {}
    for s in make_runbook(plan).steps:
        if s.command is None:
            continue
        if s.action == "finish":
            (move,) = plan_finish(plan, records, [s.arn])
        else:
            assert s.to is not None
            (move,) = plan_moves(plan, records, s.action, [s.arn], s.to)
        assert move.changed, s.title
        records[s.arn] = CutoverRecord(arn=s.arn, kind=s.kind, name=s.resource, state=move.after)
    assert records[qarn("billing")].state.finished
    assert records[tarn("orders")].state.finished


def test_a_topic_fanning_out_through_sns_cannot_be_finished_and_says_why(plan: Plan) -> None:
    book = make_runbook(plan)
    alerts = step(book, "alerts", "finish")
    assert alerts.command is None and alerts.status == "blocked"
    assert [b.kind for b in alerts.blocked] == [BlockerKind.SNS_ONLY_SUBSCRIPTION]
    assert "served by SNS only" in (worded(alerts).blocked or "")
    audit = step(book, "audit", "finish")
    assert audit.command is None
    # The planner says why as data; the report words it.
    assert audit.blocked == [Blocker(BlockerKind.TOPIC_FANS_OUT, "alerts")]
    assert worded(audit).blocked == "topic alerts delivers into it through SNS"
    # What would unblock it: the Fanout note's manual step and the https subscriber's.
    assert any("stream sources" in c for c in worded(audit).changes)
    assert any("https://hooks.example.com/alerts" in c for c in worded(alerts).changes)
    # The topic fanning out through stream sources finishes.
    assert step(book, "orders", "finish").blocked == []
    assert words(book, "orders", "finish").blocked is None


def test_a_dlq_cannot_finish_before_its_queue(plan: Plan) -> None:
    inventory = estate()
    inventory = inventory.model_copy(
        update={
            "subscriptions": [
                *inventory.subscriptions,
                sub("orders", "s-hook", "https://hooks.example.com/orders", protocol="https"),
            ]
        }
    )
    book = make_runbook(make_plan(inventory))
    assert step(book, "billing", "finish").blocked
    dlq = step(book, "billing-dlq", "finish")
    assert dlq.command is None
    assert dlq.blocked == [Blocker(BlockerKind.SOURCE_NOT_FINISHED, "billing")]
    assert "billing is not finished" in (worded(dlq).blocked or "")


def test_gates_name_the_steps_before_them(plan: Plan) -> None:
    book = make_runbook(plan)
    numbers = {(s.resource, s.action, s.to): s.number for s in book.steps}
    both = step(book, "orders", "producers", "both")
    consumers = sorted(
        numbers[(q, "consumers", "nats")] for q in ("billing", "billing-dlq", "shipping")
    )
    # The topic's queues (not the DLQ, which the topic does not feed) read on NATS first.
    assert both.gate.kind == GateKind.TOPIC_QUEUES_ON_NATS
    assert both.gate.steps == [
        numbers[("billing", "consumers", "nats")],
        numbers[("shipping", "consumers", "nats")],
    ]
    assert worded(both).gate.startswith(
        f"steps {numbers[('billing', 'consumers', 'nats')]} and "
        f"{numbers[('shipping', 'consumers', 'nats')]} are done"
    )
    assert consumers[1] == numbers[("billing", "consumers", "nats")] + 1
    finish = words(book, "billing", "finish")
    assert "`snsq2nats status --route sqs:billing` shows it drained" in finish.gate
    assert words(book, "billing-dlq", "finish").gate.startswith(
        f"step {numbers[('billing', 'finish', None)]} is done"
    )
    assert "`snsq2nats status --route sns:orders`" in words(book, "orders", "finish").gate


# --- what the team changes ------------------------------------------------------------------------


def test_consumers_bind_the_durable_and_producers_publish_to_the_subject(plan: Plan) -> None:
    book = make_runbook(plan)
    shipping = words(book, "shipping", "consumers", "nats")
    assert shipping.changes[0].startswith(
        "bind the workers to the durable `shipping` on stream `sqs_shipping`"
    )
    assert any(
        "stop them when `--wait` reports the SQS queue drained" in c for c in shipping.changes
    )
    orders = words(book, "orders", "producers", "both")
    # billing's filter promotes event_type into the subject.
    assert orders.changes[0] == (
        "publish to `sns.orders.<event_type>` (`snsq2nats subject orders` prints the concrete "
        "subject, filling `--attr event_type=…`)"
    )
    assert any("NATS header" in c for c in orders.changes)
    # The second producers move changes nothing in the code: only where they publish.
    assert not any("publish to `" in c for c in words(book, "orders", "producers", "nats").changes)


def test_a_moves_team_steps_are_data_the_report_words(plan: Plan) -> None:
    """`cutover.moves` says what the team does as a kind and its facts; `report.cutover` words
    it (the same words `cutover` printed before)."""
    (move,) = plan_moves(plan, {}, "consumers", ["shipping"], "nats")
    first = move.steps[0]
    assert (first.kind, first.durable, first.stream) == (
        TeamKind.START_NATS_WORKERS,
        "shipping",
        "sqs_shipping",
    )
    assert team_step_text(first).startswith(
        "start shipping's workers on NATS: bind to the durable `shipping` on stream `sqs_shipping`"
    )
    (again,) = plan_moves(plan, {}, "consumers", ["shipping"], "aws")
    assert [s.kind for s in again.steps] == [TeamKind.ALREADY_THERE]
    assert team_step_text(again.steps[0]) == (
        "nothing to do: shipping's consumers are already on aws"
    )


def test_every_manual_step_of_the_plan_is_in_the_runbook(plan: Plan) -> None:
    book = make_runbook(plan)
    text = "\n".join(c for s in book.steps for c in worded(s).changes)
    manual = {f.manual_step for r in plan.resources for f in r.fidelity if f.manual_step}
    assert manual, "the estate has manual steps"
    assert {m for m in manual if m not in text} == set()


def test_a_fifo_queue_carries_its_ordering_caveat_and_partitions(plan: Plan) -> None:
    book = make_runbook(plan)
    consumers = words(book, "jobs.fifo", "consumers", "nats")
    assert any("per-group order" in c for c in consumers.caveats)
    assert any(c.startswith("partitioned into 2") for c in consumers.caveats)
    assert "`jobs-p0`, `jobs-p1`" in consumers.changes[0]
    producers = words(book, "jobs.fifo", "producers", "nats")
    assert any("AWS producers must be stopped first" in c for c in producers.caveats)
    command = step(book, "jobs.fifo", "producers", "nats").command
    assert command == "snsq2nats cutover producers jobs.fifo --to nats --wait"
    assert any("Nats-Msg-Id" in c for c in producers.changes)
    assert any("MessageGroupId" in c for c in producers.changes)
    assert step(book, "reports", "consumers", "nats").caveats == []


def test_a_name_shared_by_a_queue_and_a_topic_is_given_as_its_arn() -> None:
    inventory = Inventory(
        generated_at="2026-11-01T00:00:00+00:00",
        regions=[REGION],
        queues=[queue("events")],
        topics=[topic("events")],
        subscriptions=[sub("events", "s1", qarn("events"), raw_message_delivery=True)],
    )
    book = make_runbook(make_plan(inventory, Rules()))
    commands = [s.command for s in book.steps]
    assert f"snsq2nats cutover consumers {qarn('events')} --to nats --wait" in commands
    assert f"snsq2nats cutover producers {tarn('events')} --to both" in commands


# --- the third way: change the endpoint, no code change ----------------------------------------


def test_every_consumers_and_producers_move_names_the_gateway_option(plan: Plan) -> None:
    """Each move an application makes can be made by pointing it at the gateway: the env var
    and the key of the identity `auth` generates for that queue's consumer or producer (or the
    topic's publisher), the same name `auth` gives it."""
    from snsq2nats.auth.identities import identities

    generated = {(i.role, i.serves): i.name for i in identities(plan)}
    book = make_runbook(plan)
    seen = 0
    for s in book.steps:
        option = s.gateway
        if s.action == "finish" or (s.dead_letter_of and s.action == "producers"):
            # Nothing to point anywhere: a finish moves no application, and a DLQ's only
            # producer is the bridge's DLQ mover.
            assert option is None, s.title
            continue
        assert option is not None, s.title
        seen += 1
        team = option.step
        if s.action == "consumers":
            role, env = "consumer", "AWS_ENDPOINT_URL_SQS"
        elif s.kind == "queue":
            role, env = "producer", "AWS_ENDPOINT_URL_SQS"
        else:
            role, env = "publisher", "AWS_ENDPOINT_URL_SNS"
        assert (team.env, team.identity) == (env, generated[(role, s.arn)]), s.title
        text = words(book, s.resource, s.action, s.to).gateway or ""
        assert f"`{env}`" in text and f"`{team.identity}`" in text
        assert "`gateway-keys.json`" in text
    assert seen == 16


def test_the_gateway_option_says_when_it_is_safe_and_why_not_before(plan: Plan) -> None:
    book = make_runbook(plan)
    shipping = step(book, "shipping", "consumers", "nats")
    text = words(book, "shipping", "consumers", "nats").gateway or ""
    assert "they read the durable `shipping` as NATS workers do" in text
    assert "workers still on SQS and workers on the gateway share the queue's messages, " in text
    assert "each message once" in text
    assert (
        "Safe once the bridges confirm this move, not before: until the queue's consumers move"
        in text
    )
    assert shipping.gateway is not None and shipping.gateway.since == shipping.number
    assert not shipping.gateway.ready

    producers = words(book, "shipping", "producers", "nats").gateway or ""
    assert "published to `sqs.shipping` as a NATS producer publishes it" in producers
    assert (
        "Safe once the bridges confirm this move, not before: until the queue's producers move"
        in producers
    )

    # A topic's producers publish on NATS from their move to both sides on.
    both = step(book, "orders", "producers", "both")
    nats = step(book, "orders", "producers", "nats")
    assert "not before: until the topic's producers move" in (worded(both).gateway or "")
    assert "Safe already" in (worded(nats).gateway or "")
    assert nats.gateway is not None and nats.gateway.since == both.number

    # The marks follow the live state: ready once the move that makes it safe is recorded.
    records = {
        r.arn: r
        for r in [
            record(plan, "shipping", consumers="nats"),
            record(plan, "orders", producers="both"),
        ]
    }
    live = make_runbook(plan, records)
    ready = {(s.resource, s.action, s.to) for s in live.steps if s.gateway and s.gateway.ready}
    assert ready == {
        ("shipping", "consumers", "nats"),
        ("orders", "producers", "both"),
        ("orders", "producers", "nats"),
    }


def test_a_fifo_queues_gateway_option_says_what_order_a_mixed_fleet_keeps(plan: Plan) -> None:
    book = make_runbook(plan)
    workers = words(book, "jobs.fifo", "consumers", "nats").gateway or ""
    assert "the partition durables `jobs-p0`, `jobs-p1`" in workers
    assert "FIFO: each message group keeps its order across the mixed fleet" in workers
    producers = words(book, "jobs.fifo", "producers", "nats").gateway or ""
    assert "no mixed fleet for a group" in producers
    assert "once `--wait` returned" in producers
    assert "FIFO" not in (words(book, "reports", "consumers", "nats").gateway or "")


def test_a_fifo_topics_publishers_move_to_the_gateway_together() -> None:
    inventory = Inventory(
        generated_at="2026-11-01T00:00:00+00:00",
        regions=[REGION],
        queues=[queue("ledger.fifo")],
        topics=[topic("events.fifo").model_copy(update={"fifo": True})],
        subscriptions=[sub("events.fifo", "s1", qarn("ledger.fifo"), raw_message_delivery=True)],
    )
    book = make_runbook(make_plan(inventory, Rules()))
    both = words(book, "events.fifo", "producers", "both").gateway or ""
    assert "`AWS_ENDPOINT_URL_SNS`" in both
    assert "no mixed fleet for a message group: move a group's publishers together" in both


def test_moving_back_takes_the_gateways_applications_back_with_the_nats_ones(plan: Plan) -> None:
    there = {r.arn: r for r in [record(plan, "shipping", consumers="nats", producers="nats")]}
    (workers,) = plan_moves(plan, there, "consumers", ["shipping"], "aws")
    assert workers.steps[-1].kind == TeamKind.GATEWAY_WORKERS_BACK
    assert "unset `AWS_ENDPOINT_URL_SQS`" in team_step_text(workers.steps[-1])
    (producers,) = plan_moves(plan, there, "producers", ["shipping"], "aws")
    assert producers.steps[-1].kind == TeamKind.GATEWAY_PRODUCERS_BACK
    # Nothing moves, nothing to say about the gateway.
    (same,) = plan_moves(plan, {}, "producers", ["shipping"], "aws")
    assert [s.kind for s in same.steps] == [TeamKind.ALREADY_THERE]


def test_the_gateway_option_in_json_markdown_and_the_table(plan: Plan) -> None:
    from rich.console import Console

    records = {r.arn: r for r in [record(plan, "billing", consumers="nats")]}
    book = make_runbook(plan, records)
    doc = runbook_json(book)
    by_title = {(s["resource"], s["action"], s["to"]): s for g in doc["groups"] for s in g["steps"]}
    billing = by_title[("billing", "consumers", "nats")]
    assert billing["gateway"] == {
        "kind": "gateway-workers",
        "env": "AWS_ENDPOINT_URL_SQS",
        "identity": "sqs_billing-consumer",
        "keys_file": "gateway-keys.json",
        "text": words(book, "billing", "consumers", "nats").gateway,
        "safe_from_step": billing["number"],
        "ready": True,
    }
    assert by_title[("billing", "producers", "nats")]["gateway"]["ready"] is False
    assert by_title[("billing", "finish", None)]["gateway"] is None
    # The gateway option is its own field: the team's changes and caveats stay as they were.
    assert not any("gateway" in c for s in book.steps for c in worded(s).changes)

    md = runbook_markdown(book)
    number = billing["number"]
    section = md[md.index(f"### {number}. ") : md.index(f"### {number + 1}. ")]
    assert "**Or change the endpoint, no code change (ready now):**" in section
    assert (
        "- or move the workers without changing their code: set `AWS_ENDPOINT_URL_SQS`" in section
    )
    assert md.count("**Or change the endpoint, no code change") == 16
    assert "|" not in md.replace("\\|", "")

    console = Console(width=320, record=True)
    console.print(runbook_table(book))
    text = console.export_text()
    assert "AWS_ENDPOINT_URL_SQS, key of sqs_billing-consumer: ready now" in text
    orders_both = by_title[("orders", "producers", "both")]["number"]
    assert (
        f"AWS_ENDPOINT_URL_SNS, key of sns_orders-publisher: once step {orders_both} is done"
        in text
    )


# --- progress -------------------------------------------------------------------------------------


def test_recorded_moves_are_marked_done(plan: Plan) -> None:
    records = {
        r.arn: r
        for r in [
            record(plan, "billing", consumers="nats"),
            record(plan, "orders", producers="both"),
            # Moved to NATS and back again: not done.
            record(plan, "shipping", consumers="aws"),
            record(plan, "reports", producers="nats", consumers="nats", finished=True),
        ]
    }
    book = make_runbook(plan, records)
    done = {(s.resource, s.action, s.to) for s in book.steps if s.status == "done"}
    assert done == {
        ("billing", "consumers", "nats"),
        ("orders", "producers", "both"),
        ("reports", "consumers", "nats"),
        ("reports", "producers", "nats"),
        ("reports", "finish", None),
    }
    assert step(book, "orders", "producers", "nats").status == "todo"
    assert step(book, "alerts", "finish").status == "blocked"
    assert book.counts() == {"done": 5, "todo": 20, "blocked": 2}
    assert book.progress_source == "the live cutover state"


def test_without_records_the_marks_follow_the_plans_own_state() -> None:
    rules = RULES.model_copy(
        update={
            "overrides": [
                *RULES.overrides,
                Override(match="shipping", cutover=Cutover(consumers="nats")),
            ]
        }
    )
    book = make_runbook(make_plan(rules=rules))
    assert book.progress_source == "the plan's own cutover state"
    assert [s.title for s in book.steps if s.status == "done"] == ["shipping: consumers → NATS"]


# --- rendering ------------------------------------------------------------------------------------


def test_json_has_stable_keys_and_round_trips(plan: Plan) -> None:
    book = make_runbook(plan, {}, notes=["a note"])
    doc = json.loads(json.dumps(runbook_json(book)))
    assert list(doc) == [
        "format_version",
        "plan_generated_at",
        "progress_source",
        "notes",
        "counts",
        "groups",
    ]
    assert doc["notes"] == ["a note"]
    first = doc["groups"][0]["steps"][0]
    assert list(first) == [
        "number",
        "resource",
        "arn",
        "kind",
        "action",
        "to",
        "command",
        "gate",
        "changes",
        "caveats",
        "role",
        "blocked",
        "status",
        "gateway",
    ]
    assert first["command"] == "snsq2nats cutover consumers audit --to nats --wait"
    assert sum(doc["counts"].values()) == sum(len(g["steps"]) for g in doc["groups"])


def test_markdown_lists_every_step_with_its_mark_command_gate_and_changes(plan: Plan) -> None:
    records = {r.arn: r for r in [record(plan, "billing", consumers="nats")]}
    book = make_runbook(plan, records)
    md = runbook_markdown(book)
    assert md.startswith("# snsq2nats runbook\n")
    assert "**1 of 27 steps done, 2 blocked (progress from the live cutover state).**" in md
    billing = step(book, "billing", "consumers", "nats")
    assert f"  - [x] {billing.number}. `billing`: consumers → NATS — `{billing.command}`" in md
    assert f"### {billing.number}. `billing`: consumers → NATS (done)" in md
    for s in book.steps:
        assert f"### {s.number}. " in md
        if s.command:
            assert f"```sh\n{s.command}\n```" in md
        else:
            assert "**Blocked:** " in md
    assert md.count("**Gate:**") == len(book.steps)
    assert "- bind the workers to the durable `shipping` on stream `sqs_shipping` (pull" in md
    assert "> **Caveat:** FIFO: per-group order" in md
    # Nothing generated opens emphasis or a table by accident.
    assert "**The team:**" in md and "|" not in md.replace("\\|", "")


def test_terminal_table_has_a_row_per_step(plan: Plan) -> None:
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(runbook_table(make_runbook(plan)))
    text = console.export_text()
    assert "snsq2nats cutover consumers audit --to nats --wait" in text
    assert "blocked: topic alerts delivers into it through SNS" in text
    assert "0 of 27 steps done, 2 blocked" in text


# --- the command against a real server ------------------------------------------------------------


def cli(*args: str | Path) -> Any:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def test_runbook_command_shows_a_recorded_move_done(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    inventory, plan_path = tmp_path / "inventory.json", tmp_path / "plan.json"
    inventory.write_bytes(document_json(estate()))
    url = nats_server.url
    cli("plan", "--inventory", inventory, "-s", url, "-o", plan_path)
    cli("apply", plan_path, "-s", url, "--auto-approve")

    before = json.loads(cli("runbook", "--plan", plan_path, "-s", url, "--json").stdout)
    assert before["counts"]["done"] == 0 and before["notes"] == []

    # No bridge runs here: the moves are recorded ahead of one.
    for move in (("consumers", "billing", "nats"), ("producers", "orders", "both")):
        side, name, to = move
        cli("cutover", side, name, "--to", to, "--record-only", "--plan", plan_path, "-s", url)

    doc = json.loads(cli("runbook", "--plan", plan_path, "-s", url, "--json").stdout)
    done = [
        (s["resource"], s["action"], s["to"])
        for g in doc["groups"]
        for s in g["steps"]
        if s["status"] == "done"
    ]
    assert done == [("billing", "consumers", "nats"), ("orders", "producers", "both")]
    assert doc["progress_source"] == "the live cutover state"

    ready = [
        (s["resource"], s["action"], s["to"])
        for g in doc["groups"]
        for s in g["steps"]
        if s["gateway"] and s["gateway"]["ready"]
    ]
    assert ready == [
        ("billing", "consumers", "nats"),
        ("orders", "producers", "both"),
        ("orders", "producers", "nats"),
    ]

    out = tmp_path / "runbook.md"
    cli("runbook", "--plan", plan_path, "-s", url, "-o", out)
    assert "- [x] 7. `billing`: consumers → NATS" in out.read_text()
    assert "**Or change the endpoint, no code change (ready now):**" in out.read_text()


def test_runbook_without_a_server_says_the_marks_need_one(tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.json"
    inventory.write_bytes(document_json(estate()))
    result = CliRunner().invoke(
        main, ["runbook", "--inventory", str(inventory), "-s", "nats://127.0.0.1:1", "--json"]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["counts"]["todo"] == 25
    (note,) = doc["notes"]
    assert "progress marks need one" in note
    assert "progress marks need one" in result.stderr


def test_the_bridges_own_queue_found_by_a_later_scan_is_not_moved() -> None:
    inventory = estate()
    bridge_queue = "snsq2nats-bridge-orders"
    inventory = inventory.model_copy(
        update={
            "queues": [*inventory.queues, queue(bridge_queue)],
            "subscriptions": [
                *inventory.subscriptions,
                sub("orders", "s-bridge", qarn(bridge_queue), raw_message_delivery=True),
            ],
        }
    )
    book = make_runbook(make_plan(inventory))
    assert bridge_queue not in {s.resource for s in book.steps}
    assert moves_of(book) == moves_of(make_runbook(make_plan()))


# --- an estate in several AWS accounts ------------------------------------------------------------

OTHER = "210987654321"


def two_account_estate() -> Inventory:
    """The estate with `shipping` and `audit` in a second account, subscribed to the first's
    topics: a cross-account fan-out."""
    inv = estate()
    moved = {"shipping", "audit"}

    def other(arn: str) -> str:
        return arn.replace(f":{ACCOUNT}:", f":{OTHER}:")

    queues = [
        q.model_copy(
            update={"arn": other(q.arn), "account": OTHER, "url": q.url.replace(ACCOUNT, OTHER)}
        )
        if q.name in moved
        else q
        for q in inv.queues
    ]
    subscriptions = [
        s.model_copy(update={"endpoint": other(s.endpoint)})
        if s.endpoint.rsplit(":", 1)[-1] in moved
        else s
        for s in inv.subscriptions
    ]
    return inv.model_copy(update={"queues": queues, "subscriptions": subscriptions})


def test_a_runbook_of_several_accounts_names_each_steps_account() -> None:
    from rich.console import Console

    one = make_runbook(make_plan())
    book = make_runbook(make_plan(two_account_estate()))
    # The same moves in the same order: the accounts only add words.
    assert moves_of(book) == moves_of(one)
    accounts = {s.resource: s.arn.split(":")[4] for s in book.steps}
    assert accounts["shipping"] == OTHER and accounts["billing"] == ACCOUNT

    doc = runbook_json(book)
    steps = [s for g in doc["groups"] for s in g["steps"]]
    assert all(s["account"] == accounts[s["resource"]] for s in steps)
    assert list(steps[0])[:4] == ["number", "resource", "arn", "account"]
    assert all("account" not in s for g in runbook_json(one)["groups"] for s in g["steps"])

    md = runbook_markdown(book)
    shipping = step(book, "shipping", "consumers", "nats")
    assert f"### {shipping.number}. `shipping` in account `{OTHER}`: consumers → NATS" in md
    numbers = ", ".join(str(s.number) for s in book.steps if accounts[s.resource] == OTHER)
    assert f"- `{OTHER}`: steps {numbers} (0 of " in md
    assert "## By AWS account" in md and "## By AWS account" not in runbook_markdown(one)

    console = Console(width=200, record=True)
    console.print(runbook_table(book))
    rows = [line for line in console.export_text().splitlines() if "shipping: consumers" in line]
    assert rows and all(OTHER in row for row in rows)
    console = Console(width=200, record=True)
    console.print(runbook_table(one))
    assert "AWS account" not in console.export_text()
