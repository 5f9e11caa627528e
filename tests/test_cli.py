"""The command line's own promises: instant help, every command listed, one error funnel."""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from snsq2nats.cli import main

COMMANDS = ["scan", "plan", "apply", "verify", "bridge", "status", "subject", "demo"]


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in COMMANDS:
        assert f"  {command} " in result.output


def test_help_does_not_import_boto3_or_nats() -> None:
    """boto3 and nats-py are slow to import: only the commands that use them import them."""
    code = (
        "import sys\n"
        "from snsq2nats.cli import main\n"
        "try:\n"
        "    main(['plan', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = [m for m in ('boto3', 'botocore', 'nats', 'pydantic') if m in sys.modules]\n"
        "print('heavy=' + ','.join(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip().splitlines()[-1] == "heavy="


def test_unknown_option_is_a_usage_error_without_traceback() -> None:
    result = CliRunner().invoke(main, ["plan", "--no-such-flag"])
    assert result.exit_code == 2
    assert "No such option" in result.output
    assert "Traceback" not in result.output
