"""Desired state vs live JetStream state → the ordered list of changes a plan shows.

Pure: no NATS, no AWS.  The hard part is not the comparison but what *not* to report: the
server fills in defaults, rewrites "unlimited", adds `_nats.*` metadata and runtime fields, and
a plan that shows those as changes would never converge.  So both sides are normalised first,
and only the fields the desired spec manages are compared.

Rules worth knowing before reading the code:

- Managed fields are the keys of `spec.to_api()`, plus `sources` and `subject_transform`
  (streams) and the subject filter (consumers), which are managed even when the spec has none:
  "no sources", "no transform" and "no filter" are meaningful settings, and a leftover one
  would route the wrong messages.
- A change to an immutable field is a `replace` (delete and recreate), never an `update`.
- Only managed objects (`snsq2nats.source` metadata, or `snsq2nats.route` for bridge-owned
  ones: see `metadata`) are ever deleted, only with `prune`, and only when their owner (the
  source, or the route) no longer appears in the desired state.  Foreign objects are invisible.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from snsq2nats.jetstream.spec import NS, ROUTE_KEY, SOURCE_KEY, ConsumerSpec, StreamSpec
from snsq2nats.plan.metadata import Owner, is_managed, owner, served_arn
from snsq2nats.plan.model import Action, Change, Desired, FieldDiff

if TYPE_CHECKING:
    from snsq2nats.jetstream.spec import LiveState, LiveStream

__all__ = [
    "CONFLICT_PREFIX",
    "diff",
    "normalise_consumer_field",
    "normalise_stream_field",
    "stream_order",
]

OFFLINE_REASON = "no NATS server reachable: planned as create"
UP_TO_DATE = "up to date"
# Starts the reason of a noop whose name a foreign stream holds: apply refuses such a plan.
CONFLICT_PREFIX = "conflict: "

# Limits where the server stores "unlimited" as -1 whatever was sent (0 or any negative).
_UNLIMITED_AS_MINUS_ONE = frozenset(
    {"max_msgs", "max_bytes", "max_msg_size", "max_msgs_per_subject", "max_consumers"}
)
_STREAM_DEFAULTS: dict[str, Any] = {
    "retention": "limits",
    "storage": "file",
    "discard": "old",
    "num_replicas": 1,
    "max_age": 0,
    # A stream created without subjects and with sources gets no duplicate window at all.
    "duplicate_window": 0,
    "description": "",
    "compression": "none",
}
_CONSUMER_DEFAULTS: dict[str, Any] = {
    "deliver_policy": "all",
    "ack_policy": "none",
    "replay_policy": "instant",
    "ack_wait": 30 * NS,
    "max_ack_pending": 1000,
    "num_replicas": 0,
    "description": "",
}
# Consumer fields the server cannot change in place (10012 "… can not be updated").
_CONSUMER_IMMUTABLE = (
    "deliver_policy",
    "ack_policy",
    "replay_policy",
    "opt_start_seq",
    "opt_start_time",
    "mem_storage",
    "max_waiting",
)
# Names are the identity of the object, never a field to compare.
_IDENTITY = frozenset({"name", "durable_name"})


# --- normalisation --------------------------------------------------------------------------


def _strip_server_metadata(value: Any) -> dict[str, str]:
    """User metadata only: `_nats.*` (incl. `_nats.mirror.*`, `_nats.src.*`) is the server's."""
    if not isinstance(value, Mapping):
        return {}
    return {str(k): str(v) for k, v in value.items() if not str(k).startswith("_nats.")}


def _norm_sources(value: Any) -> list[dict[str, Any]]:
    """Sources compared by what routes messages; the server adds runtime fields to each."""
    out: list[dict[str, Any]] = []
    for source in value or []:
        if not isinstance(source, Mapping):
            continue
        item: dict[str, Any] = {"name": source.get("name")}
        if source.get("filter_subject"):
            item["filter_subject"] = source["filter_subject"]
        transforms = [
            {"src": t.get("src", ""), "dest": t.get("dest", "")}
            for t in source.get("subject_transforms") or []
            if isinstance(t, Mapping)
        ]
        if transforms:
            item["subject_transforms"] = transforms
        external = source.get("external")
        if isinstance(external, Mapping) and external:
            item["external"] = {"api": external.get("api"), "deliver": external.get("deliver")}
        out.append(item)
    return sorted(out, key=lambda s: json.dumps(s, sort_keys=True))


