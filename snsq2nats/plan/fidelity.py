"""Fidelity verdicts: how one source attribute was carried over (DESIGN.md §2).

The entry constructor and the verdicts every resource kind shares (encryption, resource
policies, tags). Each resource kind's module decides its own attributes; nothing here knows
about queues, topics or subscriptions.
"""

from __future__ import annotations

import functools
import json

from snsq2nats.plan.access import Access
from snsq2nats.plan.model import Fidelity, Verdict


def entry(
    attribute: str,
    value: object,
    verdict: Verdict,
    note: str,
    *,
    target: str | None = None,
    manual_step: str | None = None,
) -> Fidelity:
    """One verdict; a non-string value is shown as JSON, as AWS shows it."""
    shown = None if value is None else (value if isinstance(value, str) else json.dumps(value))
    return _shared(attribute, shown, verdict, target, note, manual_step)


# Verdicts are frozen and mostly identical across queues (10,000 queues share a few hundred
# distinct ones): one shared instance each keeps a large plan's memory down by a quarter.
@functools.lru_cache(maxsize=4096)
def _shared(
    attribute: str,
    value: str | None,
    verdict: Verdict,
    target: str | None,
    note: str,
    manual_step: str | None,
) -> Fidelity:
    return Fidelity(
        attribute=attribute,
        value=value,
        verdict=verdict,
        target=target,
        note=note,
        manual_step=manual_step,
    )


# JetStream encrypts every stream's files with the server's key when the server is told to;
# the setting, with the key from the environment as the NATS docs advise, is what an operator
# needs from the plan.
ENCRYPTION_SETTING = "jetstream { cipher: chachapoly|aes, key: $JS_KEY }"


def encryption(kms_key: str | None, sse: bool) -> list[Fidelity]:
    """SQS-managed or KMS encryption at rest: JetStream has it too, as a server setting rather
    than per queue, so the data stays encrypted at rest (approximate) once every server has it.
    AWS turns SqsManagedSseEnabled on by default: calling that unsupported would make every
    queue's worst verdict one a person cannot act on per queue."""
    if not (kms_key or sse):
        return []
    note = "JetStream encrypts at rest with one key per server, not per stream"
    if kms_key:
        note += ": the KMS key, its key policy, rotation and audit trail are not carried over"
    return [
        entry(
            "KmsMasterKeyId" if kms_key else "SqsManagedSseEnabled",
            kms_key or "true",
            "approximate",
            note,
            target=f"server {ENCRYPTION_SETTING}",
            manual_step=f"enable JetStream encryption at rest ({ENCRYPTION_SETTING}) on every "
            "server",
        )
    ]


def resource_policy(policy: dict[str, object] | None, access: Access) -> list[Fidelity]:
    """A resource policy: who it lets in becomes NATS identities (`snsq2nats auth`)."""
    if not policy:
        return []
    statements = policy.get("Statement") or []
    # AWS also accepts a single statement written as an object rather than a list.
    count = len(statements) if isinstance(statements, list) else 1
    parts = [
        f"{g.principal} as {'+'.join(g.roles)}"
        + (f" (not enforced on NATS: {', '.join(g.conditions)})" if g.conditions else "")
        for g in access.grants
    ]
    said = [f"grants {'; '.join(parts)}"] if parts else ["grants no NATS role"]
    if access.plumbing:
        said.append(f"lets {', '.join(access.plumbing)} deliver (the stream source, not a user)")
    said += access.unmapped
    said.append(
        "same-account access granted by IAM identity policies is not in a resource policy: "
        "find the other producers and consumers before they move"
    )
    return [
        entry(
            "Policy",
            f"{count} statement(s)",
            "approximate",
            "; ".join(said),
            target="NATS permissions (snsq2nats auth)",
            manual_step="give the applications of these principals their generated NATS "
            "identities (`snsq2nats auth`), and the ones IAM grants access too",
        )
    ]


def tags(values: dict[str, str]) -> Fidelity:
    return entry(
        "Tags",
        values or None,
        "exact",
        "kept as stream metadata aws.tag.<key>",
        target="stream metadata",
    )
