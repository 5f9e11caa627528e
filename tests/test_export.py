"""`snsq2nats export`: the plan's desired state for natscli, NACK and Terraform.

Each target is checked three ways: its files validate against the target's own schema (encoded
in tests/data/export/schemas from the tools' published schemas), a converter written here from
the target's documented field mapping turns them back into the plan's JetStream configs, and
golden files pin the demo estate's export. natscli's files are also created on a real
nats-server the way natscli sends them, after which `plan` sees nothing left to change.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import hcl2
import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from snsq2nats.cli import main
from snsq2nats.export import nack, terraform
from snsq2nats.export.bundle import Export, ExportError, owner
from snsq2nats.export.targets import export_plan
from snsq2nats.files import document_json
from snsq2nats.inventory import load_inventory
from snsq2nats.jetstream.api import api
from snsq2nats.jetstream.spec import (
    NS,
    ConsumerSpec,
    Placement,
    ServerInfo,
    StreamSource,
    StreamSpec,
    SubjectTransform,
)
from snsq2nats.jetstream.state import read_live
from snsq2nats.plan.model import Change, Plan
from snsq2nats.plan.pipeline import assemble_plan
from snsq2nats.plan.rules import load_rules

DATA = Path(__file__).parent / "data"
SHOP = DATA / "mapping" / "shop_inventory.json"
SHOP_CUTOVER = DATA / "mapping" / "shop_cutover.yaml"
SCHEMAS = DATA / "export" / "schemas"
GOLDEN = DATA / "export" / "golden"
FORMATS = ("natscli", "nack", "terraform")
DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


def shop_plan(live: Any = None, server: ServerInfo | None = None) -> Plan:
    return assemble_plan(
        load_inventory(SHOP),
        load_rules([SHOP_CUTOVER]),
        live,
        server=server or ServerInfo(reachable=False, note="offline"),
    )


def files(export: Export) -> dict[str, str]:
    return {f.path: f.text for f in export.files}


def schema(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SCHEMAS / name).read_text())
    return loaded


def every_field_stream() -> StreamSpec:
    """A stream with every field the plan can set, none at its default."""
    return StreamSpec(
        name="sqs_every",
        description="every field",
        subjects=["sqs.every", "sqs.every._sched.*"],
        retention="workqueue",
        storage="memory",
        num_replicas=3,
        max_age=4 * 86400 * NS,
        max_msgs=1000,
        max_bytes=1 << 30,
        max_msg_size=262_144,
        max_msgs_per_subject=1,
        discard="new",
        duplicate_window=300 * NS,
        allow_msg_schedules=True,
        allow_rollup_hdrs=True,
        allow_direct=True,
        sources=[
            StreamSource(
                name="sns_topic",
                opt_start_seq=42,
                filter_subject="sns.topic.a.>",
                subject_transforms=[SubjectTransform(src="sns.topic.>", dest="sqs.every.>")],
            )
        ],
        placement=Placement(cluster="east", tags=["ssd", "az1"]),
        metadata={"snsq2nats.source": "arn:aws:sqs:us-east-1:1:every", "aws.tag.t": "v"},
        subject_transform=SubjectTransform(
            src="sqs.every.*", dest="sqs.every.{{partition(4,1)}}.{{wildcard(1)}}"
        ),
    )


def every_field_consumer() -> ConsumerSpec:
    return ConsumerSpec(
        stream_name="sqs_every",
        durable_name="every",
        description="every field",
        deliver_policy="by_start_sequence",
        opt_start_seq=7,
        ack_policy="explicit",
        ack_wait=45 * NS,
        max_deliver=5,
        max_ack_pending=1,
        filter_subjects=["sqs.every", "sqs.every.x"],
        num_replicas=1,
        metadata={"snsq2nats.source": "arn:aws:sqs:us-east-1:1:every"},
    )


def single_plan(stream: StreamSpec, consumer: ConsumerSpec) -> Plan:
    origins = [StreamSpec(name=s.name) for s in stream.sources or []]
    return Plan(
        generated_at="2026-01-01T00:00:00+00:00",
        server=ServerInfo(reachable=False),
        streams=[*origins, stream],
        consumers=[consumer],
    )


# --- converters back to the server's JSON, written from each tool's documented mapping ---------

_GO_UNITS = {"h": 3600 * NS, "m": 60 * NS, "s": NS, "ms": 10**6, "us": 10**3, "ns": 1}


def go_duration_ns(text: str) -> int:
    parts = re.findall(r"(\d+)(ns|us|ms|h|m|s)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a Go duration: {text}"
    return sum(int(n) * _GO_UNITS[u] for n, u in parts)


_NACK_STREAM = {
    "name": "name",
    "description": "description",
    "subjects": "subjects",
    "retention": "retention",
    "storage": "storage",
    "replicas": "num_replicas",
    "maxMsgs": "max_msgs",
    "maxBytes": "max_bytes",
    "maxMsgSize": "max_msg_size",
    "maxConsumers": "max_consumers",
    "maxMsgsPerSubject": "max_msgs_per_subject",
    "allowDirect": "allow_direct",
    "discard": "discard",
    "allowMsgSchedules": "allow_msg_schedules",
    "allowRollup": "allow_rollup_hdrs",
    "placement": "placement",
    "metadata": "metadata",
}
_NACK_CONSUMER = {
    "streamName": "stream_name",
    "durableName": "durable_name",
    "description": "description",
    "optStartSeq": "opt_start_seq",
    "ackPolicy": "ack_policy",
    "maxDeliver": "max_deliver",
    "maxAckPending": "max_ack_pending",
    "filterSubjects": "filter_subjects",
    "replicas": "num_replicas",
    "metadata": "metadata",
}
_NACK_DELIVER = {"byStartSequence": "by_start_sequence"}
_CONNECTION = {"servers", "creds", "tls", "account", "nkey", "tlsFirst", "jsDomain"}


def nack_to_server(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in spec.items():
        if key in _CONNECTION:
            continue
        if kind == "Stream":
            if key in ("maxAge", "duplicateWindow"):
                out["max_age" if key == "maxAge" else "duplicate_window"] = go_duration_ns(value)
            elif key == "sources":
                out["sources"] = [
                    {
                        {"optStartSeq": "opt_start_seq", "filterSubject": "filter_subject"}.get(
                            k, k
                        ): (
                            [{"src": t["source"], "dest": t["dest"]} for t in v]
                            if k == "subjectTransforms"
                            else v
                        )
                        for k, v in source.items()
                    }
                    for source in value
                ]
                for source in out["sources"]:
                    if "subjectTransforms" in source:
                        source["subject_transforms"] = source.pop("subjectTransforms")
            elif key == "subjectTransform":
                out["subject_transform"] = {"src": value["source"], "dest": value["dest"]}
            else:
                out[_NACK_STREAM[key]] = value
        else:
            if key == "ackWait":
                out["ack_wait"] = go_duration_ns(value)
            elif key == "deliverPolicy":
                out["deliver_policy"] = _NACK_DELIVER.get(value, value)
            elif key == "filterSubject":
                out["filter_subjects"] = [value]
            else:
                out[_NACK_CONSUMER[key]] = value
    return out


def _unquote(value: Any) -> Any:
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return json.loads(value)
    if isinstance(value, list):
        return [_unquote(v) for v in value]
    if isinstance(value, dict):
        return {_unquote(k): _unquote(v) for k, v in value.items() if k != "__is_block__"}
    return value


def terraform_resources(text: str) -> dict[tuple[str, str], dict[str, Any]]:
    parsed = hcl2.loads(text)
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for entry in parsed.get("resource", []):
        for rtype, named in entry.items():
            for name, body in named.items():
                found[(_unquote(rtype), _unquote(name))] = _unquote(body)
    return found


def terraform_to_server(rtype: str, body: dict[str, Any], stream_of: dict[str, str]) -> Any:
    if rtype == "jetstream_stream":
        out: dict[str, Any] = {}
        for key, value in body.items():
            if key in ("max_age", "duplicate_window"):
                out[key] = value * NS
            elif key == "replicas":
                out["num_replicas"] = value
            elif key == "allow_direct":
                # Always written (the provider's default is not the server's); False is unset.
                if value:
                    out[key] = value
            elif key in ("placement_cluster", "placement_tags"):
                placement = out.setdefault("placement", {})
                placement["cluster" if key == "placement_cluster" else "tags"] = value
            elif key == "source":
                out["sources"] = [
                    {
                        **{
                            {"start_seq": "opt_start_seq"}.get(k, k): v
                            for k, v in source.items()
                            if k != "subject_transform"
                        },
                        **(
                            {
                                "subject_transforms": [
                                    {"src": t["source"], "dest": t["destination"]}
                                    for t in source["subject_transform"]
                                ]
                            }
                            if "subject_transform" in source
                            else {}
                        ),
                    }
                    for source in value
                ]
            elif key == "subject_transform":
                (transform,) = value
                out[key] = {"src": transform["source"], "dest": transform["destination"]}
            else:
                out[key] = value
        return out
    out = {}
    for key, value in body.items():
        if key == "stream_id":
            match = re.fullmatch(r"\$\{jetstream_stream\.(.+)\.id\}", value)
            assert match, value
            out["stream_name"] = stream_of[match.group(1)]
        elif key == "ack_wait":
            out["ack_wait"] = value * NS
        elif key in ("deliver_all", "deliver_new", "deliver_last"):
            assert value is True
            out["deliver_policy"] = key.removeprefix("deliver_")
        elif key == "stream_sequence":
            out["deliver_policy"] = "by_start_sequence"
            out["opt_start_seq"] = value
        elif key == "max_delivery":
            out["max_deliver"] = value
        elif key == "replicas":
            out["num_replicas"] = value
        elif key == "filter_subject":
            out["filter_subjects"] = [value]
        else:
            out[key] = value
    return out


def without_unmanaged(config: dict[str, Any]) -> dict[str, Any]:
    """The limits an export writes only to be complete (natscli's schema requires them)."""
    unmanaged = {"max_consumers": -1, "max_msgs_per_subject": -1}
    return {k: v for k, v in config.items() if unmanaged.get(k, object()) != v}


def expected_consumer(spec: ConsumerSpec) -> dict[str, Any]:
    return {"stream_name": spec.stream_name, **spec.to_api()}


# --- natscli ----------------------------------------------------------------------------------


def test_natscli_files_validate_against_natscli_schemas() -> None:
    result = export_plan(shop_plan(), "natscli")
    stream_schema, consumer_schema = schema("natscli_stream.json"), schema("natscli_consumer.json")
    checked = 0
    for path, text in files(result).items():
        if path.startswith("streams/"):
            jsonschema.validate(json.loads(text), stream_schema)
            checked += 1
        elif path.startswith("consumers/"):
            jsonschema.validate(json.loads(text), consumer_schema)
            checked += 1
    assert checked == len(result.files) - 2  # everything but create.sh and NOTES.md
    # natscli's schema requires these: a file relying on server defaults would not validate.
    assert set(stream_schema["required"]) >= {"retention", "max_consumers", "storage"}


def test_natscli_round_trip_and_every_field() -> None:
    stream, consumer = every_field_stream(), every_field_consumer()
    result = files(export_plan(single_plan(stream, consumer), "natscli"))
    assert without_unmanaged(json.loads(result["streams/sqs_every.json"])) == stream.to_api()
    assert json.loads(result["consumers/sqs_every/every.json"]) == consumer.to_api()
    script = result["create.sh"].splitlines()
    # Source origins before the streams that source them; consumers after their streams.
    adds = [line for line in script if line.startswith("nats ")]
    assert adds == [
        "nats stream add sns_topic --config streams/sns_topic.json",
        "nats stream add sqs_every --config streams/sqs_every.json",
        "nats consumer add sqs_every every --config consumers/sqs_every/every.json",
    ]


async def test_natscli_export_created_as_natscli_does_leaves_nothing_to_plan(nc: Any) -> None:
    """Create every exported object through the JetStream API exactly as `nats stream add
    --config` / `nats consumer add --config` send it, in create.sh's order; then the plan
    against that server has no change left: the export made what apply would have made."""
    empty = await read_live(nc)
    plan = shop_plan(empty, empty.server)
    assert plan.pending, "the plan against an empty server creates everything"
    result = files(export_plan(plan, "natscli"))
    for line in result["create.sh"].splitlines():
        words = line.split()
        if words[:3] == ["nats", "stream", "add"]:
            config = json.loads(result[words[-1]])
            await api(nc, f"$JS.API.STREAM.CREATE.{words[3]}", config)
        elif words[:3] == ["nats", "consumer", "add"]:
            config = json.loads(result[words[-1]])
            body = {"stream_name": words[3], "config": config, "action": "create"}
            await api(nc, f"$JS.API.CONSUMER.CREATE.{words[3]}.{words[4]}", body)
    live = await read_live(nc)
    again = shop_plan(live, live.server)
    assert [(c.action, c.type, c.name) for c in again.pending] == []
    assert len(again.changes) == len(plan.changes)


# --- NACK -------------------------------------------------------------------------------------


def nack_documents(result: Export) -> list[dict[str, Any]]:
    docs = []
    for path, text in files(result).items():
        if path.endswith(".yaml"):
            docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def test_nack_documents_validate_against_the_crds() -> None:
    result = export_plan(shop_plan(), "nack")
    specs = {
        "Stream": schema("nack_stream_spec.json"),
        "Consumer": schema("nack_consumer_spec.json"),
    }
    docs = nack_documents(result)
    assert {d["kind"] for d in docs} == {"Stream", "Consumer"}
    for doc in docs:
        assert doc["apiVersion"] == "jetstream.nats.io/v1beta2"
        assert DNS_1123.match(doc["metadata"]["name"]), doc["metadata"]["name"]
        jsonschema.validate(doc["spec"], specs[doc["kind"]])
        spec = doc["spec"]
        if doc["kind"] == "Consumer":
            # NACK's CRD defaults would make these `none` / `1ns`: always written.
            assert spec["ackPolicy"] == "explicit" and spec["ackWait"] != "1ns"
            assert "deliverPolicy" in spec
        else:
            assert spec["storage"] == "file"  # the CRD's default is memory
            assert "d" not in spec["maxAge"] and "d" not in spec["duplicateWindow"]
    names = [d["metadata"]["name"] for d in docs if d["kind"] == "Stream"]
    assert len(names) == len(set(names))


def test_nack_round_trip_and_every_field() -> None:
    stream, consumer = every_field_stream(), every_field_consumer()
    docs = nack_documents(export_plan(single_plan(stream, consumer), "nack"))
    by_kind = {(d["kind"], d["spec"].get("name") or d["spec"]["durableName"]): d for d in docs}
    stream_doc = by_kind[("Stream", "sqs_every")]
    assert stream_doc["metadata"]["name"] == "sqs-every"
    assert stream_doc["spec"]["maxAge"] == "96h"
    assert without_unmanaged(nack_to_server("Stream", stream_doc["spec"])) == stream.to_api()
    consumer_doc = by_kind[("Consumer", "every")]
    assert nack_to_server("Consumer", consumer_doc["spec"]) == expected_consumer(consumer)


def test_nack_shop_round_trip() -> None:
    plan = shop_plan()
    docs = nack_documents(export_plan(plan, "nack"))
    streams = {d["spec"]["name"]: d["spec"] for d in docs if d["kind"] == "Stream"}
    consumers = {
        (d["spec"]["streamName"], d["spec"]["durableName"]): d["spec"]
        for d in docs
        if d["kind"] == "Consumer"
    }
    assert {n: without_unmanaged(nack_to_server("Stream", s)) for n, s in streams.items()} == {
        s.name: s.to_api() for s in plan.streams
    }
    assert {k: nack_to_server("Consumer", s) for k, s in consumers.items()} == {
        (c.stream_name, c.durable_name): expected_consumer(c) for c in plan.consumers
    }


def test_nack_connection_options_on_every_resource() -> None:
    conn = nack.Connection(
        servers=["nats://nats:4222"],
        creds="/etc/nats/bridge.creds",
        tls_cert="/tls/tls.crt",
        tls_key="/tls/tls.key",
        tls_ca="/tls/ca.crt",
        namespace="messaging",
    )
    docs = nack_documents(export_plan(shop_plan(), "nack", connection=conn, bundle=True))
    specs = {
        "Stream": schema("nack_stream_spec.json"),
        "Consumer": schema("nack_consumer_spec.json"),
    }
    for doc in docs:
        assert doc["metadata"]["namespace"] == "messaging"
        assert doc["spec"]["servers"] == ["nats://nats:4222"]
        assert doc["spec"]["tls"] == {
            "clientCert": "/tls/tls.crt",
            "clientKey": "/tls/tls.key",
            "rootCas": ["/tls/ca.crt"],
        }
        jsonschema.validate(doc["spec"], specs[doc["kind"]])
    account = nack.Connection(account="orders")
    docs = nack_documents(export_plan(shop_plan(), "nack", connection=account))
    assert all(d["spec"]["account"] == "orders" and "servers" not in d["spec"] for d in docs)


def test_nack_names_never_collide() -> None:
    a = StreamSpec(name="Orders_v2", subjects=["a"])
    b = StreamSpec(name="orders-v2", subjects=["b"])
    plan = Plan(generated_at="x", server=ServerInfo(reachable=False), streams=[a, b])
    first = files(export_plan(plan, "nack"))
    names = sorted(p for p in first if p.startswith("streams/"))
    assert len(names) == 2 and len(set(names)) == 2
    assert all(DNS_1123.match(Path(p).stem) for p in names)
    assert files(export_plan(plan, "nack")) == first  # the disambiguation is deterministic


# --- Terraform --------------------------------------------------------------------------------


def check_against_provider(rtype: str, body: dict[str, Any], provider: dict[str, Any]) -> None:
    resource = provider[rtype]
    kinds = {"string": str, "number": int, "bool": bool, "list": list, "map": dict}
    for key in resource["required"]:
        assert key in body, f"{rtype} lacks {key}"
    for key, value in body.items():
        if key in resource["blocks"]:
            for block in value:
                check_block(block, resource["blocks"][key], f"{rtype}.{key}")
            continue
        assert key in resource["attributes"], f"{rtype} has no attribute {key}"
        expected = kinds[resource["attributes"][key]]
        if expected is int:
            assert isinstance(value, int) and not isinstance(value, bool), (key, value)
        else:
            assert isinstance(value, expected), (key, value)
    for group in resource.get("one_of", []):
        assert len([k for k in group if k in body]) <= 1, group
    for group in resource.get("conflicts", []):
        assert len([k for k in group if k in body]) <= 1, group


def check_block(block: dict[str, Any], schema_: dict[str, Any], where: str) -> None:
    for key, value in block.items():
        if key in schema_.get("blocks", {}):
            for inner in value:
                check_block(inner, schema_["blocks"][key], f"{where}.{key}")
        else:
            assert key in schema_["attributes"], f"{where} has no attribute {key}"


def test_terraform_parses_and_every_attribute_is_the_providers() -> None:
    result = export_plan(shop_plan(), "terraform", bundle=True)
    resources = terraform_resources(files(result)["jetstream.tf"])
    provider = schema("terraform_jetstream.json")
    assert {t for t, _ in resources} == {"jetstream_stream", "jetstream_consumer"}
    for (rtype, _), body in resources.items():
        check_against_provider(rtype, body, provider)
        if rtype == "jetstream_consumer":
            assert "max_ack_pending" in body  # the provider's default (20000) is not the server's
    hcl2.loads(files(result)["provider.tf"])


def test_terraform_round_trip_and_every_field() -> None:
    stream, consumer = every_field_stream(), every_field_consumer()
    result = files(export_plan(single_plan(stream, consumer), "terraform"))
    resources = {}
    for path, text in result.items():
        if path.endswith(".tf") and path != "provider.tf":
            resources.update(terraform_resources(text))
    stream_of = {
        name: body["name"] for (t, name), body in resources.items() if t == "jetstream_stream"
    }
    provider = schema("terraform_jetstream.json")
    for (rtype, _), body in resources.items():
        check_against_provider(rtype, body, provider)
    converted = terraform_to_server(
        "jetstream_stream", resources[("jetstream_stream", "sqs_every")], stream_of
    )
    assert without_unmanaged(converted) == stream.to_api()
    back = terraform_to_server(
        "jetstream_consumer", resources[("jetstream_consumer", "sqs_every__every")], stream_of
    )
    assert back == expected_consumer(consumer)


def test_terraform_shop_round_trip() -> None:
    plan = shop_plan()
    resources = terraform_resources(
        files(export_plan(plan, "terraform", bundle=True))["jetstream.tf"]
    )
    stream_of = {
        name: body["name"] for (t, name), body in resources.items() if t == "jetstream_stream"
    }
    streams = {
        body["name"]: without_unmanaged(terraform_to_server(t, body, stream_of))
        for (t, _), body in resources.items()
        if t == "jetstream_stream"
    }
    consumers = [
        terraform_to_server(t, body, stream_of)
        for (t, _), body in resources.items()
        if t == "jetstream_consumer"
    ]
    assert streams == {s.name: s.to_api() for s in plan.streams}
    assert sorted(consumers, key=lambda c: (c["stream_name"], c["durable_name"])) == sorted(
        (expected_consumer(c) for c in plan.consumers),
        key=lambda c: (c["stream_name"], c["durable_name"]),
    )


def test_terraform_refuses_a_duration_that_is_not_whole_seconds(tmp_path: Path) -> None:
    consumer = every_field_consumer().model_copy(update={"ack_wait": 1_500_000_000})
    plan = single_plan(every_field_stream(), consumer)
    with pytest.raises(ExportError) as caught:
        export_plan(plan, "terraform")
    line = caught.value.one_line()
    assert "consumer sqs_every/every" in line and "ack_wait" in line and "1.5 s" in line
    # natscli and NACK carry nanoseconds exactly: the same plan exports there.
    assert files(export_plan(plan, "nack"))
    path = tmp_path / "plan.json"
    path.write_bytes(document_json(plan))
    out = tmp_path / "tf"
    run = CliRunner().invoke(
        main, ["export", "--format", "terraform", "--plan", str(path), "-o", str(out)]
    )
    assert run.exit_code == 1 and "ack_wait" in run.output
    assert not out.exists()  # nothing half-written


def test_terraform_imports_what_the_server_already_holds() -> None:
    plan = shop_plan()
    stream = plan.streams[0]
    consumer = next(c for c in plan.consumers if owner(c.metadata) == "estate")
    seen = plan.model_copy(
        update={
            "server": ServerInfo(reachable=True, url="nats://127.0.0.1:4222"),
            "changes": [
                Change(
                    action="noop",
                    type="stream",
                    name=stream.name,
                    stream=stream.name,
                    reason="up to date",
                ),
                Change(
                    action="update",
                    type="consumer",
                    name=consumer.durable_name,
                    stream=consumer.stream_name,
                    reason="ack_wait",
                ),
            ],
        }
    )
    script = files(export_plan(seen, "terraform"))["imports.sh"]
    lines = [line for line in script.splitlines() if line.startswith("terraform import")]
    stream_label = terraform.label(stream.name)
    consumer_label = terraform.label(f"{consumer.stream_name}__{consumer.durable_name}")
    assert lines == [
        f"terraform import jetstream_stream.{stream_label} JETSTREAM_STREAM_{stream.name}",
        f"terraform import jetstream_consumer.{consumer_label} "
        f"JETSTREAM_STREAM_{consumer.stream_name}_CONSUMER_{consumer.durable_name}",
    ]


# --- all targets ------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_matches_golden_files(fmt: str) -> None:
    result = files(export_plan(shop_plan(), fmt))  # type: ignore[arg-type]
    golden = GOLDEN / fmt
    if os.environ.get("UPDATE_GOLDEN"):
        for path, text in result.items():
            (golden / path).parent.mkdir(parents=True, exist_ok=True)
            (golden / path).write_text(text)
    on_disk = {str(p.relative_to(golden)): p.read_text() for p in golden.rglob("*") if p.is_file()}
    assert result == on_disk
    assert files(export_plan(shop_plan(), fmt)) == result  # type: ignore[arg-type]


@pytest.mark.parametrize("fmt", FORMATS)
def test_bridge_owned_objects_are_named_and_can_be_left_out(fmt: str) -> None:
    plan = shop_plan()
    full = export_plan(plan, fmt)  # type: ignore[arg-type]
    bridge = {s.name for s in plan.streams if owner(s.metadata) == "bridge"} | {
        c.key for c in plan.consumers if owner(c.metadata) == "bridge"
    }
    assert bridge and set(full.bridge_owned) == bridge
    notes = files(full)["NOTES.md"]
    assert all(f"`{name}`" in notes for name in bridge)
    lean = export_plan(plan, fmt, include_bridge=False)  # type: ignore[arg-type]
    assert lean.bridge_owned == []
    text = "\n".join(files(lean).values())
    assert "snsq2nats_advisories" not in text
    assert len(lean.files) < len(full.files)


def test_cli_writes_an_export_and_reports_it(tmp_path: Path) -> None:
    plan_path = tmp_path / "plan.json"
    plan_path.write_bytes(document_json(shop_plan()))
    out = tmp_path / "nack"
    run = CliRunner().invoke(
        main,
        [
            "export",
            "--format",
            "nack",
            "--plan",
            str(plan_path),
            "-o",
            str(out),
            "--json",
            "--servers",
            "nats://nats:4222",
        ],
    )
    assert run.exit_code == 0, run.output
    report = json.loads(run.stdout)
    assert report["format"] == "nack" and report["bridge_owned"]
    assert sorted(report["files"]) == sorted(
        str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()
    )
    assert (out / "NOTES.md").read_text().startswith("# snsq2nats export (nack)")
    bad = CliRunner().invoke(
        main, ["export", "--format", "natscli", "--plan", str(plan_path), "--servers", "nats://x"]
    )
    assert bad.exit_code == 1 and "only apply to --format nack" in bad.output


def test_the_every_field_specs_set_every_field() -> None:
    """The round-trip tests above build a stream and a consumer with every field the plan can
    set; a field added to the specs must be added there too (and so to every exporter), or a
    target could drop it silently."""
    stream, consumer = every_field_stream(), every_field_consumer()
    assert stream.model_fields_set == set(StreamSpec.model_fields)
    assert consumer.model_fields_set == set(ConsumerSpec.model_fields)
