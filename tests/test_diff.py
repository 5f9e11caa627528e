"""diff(): desired specs vs live JetStream state, driven by case files in tests/data/diff/.

Each case file holds `desired` (a Desired document), `live` (null for "no server", else the
server info and each stream's raw config, message count and consumer configs), `prune`, and
`expected`: the full ordered list of [action, type, name, [diff fields]].  `reasons` optionally
maps "type/name" to a substring the change's reason must contain.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from snsq2nats.jetstream.spec import (
    LiveState,
    LiveStream,
    ServerInfo,
    StreamSource,
    StreamSpec,
)
from snsq2nats.plan.diff import diff, normalise_consumer_field, normalise_stream_field
from snsq2nats.plan.metadata import Owner, is_managed, owner, served_arn
from snsq2nats.plan.model import Desired

CASES = sorted((Path(__file__).parent / "data" / "diff").glob("*.json"))


def load_live(raw: dict[str, Any] | None) -> LiveState | None:
    if raw is None:
        return None
    return LiveState(
        streams={
            name: LiveStream(
                config=s["config"],
                messages=s.get("messages", 0),
                bytes=s.get("bytes", 0),
                consumers=s.get("consumers", {}),
            )
            for name, s in raw["streams"].items()
        },
        server=ServerInfo.model_validate(raw["server"]),
    )


def case_path(stem: str) -> Path:
    return Path(__file__).parent / "data" / "diff" / f"{stem}.json"


def load_case(path: Path) -> tuple[Desired, LiveState | None, dict[str, Any]]:
    case = json.loads(path.read_text(encoding="utf-8"))
    return Desired.model_validate(case["desired"]), load_live(case["live"]), case


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_case(path: Path) -> None:
    desired, live, case = load_case(path)
    changes = diff(desired, live, prune=case["prune"])
    got = [[c.action, c.type, c.name, [d.field for d in c.diff]] for c in changes]
    assert got == case["expected"], case["description"]
    by_key = {f"{c.type}/{c.name}": c for c in changes}
    for key, fragment in case.get("reasons", {}).items():
        assert fragment in by_key[key].reason, (key, by_key[key].reason)
    for change in changes:
        assert change.reason
        if change.action in ("create", "update", "replace"):
            # The body apply sends: the desired spec as the API takes it.
            assert change.config is not None and is_managed(change.config["metadata"])
        else:
            assert change.config is None
        if change.action == "replace" and change.type == "stream":
            assert change.live_messages is not None
            assert f"{change.live_messages} message" in change.reason


def test_cases_cover_the_brief() -> None:
    names = {p.stem for p in CASES}
    assert {
        "offline_create_all",
        "noop_realistic",
        "update_max_age",
        "replace_immutable",
        "consumer_update",
        "consumer_replace",
        "prune",
        "ordering",
        "bridge_metadata_upgrade",
        "bridge_prune",
    } <= names


def test_field_diff_shows_normalised_values() -> None:
    desired, live, _ = load_case(case_path("update_max_age"))
    [change] = diff(desired, live)
    [field] = change.diff
    assert (field.live, field.desired) == (86400 * 10**9, 345600 * 10**9)


def test_metadata_diff_ignores_server_keys_but_not_user_keys() -> None:
    desired, live, _ = load_case(case_path("noop_realistic"))
    assert live is not None
    live.streams["t_events"].config["metadata"]["team"] = "added-by-hand"
    changes = [c for c in diff(desired, live) if c.action != "noop"]
    assert [(c.name, [d.field for d in c.diff]) for c in changes] == [("t_events", ["metadata"])]
    [meta] = changes[0].diff
    assert "_nats.ver" not in meta.live and meta.live["team"] == "added-by-hand"


def test_diff_is_deterministic_and_input_order_free() -> None:
    desired, live, _ = load_case(case_path("ordering"))
    shuffled = desired.model_copy(
        update={
            "streams": list(reversed(desired.streams)),
            "consumers": list(reversed(desired.consumers)),
        }
    )
    first = diff(desired, live, prune=True)
    assert diff(shuffled, live, prune=True) == first
    assert diff(desired, live, prune=True) == first


def test_source_cycle_does_not_hang() -> None:
    a = StreamSpec(name="a", sources=[StreamSource(name="b")])
    b = StreamSpec(name="b", sources=[StreamSource(name="a")])
    changes = diff(Desired(streams=[b, a]), None)
    assert [c.name for c in changes] == ["a", "b"]


@pytest.mark.parametrize(
    ("key", "value", "normal"),
    [
        ("max_msgs", 0, -1),
        ("max_bytes", -5, -1),
        ("max_msg_size", None, -1),
        ("max_msg_size", 1024, 1024),
        ("max_age", None, 0),
        ("num_replicas", 0, 1),
        ("subjects", ["b", "a", "a"], ["a", "b"]),
        ("placement", {"cluster": "", "tags": []}, None),
        ("placement", {"cluster": "east"}, {"cluster": "east"}),
        ("metadata", {"_nats.mirror.x": "1", "k": "v"}, {"k": "v"}),
    ],
)
def test_stream_normalisation(key: str, value: Any, normal: Any) -> None:
    assert normalise_stream_field(key, value) == normal


@pytest.mark.parametrize(
    ("key", "value", "normal"),
    [
        ("max_deliver", 0, -1),
        ("max_deliver", 5, 5),
        ("ack_wait", None, 30 * 10**9),
        ("max_ack_pending", 0, 1000),
        ("max_ack_pending", -1, -1),
        ("deliver_policy", None, "all"),
        ("metadata", None, {}),
    ],
)
def test_consumer_normalisation(key: str, value: Any, normal: Any) -> None:
    assert normalise_consumer_field(key, value) == normal


def test_diff_imports_no_client_library() -> None:
    """diff is pure: planning offline must not need (or load) nats-py or boto3."""
    code = (
        "import sys, snsq2nats.plan.diff; "
        "bad = [m for m in ('nats', 'boto3', 'botocore') if m in sys.modules]; "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize(
    ("metadata", "owner_", "served"),
    [
        ({"snsq2nats.source": "arn:q"}, Owner("source", "arn:q"), "arn:q"),
        ({"snsq2nats.route": "dlq:q", "snsq2nats.for": "arn:q"}, Owner("route", "dlq:q"), "arn:q"),
        ({"snsq2nats.route": "dlq:*", "snsq2nats.for": "*"}, Owner("route", "dlq:*"), None),
        # Written before bridge-owned objects had their own keys: the route decides.
        (
            {"snsq2nats.source": "arn:q", "snsq2nats.route": "dlq:q"},
            Owner("route", "dlq:q"),
            "arn:q",
        ),
        (
            {"snsq2nats.source": "snsq2nats:advisories"},
            Owner("source", "snsq2nats:advisories"),
            "snsq2nats:advisories",
        ),
        ({"team": "x", "snsq2nats.source": ""}, None, None),
        (None, None, None),
    ],
)
def test_metadata_owner(metadata: Any, owner_: Owner | None, served: str | None) -> None:
    assert owner(metadata) == owner_
    assert is_managed(metadata) is (owner_ is not None)
    assert served_arn(metadata) == served
