"""The JetStream KV buckets the bridge keeps its shared state in, as streams the plan creates.

A KV bucket is a stream named `KV_<bucket>` on the subjects `$KV.<bucket>.>`, keeping the last
value of each key (`max_msgs_per_subject`). Planning it like any other stream means `plan`
shows it, `apply` creates it with the same replicas as the streams, and exports carry it; the
bridge only opens it (and says to run `apply` when it is missing).

- `snsq2nats_fleet`: the bridge fleet's members (heartbeats) and route leases (`plan.fleet`,
  written by `bridge.fleet`).
- `snsq2nats_cutover`: the live cutover state (`plan.states`), each key's history kept.
- `snsq2nats_revision`: the applied revision (`plan.revision`): the plan `apply` last made true,
  which every bridge runs and follows (`bridge.follow`), whatever plan file it was started with.

One plain stream sits beside them, planned the same way when a topic fans out through SNS:

- `snsq2nats_sent`: the SNS relays' ledger. A nats-to-sns relay records, per PublishBatch SNS
  accepted and before it acknowledges those messages, the topic stream sequences it sent, on
  `snsq2nats.sent.<topic stream>`; the fan-out handover reads it to copy only what SNS does
  not have (`bridge.fanout_handover`).
"""

from __future__ import annotations

from snsq2nats.jetstream.operations import BucketUse, KvOp, bucket_use
from snsq2nats.jetstream.operations import bucket_stream as bucket_stream
from snsq2nats.jetstream.spec import NS, StreamSpec
from snsq2nats.plan.metadata import EVERY, for_route
from snsq2nats.plan.revision import REVISION_BUCKET
from snsq2nats.plan.states import CUTOVER_BUCKET, CUTOVER_HISTORY

FLEET_BUCKET = "snsq2nats_fleet"
FLEET_ROUTES = "fleet:*"
"""The fleet bucket's `snsq2nats.route`: every route of every bridge fleet member uses it."""
CUTOVER_ROUTES = "cutover:*"
"""The cutover bucket's `snsq2nats.route`: every route follows the state it holds."""
REVISION_ROUTES = "revision:*"
"""The revision bucket's `snsq2nats.route`: every route is one of the revision it holds."""

# Who does what with each bucket: the code opens a bucket through its use (`jetstream.kv`) and
# `auth` grants exactly these, so the two cannot drift. A new bucket's grants are one line here.
FLEET_MEMBER = bucket_use(FLEET_BUCKET, "bridge", KvOp.GET, KvOp.PUT, KvOp.WATCH)
"""`bridge.fleet`: heartbeats and leases (create of a released lease reads it first)."""
FLEET_OBSERVER = bucket_use(FLEET_BUCKET, "admin", KvOp.WATCH, KvOp.READ)
"""`status` and `cutover`: read the heartbeats and leases."""
CUTOVER_FOLLOWER = bucket_use(CUTOVER_BUCKET, "bridge", KvOp.WATCH, KvOp.READ)
"""`bridge.follow`: read and watch the cutover state, never write it."""
CUTOVER_WRITER = bucket_use(CUTOVER_BUCKET, "admin", KvOp.GET, KvOp.PUT, KvOp.WATCH, KvOp.READ)
"""`cutover` records moves (and shows their history); `plan`, `status`, `runbook` read them."""
REVISION_FOLLOWER = bucket_use(REVISION_BUCKET, "bridge", KvOp.WATCH, KvOp.READ)
"""`bridge.follow`: read the applied revision and watch its pointer, never write it."""
REVISION_WRITER = bucket_use(REVISION_BUCKET, "admin", KvOp.PUT, KvOp.READ)
"""`apply` records the revision (chunks, then the pointer; retired chunks deleted)."""
BUCKET_USES: tuple[BucketUse, ...] = (
    FLEET_MEMBER,
    FLEET_OBSERVER,
    CUTOVER_FOLLOWER,
    CUTOVER_WRITER,
    REVISION_FOLLOWER,
    REVISION_WRITER,
)


