"""NACK: `jetstream.nats.io/v1beta2` Stream and Consumer resources for Kubernetes.

NACK's CRD defaults are unsafe for a work queue (`storage: memory`, `ackPolicy: none`,
`ackWait: 1ns`), so every field the plan means is written, defaults included. Durations are Go
duration strings (no `d` unit). Kubernetes names allow no `_`, so `metadata.name` is a
DNS-1123 form of the JetStream name and the real name stays in `spec.name` / `durableName`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from snsq2nats.errors import UsageError
from snsq2nats.export.bundle import HEADER, Export, ExportFile, Objects, owner, unique_names
from snsq2nats.export.durations import go_duration
from snsq2nats.jetstream.spec import ConsumerSpec, StreamSpec
from snsq2nats.plan.model import Plan

API_VERSION = "jetstream.nats.io/v1beta2"
_DELIVER = {"all": "all", "new": "new", "last": "last", "by_start_sequence": "byStartSequence"}
_NOT_DNS = re.compile(r"[^a-z0-9-]+")


@dataclass(frozen=True)
class Connection:
    """How NACK's controller reaches NATS, written on every resource (or an Account reference)."""

    servers: list[str] = field(default_factory=list)
    creds: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    account: str | None = None
    namespace: str | None = None

    def check(self) -> None:
        direct = self.servers or self.creds or self.tls_cert or self.tls_key or self.tls_ca
        if self.account and direct:
            raise UsageError(
                "--account cannot be combined with --servers, --creds or TLS options",
                hint="an Account resource carries its own connection; pass one or the other",
            )
        if bool(self.tls_cert) != bool(self.tls_key):
            raise UsageError("--tls-cert and --tls-key go together", hint="pass both or neither")

    def fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.account:
            out["account"] = self.account
        if self.servers:
            out["servers"] = list(self.servers)
        if self.creds:
            out["creds"] = self.creds
        tls: dict[str, Any] = {}
        if self.tls_cert:
            tls["clientCert"] = self.tls_cert
            tls["clientKey"] = self.tls_key
        if self.tls_ca:
            tls["rootCas"] = [self.tls_ca]
        if tls:
            out["tls"] = tls
        return out


def dns_name(name: str) -> str:
    """A DNS-1123 subdomain label form of a JetStream name (lowercase, `-` for the rest)."""
    shaped = _NOT_DNS.sub("-", name.lower()).strip("-") or "x"
    return shaped[:253].rstrip("-")


def stream_spec(spec: StreamSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"name": spec.name}
    if spec.description:
        out["description"] = spec.description
    out |= {
        "subjects": list(spec.subjects),
        "retention": spec.retention,
        "storage": spec.storage,
        "replicas": spec.num_replicas,
        "maxAge": go_duration(spec.max_age),
        "maxMsgs": spec.max_msgs,
        "maxBytes": spec.max_bytes,
        "maxMsgSize": spec.max_msg_size,
        "maxConsumers": -1,
        "discard": spec.discard,
        "duplicateWindow": go_duration(spec.duplicate_window),
    }
    if spec.max_msgs_per_subject is not None:
        out["maxMsgsPerSubject"] = spec.max_msgs_per_subject
    if spec.allow_direct is not None:
        out["allowDirect"] = spec.allow_direct
    if spec.allow_msg_schedules is not None:
        out["allowMsgSchedules"] = spec.allow_msg_schedules
    if spec.allow_rollup_hdrs is not None:
        out["allowRollup"] = spec.allow_rollup_hdrs
    if spec.sources:
        out["sources"] = [_source(s.model_dump(exclude_none=True)) for s in spec.sources]
    if spec.subject_transform is not None:
        out["subjectTransform"] = {
            "source": spec.subject_transform.src,
            "dest": spec.subject_transform.dest,
        }
    if spec.placement is not None:
        out["placement"] = spec.placement.model_dump(exclude_none=True)
    if spec.metadata:
        out["metadata"] = dict(spec.metadata)
    return out


def _source(source: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"name": source["name"]}
    if "opt_start_seq" in source:
        out["optStartSeq"] = source["opt_start_seq"]
    if "filter_subject" in source:
        out["filterSubject"] = source["filter_subject"]
    if "subject_transforms" in source:
        out["subjectTransforms"] = [
            {"source": t["src"], "dest": t["dest"]} for t in source["subject_transforms"]
        ]
    return out


def consumer_spec(spec: ConsumerSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"streamName": spec.stream_name, "durableName": spec.durable_name}
    if spec.description:
        out["description"] = spec.description
    out["deliverPolicy"] = _DELIVER[spec.deliver_policy]
    if spec.opt_start_seq is not None:
        out["optStartSeq"] = spec.opt_start_seq
    out |= {
        "ackPolicy": spec.ack_policy,
        "ackWait": go_duration(spec.ack_wait),
        "maxDeliver": spec.max_deliver,
        "maxAckPending": spec.max_ack_pending,
        "replicas": spec.num_replicas,
    }
    filters = spec.filter_subjects or []
    if len(filters) == 1:
        out["filterSubject"] = filters[0]
    elif filters:
        out["filterSubjects"] = list(filters)
    if spec.metadata:
        out["metadata"] = dict(spec.metadata)
    return out


def _document(kind: str, name: str, owned_by: str, spec: dict[str, Any], conn: Connection) -> str:
    meta: dict[str, Any] = {"name": name}
    if conn.namespace:
        meta["namespace"] = conn.namespace
    meta["labels"] = {"app.kubernetes.io/managed-by": "snsq2nats", "snsq2nats.io/owner": owned_by}
    doc = {"apiVersion": API_VERSION, "kind": kind, "metadata": meta, "spec": spec | conn.fields()}
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100)


def export(
    plan: Plan,
    *,
    connection: Connection | None = None,
    include_bridge: bool = True,
    bundle: bool = False,
) -> Export:
    conn = connection or Connection()
    conn.check()
    objects = Objects.of(plan, include_bridge=include_bridge)
    result = Export(format="nack", bridge_owned=objects.bridge_owned())
    stream_names = unique_names([s.name for s in objects.streams], dns_name)
    consumer_names = unique_names(
        [c.key for c in objects.consumers], lambda key: dns_name(key.replace("/", "-"))
    )
    docs: list[tuple[str, str]] = []
    for stream in objects.streams:
        name = stream_names[stream.name]
        text = _document("Stream", name, owner(stream.metadata), stream_spec(stream), conn)
        docs.append((f"streams/{name}.yaml", text))
    for consumer in objects.consumers:
        name = consumer_names[consumer.key]
        text = _document("Consumer", name, owner(consumer.metadata), consumer_spec(consumer), conn)
        docs.append((f"consumers/{name}.yaml", text))
    if bundle:
        body = "".join(f"---\n{text}" for _, text in docs)
        result.files.append(ExportFile("jetstream.yaml", f"# {HEADER}\n{body}"))
    else:
        result.files += [ExportFile(path, f"# {HEADER}\n{text}") for path, text in docs]
    result.notes += objects.anchor_notes("NACK")
    return result
