"""Every NATS request snsq2nats makes, declared once: the code that makes it builds its subject
here, and `auth` grants the same subjects, so a request and its permission cannot drift apart.

An `Operation` is one JetStream API (or publish) family: the subject templates a request of it
publishes to. `Operation.subject(...)` is what request code sends; `Operation.grants(...)` is
what an identity is allowed, with any field left out granted as the `*` wildcard.

KV buckets are used through nats-py's KeyValue, whose requests depend on the bucket (a get is a
`DIRECT.GET` when the bucket allows direct reads, a `STREAM.MSG.GET` otherwise; a `create` of a
deleted key reads it first). `KvOp` names what a component does with a bucket, and a
`BucketUse` (declared next to the bucket, in `plan.buckets`) says which role does what with
which bucket. The same `BucketUse` opens the bucket (`jetstream.kv.open_kv`), which refuses a
call its declaration lacks, and feeds the grants: adding a bucket and its grants is one line.
"""

from __future__ import annotations

import enum
import string
from collections.abc import Iterable
from dataclasses import dataclass

API = "$JS.API"
_FIELDS = string.Formatter()


@dataclass(frozen=True)
class Operation:
    name: str
    templates: tuple[str, ...]
    """The first is the request subject; the others are what its answer or follow-ups use
    (the long form of DIRECT.GET, the second ack form, …)."""

    def subject(self, **fields: str) -> str:
        return self.templates[0].format(**fields)

    def grants(self, **fields: str) -> list[str]:
        """The subjects to allow; a field not given is the `*` wildcard."""
        out = []
        for template in self.templates:
            names = {f for _, f, _, _ in _FIELDS.parse(template) if f}
            out.append(template.format(**{n: fields.get(n, "*") for n in names}))
        return out


def _op(name: str, *templates: str) -> Operation:
    return Operation(name, templates)


ACCOUNT_INFO = _op("account info", f"{API}.INFO")
STREAM_NAMES = _op("stream names", f"{API}.STREAM.NAMES")
STREAM_LIST = _op("stream list", f"{API}.STREAM.LIST")
STREAM_INFO = _op("stream info", f"{API}.STREAM.INFO.{{stream}}")
STREAM_CREATE = _op("stream create", f"{API}.STREAM.CREATE.{{stream}}")
STREAM_UPDATE = _op("stream update", f"{API}.STREAM.UPDATE.{{stream}}")
STREAM_DELETE = _op("stream delete", f"{API}.STREAM.DELETE.{{stream}}")
STREAM_PURGE = _op("stream purge", f"{API}.STREAM.PURGE.{{stream}}")
MSG_GET = _op("message get", f"{API}.STREAM.MSG.GET.{{stream}}")
MSG_DELETE = _op("message delete", f"{API}.STREAM.MSG.DELETE.{{stream}}")
DIRECT_GET = _op(
    "direct get",
    f"{API}.DIRECT.GET.{{stream}}",
    # The last-by-subject form: `$JS.API.DIRECT.GET.KV_b.$KV.b.key`.
    f"{API}.DIRECT.GET.{{stream}}.>",
)
CONSUMER_CREATE = _op(
    "consumer create",
    f"{API}.CONSUMER.CREATE.{{stream}}.{{consumer}}",
    # With one filter subject, nats-py and the server put it after the name.
    f"{API}.CONSUMER.CREATE.{{stream}}.{{consumer}}.>",
)
CONSUMER_CREATE_UNNAMED = _op("ephemeral consumer create", f"{API}.CONSUMER.CREATE.{{stream}}")
CONSUMER_DURABLE_CREATE = _op(
    "durable consumer create (legacy)", f"{API}.CONSUMER.DURABLE.CREATE.{{stream}}.{{consumer}}"
)
CONSUMER_INFO = _op("consumer info", f"{API}.CONSUMER.INFO.{{stream}}.{{consumer}}")
CONSUMER_DELETE = _op("consumer delete", f"{API}.CONSUMER.DELETE.{{stream}}.{{consumer}}")
CONSUMER_LIST = _op("consumer list", f"{API}.CONSUMER.LIST.{{stream}}")
CONSUMER_NAMES = _op("consumer names", f"{API}.CONSUMER.NAMES.{{stream}}")
CONSUMER_NEXT = _op("pull", f"{API}.CONSUMER.MSG.NEXT.{{stream}}.{{consumer}}")
ACK = _op(
    "acknowledge",
    # Both forms: servers with `js_ack_fc_v2` put domain and account-hash tokens first. (A
    # literal `$JS.ACK.<stream>` matches no real ack subject: every ack would be denied.)
    "$JS.ACK.{stream}.{consumer}.>",
    "$JS.ACK.*.*.{stream}.{consumer}.>",
)
FLOW_CONTROL = _op("flow control reply", "$JS.FC.{stream}.>")


