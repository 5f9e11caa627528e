"""Bridge routes' backlog on both sides, as `status` prints it."""

from __future__ import annotations

from rich.table import Table

from snsq2nats.status import RouteOwner, RouteStatus


def _seconds(value: float | None) -> str:
    if value is None:
        return "?"
    return (
        f"{value:.0f}s"
        if value < 120
        else f"{value / 60:.0f}m"
        if value < 7200
        else f"{value / 3600:.0f}h"
    )


def owner_cell(owner: RouteOwner | None) -> str:
    if owner is None:
        return "—"
    if owner.member is None:
        return "unowned"
    text = f"{owner.member}, lease {_seconds(owner.lease_age)}"
    if not owner.alive:
        text += f", no heartbeat for {_seconds(owner.heartbeat_age)}"
    return text


# A terminal table of 10,000 routes is unreadable and takes rich longer to lay out than reading
# them: past this many rows the routes still to drain come first, the rest are counted.
TABLE_ROWS = 200
# Route names named in the one-line verdict; `--json` lists them all.
LINE_NAMES = 20


def status_table(statuses: list[RouteStatus], *, limit: int = TABLE_ROWS) -> Table:
    table = Table(title="Bridge routes", title_justify="left")
    # The owner column only where there is a fleet bucket to read owners from.
    owners = any(st.owner is not None for st in statuses)
    # The account column only for an estate of several accounts (`collect` sets it then).
    accounts = any(st.account is not None for st in statuses)
    columns = ["route", "kind", "owner"] if owners else ["route", "kind"]
    if accounts:
        # An account ID is looked up by eye: never folded.
        table.add_column("AWS account", min_width=12, no_wrap=True)
    for column in (*columns, "AWS backlog", "NATS backlog", "DLQ", "verdict"):
        table.add_column(column, overflow="fold")
    shown = statuses
    if len(statuses) > limit:
        # Stable: within each group the order given is kept.
        shown = sorted(statuses, key=lambda st: st.drained)[:limit]
    if accounts:
        # Each account's routes together, a rule between accounts; the order within kept.
        shown = sorted(shown, key=lambda st: st.account or "")
    for index, st in enumerate(shown):
        aws = (
            "—"
            if st.aws is None
            else "no queue"
            if not st.aws.exists
            else f"{st.aws.visible}/{st.aws.not_visible}/{st.aws.delayed}"
        )
        nats = (
            "—"
            if st.nats is None
            else "missing"
            if not st.nats.exists
            else f"{st.nats.pending}/{st.nats.ack_pending}"
        )
        dlq = ", ".join(f"{k.split('_')[0]} {v}" for k, v in st.dlq.items()) or "—"
        verdict = ("drained" if st.drained else "NOT drained") + f": {st.reason}"
        owner = [owner_cell(st.owner)] if owners else []
        account = [st.account or "?"] if accounts else []
        last_of_account = (
            accounts and index + 1 < len(shown) and shown[index + 1].account != st.account
        )
        table.add_row(
            *account,
            st.route,
            st.kind,
            *owner,
            aws,
            nats,
            dlq,
            verdict,
            end_section=last_of_account,
        )
    table.caption = "AWS: visible/in flight/delayed · NATS: pending/unacknowledged"
    if owners:
        table.caption += " · owner: the fleet member holding the route's lease, its age"
    if len(shown) < len(statuses):
        left = len(statuses) - len(shown)
        drained = sum(st.drained for st in statuses) - sum(st.drained for st in shown)
        table.caption += (
            f"\n{left} more route(s) not listed ({drained} drained, {left - drained} not); "
            "--json lists every route"
        )
    return table


def status_line(statuses: list[RouteStatus]) -> str:
    waiting = [s.route for s in statuses if not s.drained]
    if not waiting:
        return "all selected routes drained"
    named = ", ".join(waiting[:LINE_NAMES])
    more = len(waiting) - LINE_NAMES
    return f"not drained: {named}" + (f" and {more} more" if more > 0 else "")
