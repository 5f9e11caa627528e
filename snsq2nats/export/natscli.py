"""natscli: the server-format JSON `nats stream add --config` / `nats consumer add --config` take.

natscli validates a stream file against its schema, which requires `retention`,
`max_consumers`, `max_msgs`, `max_bytes`, `max_age`, `storage` and `num_replicas`, so every file
is complete rather than relying on server defaults.
"""

from __future__ import annotations

import shlex
from typing import Any

from snsq2nats.export.bundle import HEADER, Export, ExportFile, Objects, dump_json
from snsq2nats.jetstream.spec import ConsumerSpec, StreamSpec
from snsq2nats.plan.model import Plan

# Limits the plan does not manage, written as the server's "unlimited" so the file is complete.
_UNMANAGED_STREAM_LIMITS = {"max_consumers": -1, "max_msgs_per_subject": -1}


def stream_config(spec: StreamSpec) -> dict[str, Any]:
    config = spec.to_api()
    return {**config, **{k: v for k, v in _UNMANAGED_STREAM_LIMITS.items() if k not in config}}


def consumer_config(spec: ConsumerSpec) -> dict[str, Any]:
    return spec.to_api()


def stream_file(name: str) -> str:
    return f"streams/{name}.json"


def consumer_file(stream: str, durable: str) -> str:
    return f"consumers/{stream}/{durable}.json"


def export(plan: Plan, *, include_bridge: bool = True) -> Export:
    objects = Objects.of(plan, include_bridge=include_bridge)
    result = Export(format="natscli", bridge_owned=objects.bridge_owned())
    script = [
        "#!/bin/sh",
        f"# {HEADER}",
        "# Creates the streams (source origins first), then their consumers. Uses natscli's",
        "# usual connection settings (NATS_URL, --context, NATS_CREDS, ...).",
        "set -eu",
        'cd "$(dirname "$0")"',
    ]
    for stream in objects.streams:
        path = stream_file(stream.name)
        result.files.append(ExportFile(path, dump_json(stream_config(stream))))
        script.append(f"nats stream add {shlex.quote(stream.name)} --config {shlex.quote(path)}")
    for consumer in objects.consumers:
        path = consumer_file(consumer.stream_name, consumer.durable_name)
        result.files.append(ExportFile(path, dump_json(consumer_config(consumer))))
        script.append(
            f"nats consumer add {shlex.quote(consumer.stream_name)} "
            f"{shlex.quote(consumer.durable_name)} --config {shlex.quote(path)}"
        )
    result.files.append(ExportFile("create.sh", "\n".join(script) + "\n"))
    result.notes += objects.anchor_notes("natscli")
    return result
