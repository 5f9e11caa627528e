"""The stages wired together: inventory → desired state → live state → plan.

`assemble_plan` is pure; the functions around it do the I/O of one stage each, with the
connections passed in, so the CLI, the demo, apply and the tests share one path.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from snsq2nats.inventory import Inventory, load_inventory
from snsq2nats.jetstream.spec import ServerInfo
from snsq2nats.plan.accounts import split as split_accounts
from snsq2nats.plan.buckets import CUTOVER_WRITER
from snsq2nats.plan.diff import diff
from snsq2nats.plan.model import Plan, Resource
from snsq2nats.plan.rules import Rules, load_rules
from snsq2nats.plan.states import RESOURCE_PREFIX, CutoverRecord, parse_records
from snsq2nats.plan.translate import translate

if TYPE_CHECKING:
    from snsq2nats.jetstream.connect import NatsOptions
    from snsq2nats.jetstream.spec import LiveState


@dataclass
class PlanRequest:
    """Everything `plan` (and `apply` without a plan file) needs to know."""

    inventory_path: Path | None = None
    regions: tuple[str, ...] = ()
    endpoint_url: str | None = None
    prefix: str | None = None
    mapping_paths: list[Path] = field(default_factory=list)
    replicas: int | None = None
    prune: bool = False
    offline: bool = False


def assemble_plan(
    inventory: Inventory,
    rules: Rules,
    live: LiveState | None,
    *,
    server: ServerInfo,
    prune: bool = False,
    records: Mapping[str, CutoverRecord] | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Plan:
    """`records`: the live cutover state (`plan.states`), which wins over the mapping's."""
    records = records or {}
    desired = translate(
        inventory,
        rules,
        server_version=server.version,
        cutover={arn: r.state for arn, r in records.items()},
        moved=frozenset(records),
    )
    desired, nats_accounts, crossings = split_accounts(desired, inventory, rules)
    changes = diff(desired, live, prune=prune)
    return Plan(
        cutover_origin=cutover_origin(inventory, rules, records),
        generated_at=now().isoformat(timespec="seconds"),
        inventory_generated_at=inventory.generated_at,
        server=server,
        resources=desired.resources,
        changes=changes,
        routes=desired.routes,
        candidate_routes=desired.candidate_routes,
        streams=desired.streams,
        consumers=desired.consumers,
        nats_accounts=nats_accounts,
        crossings=crossings,
    )


def cutover_origin(
    inventory: Inventory, rules: Rules, records: Mapping[str, CutoverRecord]
) -> dict[str, str]:
    """Where each resource's cutover state comes from, for those not simply on AWS by default:
    the live state, the mapping file, or the live state overriding a different mapping."""
    origin: dict[str, str] = {}
    named = [(q.name, q.arn) for q in inventory.queues] + [
        (t.name, t.arn) for t in inventory.topics
    ]
    for name, arn in named:
        mapped = rules.resolve(name, arn).cutover
        record = records.get(arn)
        if record is not None:
            differs = mapped is not None and mapped != record.state
            origin[arn] = "live, overriding the mapping" if differs else "live"
        elif mapped is not None:
            origin[arn] = "mapping"
    return origin


def obtain_inventory(request: PlanRequest, scan: Callable[[], Inventory]) -> Inventory:
    if request.inventory_path is not None:
        return load_inventory(request.inventory_path)
    return scan()


async def read_server(
    opts: NatsOptions, on_progress: Callable[[int, int | None], None] | None = None
) -> tuple[LiveState | None, ServerInfo]:
    """The live JetStream state, or None with the reason when no server can be read."""
    live, server, _ = await read_state(opts, on_progress)
    return live, server


async def read_state(
    opts: NatsOptions, on_progress: Callable[[int, int | None], None] | None = None
) -> tuple[LiveState | None, ServerInfo, dict[str, CutoverRecord]]:
    """The live JetStream state and cutover state, or None with the reason without a server."""
    from snsq2nats.errors import NatsConnectError, NatsRefusedError
    from snsq2nats.jetstream.connect import connect_nats
    from snsq2nats.jetstream.state import read_bucket, read_live

    try:
        nc = await connect_nats(opts, name="snsq2nats plan")
    except NatsRefusedError:
        raise  # a server that refuses our credentials is a mistake to fix, not "offline"
    except NatsConnectError as err:
        return (
            None,
            ServerInfo(
                reachable=False,
                url=opts.redacted_servers,
                note=f"no NATS server reachable ({err.what}): everything is planned as create",
            ),
            {},
        )
    try:
        live = await read_live(nc, on_progress=on_progress)
        values = await read_bucket(nc, CUTOVER_WRITER, RESOURCE_PREFIX + ">")
    finally:
        await nc.close()
    return live, live.server, parse_records(values or {})


