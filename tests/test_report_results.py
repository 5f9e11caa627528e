"""The tables of apply, verify and status: rendered from the engines' data, nothing else."""

from __future__ import annotations

from io import StringIO

from rich.console import Console, RenderableType

from snsq2nats.apply import ALREADY_DONE, ApplyResult, Outcome
from snsq2nats.plan.model import Change
from snsq2nats.report.apply import MAX_DONE_ROWS, outcome_table, result_line
from snsq2nats.report.status import status_line, status_table
from snsq2nats.report.verify import results_table, summary_line
from snsq2nats.status import NatsBacklog, RouteStatus, SqsBacklog
from snsq2nats.verify import CheckResult, result_counts


def text(renderable: RenderableType) -> str:
    buffer = StringIO()
    Console(file=buffer, width=100, no_color=True, force_terminal=False).print(renderable)
    return buffer.getvalue()


def change(name: str, kind: str = "stream", action: str = "create") -> Change:
    return Change.model_validate(
        {"action": action, "type": kind, "name": name, "stream": "orders", "reason": "r"}
    )


def test_apply_table_names_each_object_and_what_happened() -> None:
    result = ApplyResult(
        outcomes=[
            Outcome(change("orders"), "done", seconds=0.25),
            Outcome(change("worker", "consumer"), "failed", "insufficient resources", 1.0),
            Outcome(change("audit", action="update"), "skipped", ALREADY_DONE),
            Outcome(change("later"), "skipped", "the run stopped first"),
        ],
        seconds=1.25,
    )
    shown = text(outcome_table(result))
    assert "stream orders" in shown and "done" in shown and "0.25s" in shown
    assert "consumer orders/worker" in shown and "failed: insufficient resources" in shown
    assert f"skipped: {ALREADY_DONE}" in shown
    assert "not done: the run stopped first" in shown
    assert result_line(result) == (
        "Apply stopped: 1 created, 1 already as planned; 1 failed, 1 not done."
    )


def test_apply_table_folds_a_long_run_of_done_rows_but_never_a_failure() -> None:
    done = [Outcome(change(f"s{i:04d}"), "done") for i in range(MAX_DONE_ROWS + 5)]
    result = ApplyResult(outcomes=[*done, Outcome(change("broken"), "failed", "no")])
    shown = text(outcome_table(result))
    assert "… and 5 more done" in shown
    assert f"s{MAX_DONE_ROWS - 1:04d}" in shown and f"s{MAX_DONE_ROWS:04d}" not in shown
    assert "stream broken" in shown


def test_apply_summary_when_everything_went_through() -> None:
    result = ApplyResult(
        outcomes=[Outcome(change("a"), "done"), Outcome(change("b", action="delete"), "done")],
        seconds=2.0,
    )
    assert result_line(result) == "Apply complete: 1 created, 1 deleted in 2.0s."


def test_verify_table_and_verdict() -> None:
    results = [
        CheckResult("orders", "round trip via sqs.orders", "ok", "received", 3.5),
        CheckResult("billing", "round trip", "failed", "no PubAck"),
        CheckResult("busy", "round trip", "skipped", "queue has 1 pending messages"),
    ]
    shown = text(results_table(results))
    for row in ("orders", "round trip via sqs.orders", "3.5", "no PubAck", "pending messages"):
        assert row in shown
    assert summary_line(result_counts(results)) == ("verify: 1 ok, 1 failed, 1 skipped — FAILED")
    assert summary_line(result_counts(results[:1])) == "verify: 1 ok, 0 failed, 0 skipped"


def test_status_table_and_line() -> None:
    statuses = [
        RouteStatus(
            "orders-in",
            "sqs-to-nats",
            False,
            "3 visible on SQS",
            SqsBacklog("orders", visible=3, not_visible=1, delayed=0),
            NatsBacklog("sqs_orders", None, pending=0, ack_pending=0),
        ),
        RouteStatus("billing-out", "nats-to-sqs", True, "consumer drained", dlq={"moved_total": 2}),
    ]
    shown = text(status_table(statuses))
    assert "3/1/0" in shown and "0/0" in shown and "NOT drained: 3 visible on SQS" in shown
    assert "moved 2" in shown and "—" in shown  # the DLQ column, and a side a route lacks
    assert "AWS: visible/in flight/delayed" in shown
    assert status_line(statuses) == "not drained: orders-in"
    assert status_line(statuses[1:]) == "all selected routes drained"
