import os

import pytest

pytest_plugins = [
    "tests.fixtures.nats",
    "tests.fixtures.aws",
    "tests.fixtures.bridge",
    "tests.fixtures.localstack",
]

# Deterministic human output: no colour, a fixed width, no terminal detection surprises.
os.environ["NO_COLOR"] = "1"
os.environ["COLUMNS"] = "100"
os.environ.pop("NATS_CONTEXT", None)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under `-n` (make unit), one worker runs a module's tests so its module-scoped servers
    and estates are built once; the journey's identity modes, minutes each, run apart."""
    for item in items:
        group = item.module.__name__ if item.module is not None else item.nodeid
        callspec = getattr(item, "callspec", None)
        if item.get_closest_marker("journey") is not None and callspec is not None:
            group = f"{group}[{callspec.id}]"
        item.add_marker(pytest.mark.xdist_group(group))
