"""One entry point for every export target."""

from __future__ import annotations

from snsq2nats.errors import UsageError
from snsq2nats.export import nack, natscli, terraform
from snsq2nats.export.bundle import FORMATS, Export, ExportFile, Format, notes_markdown
from snsq2nats.plan.model import Plan


def export_plan(
    plan: Plan,
    fmt: Format,
    *,
    include_bridge: bool = True,
    bundle: bool = False,
    connection: nack.Connection | None = None,
) -> Export:
    """The plan's desired streams and consumers as `fmt` files, plus NOTES.md saying what the
    target cannot express and which objects only the bridge needs."""
    if fmt == "natscli":
        result = natscli.export(plan, include_bridge=include_bridge)
    elif fmt == "nack":
        result = nack.export(
            plan, connection=connection, include_bridge=include_bridge, bundle=bundle
        )
    elif fmt == "terraform":
        result = terraform.export(plan, include_bridge=include_bridge, bundle=bundle)
    else:
        raise UsageError(f"unknown export format {fmt!r}", hint=f"use one of {', '.join(FORMATS)}")
    if connection is not None and fmt != "nack":
        given = connection.fields()
        if given:
            raise UsageError(
                f"{', '.join(sorted(given))} only apply to --format nack",
                hint="natscli takes its usual context; Terraform reads var.nats_servers",
            )
    result.files.append(ExportFile("NOTES.md", notes_markdown(result)))
    return result
