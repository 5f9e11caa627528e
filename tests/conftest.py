import os

import pytest

pytest_plugins = [
    "tests.fixtures.nats",
    "tests.fixtures.aws",
    "tests.fixtures.bridge",
    "tests.fixtures.localstack",
    "tests.fixtures.gateway",
]

# Deterministic human output: no colour, a fixed width, no terminal detection surprises.
os.environ["NO_COLOR"] = "1"
os.environ["COLUMNS"] = "100"
os.environ.pop("NATS_CONTEXT", None)

# Each test worker takes its local servers' ports from a range of its own, below the kernel's
# ephemeral ports (32768 on): a port one worker chose and released before its server bound it
# was otherwise handed to another worker's server (a monitor port answering as a NATS client
# port), and the kernel's outgoing connections never take them either.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
_INDEX = int(_WORKER[2:]) if _WORKER[2:].isdigit() else 0
_PORTS_PER_WORKER = 1500
os.environ["SNSQ2NATS_LOCAL_PORTS"] = (
    f"{20000 + _INDEX * _PORTS_PER_WORKER}-{20000 + (_INDEX + 1) * _PORTS_PER_WORKER}"
)

# What a test costs, roughly, on the loaded 2-core machine (seconds): only the order of the
# groups depends on it, so that the longest start first and the last to finish are short.
JOURNEY_SECONDS = 220.0
"""One identity mode of tests/test_journey.py's journey (216–269 s measured)."""
SLOW_SECONDS = 30.0
"""A test marked slow: a real bridge or gateway process, a cluster, a cutover journey (5–60 s)."""
TEST_SECONDS = 0.1
"""Any other test (most take milliseconds, those over real servers up to a few seconds)."""

_SHARED_SCOPES = frozenset({"module", "class", "package"})


def _shares_a_fixture(item: pytest.Item) -> bool:
    """Whether `item` uses a fixture built once for several tests of its module (a session's
    fixture is built once per worker anyway)."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return True
    return any(
        definition.scope in _SHARED_SCOPES
        for definitions in info.name2fixturedefs.values()
        for definition in definitions
    )


def _group(item: pytest.Item) -> str:
    """A module's tests run on one worker, so its module-scoped servers and estates are built
    once; a case of a parametrized slow test that shares none of them is a group of its own
    (the journey's identity modes, the cutover journeys), so such cases run side by side."""
    module = item.module.__name__ if item.module is not None else item.nodeid
    spread = _journey_mode(item) or (
        item.get_closest_marker("slow") is not None
        and hasattr(item, "callspec")
        and not _shares_a_fixture(item)
    )
    if spread:
        return f"{module}::{item.name}"
    return module


def _journey_mode(item: pytest.Item) -> bool:
    return item.get_closest_marker("journey") is not None and hasattr(item, "callspec")


def _cost(item: pytest.Item) -> float:
    if _journey_mode(item):
        return JOURNEY_SECONDS
    if item.get_closest_marker("slow") is not None:
        return SLOW_SECONDS
    return TEST_SECONDS


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Group the tests for `make unit` (xdist's `--dist loadgroup`) and order the groups longest
    first: xdist hands them out in collection order (with `--no-loadscope-reorder`), so the
    journey's two modes start first, one on each of the first two workers, every other worker
    starts on the longest group still waiting, and no minutes-long group starts last."""
    groups = {id(item): _group(item) for item in items}
    cost: dict[str, float] = {}
    first: dict[str, int] = {}
    for index, item in enumerate(items):
        group = groups[id(item)]
        cost[group] = cost.get(group, 0.0) + _cost(item)
        first.setdefault(group, index)
    order = {id(item): index for index, item in enumerate(items)}
    # Stable within a group, so a module's tests keep their order and its fixtures are built once.
    items.sort(
        key=lambda i: (
            not _journey_mode(i),
            -cost[groups[id(i)]],
            first[groups[id(i)]],
            order[id(i)],
        )
    )
    for item in items:
        item.add_marker(pytest.mark.xdist_group(groups[id(item)]))