def _norm_transform(value: Any) -> dict[str, str] | None:
    """None, {} and an empty source/destination all mean "stored as published"."""
    if not isinstance(value, Mapping) or not (value.get("src") or value.get("dest")):
        return None
    return {"src": str(value.get("src") or ""), "dest": str(value.get("dest") or "")}


def _norm_placement(value: Any) -> dict[str, Any] | None:
    """None, {} and {"cluster": ""} all mean "anywhere"."""
    if not isinstance(value, Mapping):
        return None
    out: dict[str, Any] = {}
    if value.get("cluster"):
        out["cluster"] = value["cluster"]
    if value.get("tags"):
        out["tags"] = sorted(value["tags"])
    return out or None


def normalise_stream_field(key: str, value: Any) -> Any:
    """One stream config value in the form both sides are compared in."""
    if key in _UNLIMITED_AS_MINUS_ONE:
        return -1 if value is None or int(value) <= 0 else int(value)
    if key == "metadata":
        return _strip_server_metadata(value)
    if key == "subjects":
        return sorted(set(value or []))
    if key == "sources":
        return _norm_sources(value)
    if key == "placement":
        return _norm_placement(value)
    if key == "subject_transform":
        return _norm_transform(value)
    if key == "num_replicas":
        return 1 if not value else int(value)
    if value is None:
        return _STREAM_DEFAULTS.get(key)
    return value


def _filters(config: Mapping[str, Any]) -> list[str]:
    """filter_subject and filter_subjects are one setting: the set of subjects consumed."""
    subjects = list(config.get("filter_subjects") or [])
    single = config.get("filter_subject")
    if single:
        subjects.append(single)
    return sorted(set(subjects))


def normalise_consumer_field(key: str, value: Any) -> Any:
    """One consumer config value in comparable form (`filter_subjects` goes via `_filters`)."""
    if key == "metadata":
        return _strip_server_metadata(value)
    if key == "max_deliver":
        return -1 if value is None or int(value) <= 0 else int(value)
    if key == "max_ack_pending":
        return _CONSUMER_DEFAULTS[key] if not value else int(value)
    if key in ("backoff", "filter_subjects"):
        return list(value or [])
    if key == "deliver_policy" and value == "by_start_sequence":
        # apply creates a consumer planned as "new" at an explicit start (the same intent,
        # made exact); see apply.anchor_new_consumer.
        return "new"
    if value is None:
        return _CONSUMER_DEFAULTS.get(key)
    return value


def _same(desired: Any, live: Any) -> bool:
    # A bool the server leaves out is false; a spec that sets one compares against False.
    if isinstance(desired, bool):
        return desired == bool(live)
    return bool(desired == live)


def _sourcing(config: Mapping[str, Any]) -> bool:
    return bool(config.get("sources") or config.get("mirror"))


def _stream_field_diffs(spec: StreamSpec, live: Mapping[str, Any]) -> list[FieldDiff]:
    desired = spec.to_api()
    keys = [k for k in desired if k not in _IDENTITY]
    if "sources" not in desired:
        keys.append("sources")
    if "subject_transform" not in desired:
        keys.append("subject_transform")
    diffs: list[FieldDiff] = []
    for key in keys:
        want = normalise_stream_field(key, desired.get(key))
        have = normalise_stream_field(key, live.get(key))
        # A stream created without subjects (and not sourcing) listens on its own name.
        if key == "subjects" and not want and have == [spec.name] and not _sourcing(live):
            have = []
        if not _same(want, have):
            diffs.append(FieldDiff(field=key, live=have, desired=want))
    return diffs


def _consumer_field_diffs(
    spec: ConsumerSpec, live: Mapping[str, Any], stream_replicas: int | None
) -> list[FieldDiff]:
    desired = spec.to_api()
    diffs: list[FieldDiff] = []
    keys = [k for k in desired if k not in _IDENTITY]
    if "filter_subjects" not in keys:
        keys.append("filter_subjects")
    for key in keys:
        if key == "filter_subjects":
            want: Any = _filters(desired)
            have: Any = _filters(live)
        else:
            want = normalise_consumer_field(key, desired.get(key))
            have = normalise_consumer_field(key, live.get(key))
        if key == "num_replicas" and stream_replicas is not None:
            # 0 means "as many as the stream": equal to the stream's count explicitly given.
            want = want or stream_replicas
            have = have or stream_replicas
        if not _same(want, have):
            diffs.append(FieldDiff(field=key, live=have, desired=want))
    return diffs


