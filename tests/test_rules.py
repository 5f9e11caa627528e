"""Mapping rules: shipped defaults, users' files merged in order, and one clear error per typo."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from snsq2nats.errors import MappingError
from snsq2nats.plan import rules as rules_module
from snsq2nats.plan.rules import (
    REPO_RULES_FILE,
    Defaults,
    Limits,
    Naming,
    Override,
    Rules,
    default_rules_file,
    load_rules,
)

ROOT = Path(__file__).resolve().parent.parent
GiB = 1024**3


def write(tmp_path: Path, text: str, name: str = "rules.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error(paths: list[Path], **kwargs: int) -> str:
    with pytest.raises(MappingError) as caught:
        load_rules(paths, **kwargs)
    return caught.value.one_line()


# -- loading and merging ---------------------------------------------------------------------


def test_defaults_only_match_the_documented_defaults() -> None:
    rules = load_rules([])
    assert rules.defaults == Defaults()
    assert rules.naming == Naming()
    assert rules.overrides == []
    assert rules.defaults.duplicate_window == 300.0
    assert rules.defaults.topic_retention == 86400.0
    assert rules.naming.fifo_queue_stream == "sqsfifo_{name}"


def test_later_files_win_key_by_key_and_overrides_append(tmp_path: Path) -> None:
    first = write(
        tmp_path,
        """
defaults: {replicas: 2, storage: memory, max_ack_pending: 10}
naming: {queue_stream: "q_{name}", topic_stream: "t_{name}"}
overrides:
  - {match: "a-*", replicas: 3}
""",
        "first.yaml",
    )
    second = write(
        tmp_path,
        """
defaults: {replicas: 4}
naming: {queue_stream: "queue_{name}"}
overrides:
  - {match: "a-1", replicas: 5}
