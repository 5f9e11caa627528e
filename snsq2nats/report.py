"""Reports people read: rich tables on the terminal (Markdown and HTML come with the plan)."""

from __future__ import annotations

from rich.table import Table

from snsq2nats.inventory import Inventory


def scan_summary(inventory: Inventory) -> Table:
    summary = inventory.summary()
    table = Table(title="AWS estate", title_justify="left", show_header=True)
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row("regions", ", ".join(inventory.regions))
    table.add_row("queues", str(summary["queues"]))
    table.add_row("  FIFO", str(summary["fifo_queues"]))
    table.add_row("  with a dead-letter queue", str(summary["queues_with_dlq"]))
    table.add_row("topics", str(summary["topics"]))
    table.add_row("  FIFO", str(summary["fifo_topics"]))
    table.add_row("subscriptions", str(summary["subscriptions"]))
    for protocol, count in summary["subscriptions_by_protocol"].items():
        table.add_row(f"  {protocol}", str(count))
    table.add_row("  with a filter policy", str(summary["filtered_subscriptions"]))
    table.add_row("warnings", str(summary["warnings"]))
    return table


def warnings_table(inventory: Inventory) -> Table | None:
    if not inventory.warnings:
        return None
    table = Table(title="Warnings", title_justify="left")
    table.add_column("code")
    table.add_column("resource", overflow="fold")
    table.add_column("message", overflow="fold")
    for warning in inventory.warnings:
        table.add_row(warning.code, warning.resource, warning.message)
    return table
