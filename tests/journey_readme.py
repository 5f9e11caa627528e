"""The README's "Migrating step by step" commands, read and run as the journey's script.

The section's fenced `sh` blocks are, in order: the setup (plan, auth, apply, the bridge, the
runbook), the step commands (templates with QUEUE / TOPIC standing for a name: every command
`runbook --json` prints must be one of them), a change of the estate mid-migration (re-plan,
auth, apply) and the closing check (`status`). The journey runs exactly those lines, so the
README and what is proven cannot drift apart.

A line is one command or several joined by `&&`, with what a reader's shell does to it that the
journey needs: `export NAME=VALUE`, leading `NAME=VALUE` assignments, `$NAME` expansion, a
trailing `&` (started in the background, its output to a log file) and `> FILE`.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
SECTION = "## Migrating step by step"
BLOCKS = ("setup", "steps", "change", "check")
PLACEHOLDERS = ("QUEUE", "TOPIC")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


def section_blocks(readme: Path = README) -> dict[str, list[str]]:
    """The section's `sh` blocks by role, each a list of command lines (comments kept)."""
    text = readme.read_text(encoding="utf-8")
    start = text.index(SECTION)
    following = re.search(r"^#{2,3} ", text[start + len(SECTION) :], re.MULTILINE)
    end = start + len(SECTION) + following.start() if following else len(text)
    fences = re.findall(r"^```sh\n(.*?)^```", text[start:end], re.MULTILINE | re.DOTALL)
    assert len(fences) == len(BLOCKS), (
        f"README {SECTION!r} must hold {len(BLOCKS)} sh blocks ({', '.join(BLOCKS)}), "
        f"found {len(fences)}"
    )
    return {
        role: [line for line in body.splitlines() if line.strip()]
        for role, body in zip(BLOCKS, fences, strict=True)
    }


@dataclass
class Command:
    """One simple command of a line: environment, words, background, stdout file."""

    line: str
    env: dict[str, str]
    words: list[str]
    background: bool = False
    stdout: str | None = None

    @property
    def snsq2nats(self) -> list[str]:
        """The words after `snsq2nats` (the sub-command and its arguments)."""
        assert self.words and self.words[0] == "snsq2nats", self.line
        return self.words[1:]


def parse_line(line: str, env: Mapping[str, str]) -> list[Command]:
    """A line's commands; `export` lines update `env`-to-be and yield a command without words."""
    words = shlex.split(line, comments=True)
    commands: list[Command] = []
    current: list[str] = []
    for word in [*words, "&&"]:
        if word != "&&":
            current.append(word)
            continue
        if current:
            commands.append(_command(line, current, env))
        current = []
    return commands


def _command(line: str, words: list[str], env: Mapping[str, str]) -> Command:
    background = words[-1] == "&"
    if background:
        words = words[:-1]
    stdout = None
    if ">" in words:
        at = words.index(">")
        stdout, words = words[at + 1], words[:at]
    assignments: dict[str, str] = {}
    if words and words[0] == "export":
        for word in words[1:]:
            name, _, value = word.partition("=")
            assignments[name] = expand(value, {**env, **assignments})
        return Command(line, assignments, [])
    while words and _ASSIGNMENT.match(words[0]):
        name, _, value = words.pop(0).partition("=")
        assignments[name] = expand(value, {**env, **assignments})
    scope = {**env, **assignments}
    return Command(
        line,
        assignments,
        [expand(w, scope) for w in words],
        background,
        expand(stdout, scope) if stdout else None,
    )


