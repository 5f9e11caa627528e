"""The live cutover, in one place: move one application at a time, exactly once.

- `moves`: a request as data: which resource goes from where to where, which relays start and
  stop, what the application team does around it (pure).
- `runbook`: every move of the estate, in the order to make them, with progress marks (pure).
- `engine`: `snsq2nats cutover`: record a move in the live cutover state, wait for the bridges
  to confirm it, drain the old side, finish.

The state the moves change is `plan.states` (the KV bucket's schema, beside `plan.buckets`):
the bridge reads it, and the bridge imports nothing from here. Rendering is `report.cutover`
and `report.runbook`.
"""

from __future__ import annotations

from snsq2nats.cutover.engine import (
    CutoverRequest,
    CutoverResult,
    Drained,
    history,
    open_state,
    read_records,
    run_cutover,
    wait_for_bridges,
)

__all__ = [
    "CutoverRequest",
    "CutoverResult",
    "Drained",
    "history",
    "open_state",
    "read_records",
    "run_cutover",
    "wait_for_bridges",
]
