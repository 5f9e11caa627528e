"""All terminal output goes through here: one rich Console for people, stdout for scripts.

Human output goes to stderr so that `--json` on stdout stays machine-readable.
NO_COLOR and a non-TTY give plain, deterministic text; COLUMNS fixes the width.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import IO, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from snsq2nats.errors import SnsqError

# Seconds between plain progress lines when not on a terminal.
PLAIN_PROGRESS_EVERY = 5.0


def _make_console(file: IO[str] | None = None) -> Console:
    width = int(os.environ["COLUMNS"]) if os.environ.get("COLUMNS", "").isdigit() else None
    return Console(
        file=file if file is not None else sys.stderr,
        width=width,
        no_color="NO_COLOR" in os.environ,
        highlight=False,
        soft_wrap=False,
    )


class Output:
    """The single wrapper: `info`, `line`, `warn` and `progress` for people, `data` for
    scripts, `error` and `unexpected` for a failure's one line (the CLI's `Application.abort`
    ends the run)."""

    def __init__(self, err: IO[str] | None = None, out: IO[str] | None = None) -> None:
        self.console = _make_console(err)
        self._out = out

    @property
    def interactive(self) -> bool:
        return self.console.is_terminal

    def info(self, *objects: Any) -> None:
        self.console.print(*objects)

    def line(self, text: str) -> None:
        """One plain log line, never wrapped (log readers and grep want whole lines)."""
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def warn(self, message: str) -> None:
        self.console.print(f"warning: {message}", markup=False, soft_wrap=True)

    def data(self, doc: str | Mapping[str, Any] | list[Any]) -> None:
        """Machine-readable output on stdout, never styled: text as it is, JSON values (a
        document's `to_json()`) serialised here, indented, non-ASCII kept."""
        text = doc if isinstance(doc, str) else json.dumps(doc, indent=2, ensure_ascii=False)
        out = self._out if self._out is not None else sys.stdout
        out.write(text)
        if not text.endswith("\n"):
            out.write("\n")
        out.flush()

    def error(self, err: SnsqError) -> None:
        self.console.print(f"error: {err.one_line()}", markup=False, soft_wrap=True)

    def unexpected(self, exc: BaseException) -> None:
        """A bug, not a user mistake: one line that names it, and how to see more."""
        message = " ".join(str(exc).split())
        what = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
        self.console.print(
            f"error: unexpected {what} (run with --debug for the traceback)",
            markup=False,
            soft_wrap=True,
        )

    @contextmanager
    def progress(self, description: str, total: int | None) -> Iterator[ProgressSink]:
        """A bar on a terminal; one plain line at start and end otherwise."""
        if self.interactive:
            bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )
            with bar:
                task = bar.add_task(description, total=total)
                yield ProgressSink(lambda n, total: bar.update(task, advance=n, total=total))
        else:
            self.console.print(f"{description} …", markup=False)
            done = [0]
            known: list[int | None] = [total]
            last = [time.monotonic()]

            def count(n: int, total: int | None) -> None:
                done[0] += n
                known[0] = total if total is not None else known[0]
                # A line now and then, so a log shows a long stage (10,000 queues) is moving;
                # by time rather than per item, so a small run prints nothing extra.
                now = time.monotonic()
                if now - last[0] >= PLAIN_PROGRESS_EVERY:
                    last[0] = now
                    of = f"/{known[0]}" if known[0] is not None else ""
                    self.console.print(f"{description}: {done[0]}{of}", markup=False)

            yield ProgressSink(count)
            self.console.print(
                f"{description}: {done[0]} done" if done[0] else f"{description}: done",
                markup=False,
            )


class ProgressSink:
    def __init__(self, advance: Any) -> None:
        self._advance = advance

    def advance(self, n: int = 1, total: int | None = None) -> None:
        self._advance(n, total)


def configure_logging(console: Console, level: int | str = "INFO") -> None:
    """Send the package's log records (`snsq2nats.*`) to `console`: through rich on a terminal,
    as plain `message` lines otherwise (systemd and CI add their own timestamps).

    Calling it again replaces the handler it installed rather than adding a second one.
    """
    import logging

    from rich.logging import RichHandler

    name = "snsq2nats.console"
    logger = logging.getLogger("snsq2nats")
    for old in [h for h in logger.handlers if h.get_name() == name]:
        logger.removeHandler(old)
    handler: logging.Handler
    if console.is_terminal:
        handler = RichHandler(console=console, show_path=False, markup=False)
    else:
        handler = logging.StreamHandler(console.file)
        handler.setFormatter(logging.Formatter("%(message)s"))
    handler.set_name(name)
    logger.addHandler(handler)
    logger.setLevel(level)
