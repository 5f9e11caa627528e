"""Message attributes ↔ NATS headers, so a message survives AWS → NATS → AWS unchanged.

Each attribute travels as a header named after it, holding its string value, which is what a
NATS consumer reads. Headers cannot carry everything an attribute can (line breaks, binary
bytes, the data type such as `Number.int`), so one extra header, `Snsq2nats-Attributes`, holds
a JSON object with each attribute's exact data type and, where the plain header could not hold
the value faithfully, the value itself (base64 for bytes). Decoding trusts that header first,
so the round trip is exact; headers a NATS producer set without it become String attributes
(`plain_names` lists them: the filter router types them by `filterpolicy.PLAIN_HEADER_RULE`).

Attributes whose names would be read by NATS or by us (`Nats-*`, `Snsq2nats-*`) never become
headers of their own: a producer's `Nats-Msg-Id` attribute must not turn on deduplication.
"""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

# Lives below `verify` and the bridge (both use it); the bridge reads every header name here.
from snsq2nats.plan.headers import CANARY_HEADER as CANARY_HEADER

ATTRIBUTES_HEADER = "Snsq2nats-Attributes"
ORIGIN_HEADER = "Snsq2nats-Origin"
ROUTE_HEADER = "Snsq2nats-Route"
ORIGIN_ATTRIBUTE = "snsq2nats.origin"
MSG_ID_HEADER = "Nats-Msg-Id"
GROUP_HEADER = "Snsq2nats-Group-Id"
DEDUP_HEADER = "Snsq2nats-Deduplication-Id"
AWS_MESSAGE_ID_HEADER = "Snsq2nats-Aws-Message-Id"
MAX_SQS_ATTRIBUTES = 10
_RESERVED_PREFIXES = ("nats-", "snsq2nats-")


def topic_copy(
    original: Mapping[str, str],
    topic_stream: str,
    seq: int,
    route: str,
    subject: str,
    *,
    fifo: bool,
) -> tuple[str, dict[str, str]]:
    """The subject and headers of a topic message's copy into a queue stream (a filter
    router's, or a fan-out handover's in-doubt message).

    The id is `<topic stream>:<seq>`, the one the SNS path's copy of the same message carries
    (the sqs-to-nats relay names a NATS-origin message by its origin), so the queue stream keeps
    one of any two copies inside its duplicate window. The topic message's server-interpreted
    headers (expected-stream checks, TTLs, roll-ups) must not act on the copy: they are dropped.
    A FIFO queue's subject ends in the message group's token.
    """
    from snsq2nats.filterpolicy import encode_token

    headers = {k: v for k, v in original.items() if not k.lower().startswith("nats-")}
    headers[MSG_ID_HEADER] = f"{topic_stream}:{seq}"
    headers[ROUTE_HEADER] = route
    if fifo:
        subject = f"{subject}.{encode_token(original.get(GROUP_HEADER) or None)}"
    return subject, headers


@dataclass(frozen=True)
class Attribute:
    """One SQS/SNS message attribute: its data type and value (bytes for Binary types)."""

    data_type: str
    value: str | bytes

    @property
    def is_binary(self) -> bool:
        data_type = self.data_type
        return data_type == "Binary" or data_type.startswith("Binary.")

    def to_sqs(self) -> dict[str, Any]:
        if self.is_binary:
            raw = self.value if isinstance(self.value, bytes) else base64.b64decode(self.value)
            return {"DataType": self.data_type, "BinaryValue": raw}
        return {"DataType": self.data_type, "StringValue": _text(self.value)}

    def to_sns(self) -> dict[str, Any]:
        return self.to_sqs()

    @classmethod
    def from_sqs(cls, raw: Mapping[str, Any]) -> Attribute:
        data_type = str(raw.get("DataType", "String"))
        if "BinaryValue" in raw and raw["BinaryValue"] is not None:
            value = raw["BinaryValue"]
            return cls(data_type, value if isinstance(value, bytes) else base64.b64decode(value))
        return cls(data_type, str(raw.get("StringValue", "")))

    @classmethod
    def from_sns_envelope(cls, raw: Mapping[str, Any]) -> Attribute:
        """The envelope's `{"Type": …, "Value": …}`; Binary values arrive base64-encoded."""
        data_type = str(raw.get("Type", "String"))
        value = str(raw.get("Value", ""))
        if data_type.split(".", 1)[0] == "Binary":
            return cls(data_type, base64.b64decode(value))
        return cls(data_type, value)


def _text(value: str | bytes) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _header_safe(value: str) -> bool:
    return "\r" not in value and "\n" not in value and value == value.strip()


@functools.lru_cache(maxsize=4096)
def _reserved(name: str) -> bool:
    return name.lower().startswith(_RESERVED_PREFIXES)


@functools.lru_cache(maxsize=1024)
def _shape_header(shape: tuple[tuple[str, str], ...]) -> str:
    """The `Snsq2nats-Attributes` value when every attribute travels as its own header: it only
    names the data types, so messages of one shape (names and types) share it."""
    return json.dumps({n: {"t": t} for n, t in shape}, separators=(",", ":"), sort_keys=True)


