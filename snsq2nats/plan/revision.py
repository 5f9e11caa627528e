"""The applied revision: the plan `apply` last made true, as the bridges read it from NATS.

A bridge runs what was applied, never what a file on its host says: `apply` records its plan
in the KV bucket `snsq2nats_revision` (planned in `plan.buckets`, replicated like the streams)
and every bridge follows it live (`bridge.follow`), as it follows the cutover state.

An estate of 10,000 queues has ~11,000 routes: more than one NATS message (1 MiB by default).
So the plan (without its `changes`, which were the way there, not the result) is stored as
zlib-compressed JSON cut into chunks under content-addressed keys `chunk.<digest>.<i>`, and one
small pointer key, `applied`, names the digest and the chunk count. Chunks are written before
the pointer moves, so a reader that sees a pointer finds every chunk it names; the KV revision
of the pointer is the revision number bridges confirm in their heartbeat.

Pure: plans in, bytes out, and back. The bucket I/O lives with its users (apply, bridge).
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field

from snsq2nats.plan.model import Plan

REVISION_BUCKET = "snsq2nats_revision"
POINTER_KEY = "applied"
CHUNK_PREFIX = "chunk."
CHUNK_BYTES = 256 * 1024
"""Well under nats-server's default max_payload (1 MiB), headers and all."""


class Pointer(BaseModel):
    """The `applied` key's value: which chunks hold the applied plan."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    digest: str
    chunks: int
    size: int
    """Bytes of the compressed document."""
    generated_at: str
    """The plan's own `generated_at`: tells people which plan file it was."""
    applied_at: str
    step: str = "applied"
    """"applied", or "handover": the routes that may run while apply hands a topic's fan-out
    from SNS to stream sources (`apply.hand_over_fanout`)."""
    starts: dict[str, int] = Field(default_factory=dict)
    """A handover: per topic stream, the sequence its new sources start at (a re-run of an
    apply stopped midway resumes the same handover)."""
    previous: str = ""
    previous_chunks: int = 0
    """The revision recorded before (its chunks are deleted when the next one is recorded)."""

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()


def bridge_view(plan: Plan) -> Plan:
    """What is recorded: the plan as applied (its changes are done)."""
    return plan.model_copy(update={"changes": []})


def digest_of(plan: Plan) -> str:
    """Same applied content, same digest: a plan file is current when its digest matches."""
    data = bridge_view(plan).model_dump_json(exclude={"generated_at"}).encode()
    return hashlib.sha256(data).hexdigest()[:32]


def chunk_key(digest: str, index: int) -> str:
    return f"{CHUNK_PREFIX}{digest}.{index}"


def encode(
    plan: Plan,
    applied_at: str,
    step: str = "applied",
    previous: Pointer | None = None,
    starts: Mapping[str, int] | None = None,
) -> tuple[Pointer, dict[str, bytes]]:
    """The pointer and the chunks (key → value) that record `plan` after `previous`."""
    view = bridge_view(plan)
    digest = digest_of(plan)
    if step != "applied":
        digest = f"{digest[:24]}{hashlib.sha256(step.encode()).hexdigest()[:8]}"
    data = zlib.compress(view.model_dump_json().encode(), 6)
    pieces = [data[i : i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)] or [b""]
    chunks = {chunk_key(digest, i): piece for i, piece in enumerate(pieces)}
    pointer = Pointer(
        digest=digest,
        chunks=len(pieces),
        size=len(data),
        generated_at=plan.generated_at,
        applied_at=applied_at,
        step=step,
        starts=dict(starts or {}),
        previous=previous.digest if previous else "",
        previous_chunks=previous.chunks if previous else 0,
    )
    return pointer, chunks


def retired_chunks(new: Pointer, old: Pointer | None) -> list[str]:
    """The chunk keys nothing needs once `new` replaced `old`: those of the revision before
    `old` (a bridge may still be reading `old` itself)."""
    if old is None or not old.previous or old.previous in (new.digest, old.digest):
        return []
    return [chunk_key(old.previous, i) for i in range(old.previous_chunks)]


class RevisionUnreadable(ValueError):
    pass


def decode(pointer: Pointer, chunks: Mapping[str, bytes]) -> Plan:
    """The plan the pointer names, from its chunks (key → value); RevisionUnreadable when one
    is missing (a newer revision replaced it meanwhile: read the pointer again)."""
    try:
        data = b"".join(chunks[chunk_key(pointer.digest, i)] for i in range(pointer.chunks))
    except KeyError as exc:
        raise RevisionUnreadable(f"chunk {exc.args[0]} is missing") from None
    if len(data) != pointer.size:
        raise RevisionUnreadable(f"{len(data)} bytes where the pointer says {pointer.size}")
    try:
        return Plan.model_validate_json(zlib.decompress(data))
    except (zlib.error, ValueError) as exc:
        raise RevisionUnreadable(str(exc)) from None
