"""Terraform: `jetstream_stream` / `jetstream_consumer` resources of the nats-io/jetstream provider.

The provider takes durations in whole seconds (a plan value that is not one is an error naming
the object, never a silent rounding) and has defaults that differ from the server's
(`allow_direct` true, `max_ack_pending` 20000, `duplicate_window` 120 s), so those are always
written. A consumer names its stream by the stream resource's id. Objects that already exist on
the server get `terraform import` commands so a team can adopt what `apply` created.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterable
from typing import Any

from snsq2nats.export.bundle import (
    HEADER,
    Export,
    ExportFile,
    Note,
    Objects,
    owner,
    unique_names,
    whole_seconds,
)
from snsq2nats.jetstream.spec import ConsumerSpec, StreamSpec
from snsq2nats.plan.model import Plan

TARGET = "Terraform's jetstream provider"
_NOT_IDENT = re.compile(r"[^A-Za-z0-9_-]+")
_DELIVER = {"all": "deliver_all", "new": "deliver_new", "last": "deliver_last"}


class Ref(str):
    """An HCL expression written as is (a reference), not as a quoted string."""


def label(name: str) -> str:
    """An HCL identifier: letters, digits, `_` and `-`, not starting with a digit or `-`."""
    shaped = _NOT_IDENT.sub("_", name)
    return shaped if re.match(r"[A-Za-z_]", shaped) else f"_{shaped}"


def _string(value: str) -> str:
    # JSON's escapes are HCL's; `${` and `%{` would start a template, so they are doubled.
    return json.dumps(value, ensure_ascii=False).replace("${", "$${").replace("%{", "%%{")


def hcl_value(value: Any, indent: int) -> str:
    if isinstance(value, Ref):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list):
        return "[" + ", ".join(hcl_value(v, indent) for v in value) + "]"
    if isinstance(value, dict):
        pad = "  " * (indent + 1)
        rows = [f"{pad}{_string(str(k))} = {hcl_value(v, indent + 1)}" for k, v in value.items()]
        return "{\n" + "\n".join(rows) + "\n" + "  " * indent + "}"
    raise TypeError(f"no HCL form for {value!r}")


def hcl_block(header: str, body: dict[str, Any], indent: int = 0) -> list[str]:
    """A block; list values of dicts under a key become repeated nested blocks."""
    pad = "  " * (indent + 1)
    lines = ["  " * indent + header + " {"]
    for key, value in body.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for item in value:
                lines += hcl_block(key, item, indent + 1)
        else:
            lines.append(f"{pad}{key} = {hcl_value(value, indent + 1)}")
    lines.append("  " * indent + "}")
    return lines


def _seconds(ns: int, what: str, where: str) -> int:
    return whole_seconds(ns, what=what, where=where, target=TARGET)


def stream_body(spec: StreamSpec) -> dict[str, Any]:
    where = f"stream {spec.name}"
    body: dict[str, Any] = {"name": spec.name}
    if spec.description:
        body["description"] = spec.description
    body |= {
        "subjects": list(spec.subjects),
        "retention": spec.retention,
        "storage": spec.storage,
        "replicas": spec.num_replicas,
        "max_age": _seconds(spec.max_age, "max_age", where),
        "max_msgs": spec.max_msgs,
        "max_bytes": spec.max_bytes,
        "max_msg_size": spec.max_msg_size,
        "max_consumers": -1,
        "discard": spec.discard,
        "duplicate_window": _seconds(spec.duplicate_window, "duplicate_window", where),
        "allow_direct": bool(spec.allow_direct),
    }
    if spec.max_msgs_per_subject is not None:
        body["max_msgs_per_subject"] = spec.max_msgs_per_subject
    if spec.allow_msg_schedules is not None:
        body["allow_msg_schedules"] = spec.allow_msg_schedules
    if spec.allow_rollup_hdrs is not None:
        body["allow_rollup_hdrs"] = spec.allow_rollup_hdrs
    if spec.placement is not None:
        if spec.placement.cluster:
            body["placement_cluster"] = spec.placement.cluster
        if spec.placement.tags:
            body["placement_tags"] = list(spec.placement.tags)
    if spec.metadata:
        body["metadata"] = dict(spec.metadata)
    if spec.sources:
        body["source"] = [_source(s.model_dump(exclude_none=True)) for s in spec.sources]
    if spec.subject_transform is not None:
        # The provider's block (MaxItems 1) with the names its source transforms use too.
        body["subject_transform"] = [
            {"source": spec.subject_transform.src, "destination": spec.subject_transform.dest}
        ]
    return body


def _source(source: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"name": source["name"]}
    if "opt_start_seq" in source:
        out["start_seq"] = source["opt_start_seq"]
    if "filter_subject" in source:
        out["filter_subject"] = source["filter_subject"]
    if "subject_transforms" in source:
        out["subject_transform"] = [
            {"source": t["src"], "destination": t["dest"]} for t in source["subject_transforms"]
        ]
    return out


def consumer_body(spec: ConsumerSpec, stream_label: str) -> dict[str, Any]:
    where = f"consumer {spec.key}"
    body: dict[str, Any] = {
        "stream_id": Ref(f"jetstream_stream.{stream_label}.id"),
        "durable_name": spec.durable_name,
    }
    if spec.description:
        body["description"] = spec.description
    if spec.deliver_policy == "by_start_sequence":
        body["stream_sequence"] = spec.opt_start_seq or 0
    else:
        body[_DELIVER[spec.deliver_policy]] = True
    body |= {
        "ack_policy": spec.ack_policy,
        "ack_wait": _seconds(spec.ack_wait, "ack_wait", where),
        "max_delivery": spec.max_deliver,
        "max_ack_pending": spec.max_ack_pending,
        "replicas": spec.num_replicas,
    }
    filters = spec.filter_subjects or []
    if len(filters) == 1:
        body["filter_subject"] = filters[0]
    elif filters:
        body["filter_subjects"] = list(filters)
    if spec.metadata:
        body["metadata"] = dict(spec.metadata)
    return body


def stream_id(name: str) -> str:
    return f"JETSTREAM_STREAM_{name}"


def consumer_id(stream: str, durable: str) -> str:
    return f"JETSTREAM_STREAM_{stream}_CONSUMER_{durable}"


def _existing(plan: Plan) -> tuple[set[str], set[str]]:
    """Streams and consumers (`stream/durable`) the plan saw on the server."""
    if not plan.server.reachable:
        return set(), set()
    live = [c for c in plan.changes if c.action in ("noop", "update")]
    streams = {c.name for c in live if c.type == "stream"}
    consumers = {f"{c.stream}/{c.name}" for c in live if c.type == "consumer"}
    return streams, consumers


PROVIDER = """terraform {
  required_providers {
    jetstream = {
      source = "nats-io/jetstream"
    }
  }
}