def bucket_uses(role: str) -> list[BucketUse]:
    return [use for use in BUCKET_USES if use.role == role]


SENT_LEDGER = "snsq2nats_sent"
SENT_PREFIX = "snsq2nats.sent"
SENT_ROUTES = "to-sns:*"
"""The ledger's `snsq2nats.route`: every nats-to-sns route (`to-sns:<topic>`) writes it."""
SENT_MAX_AGE = 7 * 86400
"""Seconds a record is kept: a handover reads only records newer than its in-doubt messages,
which a topic stream keeps for `topic_retention` (a day by default)."""


def sent_subject(topic_stream: str) -> str:
    """Where the SNS relay of `topic_stream` records what SNS accepted."""
    return f"{SENT_PREFIX}.{topic_stream}"


def sent_ledger_spec(replicas: int = 1) -> StreamSpec:
    """Small JSON records (`[seq, …]`), one per accepted PublishBatch, kept `SENT_MAX_AGE`."""
    return StreamSpec(
        name=SENT_LEDGER,
        description="SNS relays' ledger: the topic stream sequences SNS accepted",
        subjects=[f"{SENT_PREFIX}.>"],
        retention="limits",
        storage="file",
        num_replicas=replicas,
        max_age=SENT_MAX_AGE * NS,
        metadata=for_route(SENT_ROUTES, EVERY),
    )


def ledger_specs(topic_streams: bool, replicas: int = 1) -> list[StreamSpec]:
    """The ledger whenever a topic has a stream: a re-plan that stops a topic's fan-out
    through SNS drops its nats-to-sns route, and that apply's handover still reads the ledger
    (so it must stay in the plan, and in the admin's grants)."""
    return [sent_ledger_spec(replicas)] if topic_streams else []


def _bucket_spec(
    bucket: str, description: str, history: int, routes: str, replicas: int
) -> StreamSpec:
    """A KV bucket as the stream nats-py's `create_key_value` would make (direct gets allowed,
    rollups for purges), keeping `history` values per key."""
    return StreamSpec(
        name=bucket_stream(bucket),
        description=description,
        subjects=[f"$KV.{bucket}.>"],
        retention="limits",
        storage="file",
        num_replicas=replicas,
        max_msgs_per_subject=history,
        discard="new",
        duplicate_window=120 * NS,
        allow_rollup_hdrs=True,
        allow_direct=True,
        metadata=for_route(routes, EVERY),
    )


def fleet_bucket_spec(replicas: int = 1) -> StreamSpec:
    """Heartbeats and leases: one value per key, no expiry (a lease lasts as long as its
    holder's heartbeat, which the members judge themselves: see `bridge.fleet`)."""
    return _bucket_spec(
        FLEET_BUCKET,
        "bridge fleet: member heartbeats and route leases (a KV bucket)",
        1,
        FLEET_ROUTES,
        replicas,
    )


def cutover_bucket_spec(replicas: int = 1) -> StreamSpec:
    """One record per moved resource, with its last changes (who, when, from what)."""
    return _bucket_spec(
        CUTOVER_BUCKET,
        "the live cutover state: where each resource's producers and consumers run",
        CUTOVER_HISTORY,
        CUTOVER_ROUTES,
        replicas,
    )


def revision_bucket_spec(replicas: int = 1) -> StreamSpec:
    """The applied revision: a pointer key and the chunks it names (`plan.revision`). One value
    per key: a chunk is written once under a content-addressed key, the pointer moves."""
    return _bucket_spec(
        REVISION_BUCKET,
        "the applied revision: the plan every bridge runs (a KV bucket)",
        1,
        REVISION_ROUTES,
        replicas,
    )


def bucket_specs(has_routes: bool, replicas: int = 1) -> list[StreamSpec]:
    """The buckets a plan needs when it has routes to bridge: the fleet's, the cutover's and
    the applied revision's."""
    if not has_routes:
        return []
    return [
        cutover_bucket_spec(replicas),
        fleet_bucket_spec(replicas),
        revision_bucket_spec(replicas),
    ]
