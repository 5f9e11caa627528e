"""The plan's human outputs: terminal, Markdown and HTML, asserted exactly against goldens.

Goldens live in tests/data/report/. After an intended change to the output, regenerate them with

    UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_report.py

and review the diff of tests/data/report/ like any other code change.
"""

from __future__ import annotations

import os
import re
from io import StringIO
from pathlib import Path

import pytest
from rich.console import Console

from snsq2nats.errors import UsageError
from snsq2nats.jetstream.spec import NS, ServerInfo
from snsq2nats.plan.model import Change, Fidelity, FieldDiff, Plan, Resource, Route, load_plan
from snsq2nats.report.document import write_report
from snsq2nats.report.format import format_duration, format_size, format_value
from snsq2nats.report.html import plan_html
from snsq2nats.report.markdown import plan_markdown
from snsq2nats.report.terminal import plan_renderables

GOLDEN = Path(__file__).parent / "data" / "report"
ACCOUNT = "arn:aws:sqs:us-east-1:123456789012"
TOPICS = "arn:aws:sns:us-east-1:123456789012"


def check_golden(name: str, actual: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(actual, encoding="utf-8")
    assert path.exists(), f"{path} missing: run with UPDATE_GOLDEN=1 to create it"
    assert actual == path.read_text(encoding="utf-8")


def fid(attribute: str, verdict: str, note: str, **kw: str) -> Fidelity:
    return Fidelity.model_validate({"attribute": attribute, "verdict": verdict, "note": note, **kw})


def resources() -> list[Resource]:
    exact = [
        fid("MessageRetentionPeriod", "exact", "stream max_age", value="345600"),
        fid("MaximumMessageSize", "exact", "stream max_msg_size", value="262144"),
    ]
    return [
        Resource(
            source_arn=f"{ACCOUNT}:orders",
            kind="sqs-queue",
            name="orders",
            stream="orders",
            consumer="orders",
            publish_subject="sqs.orders",
            fidelity=[
                *exact,
                fid(
                    "RedrivePolicy",
                    "emulated",
                    "JetStream has no dead-letter queue: the bridge's DLQ mover moves a message "
                    "to orders-dlq after max_deliver attempts",
                    value='{"maxReceiveCount": 5}',
                    target="consumer max_deliver",
                ),
                fid(
                    "DelaySeconds",
                    "approximate",
                    "producers publish with a Nats-Schedule header to get the delay",
                    value="30",
                    manual_step="make producers set `Nats-Schedule: @at <time>` | or drop it",
                ),
            ],
        ),
        Resource(
            source_arn=f"{ACCOUNT}:payments.fifo",
            kind="sqs-queue",
            name="payments.fifo",
            stream="payments_fifo",
            consumer="payments_fifo",
            publish_subject="sqs.payments_fifo.<MessageGroupId>",
            fidelity=[
                *exact,
                fid(
                    "KmsMasterKeyId",
                    "unsupported",
                    "encryption at rest is a server setting in NATS",
                    value="alias/payments",
                    manual_step="enable JetStream encryption at rest on every server",
                ),
                fid(
                    "FifoQueue",
                    "approximate",
                    "ordering is kept per message group (one subject token per group)",
                    value="true",
                ),
            ],
        ),
        Resource(
            source_arn=f"{TOPICS}:events",
            kind="sns-topic",
            name="events",
            stream="sns_events",
            publish_subject="sns.events.<type>",
            subject_tokens=["type"],
            fidelity=[fid("DisplayName", "exact", "stream description", value="Events")],
        ),
        Resource(
            source_arn=f"{TOPICS}:events:0f3c",
            kind="sns-subscription",
            name="events → https:https://hooks.example.com/in",
            publish_subject="sns.events.<type>",
            fidelity=[
                fid(
                    "Protocol",
                    "unsupported",
                    "NATS does not deliver to https endpoints",
                    value="https",
                    manual_step="run a NATS consumer that POSTs each message to the endpoint",
                )
            ],
        ),
        Resource(
            source_arn=f"{TOPICS}:events:9a1d",
            kind="sns-subscription",
            name="events → orders",
            stream="orders",
            consumer="orders",
            publish_subject="sns.events.<type>",
            fidelity=[
                fid(
                    "FilterPolicy",
                    "emulated",
                    "numeric range matching is evaluated by the bridge's filter router",
                    value='{"amount": [{"numeric": [">", 100]}]}',
                )
            ],
        ),
    ]


def changes() -> list[Change]:
    return [
        Change(
            action="create",
            type="stream",
            name="sns_events",
            stream="sns_events",
            reason="new stream for topic events",
        ),
        Change(
            action="create",
            type="stream",
            name="orders",
            stream="orders",
            reason="new stream for queue orders",
        ),
        Change(
            action="create",
            type="consumer",
            name="orders",
            stream="orders",
            reason="new durable pull consumer for queue orders",
        ),
        Change(
            action="update",
            type="consumer",
            name="payments_fifo",
            stream="payments_fifo",
            reason="2 fields differ",
            diff=[
                FieldDiff(field="ack_wait", live=30 * NS, desired=90 * NS),
                FieldDiff(field="max_deliver", live=-1, desired=5),
            ],
        ),
        Change(
            action="replace",
            type="stream",
            name="payments_fifo",
            stream="payments_fifo",
            reason="retention and storage cannot change in place",
            diff=[
                FieldDiff(field="retention", live="limits", desired="workqueue"),
                FieldDiff(field="max_age", live=0, desired=4 * 86_400 * NS),
                FieldDiff(field="max_msg_size", live=-1, desired=256 * 1024),
            ],
            live_messages=42,
        ),
        Change(
            action="delete",
            type="stream",
            name="legacy",
            stream="legacy",
            reason="its source arn:aws:sqs:us-east-1:123456789012:legacy is gone (--prune)",
            live_messages=0,
        ),
        Change(
            action="noop",
            type="stream",
            name="audit",
            stream="audit",
            reason="matches the estate",
        ),
    ]


def routes() -> list[Route]:
    return [
        Route(
            name="sqs:orders",
            kind="sqs-to-nats",
            source_arn=f"{ACCOUNT}:orders",
            aws_arn=f"{ACCOUNT}:orders",
            stream="orders",
            subject="sqs.orders",
        ),
        Route(
            name="dlq:orders",
            kind="dlq-mover",
            source_arn=f"{ACCOUNT}:orders",
            aws_arn=f"{ACCOUNT}:orders-dlq",
            stream="orders",
            consumer="orders",
            target_stream="orders-dlq",
            subject="sqs.orders-dlq",
        ),
        Route(
            name="filter:events->orders",
            kind="filter-router",
            source_arn=f"{TOPICS}:events:9a1d",
            aws_arn=f"{TOPICS}:events",
            stream="sns_events",
            subject="sqs.orders",
            target_stream="orders",
        ),
        Route(
            name="sns:events",
            kind="sns-to-nats",
            source_arn=f"{TOPICS}:events",
            aws_arn=f"{TOPICS}:events",
            stream="sns_events",
            subject="sns.events",
        ),
    ]


@pytest.fixture
def plan() -> Plan:
    return Plan(
        generated_at="2025-01-02T03:04:05Z",
        inventory_generated_at="2025-01-02T03:00:00Z",
        server=ServerInfo(
            reachable=True,
            url="nats://admin:s3cret@n1.example.internal:4222,nats://n2.example.internal:4222",
            version="2.12.1",
            cluster="east",
        ),
        resources=resources(),
        changes=changes(),
        routes=routes(),
    )


@pytest.fixture
def offline_plan() -> Plan:
    creates = [c for c in changes() if c.action == "create"]
    return Plan(
        generated_at="2025-01-02T03:04:05Z",
        server=ServerInfo(reachable=False, note="connection refused"),
        resources=resources(),
        changes=creates,
        routes=routes(),
    )


def terminal(plan: Plan, *, verbose: bool = False) -> str:
    buffer = StringIO()
    console = Console(file=buffer, width=100, no_color=True, force_terminal=False)
    for renderable in plan_renderables(plan, verbose=verbose):
        console.print(renderable)
    return buffer.getvalue()


# -- terminal -----------------------------------------------------------------------------------


def test_terminal_golden(plan: Plan) -> None:
    check_golden("plan_terminal.txt", terminal(plan))


def test_terminal_offline_golden(offline_plan: Plan) -> None:
    text = terminal(offline_plan)
    check_golden("plan_terminal_offline.txt", text)
    assert "no NATS server reachable: everything planned as create" in text.splitlines()[0]


def test_terminal_fits_100_columns_and_has_no_trailing_space(plan: Plan) -> None:
    for line in terminal(plan, verbose=True).splitlines():
        assert len(line) <= 100
        assert line == line.rstrip()


def test_terminal_summary_and_markers(plan: Plan) -> None:
    text = terminal(plan)
    assert "Plan: 3 to create, 1 to update, 1 to replace, 1 to delete, 1 unchanged." in text
    assert "ack_wait: 30s → 1m30s" in text
    assert "max_age: unlimited → 4d" in text
    assert "max_msg_size: unlimited → 256 KiB" in text
    assert "42 messages would be lost" in text
    assert "5 attributes map exactly" in text
    for marker in ("+", "~", "-/+", "-"):
        assert re.search(rf"^  {re.escape(marker)} +(stream|consumer) ", text, re.MULTILINE)


def test_terminal_collapses_noops_unless_verbose(plan: Plan) -> None:
    assert "audit" not in terminal(plan)
    assert "1 unchanged object not listed" in terminal(plan)
    assert re.search(r"^  = +stream +audit", terminal(plan, verbose=True), re.MULTILINE)


def test_server_credentials_never_shown(plan: Plan) -> None:
    for text in (terminal(plan), plan_markdown(plan), plan_html(plan)):
        assert "s3cret" not in text
        assert "n1.example.internal:4222" in text


@pytest.mark.parametrize(
    "url", ["nats://u:p@h:4222", "tls://u:p@h:4222", "u:p@h:4222", "nats://token@h:4222"]
)
def test_server_url_userinfo_dropped(plan: Plan, url: str) -> None:
    server = ServerInfo(reachable=True, url=url, version="2.12.1")
    line = terminal(plan.model_copy(update={"server": server})).splitlines()[0]
    assert "@" not in line
    assert "h:4222 (server 2.12.1)" in line


def test_findings_ordered_by_severity(plan: Plan) -> None:
    for text in (terminal(plan), plan_markdown(plan), plan_html(plan)):
        # One attribute of each severity, each named nowhere else in the outputs.
        positions = [text.index(a) for a in ("KmsMasterKeyId", "FilterPolicy", "FifoQueue")]
        assert positions == sorted(positions)
    text = terminal(plan)
    # Within a severity, by attribute: the same attribute on many resources reads as one finding.
    assert text.index("KmsMasterKeyId on payments.fifo") < text.index("Protocol on events")


def test_identical_findings_said_once(plan: Plan) -> None:
    note = fid("SqsManagedSseEnabled", "unsupported", "encryption is a server setting")
    many = [
        Resource(source_arn=f"{ACCOUNT}:q{i}", kind="sqs-queue", name=f"q{i}", fidelity=[note])
        for i in range(8)
    ]
    text = terminal(plan.model_copy(update={"resources": many}))
    assert "SqsManagedSseEnabled on q0, q1, q2, q3, q4, q5 and 2 more" in text
    assert text.count("encryption is a server setting") == 1
    assert "Unsupported (8)" in text
    # The review document names every resource.
    assert plan_markdown(plan.model_copy(update={"resources": many})).count("`q7`") == 1


def test_no_changes_says_so(plan: Plan) -> None:
    quiet = plan.model_copy(update={"changes": [c for c in plan.changes if c.action == "noop"]})
    assert "No changes: live JetStream already matches the estate (1 unchanged)." in terminal(quiet)


# -- value formatting -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ns", "shown"),
    [
        (0, "0s"),
        (30 * NS, "30s"),
        (90 * NS, "1m30s"),
        (4 * 86_400 * NS, "4d"),
        (36 * 3_600 * NS, "1d12h"),
        (250_000_000, "250ms"),
        (1_500, "1µs500ns"),
    ],
)
def test_format_duration(ns: int, shown: str) -> None:
    assert format_duration(ns) == shown