variable "nats_servers" {
  description = "NATS server URLs, comma-separated"
  type        = string
}

variable "nats_credentials" {
  description = "Path to a NATS credentials file (operator/JWT mode), or null"
  type        = string
  default     = null
}

provider "jetstream" {
  servers     = var.nats_servers
  credentials = var.nats_credentials
}
"""


def export(plan: Plan, *, include_bridge: bool = True, bundle: bool = False) -> Export:
    objects = Objects.of(plan, include_bridge=include_bridge)
    result = Export(format="terraform", bridge_owned=objects.bridge_owned())
    stream_labels = unique_names([s.name for s in objects.streams], label)
    consumer_labels = unique_names(
        [c.key for c in objects.consumers], lambda key: label(key.replace("/", "__"))
    )
    blocks: list[tuple[str, list[str]]] = []
    for stream in objects.streams:
        name = stream_labels[stream.name]
        lines = [f"# {owner(stream.metadata)}-owned"]
        lines += hcl_block(f'resource "jetstream_stream" {_string(name)}', stream_body(stream))
        blocks.append((f"stream_{name}.tf", lines))
    for consumer in objects.consumers:
        name = consumer_labels[consumer.key]
        body = consumer_body(consumer, stream_labels[consumer.stream_name])
        lines = [f"# {owner(consumer.metadata)}-owned"]
        lines += hcl_block(f'resource "jetstream_consumer" {_string(name)}', body)
        blocks.append((f"consumer_{name}.tf", lines))
    header = f"# {HEADER}\n"
    if bundle:
        text = header + "\n" + "\n\n".join("\n".join(lines) for _, lines in blocks) + "\n"
        result.files.append(ExportFile("jetstream.tf", text))
    else:
        result.files += [ExportFile(p, header + "\n".join(lines) + "\n") for p, lines in blocks]
    result.files.append(ExportFile("provider.tf", header + PROVIDER))
    streams, consumers = _existing(plan)
    result.files.append(
        ExportFile(
            "imports.sh",
            _imports(
                (
                    (stream_labels[s.name], stream_id(s.name))
                    for s in objects.streams
                    if s.name in streams
                ),
                (
                    (consumer_labels[c.key], consumer_id(c.stream_name, c.durable_name))
                    for c in objects.consumers
                    if c.key in consumers
                ),
            ),
        )
    )
    result.notes += objects.anchor_notes("Terraform")
    if not plan.server.reachable:
        result.notes.append(
            Note(
                "imports.sh",
                "the plan did not read a server, so no object is known to exist "
                "yet and there is nothing to import",
            )
        )
    return result


def _imports(streams: Iterable[tuple[str, str]], consumers: Iterable[tuple[str, str]]) -> str:
    lines = [
        "#!/bin/sh",
        f"# {HEADER}",
        "# Adopts the objects that already exist on the server (created by `snsq2nats apply`)",
        "# into Terraform's state, so the first `terraform apply` changes nothing.",
        "set -eu",
    ]
    for name, ident in streams:
        lines.append(f"terraform import {shlex.quote('jetstream_stream.' + name)} {ident}")
    for name, ident in consumers:
        lines.append(f"terraform import {shlex.quote('jetstream_consumer.' + name)} {ident}")
    return "\n".join(lines) + "\n"
