"""The SNS data plane served from the applied plan: Publish, PublishBatch, ListTopics,
GetTopicAttributes and ListSubscriptionsByTopic over SNS's Query/XML protocol.

Entry point: `await handle_sns(action, params, js=…, plan=…, principal=…)` with the request's
`Action` and its decoded form (or query) parameters; it returns the XML body SNS would return
and raises `GatewayError` for what SNS answers with an error, which `error_xml` renders as SNS's
`ErrorResponse`. Parameters are read and results written through the SNS service model that
botocore ships, so names, nesting (`MessageAttributes.entry.N.Value.DataType`,
`PublishBatchRequestEntries.member.N.…`) and types are the SDKs' own.

A message is published exactly as a NATS producer of the topic publishes it (what `snsq2nats
subject` prints): on the topic's subject with its promoted attributes as tokens
(`filterpolicy.subject_for`), every attribute a header through the one header contract
(`bridge.codec`), so the topic stream, its queues' stream sources, the filter routers and the
NATS → SNS relay route it as they route any NATS-published message, wherever the subscribers
are. A FIFO topic's MessageGroupId and MessageDeduplicationId (or the body's SHA-256 with
content-based deduplication) travel as the bridge's group and dedup headers, the dedup id as
`Nats-Msg-Id` too, so the stream's duplicate window (≥ SNS's 5 minutes) drops a repeat and the
answer carries the first copy's MessageId and SequenceNumber. MessageIds are derived from the
stored message (stream and sequence), so a duplicate gets the original's.

`js` is the principal's JetStream access (`IdentityConnections.jetstream`, or any object with
nats-py's `publish`): NATS decides what the principal may publish, and a refusal becomes SNS's
`AuthorizationError`. Control-plane actions (CreateTopic, Subscribe, SetTopicAttributes, …)
are refused with an `AuthorizationError` that names `snsq2nats plan` and `apply`: the estate
changes only through a plan, never behind it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hashlib
import json
import logging
import re
import uuid
import weakref
from collections.abc import Mapping
from typing import Any
from xml.sax.saxutils import escape

from snsq2nats.bridge.aws_to_nats import SNS_SUBJECT_HEADER
from snsq2nats.bridge.codec import (
    DEDUP_HEADER,
    GROUP_HEADER,
    MSG_ID_HEADER,
    Attribute,
    attributes_to_headers,
    string_attributes,
)
from snsq2nats.errors import GatewayError, PermissionDeniedError
from snsq2nats.filterpolicy import subject_for
from snsq2nats.gateway.attributes import Wording, checked_attributes
from snsq2nats.gateway.principal import Principal
from snsq2nats.plan.model import Plan, Resource

__all__ = ["DATA_PLANE", "error_xml", "handle_sns"]

log = logging.getLogger(__name__)

XMLNS = "http://sns.amazonaws.com/doc/2010-03-31/"
DATA_PLANE = frozenset(
    {"Publish", "PublishBatch", "ListTopics", "GetTopicAttributes", "ListSubscriptionsByTopic"}
)
MAX_MESSAGE_BYTES = 262_144
MAX_BATCH = 10
PAGE = 100
PUBLISH_TIMEOUT = 10.0
# MessageIds name the stored message: the same stream and sequence, the same id.
_MESSAGE_IDS = uuid.UUID("5b0e4f4e-8a51-4f1c-9d2e-5e7a3c1b2d60")
_BATCH_ID = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
_AWS_ID = re.compile(r"^[\x21-\x7e]{1,128}$")


# -- the SNS service model ----------------------------------------------------------------------


@functools.cache
def _model() -> Any:
    import botocore.session

    return botocore.session.get_session().get_service_model("sns")


def _parse(shape: Any, params: Mapping[str, str], prefix: str) -> Any:
    """The value of `shape` at `prefix` in Query-protocol parameters, as boto3 would pass it
    (dicts, lists, str/int/bool/bytes); None when absent."""
    kind = shape.type_name
    if kind == "structure":
        out = {}
        for name, member in shape.members.items():
            key = member.serialization.get("name", name)
            value = _parse(member, params, f"{prefix}.{key}" if prefix else key)
            if value is not None:
                out[name] = value
        return out if out or not prefix else None
    if kind == "list":
        flat = shape.serialization.get("flattened", False)
        base = prefix if flat else f"{prefix}.{shape.member.serialization.get('name', 'member')}"
        items = [_parse(shape.member, params, f"{base}.{i}") for i in _indices(params, base)]
        if not items and prefix in params:
            return []  # an explicitly empty list (`Name=`)
        return items or None
    if kind == "map":
        base = prefix if shape.serialization.get("flattened", False) else f"{prefix}.entry"
        key_name = shape.key.serialization.get("name", "key")
        value_name = shape.value.serialization.get("name", "value")
        out = {}
        for i in _indices(params, base):
            key = params.get(f"{base}.{i}.{key_name}")
            if key is not None:
                out[key] = _parse(shape.value, params, f"{base}.{i}.{value_name}")
        return out or None
    raw = params.get(prefix)
    if raw is None:
        return None
    if kind == "blob":
        try:
            return base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise _invalid(f"{prefix} is not valid base64") from None
    if kind == "boolean":
        return raw.lower() == "true"
    if kind in ("integer", "long"):
        try:
            return int(raw)
        except ValueError:
            raise _validation(f"Value '{raw}' at '{prefix}' is not a number") from None
    return raw


def _indices(params: Mapping[str, str], base: str) -> list[int]:
    start = len(base) + 1
    found = set()
    for key in params:
        if key.startswith(base) and key[start - 1 : start] == ".":
            head = key[start:].split(".", 1)[0]
            if head.isdigit():
                found.add(int(head))
    return sorted(found)


def _xml(shape: Any, value: Any, name: str) -> str:
    kind = shape.type_name
    if kind == "structure":
        inner = "".join(
            _xml(member, value[key], member.serialization.get("name", key))
            for key, member in shape.members.items()
            if value.get(key) is not None
        )
    elif kind == "list":
        item = shape.member.serialization.get("name", "member")
        inner = "".join(_xml(shape.member, v, item) for v in value)
        if shape.serialization.get("flattened", False):
            return inner
    elif kind == "map":
        key_name = shape.key.serialization.get("name", "key")
        value_name = shape.value.serialization.get("name", "value")
        inner = "".join(
            f"<entry>{_xml(shape.key, k, key_name)}{_xml(shape.value, v, value_name)}</entry>"
            for k, v in value.items()
        )
    elif kind == "boolean":
        inner = "true" if value else "false"
    elif kind == "blob":
        inner = base64.b64encode(value).decode("ascii")
    else:
        inner = escape(str(value))
    return f"<{name}>{inner}</{name}>"


def response_xml(action: str, result: Mapping[str, Any], request_id: str) -> bytes:
    """`<ActionResponse><ActionResult>…</ActionResult><ResponseMetadata>…` as SNS writes it."""
    output = _model().operation_model(action).output_shape
    inner = ""
    if output is not None:
        inner = _xml(output, result, output.serialization.get("resultWrapper", f"{action}Result"))
    return (
        f'<{action}Response xmlns="{XMLNS}">{inner}'
        f"<ResponseMetadata><RequestId>{escape(request_id)}</RequestId></ResponseMetadata>"
        f"</{action}Response>"
    ).encode()


def error_xml(error: GatewayError, request_id: str) -> bytes:
    """SNS's `ErrorResponse` for `error` (HTTP status: `error.status`)."""
    kind = "Sender" if error.sender else "Receiver"
    return (
        f'<ErrorResponse xmlns="{XMLNS}"><Error><Type>{kind}</Type>'
        f"<Code>{escape(error.code)}</Code><Message>{escape(error.message)}</Message></Error>"
        f"<RequestId>{escape(request_id)}</RequestId></ErrorResponse>"
    ).encode()