""",
        "second.yaml",
    )
    rules = load_rules([first, second])
    assert rules.defaults.replicas == 4
    assert rules.defaults.storage == "memory"
    assert rules.defaults.max_ack_pending == 10
    assert rules.naming.queue_stream == "queue_{name}"
    assert rules.naming.topic_stream == "t_{name}"
    assert rules.naming.queue_subject == "sqs.{name}"
    assert [o.match for o in rules.overrides] == ["a-*", "a-1"]
    assert rules.resolve("a-1", "arn:aws:sqs:us-east-1:1:a-1").replicas == 5
    assert rules.resolve("a-2", "arn:aws:sqs:us-east-1:1:a-2").replicas == 3
    # Order matters: the same files the other way round.
    assert load_rules([second, first]).defaults.replicas == 2


def test_replicas_flag_beats_every_file(tmp_path: Path) -> None:
    path = write(tmp_path, "defaults: {replicas: 5}\n")
    assert load_rules([path], replicas=3).defaults.replicas == 3
    assert load_rules([], replicas=3).defaults.replicas == 3
    assert load_rules([path]).defaults.replicas == 5


@pytest.mark.parametrize("bad", [0, 7])
def test_replicas_flag_out_of_range(bad: int) -> None:
    line = error([], replicas=bad)
    assert "--replicas" in line and "1 to 5" in line


def test_empty_sections_and_empty_file(tmp_path: Path) -> None:
    assert load_rules([write(tmp_path, "")]) == load_rules([])
    assert load_rules([write(tmp_path, "defaults:\nnaming:\noverrides:\n")]) == load_rules([])


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("5m", 300.0), ("24h", 86400.0), ("7d", 604800.0), (90, 90.0), ("90", 90.0),
     ("90s", 90.0), ("1.5h", 5400.0), ("500ms", 0.5), ("2w", 1209600.0), (0, 0.0)],
)  # fmt: skip
def test_durations(tmp_path: Path, value: object, seconds: float) -> None:
    path = write(tmp_path, f"defaults: {{topic_retention: {value!r}}}\n".replace("'", '"'))
    assert load_rules([path]).defaults.topic_retention == seconds


@pytest.mark.parametrize(
    ("value", "size"),
    [("1GiB", GiB), ("10GB", 10 * 1000**3), (1024, 1024), ("256KiB", 262144),
     ("1mb", 1000**2), ("64 KiB", 65536), (-1, -1)],
)  # fmt: skip
def test_sizes(tmp_path: Path, value: object, size: int) -> None:
    text = f"overrides: [{{match: x, limits: {{max_bytes: {value!r}}}}}]\n".replace("'", '"')
    rules = load_rules([write(tmp_path, text)])
    assert rules.overrides[0].limits == Limits(max_bytes=size)


# -- errors: file, key path, what is allowed -------------------------------------------------


def test_unknown_top_level_key(tmp_path: Path) -> None:
    path = write(tmp_path, "version: 1\ndefualts: {replicas: 3}\n")
    line = error([path])
    assert "unknown key 'defualts'" in line
    assert f"{path}: defualts" in line
    assert "allowed keys here: accounts, defaults, naming, overrides, version" in line


def test_unknown_key_in_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "defaults:\n  replica: 3\n")
    line = error([path])
    assert f"{path}: defaults.replica" in line
    assert "unknown key 'replica'" in line
    assert "replicas" in line and "duplicate_window" in line and "min_ack_wait" in line


def test_unknown_key_in_naming(tmp_path: Path) -> None:
    path = write(tmp_path, "naming:\n  queue_streams: 'q_{name}'\n")
    line = error([path])
    assert f"{path}: naming.queue_streams" in line
    assert "queue_stream, queue_subject, topic_stream, topic_subject" in line


def test_unknown_key_in_an_override(tmp_path: Path) -> None:
    path = write(tmp_path, "overrides:\n  - match: a\n  - match: b\n    limtis: {max_age: 1d}\n")
    line = error([path])
    assert f"{path}: overrides.1.limtis" in line
    assert "unknown key 'limtis'" in line
    assert (
        "allowed keys here: cutover, exclude, limits, match, monitor, partitions, placement, "
        "promote, rename, replicas, storage, subjects" in line
    )


def test_unknown_key_nested_in_limits(tmp_path: Path) -> None:
    path = write(tmp_path, "overrides:\n  - match: a\n    limits: {max_age: 1d, max_size: 5}\n")
    line = error([path])
    assert f"{path}: overrides.0.limits.max_size" in line
    assert "allowed keys here: max_age, max_bytes, max_msg_size, max_msgs" in line


def test_unknown_key_nested_in_placement_of_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "defaults:\n  placement: {cluster: a, tag: [x]}\n")
    line = error([path])
    assert f"{path}: defaults.placement.tag" in line
    assert "allowed keys here: cluster, tags" in line


@pytest.mark.parametrize(
    ("text", "key_path", "says"),
    [
        ("defaults: {duplicate_window: 5 minutes}\n", "defaults.duplicate_window", "30s, 5m"),
        ("defaults: {duplicate_window: -5}\n", "defaults.duplicate_window", "negative"),
        ("defaults: {min_ack_wait: true}\n", "defaults.min_ack_wait", "duration"),
        ("overrides: [{match: a, limits: {max_bytes: lots}}]\n", "overrides.0.limits.max_bytes",
         "256KiB"),
        ("overrides: [{match: a, limits: {max_bytes: -5}}]\n", "overrides.0.limits.max_bytes",
         "-1 for unlimited"),
        ("defaults: {storage: ssd}\n", "defaults.storage", "'file' or 'memory'"),
        ("overrides: [{match: a, storage: ssd}]\n", "overrides.0.storage", "'file' or 'memory'"),
        ("defaults: {replicas: 7}\n", "defaults.replicas", "less than or equal to 5"),
        ("overrides: [{match: a, replicas: 7}]\n", "overrides.0.replicas", "1 to 5"),
        ("overrides: [{replicas: 3}]\n", "overrides.0.match", "needs `match:`"),
        ("overrides: [{match: a, cutover: {consumers: both}}]\n", "overrides.0.cutover.consumers",
         "'aws' or 'nats'"),
        ("version: 2\n", "version", "1"),
        ("defaults: [replicas]\n", "defaults", "dictionary"),
        ("overrides: {match: a}\n", "overrides", "list"),
    ],
)  # fmt: skip
def test_bad_values(tmp_path: Path, text: str, key_path: str, says: str) -> None:
    path = write(tmp_path, text)
    line = error([path])
    assert line.startswith("invalid value"), line
    assert f"(at {path}: {key_path})" in line
    assert says in line


def test_rename_to_an_invalid_stream_name(tmp_path: Path) -> None:
    path = write(tmp_path, "overrides:\n  - {match: orders, rename: orders.v2}\n")
    line = error([path])
    assert f"{path}: overrides.0.rename" in line
    assert "'orders.v2' is not a valid JetStream stream name" in line
    assert "orders_v2" in line  # the hint: what to write instead


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "defaults:\n  replicas: 3\n  storage: [file\nnaming: {}\n")
    line = error([path])
    assert "not valid YAML" in line
    assert f"{path}: line " in line


@pytest.mark.parametrize(
    ("text", "key", "first", "again"),
    [
        ("defaults:\n  replicas: 3\n  storage: file\n  replicas: 1\n", "replicas", 2, 4),
        ("naming: {}\ndefaults: {}\nnaming: {}\n", "naming", 1, 3),
        (
            "overrides:\n  - match: orders\n    cutover: {consumers: nats, consumers: aws}\n",
            "consumers",
            3,
            3,
        ),
    ],
)
def test_a_key_written_twice_is_refused_with_file_line_and_key(
    tmp_path: Path, text: str, key: str, first: int, again: int
) -> None:
    path = write(tmp_path, text)
    line = error([path])
    assert f"key '{key}' is written twice in one mapping (first on line {first})" in line
    assert f"(at {path}: line {again})" in line


def test_the_same_key_in_different_mappings_and_merges_are_kept(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "overrides:\n"
        "  - &billing {match: orders-billing, cutover: {consumers: nats}}\n"
        "  - {<<: *billing, match: orders-shipping}\n",
    )
    rules = load_rules([path])
    assert [o.match for o in rules.overrides] == ["orders-billing", "orders-shipping"]


def test_tab_indented_yaml_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "defaults:\n\treplicas: 3\n")
    line = error([path])
    assert f"(at {path}: line 2)" in line


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_not_a_mapping(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    line = error([path])
    assert "must be a YAML mapping" in line and str(path) in line


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    line = error([path])
    assert "not found" in line and str(path) in line and "--mapping" in line


def test_a_directory_is_not_a_mapping_file(tmp_path: Path) -> None:
    line = error([tmp_path])
    assert "cannot read mapping file" in line and str(tmp_path) in line


def test_the_first_bad_file_is_named(tmp_path: Path) -> None:
    good = write(tmp_path, "defaults: {replicas: 2}\n", "good.yaml")
    bad = write(tmp_path, "defaults: {replicsa: 2}\n", "bad.yaml")
    line = error([good, bad])
    assert str(bad) in line and str(good) not in line


# -- resolving overrides ---------------------------------------------------------------------


def test_resolve_merges_matching_overrides_later_winning_per_key() -> None:
    rules = Rules(
        overrides=[
            Override(match="orders-*", replicas=3, storage="memory", limits=Limits(max_age=60)),
            Override(match="arn:aws:sqs:*:*:orders-eu", replicas=5, limits=Limits(max_msgs=9)),
            Override(match="other", exclude=True),
        ]
    )
    eu = rules.resolve("orders-eu", "arn:aws:sqs:eu-west-1:1:orders-eu")
    assert eu.replicas == 5
    assert eu.storage == "memory"
    assert eu.limits == Limits(max_age=60, max_msgs=9)
    assert not eu.exclude
    us = rules.resolve("orders-us", "arn:aws:sqs:us-east-1:1:orders-us")
    assert us.replicas == 3 and us.limits == Limits(max_age=60)
    assert rules.resolve("other", "arn:aws:sqs:us-east-1:1:other").exclude
    nothing = rules.resolve("misc", "arn:aws:sqs:us-east-1:1:misc")
    assert nothing.replicas is None and nothing.limits is None and not nothing.exclude


def test_resolve_matches_name_globs_and_arn_globs() -> None:
    rules = Rules(
        overrides=[
            Override(match="pay*", replicas=2),
            Override(match="arn:aws:sns:eu-*:*:*", storage="memory"),
        ]
    )
    by_name = rules.resolve("payments.fifo", "arn:aws:sqs:us-east-1:1:payments.fifo")
    assert by_name.replicas == 2 and by_name.storage is None
    by_arn = rules.resolve("orders", "arn:aws:sns:eu-west-1:1:orders")
    assert by_arn.storage == "memory" and by_arn.replicas is None
    # Globs are case-sensitive, like AWS names.
    assert rules.resolve("Payments", "arn:aws:sqs:us-east-1:1:Payments").replicas is None


def test_a_later_override_can_switch_exclude_back_off(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "overrides:\n  - {match: 'legacy-*', exclude: true}\n"
        "  - {match: legacy-keep, exclude: false}\n",
    )
    rules = load_rules([path])
    assert rules.resolve("legacy-a", "arn:x:legacy-a").exclude
    assert not rules.resolve("legacy-keep", "arn:x:legacy-keep").exclude


# -- the shipped defaults file ---------------------------------------------------------------


def test_default_rules_file_found_in_a_checkout() -> None:
    assert default_rules_file().is_file()
    assert REPO_RULES_FILE == ROOT / "mappings" / "default.yaml"


def test_packaged_defaults_preferred(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    packaged = write(tmp_path, "defaults: {replicas: 2}\n", "default_mapping.yaml")
    monkeypatch.setattr(rules_module, "PACKAGED_RULES_FILE", packaged)
    assert default_rules_file() == packaged
    assert load_rules([]).defaults.replicas == 2


def test_wheel_ships_the_defaults_inside_the_package() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    wheel = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]
    assert wheel["force-include"]["mappings/default.yaml"] == "snsq2nats/default_mapping.yaml"
    # Where the wheel puts the file is exactly where the rules module looks for it.
    shipped = (ROOT / wheel["force-include"]["mappings/default.yaml"]).resolve()
    assert shipped == rules_module.PACKAGED_RULES_FILE
