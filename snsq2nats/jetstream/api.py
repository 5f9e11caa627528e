"""The only module that talks to JetStream: read the live state, create/update/delete objects.

Everything goes through raw `$JS.API.*` requests with JSON bodies rather than nats-py's
JetStream manager: nats-py's config dataclasses drop fields they do not know, so a
read-modify-write through them would silently strip newer server settings (and they lack some
fields snsq2nats manages). Raw JSON round-trips whatever the server sends.

nats-py is only imported inside functions, so `diff` (which is pure) can import the live-state
models from here without pulling in a NATS client.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from snsq2nats.errors import JetStreamApiError as JetStreamApiError
from snsq2nats.errors import NatsConnectError, PermissionDeniedError
from snsq2nats.jetstream.operations import (
    API,
    CONSUMER_CREATE,
    CONSUMER_DELETE,
    CONSUMER_INFO,
    MSG_GET,
    STREAM_CREATE,
    STREAM_DELETE,
    STREAM_INFO,
    STREAM_UPDATE,
)
from snsq2nats.jetstream.permissions import denials_of
from snsq2nats.jetstream.spec import (
    ConsumerSpec,
    ServerInfo,
    StreamSpec,
    version_tuple,
)

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg

__all__ = [
    "API_PREFIX",
    "ConsumerAction",
    "JetStreamApiError",
    "StoredMessage",
    "api",
    "create_consumer",
    "create_stream",
    "delete_consumer",
    "delete_stream",
    "get_message",
    "parse_header_block",
    "pedantic_supported",
    "stream_request_body",
    "update_stream",
]

API_PREFIX = API
ConsumerAction = Literal["create", "update", ""]

# JetStream API error codes snsq2nats reacts to (server/errors.json).
ERR_NO_PEERS = 10005  # a cluster under load briefly thinks a peer is offline
ERR_CLUSTER_UNAVAILABLE = 10008  # between meta leaders
ERR_CONSUMER_CREATE = 10012  # wraps "… can not be updated" for immutable consumer fields
ERR_CONSUMER_NOT_FOUND = 10014
ERR_NO_MESSAGE = 10037
ERR_NOT_ENABLED_FOR_ACCOUNT = 10039
ERR_STREAM_INVALID_CONFIG = 10052  # immutable stream field changed, among others
ERR_STREAM_MIRROR_UPDATE = 10055
ERR_STREAM_NAME_IN_USE = 10058  # CREATE with a different config: update instead
ERR_STREAM_NOT_FOUND = 10059
ERR_NOT_ENABLED = 10076
ERR_CONSUMER_EXISTS = 10148  # action "create" on a consumer with a different config
ERR_CONSUMER_DOES_NOT_EXIST = 10149  # action "update" on a missing consumer
ERR_PEDANTIC = 10157

_HINTS: dict[int, str] = {
    ERR_STREAM_INVALID_CONFIG: (
        "the server refuses this configuration; if an immutable field changed, the stream "
        "must be replaced (re-plan, then apply with --allow-destructive)"
    ),
    ERR_STREAM_MIRROR_UPDATE: "a mirror cannot be changed in place; the stream must be replaced",
    ERR_CONSUMER_CREATE: (
        "if an immutable consumer field changed (deliver/ack/replay policy, push vs pull), "
        "the consumer must be replaced"
    ),
    ERR_STREAM_NAME_IN_USE: "the stream exists with another configuration; update it instead",
    ERR_CONSUMER_EXISTS: "the consumer exists with another configuration; update it instead",
    ERR_CONSUMER_DOES_NOT_EXIST: "the consumer is gone; re-plan to create it",
    ERR_STREAM_NOT_FOUND: "the stream is gone; re-plan",
    ERR_CONSUMER_NOT_FOUND: "the consumer is gone; re-plan",
    ERR_PEDANTIC: (
        "pedantic mode: the server would have adjusted the requested configuration; "
        "fix the mapping so the request is exactly what the server keeps"
    ),
    ERR_NOT_ENABLED_FOR_ACCOUNT: "enable JetStream for this account in the server configuration",
    ERR_NOT_ENABLED: "start nats-server with -js (or a `jetstream {}` block in its config)",
}

# Pedantic requests exist since 2.11; older servers reject the unknown request field.
_PEDANTIC_SINCE = (2, 11)


# --- the raw API ----------------------------------------------------------------------------


def _where(subject: str) -> str:
    """A readable location for an API subject: `stream X` / `consumer S/C`."""
    parts = subject.split(".")
    if len(parts) >= 5 and parts[2] == "STREAM":
        return f"stream {parts[4]}"
    if len(parts) >= 6 and parts[2] == "CONSUMER":
        return f"consumer {parts[4]}/{parts[5]}"
    if len(parts) >= 5 and parts[2] == "CONSUMER":
        return f"consumers of stream {parts[4]}"
    return subject


async def api(
    nc: Client, subject: str, payload: Mapping[str, Any] | None = None, timeout: float = 5.0
) -> dict[str, Any]:
    """One JetStream API request; returns the response object or raises JetStreamApiError.

    `subject` is the full API subject (`$JS.API.STREAM.INFO.ORDERS`).  A `None` payload sends
    an empty body, which INFO and DELETE requests expect.
    """
    from nats import errors as nats_errors

    data = b"" if payload is None else json.dumps(payload, separators=(",", ":")).encode()
    where = _where(subject)
    try:
        msg = await _request(nc, subject, data, timeout, where)
    except nats_errors.NoRespondersError:
        # Nothing subscribes to $JS.API.> in this account: JetStream is off for it.
        raise JetStreamApiError(
            "JetStream is not enabled on this NATS server or account",
            err_code=ERR_NOT_ENABLED,
            subject=subject,
            where=where,
            hint=_HINTS[ERR_NOT_ENABLED] + ", or use an account with JetStream enabled",
        ) from None
    except (TimeoutError, nats_errors.TimeoutError):
        raise JetStreamApiError(
            f"the JetStream API did not answer within {timeout:g}s",
            subject=subject,
            where=where,
            hint=(
                "check that JetStream is healthy (a cluster needs a meta leader) and that the "
                "user may publish to $JS.API.> and receive replies on its inbox"
            ),
        ) from None
    except (nats_errors.ConnectionClosedError, nats_errors.ConnectionReconnectingError) as exc:
        raise NatsConnectError(
            f"lost the NATS connection during a JetStream request ({type(exc).__name__})",
            where=where,
            hint="check the server is running and re-run the command",
        ) from None
    try:
        response = json.loads(msg.data) if msg.data else {}
    except (ValueError, UnicodeDecodeError):
        raise JetStreamApiError(
            "the JetStream API answered with something that is not JSON",
            subject=subject,
            where=where,
            hint="check that the server really is nats-server with JetStream",
        ) from None
    if not isinstance(response, dict):
        raise JetStreamApiError(
            "the JetStream API answered with JSON that is not an object",
            subject=subject,
            where=where,
        )
    error = response.get("error")
    if error:
        raise _api_error(error, subject, where)
    return response


async def _request(nc: Client, subject: str, data: bytes, timeout: float, where: str) -> Msg:
    """`nc.request`, failing at once when the server refuses it for lack of permission."""
    denials = denials_of(nc)
    if denials is None:
        return await nc.request(subject, data, timeout=timeout)
    request = asyncio.ensure_future(nc.request(subject, data, timeout=timeout))
    try:
        while True:
            refusal = asyncio.ensure_future(denials.next())
            done, _ = await asyncio.wait({request, refusal}, return_when=asyncio.FIRST_COMPLETED)
            refusal.cancel()
            if request in done:
                return request.result()
            what = denials.blocking(subject)
            if what is not None:
                raise PermissionDeniedError(
                    f"permission denied: {denials.identity} may not {what}",
                    where=where,
                    hint="grant it in the server's authorization for this identity (`snsq2nats "
                    "auth` generates what each command needs), or connect as one that has it",
                )
    finally:
        if not request.done():
            request.cancel()


def _api_error(error: Any, subject: str, where: str) -> JetStreamApiError:
    if not isinstance(error, dict):
        return JetStreamApiError(f"JetStream API error: {error}", subject=subject, where=where)
    err_code = error.get("err_code")
    code = error.get("code")
    description = str(error.get("description") or "no description")
    label = f"{err_code}" if err_code is not None else f"status {code}"
    return JetStreamApiError(
        f"JetStream refused the request: {description} ({label})",
        err_code=err_code if isinstance(err_code, int) else None,
        code=code if isinstance(code, int) else None,
        description=description,
        subject=subject,
        where=where,
        hint=_HINTS.get(err_code) if isinstance(err_code, int) else None,
    )


# --- server facts ---------------------------------------------------------------------------


def pedantic_supported(version: str | ServerInfo | None) -> bool:
    """True when the server (version string or ServerInfo) understands `"pedantic": true`."""
    if isinstance(version, ServerInfo):
        version = version.version
    parsed = version_tuple(version)
    return parsed is not None and parsed[:2] >= _PEDANTIC_SINCE


# --- writing ----------------------------------------------------------------------------------


def _without_server_metadata(config: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(config)
    metadata = out.get("metadata")
    if isinstance(metadata, dict):
        out["metadata"] = {k: v for k, v in metadata.items() if not k.startswith("_nats.")}
    return out


def stream_request_body(
    spec: StreamSpec, *, pedantic: bool, base: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The STREAM.CREATE/UPDATE body for a spec, optionally laid over a live config.

    With `base` (the live config) every field snsq2nats does not manage keeps its live value,
    because STREAM.UPDATE replaces the whole config and would reset omitted fields to defaults.
    """
    desired = spec.to_api()
    body: dict[str, Any] = _without_server_metadata(base) if base is not None else {}
    # `sources` is managed even when the spec has none: a source left behind by hand (or by an
    # old subscription) would keep feeding the stream.
    if "sources" not in desired:
        body.pop("sources", None)
    body.update(desired)
    if desired.get("allow_msg_schedules"):
        # Schedules need roll-ups and purges; without pedantic the server turns these on/off
        # silently, with pedantic it refuses (10052), so ask for what it would have set.
        body["allow_rollup_hdrs"] = True
        body["deny_purge"] = False
    if pedantic:
        body["pedantic"] = True
    return body