# -- errors, as SNS words them ------------------------------------------------------------------


def _invalid(reason: str) -> GatewayError:
    return GatewayError("InvalidParameter", f"Invalid parameter: {reason}")


def _value_invalid(message: str) -> GatewayError:
    return GatewayError("ParameterValueInvalid", message)


def _validation(message: str) -> GatewayError:
    return GatewayError("ValidationError", message)


def _not_found() -> GatewayError:
    return GatewayError("NotFound", "Topic does not exist", status=404)


def _internal(message: str) -> GatewayError:
    return GatewayError("InternalError", message, status=500, sender=False)


def _control_plane(action: str) -> GatewayError:
    return GatewayError(
        "AuthorizationError",
        f"{action} is not served here: this estate is managed by `snsq2nats plan` and "
        "`snsq2nats apply` (change the inventory or the mapping, plan, then apply); the "
        "gateway serves Publish, PublishBatch, ListTopics, GetTopicAttributes and "
        "ListSubscriptionsByTopic",
        status=403,
    )


# -- the entry point ----------------------------------------------------------------------------


async def handle_sns(
    action: str,
    params: Mapping[str, str],
    *,
    js: Any,
    plan: Plan,
    principal: Principal,
    request_id: str | None = None,
) -> bytes:
    """Serve one SNS action; the XML body of its answer, or GatewayError."""
    request_id = request_id or str(uuid.uuid4())
    model = _model()
    if action not in model.operation_names:
        raise GatewayError("InvalidAction", f"The action {action} is not valid for this endpoint.")
    if action not in DATA_PLANE:
        raise _control_plane(action)
    operation = model.operation_model(action)
    request = _parse(operation.input_shape, params, "")
    for name in operation.input_shape.required_members:
        if request.get(name) is None:
            raise _validation(
                f"1 validation error detected: Value null at '{name[0].lower()}{name[1:]}' "
                "failed to satisfy constraint: Member must not be null"
            )
    topics = _topics_of(plan)
    if action == "ListTopics":
        result = topics.list_topics(request.get("NextToken"))
    elif action == "GetTopicAttributes":
        result = topics.attributes(topics.find(request["TopicArn"]))
    elif action == "ListSubscriptionsByTopic":
        result = topics.subscriptions(topics.find(request["TopicArn"]), request.get("NextToken"))
    elif action == "Publish":
        result = await _publish(request, topics, js, principal)
    else:
        result = await _publish_batch(request, topics, js, principal)
    return response_xml(action, result, request_id)