def expand(word: str, env: Mapping[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in env, f"README uses ${name}, which the journey does not set"
        return env[name]

    return _VARIABLE.sub(value, word)


def template_of(command: str, names: Mapping[str, str]) -> str:
    """A runbook command with its queue or topic name replaced by QUEUE / TOPIC."""
    words = shlex.split(command)
    out = [names.get(w, w) for w in words]
    return " ".join(out)


def templates(block: list[str]) -> set[str]:
    """The step block's command templates, comments and spacing normalised."""
    return {" ".join(shlex.split(line, comments=True)) for line in block}


@dataclass
class Result:
    command: Command
    returncode: int
    output: str
    stdout: str = ""
    """What a script reads: stdout alone (a command's advice to people goes to stderr)."""


@dataclass
class Shell:
    """Runs README lines in `cwd` with an environment that `export` lines change."""

    cwd: Path
    env: dict[str, str]
    logs: Path
    ran: list[Result] = field(default_factory=list)
    started: int = 0
    """Background commands started so far (numbers their log files)."""

    def run(
        self,
        line: str,
        *,
        extra: list[str] | None = None,
        check: bool = True,
        start: Callable[[Command], subprocess.Popen[bytes]] | None = None,
        timeout: float = 600,
    ) -> list[Result | subprocess.Popen[bytes]]:
        """Run every command of `line` (stopping at the first failure of an `&&` chain);
        `extra` words are appended to each snsq2nats command (a test's knobs), `start` runs
        a background one (default: `self.start`)."""
        done: list[Result | subprocess.Popen[bytes]] = []
        for command in parse_line(line, self.env):
            if not command.words:
                self.env.update(command.env)
                continue
            if extra:
                command.words = [*command.words, *extra]
            if command.background:
                done.append((start or self.start)(command))
                continue
            result = self.call(command, timeout)
            done.append(result)
            if result.returncode != 0:
                assert not check, (
                    f"README command failed (exit {result.returncode}): {command.line}\n"
                    f"{result.output[-3000:]}"
                )
                break
        return done

    def argv(self, command: Command) -> list[str]:
        return [sys.executable, "-m", "snsq2nats", *command.snsq2nats]

    def call(self, command: Command, timeout: float = 600) -> Result:
        """Run a command to its end; one still running after `timeout` is killed and its
        result says so (exit 124, as timeout(1)), so a hung step is a finding, not a hang."""
        try:
            return self._call(command, timeout)
        except subprocess.TimeoutExpired as err:
            output = b"".join(o for o in (err.stdout, err.stderr) if isinstance(o, bytes))
            result = Result(
                command,
                124,
                output.decode(errors="replace") + f"\n(killed: still running after {timeout:g}s)",
            )
            self.ran.append(result)
            return result

    def _call(self, command: Command, timeout: float) -> Result:
        env = {**self.env, **command.env}
        if command.stdout:
            with (self.cwd / command.stdout).open("wb") as out:
                done = subprocess.run(
                    self.argv(command),
                    cwd=self.cwd,
                    env=env,
                    stdout=out,
                    stderr=subprocess.PIPE,
                    stdin=subprocess.DEVNULL,
                    timeout=timeout,
                )
            output = done.stderr.decode(errors="replace")
            printed = ""
        else:
            done = subprocess.run(
                self.argv(command),
                cwd=self.cwd,
                env=env,
                capture_output=True,
                stdin=subprocess.DEVNULL,
                timeout=timeout,
            )
            output = (done.stdout + done.stderr).decode(errors="replace")
            printed = done.stdout.decode(errors="replace")
        result = Result(command, done.returncode, output, printed)
        self.ran.append(result)
        return result

    def start(self, command: Command, name: str | None = None) -> subprocess.Popen[bytes]:
        """A background command in its own session (a terminal's process group: a Ctrl-C is
        a SIGINT to the group), output to a log file, never a pipe."""
        self.started += 1
        log = (self.logs / f"{name or command.words[1]}-{self.started}.log").open("wb")
        try:
            return subprocess.Popen(
                self.argv(command),
                cwd=self.cwd,
                env={**self.env, **command.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            log.close()


def environment(overrides: Mapping[str, str]) -> dict[str, str]:
    """The process environment a reader's shell would have, plus the journey's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.pop("NATS_CONTEXT", None)
    env.update(overrides)
    return env
