"""The command line's own promises: instant help, every command listed, one error funnel."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from snsq2nats.cli import main

# Read from the group itself: a command added later is covered without editing a list here.
COMMANDS = sorted(main.commands)


def test_the_commands_are_read_from_the_real_group() -> None:
    # Guards the line above: an empty or stand-in group would make the tests below vacuous.
    assert {"scan", "plan", "apply", "bridge", "cutover", "runbook", "export", "auth"} <= set(
        COMMANDS
    )


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in COMMANDS:
        assert f"  {command} " in result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str) -> None:
    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert f"Usage: main {command} " in result.output


def test_help_does_not_import_boto3_or_nats() -> None:
    """boto3 and nats-py are slow to import: only the commands that use them import them."""
    # The group's help and every command's, subcommands included.
    code = (
        "import sys\n"
        "import click\n"
        "from snsq2nats.cli import main\n"
        "paths = [[]]\n"
        "for name, command in main.commands.items():\n"
        "    paths.append([name])\n"
        "    if isinstance(command, click.Group):\n"
        "        paths += [[name, sub] for sub in command.commands]\n"
        "assert len(paths) > 12, paths\n"
        "for path in paths:\n"
        "    try:\n"
        "        main([*path, '--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
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


@pytest.fixture
def broken_command() -> Iterator[str]:
    """A command with a bug in it, added to the real group: the funnel is what is under test."""

    @click.command("broken-for-test")
    def broken() -> None:
        {}["no such key"]

    main.add_command(broken)
    try:
        yield "broken-for-test"
    finally:
        main.commands.pop("broken-for-test")


def test_unexpected_error_is_one_line_without_traceback(broken_command: str) -> None:
    result = CliRunner().invoke(main, [broken_command])
    assert result.exit_code == 1
    assert result.stderr == (
        "error: unexpected KeyError: 'no such key' (run with --debug for the traceback)\n"
    )
    assert "Traceback" not in result.output


@pytest.fixture
def aborting_command() -> Iterator[str]:
    """A command that fails as expected, through the application's one way out."""
    from snsq2nats.cli.app import Application, pass_app
    from snsq2nats.errors import UsageError

    @click.command("abort-for-test")
    @click.option("--code", type=int)
    @pass_app
    def aborting(app: Application, code: int | None) -> None:
        if code is None:
            app.abort(UsageError("no widget", where="here", hint="make one"))
        app.abort(code=code)

    main.add_command(aborting)
    try:
        yield "abort-for-test"
    finally:
        main.commands.pop("abort-for-test")


def test_abort_prints_one_line_and_exits_with_its_code(aborting_command: str) -> None:
    result = CliRunner().invoke(main, [aborting_command])
    assert result.exit_code == 1
    assert result.stderr == "error: no widget (at here): make one\n"
    silent = CliRunner().invoke(main, [aborting_command, "--code", "2"])
    assert silent.exit_code == 2
    assert silent.output == ""


def test_debug_lets_the_traceback_through() -> None:
    # A real process: with --debug the exception leaves click as Python reports it.
    code = (
        "import click\n"
        "from snsq2nats.cli import main\n"
        "@main.command('broken-for-test')\n"
        "def broken():\n"
        "    {}['no such key']\n"
        "main()\n"
    )
    for args, traceback in (([], False), (["--debug"], True)):
        run = subprocess.run(
            [sys.executable, "-c", code, *args, "broken-for-test"],
            capture_output=True,
            text=True,
            env={**os.environ, "SNSQ2NATS_DEBUG": ""},
        )
        assert run.returncode == 1
        assert ("Traceback (most recent call last)" in run.stderr) is traceback
        assert ("(run with --debug for the traceback)" in run.stderr) is not traceback
        assert "KeyError: 'no such key'" in run.stderr


def test_a_local_nats_server_that_cannot_start_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "no-nats-server"
    result = CliRunner().invoke(
        main, ["demo", "--dir", str(tmp_path)], env={"NATS_SERVER_BIN": str(missing)}
    )
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == (
        f"error: NATS_SERVER_BIN={missing} is not an executable file"
    )
    assert "Traceback" not in result.output