def attributes_to_headers(attributes: Mapping[str, Attribute]) -> dict[str, str]:
    # The usual case first: every value fits a header of its own, and the JSON header depends
    # only on the names and types.
    headers: dict[str, str] = {}
    shape: list[tuple[str, str]] = []
    for name in sorted(attributes):
        attr = attributes[name]
        value = attr.value
        if not isinstance(value, str) or attr.is_binary or _reserved(name):
            break
        if not _header_safe(value):
            break
        headers[name] = value
        shape.append((name, attr.data_type))
    else:
        if shape:
            headers[ATTRIBUTES_HEADER] = _shape_header(tuple(shape))
        return headers
    return _described_headers(attributes)


def _described_headers(attributes: Mapping[str, Attribute]) -> dict[str, str]:
    headers: dict[str, str] = {}
    described: dict[str, dict[str, str]] = {}
    for name in sorted(attributes):
        attr = attributes[name]
        entry: dict[str, str] = {"t": attr.data_type}
        if attr.is_binary:
            raw = attr.value if isinstance(attr.value, bytes) else attr.value.encode()
            entry["b64"] = base64.b64encode(raw).decode("ascii")
        else:
            text = _text(attr.value)
            if _reserved(name) or not _header_safe(text):
                entry["v"] = text
            else:
                headers[name] = text
        described[name] = entry
    if described:
        headers[ATTRIBUTES_HEADER] = json.dumps(described, separators=(",", ":"), sort_keys=True)
    return headers


def headers_to_attributes(headers: Mapping[str, str] | None) -> dict[str, Attribute]:
    """The attributes a message carried; plain headers from NATS producers become Strings."""
    if not headers:
        return {}
    attributes: dict[str, Attribute] = {}
    described: dict[str, Any] = {}
    if ATTRIBUTES_HEADER in headers:
        try:
            loaded = json.loads(headers[ATTRIBUTES_HEADER])
            described = loaded if isinstance(loaded, dict) else {}
        except json.JSONDecodeError:
            described = {}
    for name, entry in described.items():
        if not isinstance(entry, dict):
            continue
        data_type = str(entry.get("t", "String"))
        if "b64" in entry:
            attributes[name] = Attribute(data_type, base64.b64decode(entry["b64"]))
        elif "v" in entry:
            attributes[name] = Attribute(data_type, str(entry["v"]))
        elif name in headers:
            attributes[name] = Attribute(data_type, headers[name])
    for name, value in headers.items():
        if name in attributes or _reserved(name):
            continue
        attributes[name] = Attribute("String", value)
    return attributes


def plain_names(headers: Mapping[str, str] | None) -> frozenset[str]:
    """The attributes a NATS producer set as plain headers: no data type recorded for them in
    `Snsq2nats-Attributes` (every attribute the bridge relays from AWS has one)."""
    if not headers:
        return frozenset()
    described: object = {}
    if ATTRIBUTES_HEADER in headers:
        try:
            described = json.loads(headers[ATTRIBUTES_HEADER])
        except json.JSONDecodeError:
            described = {}
    recorded = described if isinstance(described, dict) else {}
    return frozenset(
        name for name in headers if not _reserved(name) and not isinstance(recorded.get(name), dict)
    )


def headers_to_aws(
    headers: Mapping[str, str] | None, numbers: Collection[str] = ()
) -> dict[str, dict[str, Any]]:
    """The attributes a message carried, as SQS/SNS `MessageAttributes` entries.

    `numbers`: attributes a filter policy compares as numbers; a plain header of one that
    parses as a number goes as a `Number` (`filterpolicy.PLAIN_HEADER_RULE`), so SNS filters
    it as it would the same attribute from an AWS producer."""
    if not headers:
        return {}
    if ATTRIBUTES_HEADER not in headers:
        # A NATS producer's plain headers, the relay's common case: built directly.
        return {
            name: {"DataType": _plain_type(name, value, numbers), "StringValue": value}
            for name, value in headers.items()
            if not _reserved(name)
        }
    entries = {name: attr.to_sqs() for name, attr in headers_to_attributes(headers).items()}
    for name in plain_names(headers):
        entry = entries.get(name)
        if entry is not None and "StringValue" in entry:
            entry["DataType"] = _plain_type(name, entry["StringValue"], numbers)
    return entries


def _plain_type(name: str, value: str, numbers: Collection[str]) -> str:
    if name not in numbers:
        return "String"
    from snsq2nats.filterpolicy import MessageAttribute, type_plain

    typed, _ = type_plain({name: MessageAttribute("String", value)}, (name,), (name,))
    return typed[name].data_type


def string_attributes(attributes: Mapping[str, Attribute]) -> dict[str, Any]:
    """The filter-policy view of attributes (filterpolicy.MessageAttribute objects)."""
    from snsq2nats.filterpolicy import MessageAttribute

    return {name: MessageAttribute(a.data_type, a.value) for name, a in attributes.items()}
