"""Undeliverable messages, recorded in NATS so `status` sees them after the bridge is gone.

A message a route could neither deliver nor rightly skip (the filter router met a header it
cannot evaluate as the policy needs) is acknowledged, so it does not block the route, but never
dropped silently: it is counted by cause on the route (`/metrics`, the live view) and recorded
in the fleet's KV bucket under ``undeliverable.<route>.<run>``, with the topic stream sequence
of the last few, where the message itself stays until the stream's max_age. `status` reads
these keys: a route with an undeliverable record is not drained. An operator who has dealt with
the messages deletes the key (`status` prints it) and the route counts as drained again.

One key per route *run* (a random id per router start): the one writer of a key never needs
to read it, and the counts of runs that ended (a restart, another fleet member) stay.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import secrets
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from snsq2nats.plan.buckets import FLEET_BUCKET

if TYPE_CHECKING:
    from nats.aio.client import Client

log = logging.getLogger(__name__)

PREFIX = "undeliverable."
KEEP_LAST = 10


class Seen(BaseModel):
    stream: str
    seq: int
    cause: str
    detail: str
    at: str


class Record(BaseModel):
    route: str
    causes: dict[str, int] = Field(default_factory=dict)
    last: list[Seen] = Field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.causes.values())


def route_prefix(route: str) -> str:
    """The keys of one route's records (route names hold characters keys do not allow)."""
    return PREFIX + base64.urlsafe_b64encode(route.encode()).rstrip(b"=").decode() + "."


class Recorder:
    """One route run's record: updated in memory, written to the bucket after each event."""

    def __init__(self, nc: Client | None, route: str) -> None:
        self.nc = nc
        self.key = route_prefix(route) + secrets.token_hex(4)
        self.record = Record(route=route)
        self._lock = asyncio.Lock()
        self._kv: Any = None

    async def add(self, cause: str, stream: str, seq: int, detail: str) -> None:
        self.record.causes[cause] = self.record.causes.get(cause, 0) + 1
        seen = Seen(
            stream=stream,
            seq=seq,
            cause=cause,
            detail=detail[:200],
            at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        self.record.last = [*self.record.last, seen][-KEEP_LAST:]
        if self.nc is None:
            return
        async with self._lock:
            try:
                if self._kv is None:
                    self._kv = await self.nc.jetstream().key_value(FLEET_BUCKET)
                await self._kv.put(self.key, self.record.model_dump_json().encode())
            except Exception as exc:  # the counters still show it; the log says why not here
                log.error(
                    "%s: could not record an undeliverable message in %s (%s: %s)",
                    self.record.route,
                    FLEET_BUCKET,
                    type(exc).__name__,
                    exc,
                )


async def read_records(nc: Client) -> dict[str, list[tuple[str, Record]]]:
    """Every route's undeliverable records as (key, record); empty without the bucket."""
    out: dict[str, list[tuple[str, Record]]] = {}
    try:
        kv = await nc.jetstream().key_value(FLEET_BUCKET)
    except Exception:
        return out
    watcher: Any = await kv.watch(PREFIX + ">")
    try:
        async for entry in watcher:
            if entry is None:
                break
            if entry.operation in ("DEL", "PURGE") or not entry.value:
                continue
            with contextlib.suppress(ValueError):
                record = Record.model_validate_json(entry.value)
                out.setdefault(record.route, []).append((entry.key, record))
    finally:
        with contextlib.suppress(Exception):
            await watcher.stop()
    return out