# --- immutability -----------------------------------------------------------------------------


def _stream_immutable(diffs: list[FieldDiff]) -> list[str]:
    """Why an update cannot apply in place (empty when it can), one phrase per field."""
    reasons: list[str] = []
    for d in diffs:
        if d.field == "storage":
            reasons.append(f"storage cannot change in place ({d.live} → {d.desired})")
        elif d.field == "retention" and "workqueue" in (d.live, d.desired):
            reasons.append(f"retention cannot change to or from workqueue ({d.live} → {d.desired})")
        elif d.field == "allow_msg_schedules" and d.live and not d.desired:
            reasons.append("allow_msg_schedules cannot be turned off")
        elif d.field == "subject_transform":
            # The server would change the transform in place, but what is stored keeps its old
            # partition and the old durables' filters overlap the new ones on a work queue:
            # partitions change with an empty stream, which a replace makes explicit.
            reasons.append(
                "the partitions change (subject_transform "
                f"{_transform_text(d.live)} → {_transform_text(d.desired)}): stored messages "
                "keep their old partition and a group's order would break across the old and "
                "new durables; drain the queue (let its workers finish) before applying"
            )
    return reasons


def _transform_text(value: Any) -> str:
    return f"{value['dest']}" if isinstance(value, Mapping) else "none"


def _consumer_immutable(diffs: list[FieldDiff], live: Mapping[str, Any]) -> list[str]:
    reasons = [
        f"{d.field} cannot change in place ({d.live} → {d.desired})"
        for d in diffs
        if d.field in _CONSUMER_IMMUTABLE
    ]
    # ConsumerSpec describes pull consumers only; a push consumer cannot become one.
    if live.get("deliver_subject"):
        reasons.append("a push consumer cannot become a pull consumer")
    return reasons


# --- ordering -----------------------------------------------------------------------------------


def _topological(names: Iterable[str], deps: Mapping[str, set[str]]) -> list[str]:
    """Dependencies first, ties by name; a cycle (never expected) is broken by name order."""
    pending = set(names)
    remaining = {n: {d for d in deps.get(n, set()) if d in pending and d != n} for n in pending}
    dependents: dict[str, set[str]] = {n: set() for n in pending}
    for n, ds in remaining.items():
        for d in ds:
            dependents[d].add(n)
    ready = [n for n, ds in remaining.items() if not ds]
    heapq.heapify(ready)
    order: list[str] = []
    done: set[str] = set()
    while len(order) < len(pending):
        if not ready:
            # Only a cycle gets here: start it at its smallest name.
            first = min(pending - done)
            remaining[first] = set()
            ready = [first]
        n = heapq.heappop(ready)
        if n in done:
            continue
        order.append(n)
        done.add(n)
        for m in sorted(dependents[n]):
            remaining[m].discard(n)
            if not remaining[m] and m not in done:
                heapq.heappush(ready, m)
    return order


def stream_order(desired: Desired) -> list[str]:
    """Desired streams in apply order: source origins and DLQ targets before their users."""
    deps: dict[str, set[str]] = {
        s.name: {src.name for src in s.sources or []} for s in desired.streams
    }
    for route in [*desired.routes, *desired.candidate_routes]:
        if route.kind == "dlq-mover" and route.stream and route.target_stream:
            deps.setdefault(route.stream, set()).add(route.target_stream)
    return _topological([s.name for s in desired.streams], deps)


# --- the diff -----------------------------------------------------------------------------------


def count_messages(n: int) -> str:
    """`1 message`, `3 messages`: how a loss is counted in reasons and refusals."""
    return f"{n} message" if n == 1 else f"{n} messages"


def _is_conflict(spec: StreamSpec, live: LiveStream | None) -> bool:
    """The name is taken by a stream snsq2nats did not create: it is never touched."""
    return (
        live is not None
        and is_managed(spec.metadata)
        and not is_managed(live.config.get("metadata"))
    )