def pull_grants(stream: str, consumer: str = "*") -> list[str]:
    """Pull from a durable, acknowledge (ack, nak, in progress, term share a subject) and look
    it up: what a worker or a relay reading a durable does."""
    return [
        *CONSUMER_NEXT.grants(stream=stream, consumer=consumer),
        *CONSUMER_INFO.grants(stream=stream, consumer=consumer),
        *ACK.grants(stream=stream, consumer=consumer),
    ]


# --- KV buckets ---------------------------------------------------------------------------


class KvOp(enum.Enum):
    OPEN = "open"
    """Bind to the bucket (its stream's info)."""
    GET = "get"
    """One key's value: DIRECT.GET when the bucket allows direct reads, else STREAM.MSG.GET."""
    PUT = "put"
    """put, create, update (compare-and-set) and delete: publishes to the key's subject."""
    WATCH = "watch"
    """An ordered push consumer: created unnamed or named, looked up, flow control answered,
    deleted when stopped (also what `history` uses)."""
    READ = "read"
    """`jetstream.state.read_bucket`: a counted pull of each key's last value, then deleted."""


def bucket_stream(bucket: str) -> str:
    return f"KV_{bucket}"


def kv_grants(bucket: str, ops: Iterable[KvOp]) -> list[str]:
    stream = bucket_stream(bucket)
    wanted = set(ops)
    out: list[str] = []
    if wanted:
        out += STREAM_INFO.grants(stream=stream)
    if KvOp.GET in wanted:
        out += DIRECT_GET.grants(stream=stream) + MSG_GET.grants(stream=stream)
    if KvOp.PUT in wanted:
        out.append(f"$KV.{bucket}.>")
    if KvOp.WATCH in wanted or KvOp.READ in wanted:
        out += CONSUMER_CREATE_UNNAMED.grants(stream=stream)
        out += CONSUMER_CREATE.grants(stream=stream)
        out += CONSUMER_INFO.grants(stream=stream)
        out += CONSUMER_DELETE.grants(stream=stream)
    if KvOp.WATCH in wanted:
        out += FLOW_CONTROL.grants(stream=stream)
    if KvOp.READ in wanted:
        out += CONSUMER_NEXT.grants(stream=stream)
    return out


class UndeclaredOperation(RuntimeError):
    """Code used a bucket in a way its `BucketUse` does not declare: the generated identity
    would be refused. A programming error, raised wherever it runs (no server needed)."""


@dataclass(frozen=True)
class BucketUse:
    """What one role does with one KV bucket."""

    bucket: str
    role: str
    ops: frozenset[KvOp]

    def require(self, op: KvOp) -> None:
        if op not in self.ops:
            raise UndeclaredOperation(
                f"{self.role} uses KV {op.value} on bucket {self.bucket} without declaring it "
                f"(declared: {', '.join(sorted(o.value for o in self.ops))})"
            )

    def grants(self) -> list[str]:
        return kv_grants(self.bucket, self.ops)


def bucket_use(bucket: str, role: str, *ops: KvOp) -> BucketUse:
    return BucketUse(bucket, role, frozenset((KvOp.OPEN, *ops)))
