"""Message attributes as SQS and SNS check them: the same rules, each service's own words.

Both services refuse the same things (a bad name, a missing or unknown type, an empty value, a
Number that is not one); only the error texts differ, and SDK users read those texts, so each
service keeps its own in a `Wording`.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from snsq2nats.bridge.codec import Attribute
from snsq2nats.errors import GatewayError

NAME = re.compile(r"^[A-Za-z0-9_.-]{1,256}$")
TYPES = ("String", "Number", "Binary")


@dataclass(frozen=True)
class Wording:
    """Each refusal's text; `{name}` is the attribute's name, `{kind}` its type's base."""

    bad_name: str
    no_value: str
    no_type: str
    bad_type: str
    no_binary: str
    bad_binary: str
    empty: str
    not_number: str
    not_array: str | None
    """None: String.Array is a plain String (SQS); else the text for a value not a JSON array."""


def valid_name(name: str) -> bool:
    return bool(
        NAME.match(name)
        and not name.startswith(".")
        and not name.endswith(".")
        and ".." not in name
        and not name.lower().startswith(("aws.", "amazon."))
    )


def checked_attributes(
    raw: Mapping[Any, Any], words: Wording, refuse: Callable[[str], GatewayError]
) -> dict[str, Attribute]:
    """`raw` (name → {DataType, StringValue | BinaryValue}) as Attributes, or `refuse(text)`.
    A BinaryValue may be bytes (already decoded) or base64 text (the JSON protocol)."""
    out: dict[str, Attribute] = {}
    for key, value in raw.items():
        name = str(key)
        if not valid_name(name):
            raise refuse(words.bad_name.format(name=name))
        if not isinstance(value, Mapping):
            raise refuse(words.no_value.format(name=name))
        data_type = str(value.get("DataType") or "")
        kind = data_type.split(".", 1)[0]
        if not data_type:
            raise refuse(words.no_type.format(name=name))
        if kind not in TYPES:
            raise refuse(words.bad_type.format(name=name))
        if kind == "Binary":
            blob = value.get("BinaryValue")
            if not blob:
                raise refuse(words.no_binary.format(name=name))
            try:
                data = blob if isinstance(blob, bytes) else base64.b64decode(blob, validate=True)
            except (binascii.Error, ValueError):
                raise refuse(words.bad_binary.format(name=name)) from None
            out[name] = Attribute(data_type, bytes(data))
            continue
        text = value.get("StringValue")
        if text is None or text == "":
            raise refuse(words.empty.format(name=name, kind=kind))
        if kind == "Number" and not _number(str(text)):
            raise refuse(words.not_number.format(name=name))
        if words.not_array is not None and data_type == "String.Array" and not _array(str(text)):
            raise refuse(words.not_array.format(name=name))
        out[name] = Attribute(data_type, str(text))
    return out


def _number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _array(text: str) -> bool:
    try:
        return isinstance(json.loads(text), list)
    except ValueError:
        return False