async def create_stream(
    nc: Client, spec: StreamSpec, *, pedantic: bool, timeout: float = 5.0
) -> dict[str, Any]:
    """STREAM.CREATE; returns the server's stream info (its `config` is what it kept)."""
    body = stream_request_body(spec, pedantic=pedantic)
    return await api(nc, STREAM_CREATE.subject(stream=spec.name), body, timeout)


async def update_stream(
    nc: Client,
    spec: StreamSpec,
    *,
    pedantic: bool,
    base: Mapping[str, Any] | None = None,
    timeout: float = 5.0,
) -> dict[str, Any]:
    """STREAM.UPDATE of the managed fields; unmanaged fields keep their live values.

    `base` is the live config the plan was made against; without it the current config is
    fetched first (one extra request).
    """
    if base is None:
        info = await api(nc, STREAM_INFO.subject(stream=spec.name), None, timeout)
        base = info.get("config") or {}
    body = stream_request_body(spec, pedantic=pedantic, base=base)
    return await api(nc, STREAM_UPDATE.subject(stream=spec.name), body, timeout)


async def delete_stream(
    nc: Client, name: str, *, missing_ok: bool = False, timeout: float = 5.0
) -> bool:
    """STREAM.DELETE (its messages and consumers go with it); False if it was already gone."""
    try:
        await api(nc, STREAM_DELETE.subject(stream=name), None, timeout)
    except JetStreamApiError as exc:
        if missing_ok and exc.err_code == ERR_STREAM_NOT_FOUND:
            return False
        raise
    return True