@pytest.mark.parametrize(
    ("size", "shown"),
    [(1 << 20, "1 MiB"), (256 * 1024, "256 KiB"), (1000, "1,000 B"), (3 << 30, "3 GiB")],
)
def test_format_size(size: int, shown: str) -> None:
    assert format_size(size) == shown


def test_format_value_by_field() -> None:
    assert format_value("max_bytes", -1) == "unlimited"
    assert format_value("max_age", 0) == "unlimited"
    assert format_value("duplicate_window", 120 * NS) == "2m"
    assert format_value("num_replicas", 3) == "3"
    assert format_value("subjects", ["a.b", "c.>"]) == "[a.b, c.>]"
    assert format_value("allow_msg_schedules", None) == "(unset)"
    assert format_value("placement", {"tags": ["b"], "cluster": "a"}) == (
        '{"cluster": "a", "tags": ["b"]}'
    )


# -- Markdown -------------------------------------------------------------------------------------


def test_markdown_golden(plan: Plan) -> None:
    check_golden("plan.md", plan_markdown(plan))


def test_markdown_offline_golden(offline_plan: Plan) -> None:
    text = plan_markdown(offline_plan)
    check_golden("plan_offline.md", text)
    assert "> **Warning:** no NATS server reachable: everything planned as create" in text


