"""`snsq2nats demo` without the `demo` extra: one line saying what to install, nothing started."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from snsq2nats.demo.extras import DEMO_MODULES, require_demo_extras
from snsq2nats.errors import UsageError


def test_installed_extras_pass() -> None:
    require_demo_extras()  # the dev extra includes the demo extra
    require_demo_extras(["json"])


def test_a_missing_module_names_the_extra_and_what_is_missing() -> None:
    with pytest.raises(UsageError) as caught:
        require_demo_extras(["json", "snsq2nats_no_such_module", "another_missing_one"])
    assert caught.value.one_line() == (
        "the demo needs extra packages: pip install 'snsq2nats[demo]' "
        "(missing: snsq2nats_no_such_module, another_missing_one)"
    )


@pytest.mark.parametrize("module", DEMO_MODULES)
def test_demo_command_without_an_extra_is_one_line(tmp_path: Path, module: str) -> None:
    # A real process in which the module cannot be imported (None in sys.modules blocks it),
    # as in an installation without the extra.
    code = f"import sys\nsys.modules[{module!r}] = None\nfrom snsq2nats.cli import main\nmain()\n"
    run = subprocess.run(
        [sys.executable, "-c", code, "demo", "--dir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 1
    assert run.stderr == (
        f"error: the demo needs extra packages: pip install 'snsq2nats[demo]' (missing: {module})\n"
    )
    assert not (tmp_path / "demo").exists()  # checked before anything was written or started
