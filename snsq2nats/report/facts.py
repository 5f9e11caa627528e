"""What every plan output says, computed once so the terminal, Markdown and HTML cannot disagree.

Every function here is a pure function of a `Plan`: no clock, no environment, no I/O. The same
plan always gives byte-identical text, so goldens can be asserted and a re-generated report only
changes in a pull request when the plan did.
"""

from __future__ import annotations

from snsq2nats.plan.model import VERDICT_ORDER, Change, Fidelity, Plan, Resource
from snsq2nats.report.format import plural, safe_url

MARKERS = {"create": "+", "update": "~", "replace": "-/+", "delete": "-", "noop": "="}
# Destructive changes first: they are what a reviewer must not miss at the bottom of a long list.
ACTION_ORDER = {"delete": 0, "replace": 1, "update": 2, "create": 3, "noop": 4}
VERDICT_MEANING = {
    "unsupported": "no NATS equivalent: a person must act",
    "emulated": "kept by a snsq2nats runtime component (the bridge)",
    "approximate": "mapped, with a difference in behaviour",
}
FINDING_VERDICTS = ("unsupported", "emulated", "approximate")


def summary_line(plan: Plan) -> str:
    counts = plan.counts()
    if not plan.pending:
        return (
            f"No changes: live JetStream already matches the estate ({counts['noop']} unchanged)."
        )
    return (
        f"Plan: {counts['create']} to create, {counts['update']} to update, "
        f"{counts['replace']} to replace, {counts['delete']} to delete, "
        f"{counts['noop']} unchanged."
    )


def server_line(plan: Plan) -> str:
    server = plan.server
    if not server.reachable:
        line = "no NATS server reachable: everything planned as create"
        return f"{line} ({server.note})" if server.note else line
    details = [f"server {server.version}" if server.version else "server version unknown"]
    if server.cluster:
        details.append(f"cluster {server.cluster}")
    where = ", ".join(safe_url(u) for u in server.url.split(",")) if server.url else "?"
    line = f"NATS {where} ({', '.join(details)})"
    return f"{line}: {server.note}" if server.note else line


def sorted_changes(plan: Plan, *, include_noop: bool = True) -> list[Change]:
    changes = [c for c in plan.changes if include_noop or c.action != "noop"]
    # Streams before their consumers, so a replace reads "stream, then what hangs off it".
    return sorted(
        changes, key=lambda c: (ACTION_ORDER[c.action], c.stream, c.type != "stream", c.name)
    )


def change_name(change: Change) -> str:
    # Consumer names are only unique within their stream.
    return f"{change.stream}/{change.name}" if change.type == "consumer" else change.name


def loss_line(change: Change) -> str | None:
    """What a destructive change costs in messages: the line a reviewer must consciously accept.

    Consumers hold no messages (their delivery state is what goes, and the reason says so).
    """
    if change.action not in ("replace", "delete"):
        return None
    if change.live_messages is not None:
        return f"{plural(change.live_messages, 'message')} would be lost"
    if change.type == "stream":
        return "the stream's messages would be lost (count unknown)"
    return None


def findings(plan: Plan) -> list[tuple[Resource, Fidelity]]:
    """Every non-exact verdict, worst first, then by resource and attribute."""
    found = [(r, f) for r in plan.resources for f in r.fidelity if f.verdict != "exact"]
    return sorted(
        found,
        key=lambda rf: (
            VERDICT_ORDER[rf[1].verdict],
            rf[0].name,
            rf[0].source_arn,
            rf[1].attribute,
        ),
    )


def grouped_findings(plan: Plan) -> list[tuple[Fidelity, list[str]]]:
    """Findings that say the same thing about several resources, said once with every name.

    A real estate repeats itself (every SSE queue gets the same encryption note): a thousand
    identical lines would bury the one finding that differs.
    """
    groups: dict[tuple[str, str, str, str], tuple[Fidelity, list[str]]] = {}
    for resource, fidelity in findings(plan):
        key = (fidelity.verdict, fidelity.attribute, fidelity.note, fidelity.manual_step or "")
        groups.setdefault(key, (fidelity, []))[1].append(resource.name)
    return [
        groups[key] for key in sorted(groups, key=lambda k: (VERDICT_ORDER[k[0]], k[1], k[2], k[3]))
    ]


def manual_steps(plan: Plan) -> list[tuple[str, list[tuple[str, str]]]]:
    """Each distinct manual step once, with the (resource, attribute) pairs that need it."""
    steps: dict[str, list[tuple[str, str]]] = {}
    for resource, fidelity in findings(plan):
        if fidelity.manual_step:
            steps.setdefault(fidelity.manual_step, []).append((resource.name, fidelity.attribute))
    return list(steps.items())


def verdict_counts(plan: Plan) -> dict[str, int]:
    counts = dict.fromkeys(VERDICT_ORDER, 0)
    for resource in plan.resources:
        for fidelity in resource.fidelity:
            counts[fidelity.verdict] += 1
    return counts


def fidelity_line(plan: Plan) -> str:
    counts = verdict_counts(plan)
    parts = [f"{counts[v]} {v}" for v in FINDING_VERDICTS]
    exact = plural(counts["exact"], "attribute")
    verb = "maps" if counts["exact"] == 1 else "map"
    return f"{', '.join(parts)}; {exact} {verb} exactly."


def verdict_sentence(verdict: str) -> str:
    meaning = VERDICT_MEANING[verdict]
    return f"{meaning[0].upper()}{meaning[1:]}."