def test_markdown_escapes_pipes_and_lists_manual_steps(plan: Plan) -> None:
    text = plan_markdown(plan)
    assert "\\| or drop it" in text
    tables = re.findall(r"(?:^\|.*\n)+", text, re.MULTILINE)
    assert len(tables) >= 6
    for table in tables:
        # An unescaped `|` inside a value would add a cell to its row and break the table.
        widths = {len(re.findall(r"(?<!\\)\|", row)) for row in table.splitlines()}
        assert len(widths) == 1, table
    steps = [line for line in text.splitlines() if line.startswith("- [ ] ")]
    assert len(steps) == 3
    assert plan_markdown(plan) == text  # deterministic


# -- HTML -----------------------------------------------------------------------------------------


def test_html_is_self_contained(plan: Plan) -> None:
    text = plan_html(plan)
    assert text.startswith("<!DOCTYPE html>")
    assert "<style>" in text
    assert "<script" not in text.lower()
    assert "<link" not in text.lower()
    assert "@import" not in text
    # Data may mention URLs (an https subscription endpoint) as text, never as assets or links.
    assert not re.search(r"""(src|href)\s*=|url\(""", text, re.IGNORECASE)
    for section in ("Changes", "Fidelity", "Resources", "Bridge routes"):
        assert f"<h2>{section}</h2>" in text