# -- the plan's topics ---------------------------------------------------------------------------


_INDEXES: dict[int, tuple[weakref.ref[Plan], _Topics]] = {}


def _topics_of(plan: Plan) -> _Topics:
    """The plan's topics, indexed once per plan (every request of a gateway reads the same
    applied plan; a scan of 10,000 resources per Publish would be its cost)."""
    key = id(plan)
    cached = _INDEXES.get(key)
    if cached is not None and cached[0]() is plan:
        return cached[1]
    topics = _Topics(plan)
    _INDEXES[key] = (weakref.ref(plan, lambda _: _INDEXES.pop(key, None)), topics)
    return topics


class _Topics:
    def __init__(self, plan: Plan) -> None:
        self.topics = sorted(
            (r for r in plan.resources if r.kind == "sns-topic"), key=lambda r: r.source_arn
        )
        self._by_arn = {t.source_arn: t for t in self.topics}
        self._queue_by_stream = {
            r.stream: r for r in plan.resources if r.kind == "sqs-queue" and r.stream
        }
        self._subscribed: dict[str, list[Resource]] = {}
        for r in plan.resources:
            if r.kind == "sns-subscription":
                # A subscription's ARN is its topic's ARN and one more token.
                self._subscribed.setdefault(r.source_arn.rsplit(":", 1)[0], []).append(r)

    def find(self, arn: str) -> Resource:
        topic = self._by_arn.get(arn)
        if topic is None:
            raise _not_found()
        return topic

    def list_topics(self, token: str | None) -> dict[str, Any]:
        start = _page_start(token)
        page = self.topics[start : start + PAGE]
        result: dict[str, Any] = {"Topics": [{"TopicArn": t.source_arn} for t in page]}
        if start + PAGE < len(self.topics):
            result["NextToken"] = _page_token(start + PAGE)
        return result

    def subscribed(self, topic: Resource) -> list[Resource]:
        return self._subscribed.get(topic.source_arn, [])

    def attributes(self, topic: Resource) -> dict[str, Any]:
        account = topic.source_arn.split(":")[4]
        attributes = {
            "TopicArn": topic.source_arn,
            "Owner": account,
            "DisplayName": _fidelity_value(topic, "DisplayName") or "",
            "SubscriptionsConfirmed": str(len(self.subscribed(topic))),
            "SubscriptionsPending": "0",
            "SubscriptionsDeleted": "0",
        }
        policy = _default_policy(topic)
        if policy is not None:
            attributes["Policy"] = policy
        delivery = _fidelity_value(topic, "DeliveryPolicy")
        if delivery:
            attributes["DeliveryPolicy"] = delivery
        attributes["EffectiveDeliveryPolicy"] = delivery or DEFAULT_DELIVERY_POLICY
        kms = _fidelity_value(topic, "KmsMasterKeyId")
        if kms:
            attributes["KmsMasterKeyId"] = kms
        if _fifo(topic):
            attributes["FifoTopic"] = "true"
            attributes["ContentBasedDeduplication"] = "true" if _content_dedup(topic) else "false"
            scope = _fidelity_value(topic, "FifoThroughputScope")
            if scope:
                attributes["FifoThroughputScope"] = scope
        return {"Attributes": attributes}

    def subscriptions(self, topic: Resource, token: str | None) -> dict[str, Any]:
        rows = [self._subscription(topic, s) for s in self.subscribed(topic)]
        start = _page_start(token)
        result: dict[str, Any] = {"Subscriptions": rows[start : start + PAGE]}
        if start + PAGE < len(rows):
            result["NextToken"] = _page_token(start + PAGE)
        return result

    def _subscription(self, topic: Resource, sub: Resource) -> dict[str, str]:
        protocol, endpoint = "sqs", ""
        queue = self._queue_by_stream.get(sub.stream) if sub.stream else None
        if queue is not None:
            endpoint = queue.source_arn
        else:
            # Not a planned queue: the resource's name says `<topic> → <protocol>:<endpoint>`
            # (or `<topic> → <queue ARN>` for a queue outside the inventory).
            target = sub.name.split(" → ", 1)[-1]
            if target.startswith("arn:"):
                endpoint = target
            else:
                protocol, _, endpoint = target.partition(":")
        return {
            "SubscriptionArn": sub.source_arn,
            "Owner": topic.source_arn.split(":")[4],
            "Protocol": protocol,
            "Endpoint": endpoint,
            "TopicArn": topic.source_arn,
        }