def consumer_request_config(
    spec: ConsumerSpec, *, base: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The consumer config to send, optionally laid over the live config (see streams)."""
    desired = spec.to_api()
    config: dict[str, Any] = _without_server_metadata(base) if base is not None else {}
    # The filter is managed even when absent from the spec (no filter = every subject), and
    # the server refuses a config carrying both filter_subject and filter_subjects.
    config.pop("filter_subject", None)
    config.pop("filter_subjects", None)
    config.update(desired)
    return config


async def create_consumer(
    nc: Client,
    spec: ConsumerSpec,
    *,
    action: ConsumerAction = "create",
    pedantic: bool,
    base: Mapping[str, Any] | None = None,
    timeout: float = 5.0,
) -> dict[str, Any]:
    """CONSUMER.CREATE of a durable consumer; `action` "update" changes an existing one.

    "create" fails (10148) if the consumer exists with another config, "update" fails (10149)
    if it does not exist, "" creates or updates.  Pass the live config as `base` when updating
    so fields snsq2nats does not manage keep their values.
    """
    body: dict[str, Any] = {
        "stream_name": spec.stream_name,
        "config": consumer_request_config(spec, base=base),
        "action": action,
    }
    if pedantic:
        body["pedantic"] = True
    subject = CONSUMER_CREATE.subject(stream=spec.stream_name, consumer=spec.durable_name)
    return await api(nc, subject, body, timeout)


async def delete_consumer(
    nc: Client, stream: str, name: str, *, missing_ok: bool = False, timeout: float = 5.0
) -> bool:
    """CONSUMER.DELETE; False if it (or its stream) was already gone and `missing_ok`."""
    try:
        await api(nc, CONSUMER_DELETE.subject(stream=stream, consumer=name), None, timeout)
    except JetStreamApiError as exc:
        if missing_ok and exc.err_code in (ERR_CONSUMER_NOT_FOUND, ERR_STREAM_NOT_FOUND):
            return False
        raise
    return True


async def restart_consumer_at(nc: Client, spec: ConsumerSpec, start: int) -> bool:
    """Make the durable `spec` start at stream sequence `start` (the first message another path
    did not carry): deleted and created again as `spec` says, anchored there. A consumer cannot
    be moved in place; one already starting there (a second run) is left alone. True if it
    was (re)created."""
    try:
        live = await api(
            nc, CONSUMER_INFO.subject(stream=spec.stream_name, consumer=spec.durable_name)
        )
    except JetStreamApiError as exc:
        if exc.err_code != ERR_CONSUMER_NOT_FOUND:
            raise
    else:
        if (live.get("config") or {}).get("opt_start_seq") == start:
            return False
        await delete_consumer(nc, spec.stream_name, spec.durable_name, missing_ok=True)
    anchored = spec.model_copy(
        update={"deliver_policy": "by_start_sequence", "opt_start_seq": start}
    )
    await create_consumer(nc, anchored, pedantic=False)
    return True


@dataclass(frozen=True)
class StoredMessage:
    seq: int
    subject: str
    data: bytes
    headers: dict[str, str]


def parse_header_block(raw: bytes) -> dict[str, str]:
    """A NATS header block (`NATS/1.0\\r\\nKey: Value\\r\\n…`) as a dict.

    A repeated key keeps its last value, as nats-py's own parser does for delivered messages.
    """
    headers: dict[str, str] = {}
    lines = raw.decode("utf-8", "replace").split("\r\n")
    for line in lines[1:]:  # the first line is the version (and maybe a status)
        if not line or ":" not in line:
            continue
        key, value = line.split(":", 1)
        headers[key.strip()] = value.strip()
    return headers


async def get_message(
    nc: Client, stream: str, seq: int, *, timeout: float = 5.0
) -> StoredMessage | None:
    """The stream's message at `seq` (STREAM.MSG.GET); None when there is none (removed by a
    limit, acknowledged from a work queue, or never written: a gap)."""
    try:
        response = await api(nc, MSG_GET.subject(stream=stream), {"seq": seq}, timeout)
    except JetStreamApiError as exc:
        if exc.err_code == ERR_NO_MESSAGE:
            return None
        raise
    message = response.get("message") or {}
    raw_headers = message.get("hdrs")
    return StoredMessage(
        seq=int(message.get("seq") or seq),
        subject=str(message.get("subject") or ""),
        data=base64.b64decode(message.get("data") or ""),
        headers=parse_header_block(base64.b64decode(raw_headers)) if raw_headers else {},
    )
