"""MD5OfMessageBody and MD5OfMessageAttributes, computed as SQS computes them.

The SDKs (the JS SDK v3, Java, .NET) verify both and throw on a mismatch, so the gateway
computes them over exactly what it stores and returns.

Attributes: sorted by name; each contributes its name, its data type, a transport byte (1 for
String and Number types, 2 for Binary) and its value, every variable-length part preceded by
its length as a 4-byte big-endian integer.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping

from snsq2nats.bridge.codec import Attribute

_STRING = b"\x01"
_BINARY = b"\x02"


def md5_of_body(body: str) -> str:
    return hashlib.md5(body.encode("utf-8"), usedforsecurity=False).hexdigest()


def _part(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def md5_of_attributes(attributes: Mapping[str, Attribute]) -> str | None:
    """None when there are none: SQS leaves the field out then."""
    if not attributes:
        return None
    digest = hashlib.md5(usedforsecurity=False)
    for name in sorted(attributes):
        attribute = attributes[name]
        digest.update(_part(name.encode("utf-8")))
        digest.update(_part(attribute.data_type.encode("utf-8")))
        if attribute.is_binary:
            value = attribute.value
            digest.update(_BINARY + _part(value if isinstance(value, bytes) else value.encode()))
        else:
            value = attribute.value
            text = value.decode("utf-8") if isinstance(value, bytes) else value
            digest.update(_STRING + _part(text.encode("utf-8")))
    return digest.hexdigest()