def test_html_escapes_every_value(plan: Plan) -> None:
    evil = "<script>alert('x')</script>"
    hostile = plan.model_copy(
        update={
            "changes": [
                plan.changes[0].model_copy(update={"name": evil, "reason": evil}),
                plan.changes[3].model_copy(
                    update={"diff": [FieldDiff(field=evil, live=evil, desired=evil)]}
                ),
            ],
            "resources": [
                Resource(
                    source_arn=evil,
                    kind="sqs-queue",
                    name=evil,
                    stream=evil,
                    fidelity=[fid(evil, "unsupported", evil, value=evil, manual_step=evil)],
                )
            ],
            "routes": [plan.routes[0].model_copy(update={"name": evil, "subject": evil})],
        }
    )
    text = plan_html(hostile)
    assert "<script" not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in text
    # Markdown: prose is backslash-escaped; code spans render literally anyway.
    markdown = plan_markdown(hostile)
    assert "\\<script\\>" in markdown
    assert "<script>" not in markdown.replace("`<script>", "")


def test_html_badges(plan: Plan) -> None:
    text = plan_html(plan)
    for kind in ("create", "update", "replace", "delete", "unsupported", "emulated"):
        assert f'class="badge {kind}"' in text


# -- files ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "start"),
    [("plan.md", "# snsq2nats plan"), ("plan.html", "<!DOCTYPE html>"), ("P.HTM", "<!DOCTYPE")],
)
def test_write_report_by_suffix(tmp_path: Path, plan: Plan, name: str, start: str) -> None:
    write_report(tmp_path / name, plan)
    assert (tmp_path / name).read_text(encoding="utf-8").startswith(start)


@pytest.mark.parametrize("name", ["plan.txt", "plan"])
def test_write_report_rejects_other_suffixes(tmp_path: Path, plan: Plan, name: str) -> None:
    with pytest.raises(UsageError) as caught:
        write_report(tmp_path / name, plan)
    assert "FILE.md" in caught.value.one_line()
    assert not (tmp_path / name).exists()


def test_html_plan_draws_the_estate() -> None:
    """The picture: every topic, subscription and queue, its JetStream stream and durable,
    which side producers and consumers are on, and an edge for each hop."""
    import xml.etree.ElementTree as ET

    from snsq2nats.report.picture import estate_svg

    plan = load_plan(Path(__file__).parent / "data" / "plan" / "shop_plan_cutover.json")
    svg = estate_svg(plan)
    root = ET.fromstring(svg)  # well-formed, self-contained
    ns = "{http://www.w3.org/2000/svg}"
    groups = {g.get("class"): [] for g in root.iter(f"{ns}g")}
    for g in root.iter(f"{ns}g"):
        groups[g.get("class")].append(" ".join(t.text or "" for t in g.iter(f"{ns}text")))
    queues = [r for r in plan.resources if r.kind == "sqs-queue"]
    subs = [r for r in plan.resources if r.kind == "sns-subscription"]
    assert len(groups["queue"]) == len(queues) == len(groups["jetstream"])
    assert len(groups["subscription"]) == len(subs)
    assert len(groups["topic"]) == len([r for r in plan.resources if r.kind == "sns-topic"])
    for queue in queues:
        text = next(t for t in groups["queue"] if t.startswith(queue.name + " "))
        assert f"C {(queue.consumers or 'aws').upper()}" in text
        assert f"P {(queue.producers or 'aws').upper()}" in text
    assert any("C NATS" in t for t in groups["queue"]) and any(
        "C AWS" in t for t in groups["queue"]
    )
    into_queues = sum(1 for s in subs if s.stream)
    paths = list(root.iter(f"{ns}path"))
    assert len(paths) == len(subs) + into_queues + len(queues)
    assert any("filter {" in t for t in groups["subscription"])
    html_text = plan_html(plan)
    assert svg in html_text and "<script" not in html_text
