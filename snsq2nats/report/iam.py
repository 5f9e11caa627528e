"""`auth --iam`'s report: which IAM principal may do what on the estate, and what is approximate."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from snsq2nats.auth.iam import IamReport


def iam_table(report: IamReport) -> Table:
    table = Table(title="IAM principals", title_justify="left", expand=True)
    table.add_column("principal", overflow="fold", ratio=3)
    table.add_column("NATS identity", overflow="fold", ratio=2)
    table.add_column("rights", overflow="fold", ratio=3)
    table.add_column("approximations and conditions", overflow="fold", ratio=5)
    for principal in report.principals:
        rights = [f"{'+'.join(r.rights)} on {r.name}" for r in principal.resources if r.rights] + [
            f"{m} (resource policy)" for m in principal.merged
        ]
        notes = [n for r in principal.resources for n in r.notes] + list(principal.notes)
        notes += [f"{w}: resource policy grant withheld, IAM denies it" for w in principal.withheld]
        table.add_row(
            Text(principal.arn),
            Text(principal.identity or "none", style="" if principal.identity else "dim"),
            Text("\n".join(rights) or "none"),
            Text("\n".join(dict.fromkeys(notes)), style="yellow" if notes else ""),
        )
    return table


def iam_summary(report: IamReport) -> str:
    granted = sum(1 for p in report.principals if p.identity)
    approximate = sum(1 for p in report.principals if p.notes or any(r.notes for r in p.resources))
    return (
        f"IAM: {granted} principal(s) with rights on the estate, {approximate} with "
        f"approximations or conditions, {report.unused} without rights"
    )
