"""Headers whose meaning several parts agree on, below all of them.

`verify` marks its test messages with `CANARY_HEADER`; the bridge never relays or routes a
message carrying it, and consumers may drop such messages. Both sides read the name here, so
neither imports the other.
"""

from __future__ import annotations

CANARY_HEADER = "Snsq2nats-Canary"
"""Marks `verify`'s test messages (its value is the run id): the bridge never relays or routes
them anywhere."""
