"""The review documents `plan --report` writes: the format follows the file name."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from snsq2nats.errors import UsageError
from snsq2nats.files import write_atomic
from snsq2nats.plan.model import Plan
from snsq2nats.report.html import plan_html
from snsq2nats.report.markdown import plan_markdown

_FORMATS: dict[str, Callable[[Plan], str]] = {
    ".md": plan_markdown,
    ".html": plan_html,
    ".htm": plan_html,
}


def write_report(path: Path, plan: Plan) -> None:
    """`--report FILE.md` or `--report FILE.html`: the format follows the file name."""
    render = _FORMATS.get(path.suffix.lower())
    if render is None:
        raise UsageError(
            f"unknown report format {path.suffix or '(no suffix)'!r}",
            where=str(path),
            hint="name the report FILE.md for Markdown or FILE.html for a browser",
        )
    write_atomic(path, render(plan))