def _page_start(token: str | None) -> int:
    if not token:
        return 0
    try:
        return int(base64.urlsafe_b64decode(token.encode()).decode())
    except (ValueError, binascii.Error):
        raise _invalid("NextToken") from None


def _page_token(start: int) -> str:
    return base64.urlsafe_b64encode(str(start).encode()).decode()


def _fidelity_value(resource: Resource, attribute: str) -> str | None:
    return next((f.value for f in resource.fidelity if f.attribute == attribute), None)


DEFAULT_DELIVERY_POLICY = json.dumps(
    {
        "http": {
            "defaultHealthyRetryPolicy": {
                "minDelayTarget": 20,
                "maxDelayTarget": 20,
                "numRetries": 3,
                "numMaxDelayRetries": 0,
                "numNoDelayRetries": 0,
                "numMinDelayRetries": 0,
                "backoffFunction": "linear",
            },
            "disableSubscriptionOverrides": False,
            "defaultRequestPolicy": {"headerContentType": "text/plain; charset=UTF-8"},
        }
    },
    separators=(",", ":"),
)
"""SNS's EffectiveDeliveryPolicy for a topic without a DeliveryPolicy of its own."""
_DEFAULT_ACTIONS = (
    "GetTopicAttributes",
    "SetTopicAttributes",
    "AddPermission",
    "RemovePermission",
    "DeleteTopic",
    "Subscribe",
    "ListSubscriptionsByTopic",
    "Publish",
)


def _default_policy(topic: Resource) -> str | None:
    """The topic's Policy when it is SNS's default (the owner's account only), rebuilt as SNS
    writes it. The plan keeps who a policy lets in, not its document: any other policy is left
    out rather than answered as something it is not."""
    access = topic.access
    if access is not None and (
        access.plumbing
        or any(g.principal != "owner-account" or g.conditions for g in access.grants)
    ):
        return None
    account = topic.source_arn.split(":")[4]
    statement = {
        "Sid": "__default_statement_ID",
        "Effect": "Allow",
        "Principal": {"AWS": "*"},
        "Action": [f"SNS:{a}" for a in _DEFAULT_ACTIONS],
        "Resource": topic.source_arn,
        "Condition": {"StringEquals": {"AWS:SourceOwner": account}},
    }
    policy = {"Version": "2008-10-17", "Id": "__default_policy_ID", "Statement": [statement]}
    return json.dumps(policy, separators=(",", ":"))


def _fifo(topic: Resource) -> bool:
    return topic.name.endswith(".fifo")


def _content_dedup(topic: Resource) -> bool:
    return _fidelity_value(topic, "ContentBasedDeduplication") == "true"


def _topic_prefix(topic: Resource) -> str:
    """The topic's subject without its promoted-attribute tokens (`sns.orders`)."""
    template = (topic.publish_subject or "").split(".")
    return ".".join(template[: len(template) - len(topic.subject_tokens)])


# -- publishing ---------------------------------------------------------------------------------


