"""The results of `verify`: one row per check, and the line that says whether it passed."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from snsq2nats.verify import CheckResult

_STYLES = {"ok": "green", "failed": "bold red", "skipped": "yellow"}


def summary_line(counts: dict[str, int]) -> str:
    return f"verify: {counts['ok']} ok, {counts['failed']} failed, {counts['skipped']} skipped" + (
        " — FAILED" if counts["failed"] else ""
    )


def results_table(results: list[CheckResult]) -> Table:
    table = Table(title="Verify", title_justify="left", expand=True)
    table.add_column("resource", overflow="fold", ratio=2)
    table.add_column("check", overflow="fold", ratio=3)
    table.add_column("result", no_wrap=True)
    table.add_column("detail", overflow="fold", ratio=4)
    table.add_column("ms", justify="right", no_wrap=True)
    for r in results:
        table.add_row(
            Text(r.resource),
            Text(r.check),
            Text(r.result, style=_STYLES[r.result]),
            Text(r.detail),
            "" if r.latency_ms is None else f"{r.latency_ms:g}",
        )
    return table