async def read_accounts(
    options: Mapping[str, NatsOptions],
    on_progress: Callable[[int, int | None], None] | None = None,
) -> dict[str, LiveState]:
    """The live JetStream state of each NATS account of `options` (the home account's is
    `read_state`'s), each read over a connection of its own admin."""
    from snsq2nats.jetstream.connect import connect_nats
    from snsq2nats.jetstream.state import read_live

    lives: dict[str, LiveState] = {}
    for account, opts in sorted(options.items()):
        nc = await connect_nats(opts, name=f"snsq2nats plan {account}")
        try:
            lives[account] = await read_live(nc, on_progress=on_progress)
        finally:
            await nc.close()
    return lives


def merge_live(home: LiveState, others: Iterable[LiveState]) -> LiveState:
    """A per-account estate's live state as one, as `diff` compares it: the streams of every
    account (a stream's name is unique across the estate's accounts, `plan.accounts` names
    them so) on the home account's server."""
    from snsq2nats.jetstream.spec import LiveState

    streams = dict(home.streams)
    for one in others:
        streams.update(one.streams)
    return LiveState(streams=streams, server=home.server)


def make_plan(
    request: PlanRequest,
    *,
    scan: Callable[[], Inventory],
    nats: NatsOptions | None,
    progress: Callable[[str, int | None], AbstractContextManager[Any]] | None = None,
    accounts: Callable[[Plan], Mapping[str, NatsOptions]] | None = None,
) -> Plan:
    """`progress(description, total)`: a context giving a sink with `advance(n, total)` (the
    CLI's bar) for reading the server, which takes a while with 20,000 streams.

    `accounts(draft)`: for a mapping with a NATS account per AWS account, the connection
    options of each account but the home one (`nats` connects to that), given a plan of the
    estate that knows its accounts; their streams are read and merged with the home
    account's, so what exists in any account is planned as it is. Without it such a plan
    sees the home account only."""
    import asyncio

    inventory = obtain_inventory(request, scan)
    rules = load_rules(request.mapping_paths, replicas=request.replicas)
    records: dict[str, CutoverRecord] = {}
    if request.offline or nats is None:
        live: Any = None
        server = ServerInfo(
            reachable=False,
            note="offline plan: no NATS server read; everything is planned as create",
        )
    else:
        with progress("reading JetStream", None) if progress else nullcontext() as bar:
            live, server, records = asyncio.run(read_state(nats, bar.advance if bar else None))
        if live is not None and accounts is not None and rules.accounts.nats != "one":
            # The accounts follow from the desired state alone (not from what is live), so
            # a draft without the live state names the same ones the plan will.
            draft = assemble_plan(inventory, rules, None, server=server, records=records)
            others = accounts(draft)
            if others:
                with (
                    progress("reading the other NATS accounts", None)
                    if progress
                    else (nullcontext()) as bar
                ):
                    lives = asyncio.run(read_accounts(others, bar.advance if bar else None))
                live = merge_live(live, lives.values())
    # Seconds at 10,000 queues: a spinner (or a start and an end line) says it is not stuck.
    with progress("planning", None) if progress else nullcontext():
        return assemble_plan(
            inventory, rules, live, server=server, prune=request.prune, records=records
        )


GROUP_ATTRIBUTE = "MessageGroupId"

# Per plan, its queues and topics by name and by ARN: `verify` asks for every queue's subject,
# and a search of the whole plan each time is quadratic (minutes at 10,000 queues).
_INDEXES: dict[int, tuple[weakref.ref[Plan], int, dict[str, list[Resource]]]] = {}


def _sources_index(plan: Plan) -> dict[str, list[Resource]]:
    key = id(plan)
    cached = _INDEXES.get(key)
    if cached is not None and cached[0]() is plan and cached[1] == len(plan.resources):
        return cached[2]
    index: dict[str, list[Resource]] = {}
    for r in plan.resources:
        if r.kind in ("sqs-queue", "sns-topic"):
            for name in dict.fromkeys((r.name, r.source_arn)):
                index.setdefault(name, []).append(r)
    _INDEXES[key] = (
        weakref.ref(plan, lambda _: _INDEXES.pop(key, None)),
        len(plan.resources),
        index,
    )
    return index