def _stream_change(spec: StreamSpec, live: LiveStream | None) -> Change:
    base: dict[str, Any] = {"type": "stream", "name": spec.name, "stream": spec.name}
    base["source_arn"] = served_arn(spec.metadata)
    if live is None:
        return Change(action="create", reason="not on the server", config=spec.to_api(), **base)
    diffs = _stream_field_diffs(spec, live.config)
    if _is_conflict(spec, live):
        return Change(
            action="noop",
            reason=(
                f"{CONFLICT_PREFIX}a stream named {spec.name} exists but is not managed by "
                f"snsq2nats (no {SOURCE_KEY} or {ROUTE_KEY} metadata); left untouched: rename "
                "the mapped stream or remove the existing one"
            ),
            diff=diffs,
            live_messages=live.messages,
            **base,
        )
    if not diffs:
        return Change(action="noop", reason=UP_TO_DATE, **base)
    immutable = _stream_immutable(diffs)
    if immutable:
        consumers = f" and its {len(live.consumers)} consumer(s)" if live.consumers else ""
        return Change(
            action="replace",
            reason=(
                f"{'; '.join(immutable)}: replace deletes the stream and its "
                f"{count_messages(live.messages)}{consumers}"
            ),
            diff=diffs,
            config=spec.to_api(),
            live_messages=live.messages,
            **base,
        )
    return Change(
        action="update",
        reason="changed: " + ", ".join(d.field for d in diffs),
        diff=diffs,
        config=spec.to_api(),
        **base,
    )


def _consumer_change(
    spec: ConsumerSpec, live: LiveState, stream_action: str | None, stream_managed: bool
) -> Change:
    base: dict[str, Any] = {
        "type": "consumer",
        "name": spec.durable_name,
        "stream": spec.stream_name,
        "source_arn": served_arn(spec.metadata),
    }
    live_stream = live.streams.get(spec.stream_name)
    if not stream_managed:
        return Change(
            action="noop",
            reason=f"stream {spec.stream_name} is not managed by snsq2nats: consumer not planned",
            **base,
        )
    if live_stream is None or stream_action in ("create", "replace"):
        why = {
            "replace": f"stream {spec.stream_name} is replaced",
            "create": f"stream {spec.stream_name} is created",
        }.get(stream_action or "", "not on the server")
        return Change(action="create", reason=why, config=spec.to_api(), **base)
    live_config = live_stream.consumers.get(spec.durable_name)
    if live_config is None:
        return Change(action="create", reason="not on the server", config=spec.to_api(), **base)
    replicas = normalise_stream_field("num_replicas", live_stream.config.get("num_replicas"))
    diffs = _consumer_field_diffs(spec, live_config, replicas)
    immutable = _consumer_immutable(diffs, live_config)
    if immutable:
        return Change(
            action="replace",
            reason=(
                f"{'; '.join(immutable)}: replace deletes the consumer and its delivery "
                "state (acknowledgements, pending redeliveries)"
            ),
            diff=diffs,
            config=spec.to_api(),
            **base,
        )
    if not diffs:
        return Change(action="noop", reason=UP_TO_DATE, **base)
    return Change(
        action="update",
        reason="changed: " + ", ".join(d.field for d in diffs),
        diff=diffs,
        config=spec.to_api(),
        **base,
    )


def _desired_owners(desired: Desired) -> set[Owner]:
    """Every source and route the desired state still has."""
    owners = {Owner("source", r.source_arn) for r in desired.resources}
    # Every candidate route keeps its objects: a route that does not run in this cutover
    # state may run in the next one, and its consumer keeps its place meanwhile.
    owners |= {Owner("route", r.name) for r in [*desired.routes, *desired.candidate_routes]}
    for metadata in [s.metadata for s in desired.streams] + [c.metadata for c in desired.consumers]:
        found = owner(metadata)
        if found is not None:
            owners.add(found)
    return owners


def _orphan(found: Owner, desired: set[Owner], prune: bool) -> tuple[Action, str]:
    """(action, reason) for a managed live object the desired state no longer contains."""
    if found in desired:
        return "noop", (f"not in the desired state, but its {found} still is (renamed?); kept")
    if not prune:
        return "noop", f"{found.kind} gone; kept (use --prune to delete)"
    return "delete", f"{found} is gone"


