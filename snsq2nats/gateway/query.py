"""The SQS Query protocol (`Action=…` form posts, XML answers), read into and written from the
JSON protocol's shapes, so the actions serve both protocols unchanged.

botocore's SQS model is JSON-only today: it keeps the `flattened` traits but no longer the Query
element names (`MessageAttribute.N`, `SendMessageBatchRequestEntry.N`, `<Message>`), so the
renames are a table here, checked by the tests against an AWS emulator's Query answers.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

from snsq2nats.errors import GatewayError

XML_NAMESPACE = "http://queue.amazonaws.com/doc/2012-11-05/"
XML_CONTENT_TYPE = "text/xml"

# Query list element → JSON member.
_REQUEST_LISTS = {
    "AttributeName": "AttributeNames",
    "MessageAttributeName": "MessageAttributeNames",
    "MessageSystemAttributeName": "MessageSystemAttributeNames",
    "SendMessageBatchRequestEntry": "Entries",
    "DeleteMessageBatchRequestEntry": "Entries",
    "ChangeMessageVisibilityBatchRequestEntry": "Entries",
}
# Query name/value lists → JSON maps.
_REQUEST_MAPS = {
    "MessageAttribute": "MessageAttributes",
    "MessageSystemAttribute": "MessageSystemAttributes",
    "Attribute": "Attributes",
    "Tag": "Tags",
}
# JSON list member → the repeated (flattened) XML element.
_RESPONSE_LISTS = {
    "Messages": "Message",
    "QueueUrls": "QueueUrl",
    "Failed": "BatchResultErrorEntry",
}
_RESPONSE_MAPS = {"Attributes": "Attribute", "MessageAttributes": "MessageAttribute"}
_NO_RESULT = frozenset({"DeleteMessage", "ChangeMessageVisibility", "PurgeQueue"})


def parse_form(body: bytes, query: str) -> dict[str, str]:
    """The request's parameters: the form body's, and the URL query's (GET-style clients)."""
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(query, keep_blank_values=True) + parse_qsl(text, keep_blank_values=True)
    except (UnicodeDecodeError, ValueError):
        raise GatewayError(
            "MalformedQueryString", "The request's form parameters cannot be read."
        ) from None
    return dict(pairs)


def to_params(form: Mapping[str, str]) -> dict[str, Any]:
    """Flat `A.1.B.C=v` parameters as the JSON protocol's nested request."""
    tree: dict[str, Any] = {}
    for key, value in form.items():
        if key in ("Action", "Version"):
            continue
        node = tree
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise GatewayError("MalformedQueryString", f"Parameter {key} is malformed.")
            node = child
        if isinstance(node.get(parts[-1]), dict):
            raise GatewayError("MalformedQueryString", f"Parameter {key} is malformed.")
        node[parts[-1]] = value
    shaped = _shape(tree)
    if not isinstance(shaped, dict):
        raise GatewayError("MalformedQueryString", "The request's parameters are malformed.")
    return shaped


def _shape(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    if node and all(k.isdigit() for k in node):
        # Members are numbered from 1; SQS reads them up to the first number missing.
        items: list[Any] = []
        while str(len(items) + 1) in node:
            items.append(_shape(node[str(len(items) + 1)]))
        return items
    out: dict[str, Any] = {}
    for key, value in node.items():
        shaped = _shape(value)
        if key in _REQUEST_LISTS:
            out[_REQUEST_LISTS[key]] = shaped if isinstance(shaped, list) else [shaped]
        elif key in _REQUEST_MAPS:
            items = shaped if isinstance(shaped, list) else [shaped]
            out[_REQUEST_MAPS[key]] = {
                str(item.get("Name")): item.get("Value") for item in items if isinstance(item, dict)
            }
        else:
            out[key] = shaped
    return out


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return escape(str(value))


def _element(name: str, value: Any) -> str:
    if isinstance(value, dict):
        inner = "".join(_members(value))
        return f"<{name}>{inner}</{name}>"
    return f"<{name}>{_text(value)}</{name}>"


def _members(result: Mapping[str, Any], entry_name: str = "") -> list[str]:
    out: list[str] = []
    for key, value in result.items():
        if key in _RESPONSE_MAPS and isinstance(value, dict):
            tag = _RESPONSE_MAPS[key]
            for name, item in value.items():
                out.append(f"<{tag}><Name>{escape(name)}</Name>{_element('Value', item)}</{tag}>")
        elif isinstance(value, list):
            tag = entry_name if key == "Successful" else _RESPONSE_LISTS.get(key, key)
            out += [_element(tag, item) for item in value]
        else:
            out.append(_element(key, value))
    return out


def xml_response(action: str, result: Mapping[str, Any], request_id: str) -> bytes:
    body = "".join(_members(result, f"{action}ResultEntry"))
    result_xml = "" if action in _NO_RESULT else f"<{action}Result>{body}</{action}Result>"
    return (
        f'<?xml version="1.0"?><{action}Response xmlns="{XML_NAMESPACE}">{result_xml}'
        f"<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata>"
        f"</{action}Response>"
    ).encode()


# Where SQS words a Query error differently from the JSON protocol's.
_QUERY_MESSAGES = {
    "AWS.SimpleQueueService.NonExistentQueue": "The specified queue does not exist for this "
    "wsdl version."
}


def xml_error(error: GatewayError, request_id: str) -> bytes:
    fault = "Sender" if error.sender else "Receiver"
    message = _QUERY_MESSAGES.get(error.code, error.message)
    return (
        f'<?xml version="1.0"?><ErrorResponse xmlns="{XML_NAMESPACE}"><Error>'
        f"<Type>{fault}</Type><Code>{escape(error.code)}</Code>"
        f"<Message>{escape(message)}</Message><Detail/></Error>"
        f"<RequestId>{request_id}</RequestId></ErrorResponse>"
    ).encode()
