"""`snsq2nats plan` and `snsq2nats subject` end to end: CLI in, JSON/terminal/files out.

The shop inventory (scanned from moto) is the input; NATS is a real server where it matters.
Regenerate the golden plan with UPDATE_GOLDEN=1 after an intended mapping change.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from snsq2nats.apply import apply_plan
from snsq2nats.cli import main
from snsq2nats.files import document_json
from snsq2nats.jetstream.spec import FOR_KEY, ROUTE_KEY, SOURCE_KEY, LiveState
from snsq2nats.plan.diff import diff
from snsq2nats.plan.model import FORMAT_VERSION, Desired, Plan, load_plan

DATA = Path(__file__).parent / "data"
SHOP = DATA / "mapping" / "shop_inventory.json"
SHOP_CUTOVER = DATA / "mapping" / "shop_cutover.yaml"
GOLDEN = DATA / "plan" / "shop_plan.json"
GOLDEN_CUTOVER = DATA / "plan" / "shop_plan_cutover.json"


def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def _normalised(doc: dict[str, Any]) -> dict[str, Any]:
    doc = dict(doc)
    doc["generated_at"] = "<generated_at>"
    return doc


def _closed_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"nats://127.0.0.1:{sock.getsockname()[1]}"


@pytest.mark.parametrize(
    ("golden", "mapping"),
    [
        # Every consumer still on AWS (the default): no topic fan-out on NATS yet.
        (GOLDEN, []),
        # The orders-* queues' consumers on NATS: sources, subject transforms, filter router.
        (GOLDEN_CUTOVER, ["--mapping", str(SHOP_CUTOVER)]),
    ],
    ids=["all-on-aws", "orders-consumers-on-nats"],
)
def test_offline_plan_json_matches_the_golden_plan(golden: Path, mapping: list[str]) -> None:
    result = invoke("plan", "--inventory", str(SHOP), "--offline", "--json", *mapping)
    assert result.exit_code == 0, result.stderr
    doc = _normalised(json.loads(result.stdout))
    if os.environ.get("UPDATE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    assert doc == json.loads(golden.read_text())


def test_plan_document_contract() -> None:
    """The fields DESIGN.md §3 promises scripts, checked on the real document."""
    doc = json.loads(invoke("plan", "--inventory", str(SHOP), "--offline", "--json").stdout)
    assert doc["format_version"] == FORMAT_VERSION == 1
    kinds = {r["kind"] for r in doc["resources"]}
    assert kinds == {"sqs-queue", "sns-topic", "sns-subscription"}
    for resource in doc["resources"]:
        assert {"source_arn", "kind", "stream", "consumer", "publish_subject", "fidelity"} <= set(
            resource
        )
        for finding in resource["fidelity"]:
            assert finding["verdict"] in {"exact", "approximate", "emulated", "unsupported"}
            assert finding["note"]
    for change in doc["changes"]:
        assert change["action"] in {"create", "update", "replace", "delete", "noop"}
        assert change["type"] in {"stream", "consumer"}
        assert change["name"]
    assert doc["routes"], "the bridge routes are part of the plan"
    queues = [r for r in doc["resources"] if r["kind"] == "sqs-queue"]
    assert all(q["stream"] and q["consumer"] for q in queues)


def test_plan_file_round_trips(tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    result = invoke("plan", "--inventory", str(SHOP), "--offline", "-o", str(out))
    assert result.exit_code == 0, result.stderr
    plan = load_plan(out)
    assert Plan.model_validate(plan.to_json()) == plan
    assert document_json(plan) == out.read_bytes()
    assert f"written: {out}" in result.stderr


def test_terminal_output_summarises_changes_and_findings() -> None:
    result = invoke("plan", "--inventory", str(SHOP), "--offline")
    assert result.exit_code == 0
    text = result.stderr
    assert "offline plan" in text
    assert "Plan: " in text and "to create" in text
    assert text.index("Unsupported") < text.index("Emulated") < text.index("Approximate")
    assert "Traceback" not in text
    assert max(len(line) for line in text.splitlines()) <= 100


def test_reports_are_written_by_suffix(tmp_path: Path) -> None:
    md, html = tmp_path / "plan.md", tmp_path / "plan.html"
    result = invoke(
        "plan", "--inventory", str(SHOP), "--offline", "--report", str(md), "--report", str(html)
    )
    assert result.exit_code == 0, result.stderr
    assert md.read_text().startswith("#")
    assert "<html" in html.read_text().lower()


def test_detailed_exitcode_says_changes_are_pending() -> None:
    result = invoke("plan", "--inventory", str(SHOP), "--offline", "--detailed-exitcode")
    assert result.exit_code == 2


def test_unreachable_nats_plans_everything_as_create() -> None:
    result = invoke("plan", "--inventory", str(SHOP), "-s", _closed_url(), "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["server"]["reachable"] is False
    assert "planned as create" in doc["server"]["note"]
    assert {c["action"] for c in doc["changes"]} == {"create"}


def test_live_plan_reads_the_server_and_sees_applied_objects(nats_server: Any) -> None:
    url = nats_server.url
    first = json.loads(invoke("plan", "--inventory", str(SHOP), "-s", url, "--json").stdout)
    assert first["server"]["reachable"] is True
    assert first["server"]["version"]
    plan = Plan.model_validate(first)

    async def create_everything() -> None:
        import nats

        nc = await nats.connect(url)
        try:
            assert (await apply_plan(nc, plan, allow_destructive=False)).ok
        finally:
            await nc.close()

    asyncio.run(create_everything())

    again = invoke("plan", "--inventory", str(SHOP), "-s", url, "--json", "--detailed-exitcode")
    doc = json.loads(again.stdout)
    assert {c["action"] for c in doc["changes"]} == {"noop"}, [
        (c["name"], c["reason"]) for c in doc["changes"] if c["action"] != "noop"
    ]
    assert again.exit_code == 0


def test_bad_mapping_file_is_one_clear_line(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("defaults:\n  replicaz: 3\n")
    result = invoke("plan", "--inventory", str(SHOP), "--offline", "--mapping", str(rules))
    assert result.exit_code == 1
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: unknown key 'replicaz'")
    assert str(rules) in line and "defaults.replicaz" in line and "replicas" in line


def test_missing_inventory_file_is_a_clear_error(tmp_path: Path) -> None:
    result = invoke("plan", "--inventory", str(tmp_path / "nope.json"), "--offline")
    assert result.exit_code == 1
    assert "inventory file not found" in result.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["orders", "--attr", "event_type=order_placed", "--attr", "region=eu"], None),
        (["orders", "--attr", "event_type=order.placed"], None),
        (["orders-billing"], "sqs.orders-billing"),
        (["payments.fifo", "--attr", "MessageGroupId=customer-42"], "sqsfifo.payments.customer-42"),
    ],
)
def test_subject_prints_the_publish_subject(args: list[str], expected: str | None) -> None:
    from snsq2nats.filterpolicy import ABSENT_TOKEN, encode_token

    result = invoke("subject", *args, "--inventory", str(SHOP))
    assert result.exit_code == 0, result.stderr
    subject = result.stdout.strip()
    if expected is None:
        # The topic's tokens are whatever the planner promoted; check them against the plan.
        doc = json.loads(invoke("plan", "--inventory", str(SHOP), "--offline", "--json").stdout)
        topic = next(r for r in doc["resources"] if r["kind"] == "sns-topic")
        attrs = dict(a.split("=", 1) for a in args[2::2])
        tokens = [
            encode_token(attrs[name]) if name in attrs else ABSENT_TOKEN
            for name in topic["subject_tokens"]
        ]
        expected = ".".join(["sns.orders", *tokens])
    assert subject == expected


def test_subject_from_a_plan_file_and_by_arn(tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    invoke("plan", "--inventory", str(SHOP), "--offline", "-o", str(out))
    arn = "arn:aws:sqs:us-east-1:123456789012:orders-billing"
    result = invoke("subject", arn, "--plan", str(out))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == "sqs.orders-billing"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope"], "no queue or topic named 'nope'"),
        (["payments.fifo"], "MessageGroupId"),
        (["orders", "--attr", "colour=red"], "not a subject token"),
        (["orders", "--attr", "broken"], "is not NAME=VALUE"),
        (["orders-billing", "--attr", "x=y"], "carry no attribute tokens"),
    ],
)
def test_subject_errors_say_what_to_do(args: list[str], message: str) -> None:
    result = invoke("subject", *args, "--inventory", str(SHOP))
    assert result.exit_code == 1
    assert message in result.stderr


def test_a_name_held_by_a_foreign_stream_is_an_error(nats_server: Any) -> None:
    async def squat() -> None:
        import nats

        nc = await nats.connect(nats_server.url)
        try:
            await nc.jetstream().add_stream(name="sqs_orders-billing", subjects=["legacy.billing"])
        finally:
            await nc.close()

    asyncio.run(squat())
    result = invoke("plan", "--inventory", str(SHOP), "-s", nats_server.url, "--detailed-exitcode")
    assert result.exit_code == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "sqs_orders-billing" in last
    assert "not managed by snsq2nats" in result.stderr


def _before_route_keys(metadata: dict[str, str]) -> dict[str, str]:
    """The metadata snsq2nats wrote on bridge-owned objects before they had their own keys."""
    if ROUTE_KEY not in metadata:
        return metadata
    if metadata[ROUTE_KEY] == "dlq:*":
        return {SOURCE_KEY: "snsq2nats:advisories"}
    return {SOURCE_KEY: metadata[FOR_KEY], ROUTE_KEY: metadata[ROUTE_KEY]}


def test_bridge_objects_applied_with_the_old_metadata_update_cleanly(
    nats_server: Any, tmp_path: Path
) -> None:
    """An estate applied by an earlier version: its bridge-owned objects carry the queue's or
    topic's ARN as snsq2nats.source. The next plan updates their metadata (no conflict, no
    replace), after apply nothing is pending, and on the server exactly one consumer per queue
    carries the queue's ARN: the one its workers bind to."""
    url = nats_server.url
    producers = tmp_path / "producers.yaml"
    producers.write_text("overrides:\n  - match: orders\n    cutover: {producers: both}\n")
    mapping = ["--mapping", str(SHOP_CUTOVER), "--mapping", str(producers)]
    planned = invoke("plan", "--inventory", str(SHOP), "-s", url, "--json", *mapping)
    current = Plan.model_validate_json(planned.stdout)
    bridge_kinds = {r.kind for r in current.routes}
    assert {"dlq-mover", "nats-to-sns"} <= bridge_kinds
    old = Desired(
        streams=[
            s.model_copy(update={"metadata": _before_route_keys(s.metadata)})
            for s in current.streams
        ],
        consumers=[
            c.model_copy(update={"metadata": _before_route_keys(c.metadata)})
            for c in current.consumers
        ],
        resources=current.resources,
        routes=current.routes,
        candidate_routes=current.candidate_routes,
    )
    old_plan = current.model_copy(
        update={
            "streams": old.streams,
            "consumers": old.consumers,
            "changes": diff(old, LiveState(streams={}, server=current.server)),
        }
    )
    asyncio.run(_apply(url, old_plan))

    replanned = invoke("plan", "--inventory", str(SHOP), "-s", url, "--json", *mapping)
    upgrade = Plan.model_validate_json(replanned.stdout)
    pending = {(c.type, c.name): [d.field for d in c.diff] for c in upgrade.pending}
    bridge_owned = {("stream", s.name) for s in current.streams if ROUTE_KEY in s.metadata}
    bridge_owned |= {
        ("consumer", c.durable_name) for c in current.consumers if ROUTE_KEY in c.metadata
    }
    assert set(pending) == bridge_owned
    assert all(fields == ["metadata"] for fields in pending.values()), pending
    assert {c.action for c in upgrade.pending} == {"update"}
    asyncio.run(_apply(url, upgrade))

    again = invoke("plan", "--inventory", str(SHOP), "-s", url, "--detailed-exitcode", *mapping)
    assert again.exit_code == 0, again.stderr
    live = asyncio.run(_read(url))
    consumers = [
        (name, cfg.get("metadata") or {})
        for stream in live.streams.values()
        for name, cfg in stream.consumers.items()
    ]
    for queue in (r for r in upgrade.resources if r.kind == "sqs-queue"):
        carriers = [name for name, meta in consumers if meta.get(SOURCE_KEY) == queue.source_arn]
        assert carriers == [queue.consumer], queue.source_arn
    for name, meta in consumers:
        if ROUTE_KEY in meta:
            assert SOURCE_KEY not in meta and meta[FOR_KEY], name


async def _apply(url: str, plan: Plan) -> None:
    import nats

    nc = await nats.connect(url)
    try:
        result = await apply_plan(nc, plan, allow_destructive=False)
        assert result.ok, result.error
    finally:
        await nc.close()


async def _read(url: str) -> LiveState:
    import nats

    from snsq2nats.jetstream.state import read_live

    nc = await nats.connect(url)
    try:
        return await read_live(nc)
    finally:
        await nc.close()