class _Message:
    """One message ready for NATS: subject, body and headers."""

    def __init__(self, subject: str, body: bytes, headers: dict[str, str]) -> None:
        self.subject, self.body, self.headers = subject, body, headers


def _prepare(entry: Mapping[str, Any], topic: Resource) -> _Message:
    """Validate one Publish (or batch entry) as SNS does and build its NATS message."""
    message = entry.get("Message")
    if message is None or message == "":
        raise _invalid("Empty message")
    sent = str(message)  # what the size limit and content-based deduplication see
    structure = entry.get("MessageStructure")
    if structure is not None:
        if structure != "json":
            raise _invalid("MessageStructure")
        message = _structured(message)
    attributes = _attributes(entry.get("MessageAttributes") or {})
    size = len(sent.encode("utf-8")) + sum(
        len(name.encode()) + len(a.data_type.encode()) + _value_size(a)
        for name, a in attributes.items()
    )
    if size > MAX_MESSAGE_BYTES:
        raise _invalid("Message too long")
    headers = attributes_to_headers(attributes)
    subject_line = entry.get("Subject")
    if subject_line is not None:
        if not subject_line or len(subject_line) > 100 or not subject_line.isprintable():
            raise _invalid("Subject")
        headers[SNS_SUBJECT_HEADER] = subject_line
    group, dedup = entry.get("MessageGroupId"), entry.get("MessageDeduplicationId")
    if _fifo(topic):
        if not group:
            raise _invalid("The MessageGroupId parameter is required for FIFO topics")
        if not dedup:
            if not _content_dedup(topic):
                raise _invalid(
                    "The topic should either have ContentBasedDeduplication enabled or "
                    "MessageDeduplicationId provided explicitly"
                )
            dedup = hashlib.sha256(sent.encode("utf-8")).hexdigest()
        for name, value in (("MessageGroupId", group), ("MessageDeduplicationId", dedup)):
            if not _AWS_ID.match(value):
                raise _invalid(f"{name} Reason: must be 1-128 printable ASCII characters")
        headers[GROUP_HEADER] = group
        headers[DEDUP_HEADER] = dedup
        headers[MSG_ID_HEADER] = dedup
    else:
        if dedup is not None:
            raise _invalid(
                "MessageDeduplicationId Reason: The request includes MessageDeduplicationId "
                "parameter that is not valid for this topic type"
            )
        if group is not None:
            # Standard topics pass a group on to fair queues: it travels like a FIFO group.
            if not _AWS_ID.match(group):
                raise _invalid("MessageGroupId Reason: must be 1-128 printable ASCII characters")
            headers[GROUP_HEADER] = group
    subject = subject_for(string_attributes(attributes), topic.subject_tokens, _topic_prefix(topic))
    return _Message(subject, message.encode("utf-8"), headers)


def _structured(message: str) -> str:
    """MessageStructure=json: what the topic's queue subscribers receive (`sqs`, else
    `default`). Other protocols' entries do not travel: SQS is the only protocol NATS serves."""
    try:
        parsed = json.loads(message)
    except ValueError:
        raise _invalid("Message Structure - JSON message body failed to parse") from None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("default"), str):
        raise _invalid("Message Structure - No default entry in JSON message body")
    chosen = parsed.get("sqs")
    return chosen if isinstance(chosen, str) else str(parsed["default"])


def _value_size(attribute: Attribute) -> int:
    value = attribute.value
    return len(value) if isinstance(value, bytes) else len(value.encode("utf-8"))


_WORDS = Wording(
    bad_name="The message attribute name '{name}' is invalid.",
    no_value="The message attribute '{name}' must contain non-empty type.",
    no_type="The message attribute '{name}' must contain non-empty type.",
    bad_type="The message attribute '{name}' has an invalid message attribute type, the set of "
    "supported type prefixes is Binary, Number, and String.",
    no_binary="The message attribute '{name}' with type 'Binary' must use field 'Binary'.",
    bad_binary="The message attribute '{name}' has an invalid binary value.",
    empty="The message attribute '{name}' must contain non-empty message attribute value for "
    "message attribute type '{kind}'.",
    not_number="Could not cast message attribute '{name}' value to number.",
    not_array="The message attribute '{name}' with type 'String.Array' must be a JSON array.",
)
"""SNS's words for the attribute checks both services make."""


def _attributes(raw: Mapping[str, Any]) -> dict[str, Attribute]:
    """MessageAttributes checked as SNS checks them (names, types, values)."""
    return checked_attributes(raw, _WORDS, _value_invalid)