def _find_resource(plan: Plan, source: str) -> Resource:
    from snsq2nats.errors import UsageError

    candidates = _sources_index(plan).get(source, [])
    if not candidates:
        known = ", ".join(sorted(r.name for r in plan.resources if r.kind != "sns-subscription"))
        raise UsageError(
            f"no queue or topic named {source!r} in the plan",
            hint=f"use a name or ARN from: {known}" if known else "the plan has no resources",
        )
    if len(candidates) > 1:
        kinds = {r.kind for r in candidates}
        what = (
            "both a queue and a topic"
            if len(kinds) > 1
            else f"{len(candidates)} {'queues' if 'sqs-queue' in kinds else 'topics'} "
            "(in different accounts or regions)"
        )
        raise UsageError(
            f"{source!r} names {what}",
            hint="pass the ARN instead: " + " or ".join(r.source_arn for r in candidates),
        )
    return candidates[0]


def _attr_values(attrs: tuple[str, ...] | list[str]) -> dict[str, str]:
    from snsq2nats.errors import UsageError

    values: dict[str, str] = {}
    for item in attrs:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageError(
                f"--attr {item!r} is not NAME=VALUE", hint="e.g. --attr event_type=created"
            )
        values[name] = value
    return values


def publish_subject(plan: Plan, source: str, attrs: tuple[str, ...] | list[str]) -> str:
    """The concrete subject for a queue or topic, promoted tokens filled from `NAME=VALUE`s."""
    from snsq2nats.errors import UsageError
    from snsq2nats.filterpolicy import MessageAttribute, encode_token, subject_for

    resource = _find_resource(plan, source)
    values = _attr_values(attrs)
    template = resource.publish_subject or ""
    if resource.kind == "sqs-queue":
        placeholder = f".<{GROUP_ATTRIBUTE}>"
        extra = set(values) - {GROUP_ATTRIBUTE}
        if extra:
            raise UsageError(
                f"queue subjects carry no attribute tokens ({', '.join(sorted(extra))})",
                hint="send message attributes as NATS headers",
            )
        if template.endswith(placeholder):
            if GROUP_ATTRIBUTE not in values:
                raise UsageError(
                    f"{resource.name} is a FIFO queue: its subject ends with the message group",
                    hint=f"pass --attr {GROUP_ATTRIBUTE}=<group>",
                )
            return template[: -len(placeholder)] + "." + encode_token(values[GROUP_ATTRIBUTE])
        return template
    tokens = resource.subject_tokens
    unknown = set(values) - set(tokens)
    if unknown:
        raise UsageError(
            f"{', '.join(sorted(unknown))} not a subject token of {resource.name}",
            hint=f"promoted attributes: {', '.join(tokens) or 'none'}; "
            "send other attributes as NATS headers",
        )
    prefix = ".".join(template.split(".")[: len(template.split(".")) - len(tokens)])
    return subject_for(
        {name: MessageAttribute("String", value) for name, value in values.items()}, tokens, prefix
    )


def header_rules(plan: Plan, source: str) -> list[str]:
    """What a NATS producer of a topic must know about headers, for people (`subject` prints
    it on stderr): the typing rule, and which attributes the topic's filters compare as
    numbers."""
    from snsq2nats import filterpolicy

    resource = _find_resource(plan, source)
    if resource.kind != "sns-topic":
        return []
    lines = [
        "headers: set each message attribute as a NATS header of the same name; "
        + filterpolicy.PLAIN_HEADER_RULE
    ]
    numbers: set[str] = set()
    for route in plan.candidate_routes:
        if route.aws_arn == resource.source_arn:
            numbers.update(route.number_attributes)
    if numbers:
        lines.append("compared as numbers here: " + ", ".join(sorted(numbers)))
    if resource.subject_tokens:
        lines.append(
            "subject tokens: " + ", ".join(resource.subject_tokens) + " may stay ~absent "
            "(no --attr): queues are filtered on the headers, which win over a token that "
            "disagrees (counted by the bridge as subject-mismatch)"
        )
    return lines


def worker_durables(
    plan: Plan, source: str, attrs: tuple[str, ...] | list[str]
) -> list[tuple[str, str]]:
    """(stream, durable) a queue's workers bind to: a partitioned FIFO queue's partition of the
    group given as `MessageGroupId=G` (the one durable that ever delivers that group), or every
    partition durable when no group is given; an unpartitioned queue's one durable."""
    from snsq2nats.errors import UsageError
    from snsq2nats.filterpolicy import encode_token
    from snsq2nats.jetstream.subjects import partition_of

    resource = _find_resource(plan, source)
    if resource.kind != "sqs-queue" or resource.stream is None or not resource.durables:
        raise UsageError(
            f"{resource.name} is not a queue: topics have no worker durable",
            hint="workers bind to the durables of the queues subscribed to it",
        )
    durables = resource.durables
    group = _attr_values(attrs).get(GROUP_ATTRIBUTE)
    if group is not None and len(durables) > 1:
        # The server hashes the subject token, i.e. the encoded group id.
        durables = [durables[partition_of(encode_token(group), len(durables))]]
    return [(resource.stream, d) for d in durables]