def _orphans(
    desired: Desired, live: LiveState, prune: bool, replaced: frozenset[str] = frozenset()
) -> list[Change]:
    desired_streams = {s.name for s in desired.streams}
    desired_consumers = {(c.stream_name, c.durable_name) for c in desired.consumers}
    owners = _desired_owners(desired)

    stream_changes: dict[str, Change] = {}
    for name, ls in live.streams.items():
        metadata = ls.config.get("metadata")
        found = owner(metadata)
        if name in desired_streams or found is None:
            continue
        action, reason = _orphan(found, owners, prune)
        if action == "delete":
            foreign = sorted(
                c for c, cfg in ls.consumers.items() if not is_managed(cfg.get("metadata"))
            )
            if foreign:
                action = "noop"
                reason = (
                    f"{found} is gone, but the stream has consumers snsq2nats does not "
                    f"manage ({', '.join(foreign)}); kept"
                )
            else:
                reason += f": deletes the stream and its {count_messages(ls.messages)}"
        stream_changes[name] = Change(
            action=action,
            type="stream",
            name=name,
            stream=name,
            source_arn=served_arn(metadata),
            reason=reason,
            live_messages=ls.messages,
        )

    consumer_changes: list[Change] = []
    for stream_name in sorted(live.streams):
        ls = live.streams[stream_name]
        stream_deleted = stream_changes.get(stream_name)
        for cname in sorted(ls.consumers):
            metadata = ls.consumers[cname].get("metadata")
            found = owner(metadata)
            if found is None or (stream_name, cname) in desired_consumers:
                continue
            action, reason = _orphan(found, owners, prune)
            if stream_deleted is not None and stream_deleted.action == "delete":
                action, reason = "delete", f"its stream {stream_name} is deleted"
            elif stream_name in replaced:
                # E.g. the durables of partitions a queue no longer has.
                action, reason = "noop", f"deleted with its stream {stream_name} (replaced)"
            consumer_changes.append(
                Change(
                    action=action,
                    type="consumer",
                    name=cname,
                    stream=stream_name,
                    source_arn=served_arn(metadata),
                    reason=reason,
                )
            )

    # A stream that sources another is deleted before its origin, so nothing is left pointing
    # at a deleted stream: the origin "depends on" the streams sourcing it.
    sourced_by: dict[str, set[str]] = {n: set() for n in stream_changes}
    for n in stream_changes:
        for source in live.streams[n].config.get("sources") or []:
            if source.get("name") in sourced_by:
                sourced_by[source["name"]].add(n)
    stream_list = [stream_changes[n] for n in _topological(stream_changes, sourced_by)]
    return consumer_changes + stream_list


def diff(desired: Desired, live: LiveState | None, *, prune: bool = False) -> list[Change]:
    """The changes that turn `live` into `desired`, in the order apply must run them.

    Streams (source origins and DLQ targets first), then consumers (in their streams' order),
    then what the desired state no longer holds: consumers before their streams.  `live` is
    None when no server was reachable: everything is planned as a create.
    """
    order = stream_order(desired)
    position = {name: i for i, name in enumerate(order)}
    specs = {s.name: s for s in desired.streams}
    consumers = sorted(
        desired.consumers,
        key=lambda c: (position.get(c.stream_name, len(position)), c.stream_name, c.durable_name),
    )

    if live is None:
        changes = [
            Change(
                action="create",
                type="stream",
                name=name,
                stream=name,
                source_arn=served_arn(specs[name].metadata),
                reason=OFFLINE_REASON,
                config=specs[name].to_api(),
            )
            for name in order
        ]
        changes += [
            Change(
                action="create",
                type="consumer",
                name=c.durable_name,
                stream=c.stream_name,
                source_arn=served_arn(c.metadata),
                reason=OFFLINE_REASON,
                config=c.to_api(),
            )
            for c in consumers
        ]
        return changes

    stream_changes = [_stream_change(specs[name], live.streams.get(name)) for name in order]
    actions = {c.name: c.action for c in stream_changes}
    conflicts = {n for n in order if _is_conflict(specs[n], live.streams.get(n))}
    consumer_changes = [
        _consumer_change(
            spec, live, actions.get(spec.stream_name), spec.stream_name not in conflicts
        )
        for spec in consumers
    ]
    replaced = frozenset(c.name for c in stream_changes if c.action == "replace")
    return stream_changes + consumer_changes + _orphans(desired, live, prune, replaced)