async def _send(js: Any, topic: Resource, message: _Message, principal: Principal) -> Any:
    """Publish into the topic stream; the PubAck (None for a topic without a stream)."""
    try:
        if topic.stream is None:
            # Nothing durable subscribes: NATS subscribers of the moment get it, as from any
            # producer, and nothing stores it (SNS, too, delivers to no one).
            core = getattr(js, "publish_core", None)
            if core is not None:
                await core(message.subject, message.body, headers=message.headers)
            return None
        return await js.publish(
            message.subject, message.body, timeout=PUBLISH_TIMEOUT, headers=message.headers
        )
    except PermissionDeniedError:
        raise GatewayError(
            "AuthorizationError",
            f"User: {principal.identity} is not authorized to perform: SNS:Publish on "
            f"resource: {topic.source_arn}",
            status=403,
        ) from None
    except GatewayError:
        raise
    except Exception as exc:
        # The client learns only that nothing was stored; the log says why (never a secret:
        # nats-py's errors name subjects and streams).
        log.warning("gateway: publish to %s failed: %s", message.subject, exc)
        raise _internal(
            f"the message could not be stored ({type(exc).__name__}); it was not published, "
            "try again"
        ) from None


def _ids(topic: Resource, ack: Any) -> dict[str, str]:
    if ack is None:
        return {"MessageId": str(uuid.uuid4())}
    ids = {"MessageId": str(uuid.uuid5(_MESSAGE_IDS, f"{ack.stream}:{ack.seq}"))}
    if _fifo(topic):
        ids["SequenceNumber"] = f"{ack.seq:020d}"
    return ids


def _target(request: Mapping[str, Any]) -> str:
    if request.get("PhoneNumber") is not None:
        raise _invalid("PhoneNumber Reason: SMS is not served by snsq2nats gateway")
    arn = request.get("TopicArn") or request.get("TargetArn")
    if not arn:
        raise _invalid("TopicArn or TargetArn Reason: no value for required parameter")
    return str(arn)


async def _publish(
    request: Mapping[str, Any], topics: _Topics, js: Any, principal: Principal
) -> dict[str, str]:
    topic = topics.find(_target(request))
    message = _prepare(request, topic)
    return _ids(topic, await _send(js, topic, message, principal))


async def _publish_batch(
    request: Mapping[str, Any], topics: _Topics, js: Any, principal: Principal
) -> dict[str, Any]:
    topic = topics.find(request["TopicArn"])
    entries = request.get("PublishBatchRequestEntries") or []
    if not entries:
        raise GatewayError("EmptyBatchRequest", "The batch request doesn't contain any entries.")
    if len(entries) > MAX_BATCH:
        raise GatewayError(
            "TooManyEntriesInBatchRequest",
            "The batch request contains more entries than permissible.",
        )
    ids = [str(e.get("Id") or "") for e in entries]
    if len(set(ids)) != len(ids):
        raise GatewayError(
            "BatchEntryIdsNotDistinct", "Two or more batch entries in the request have the same Id."
        )
    if any(not _BATCH_ID.match(i) for i in ids):
        raise GatewayError(
            "InvalidBatchEntryId",
            "The Id of a batch entry in a batch request doesn't abide by the specification.",
        )
    total = sum(len(str(e.get("Message") or "").encode()) for e in entries)
    if total > MAX_MESSAGE_BYTES:
        raise GatewayError(
            "BatchRequestTooLong",
            "The length of all the messages put together is more than the limit.",
        )

    async def one(entry: Mapping[str, Any]) -> dict[str, str] | GatewayError:
        try:
            return _ids(topic, await _send(js, topic, _prepare(entry, topic), principal))
        except GatewayError as error:
            if error.code == "AuthorizationError":
                raise  # the identity may not publish here at all: the whole request fails
            return error

    if _fifo(topic):
        # A FIFO topic keeps the batch's order: one entry stored before the next is sent.
        outcomes = [await one(entry) for entry in entries]
    else:
        outcomes = list(await asyncio.gather(*(one(entry) for entry in entries)))
    successful: list[dict[str, str]] = []
    failed: list[dict[str, Any]] = []
    for entry_id, outcome in zip(ids, outcomes, strict=True):
        if isinstance(outcome, GatewayError):
            failed.append(
                {
                    "Id": entry_id,
                    "Code": outcome.code,
                    "Message": outcome.message,
                    "SenderFault": outcome.sender,
                }
            )
        else:
            successful.append({"Id": entry_id, **outcome})
    return {"Successful": successful, "Failed": failed}
