"""The fleet bucket's records (`snsq2nats_fleet`, see `plan.buckets`): heartbeats and leases.

The bridge fleet writes them (`bridge.fleet`); `status`, `cutover` and the bridge's own
followers read them. The schema lives here, beside the bucket's spec, so a reader needs no
part of the bridge: two kinds of keys,

- `members.<member>`: the member's heartbeat (`Heartbeat`, JSON).
- `routes.<route, base64url>`: the route's lease (`Lease`): which member runs it, since when.

Pure: values in, records out. The bucket I/O lives with its users.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from pydantic import BaseModel, ConfigDict, ValidationError

MEMBERS = "members."
ROUTES = "routes."


def route_key(name: str) -> str:
    """A KV key for a route name (which may hold `:` or other characters keys do not allow)."""
    token = base64.urlsafe_b64encode(name.encode()).rstrip(b"=").decode()
    return ROUTES + token


def route_name(key: str) -> str:
    token = key[len(ROUTES) :]
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()


def member_key(member: str) -> str:
    return MEMBERS + member


class Heartbeat(BaseModel):
    """A member's heartbeat value. Readers ignore fields they do not know, so newer members can
    add fields (say, the cutover revision applied) without breaking older ones."""

    model_config = ConfigDict(extra="ignore")

    member: str
    host: str
    pid: int
    started: str
    at: str
    lease_ttl: float
    selection: str
    routes: int = 0
    leaving: bool = False
    cutover_revision: int = 0
    """The live cutover state revision this member runs (`bridge.follow`)."""
    plan_revision: int = 0
    """The applied revision (`plan.revision`) this member runs (`bridge.follow`)."""
    ready: bool = True
    """False while a route this member should run cannot be acquired or run: it confirms no
    cutover then (older members, without the field, count as ready)."""
    blocked: dict[str, str] = {}
    """Route → why this member cannot acquire or run it (the first few, shortened)."""


class Lease(BaseModel):
    model_config = ConfigDict(extra="ignore")

    route: str
    member: str
    since: str


class StoredValue(Protocol):
    """A KV value as read (`jetstream.state.KvValue`)."""

    @property
    def value(self) -> bytes: ...


def heartbeat_of(value: bytes) -> Heartbeat | None:
    """The heartbeat a `members.*` value holds; None when it is not one this version reads."""
    try:
        return Heartbeat.model_validate_json(value)
    except ValidationError:
        return None


@dataclass
class FleetSnapshot:
    """The bucket at one moment: every member's heartbeat and every route's lease."""

    members: dict[str, Heartbeat]
    leases: dict[str, Lease]

    def heartbeat_age(self, member: str, now: datetime) -> float | None:
        heartbeat = self.members.get(member)
        return None if heartbeat is None else _age(heartbeat.at, now)

    def alive(self, member: str, now: datetime) -> bool:
        """By the heartbeat's own timestamp: for people, where hosts' clocks roughly agree
        (members judge each other by their own clocks instead)."""
        heartbeat = self.members.get(member)
        age = self.heartbeat_age(member, now)
        return heartbeat is not None and age is not None and age < heartbeat.lease_ttl


def snapshot_of(values: Mapping[str, StoredValue]) -> FleetSnapshot:
    """The bucket's values by key as a snapshot; values this version cannot read are left out
    (a newer member's record must not stop `status`)."""
    members: dict[str, Heartbeat] = {}
    leases: dict[str, Lease] = {}
    for key, entry in values.items():
        with contextlib.suppress(ValidationError):
            if key.startswith(MEMBERS):
                heartbeat = Heartbeat.model_validate_json(entry.value)
                members[heartbeat.member] = heartbeat
            elif key.startswith(ROUTES):
                lease = Lease.model_validate_json(entry.value)
                leases[lease.route] = lease
    return FleetSnapshot(members, leases)


def _age(stamp: str, now: datetime) -> float | None:
    try:
        return max(0.0, (now - datetime.fromisoformat(stamp)).total_seconds())
    except ValueError:
        return None


def lease_age(lease: Lease, now: datetime) -> float | None:
    return _age(lease.since, now)
