"""The SnsqError tree lives in errors.py, and its docstring draws all of it."""

from __future__ import annotations

import importlib
import pkgutil
import re

import snsq2nats
from snsq2nats import errors


def _every_subclass(cls: type) -> set[type]:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub, *_every_subclass(sub)}
    return found


def test_every_expected_failure_is_declared_and_drawn_in_errors() -> None:
    for module in pkgutil.walk_packages(snsq2nats.__path__, "snsq2nats."):
        if module.name != "snsq2nats.__main__":
            importlib.import_module(module.name)
    ours = {c for c in _every_subclass(errors.SnsqError) if c.__module__.startswith("snsq2nats")}
    assert {c.__module__ for c in ours} == {"snsq2nats.errors"}
    doc = errors.__doc__ or ""
    drawn = set(re.findall(r"── (\w+)", doc))
    assert {c.__name__ for c in ours} == drawn


def test_the_old_homes_still_export_their_errors() -> None:
    from snsq2nats.apply import ApplyError
    from snsq2nats.auth.record import GrantsOutdated
    from snsq2nats.bridge.runtime import DrainIncomplete
    from snsq2nats.export.bundle import ExportError
    from snsq2nats.jetstream.api import JetStreamApiError

    assert ApplyError is errors.ApplyError and ExportError is errors.ExportError
    assert JetStreamApiError is errors.JetStreamApiError
    assert GrantsOutdated is errors.GrantsOutdated and DrainIncomplete is errors.DrainIncomplete
