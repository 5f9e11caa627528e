"""The gateway's HTTP server (aiohttp): SQS requests in, JetStream operations, AWS answers out.

The server authenticates every request with the `Authenticator` it is handed, asks its
`NatsLink` for the NATS connection of that principal (one shared connection, or the connection
of the identity the principal maps to) and runs the action. Every failure a client can cause
is a `GatewayError` rendered in the protocol's error shape; anything else is a 500
`InternalFailure` (logged, never shown to the client).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from snsq2nats.errors import GatewayError, SnsqError
from snsq2nats.gateway import metrics, protocol, query, sns
from snsq2nats.gateway.connections import IdentityConnections, IdentityJetStream
from snsq2nats.gateway.metrics import GatewayMetrics
from snsq2nats.gateway.principal import Authenticator, Principal
from snsq2nats.gateway.sigv4 import credential_service
from snsq2nats.gateway.sqs import Call, SqsActions

if TYPE_CHECKING:
    from nats.aio.client import Client

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 2 * 1024 * 1024
"""Above any SQS request (ten 1 MiB messages do not fit a batch's own limit either)."""

Action = Callable[[Call], Awaitable[dict[str, Any]]]


class NatsLink(Protocol):
    """Where a principal's requests reach NATS."""

    async def client(self, principal: Principal) -> Client: ...

    async def jetstream(self, principal: Principal) -> IdentityJetStream: ...


@dataclass
class SharedConnection:
    """One connection for every principal: NATS sees the gateway's own identity."""

    nc: Client

    async def client(self, principal: Principal) -> Client:
        return self.nc

    async def jetstream(self, principal: Principal) -> IdentityJetStream:
        return IdentityJetStream(self.nc)


@dataclass
class PerIdentity:
    """Each principal's requests on its own identity's connection: NATS enforces the grants
    `auth` gave that identity, as for a native client."""

    connections: IdentityConnections

    async def client(self, principal: Principal) -> Client:
        nc: Client = await self.connections.connection(principal.identity)
        return nc

    async def jetstream(self, principal: Principal) -> IdentityJetStream:
        return await self.connections.jetstream(principal.identity)


class Gateway:
    def __init__(
        self,
        actions: SqsActions,
        authenticator: Authenticator,
        link: NatsLink,
        *,
        public_url: str | None = None,
    ) -> None:
        self.actions = actions
        self.authenticator = authenticator
        self.link = link
        self.public_url = public_url.rstrip("/") if public_url else None
        self.metrics = GatewayMetrics()
        self.ready = False
        """Set once serving, cleared at a stop: what /readyz answers."""
        self.table: dict[str, Action] = {
            "GetQueueUrl": actions.get_queue_url,
            "ListQueues": actions.list_queues,
            "SendMessage": actions.send_message,
            "ReceiveMessage": actions.receive_message,
            "DeleteMessage": actions.delete_message,
            "ChangeMessageVisibility": actions.change_message_visibility,
            "SendMessageBatch": actions.send_message_batch,
            "DeleteMessageBatch": actions.delete_message_batch,
            "ChangeMessageVisibilityBatch": actions.change_message_visibility_batch,
            "GetQueueAttributes": actions.get_queue_attributes,
            "PurgeQueue": actions.purge_queue,
        }

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_REQUEST_BYTES)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.scrape)
        for path in ("/", "/{account}/{queue}"):
            app.router.add_post(path, self.handle)
            app.router.add_get(path, self.handle)
        return app

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(self, request: web.Request) -> web.Response:
        """Ready while serving with the estate loaded; 503 while starting and stopping."""
        if not self.ready:
            return web.Response(status=503, text="not ready\n")
        return web.Response(text=f"ready: {len(self.actions.estate().queues)} queues\n")

    async def scrape(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.metrics.exposition(), headers={"Content-Type": metrics.CONTENT_TYPE}
        )

    def queue_label(self, params: dict[str, Any]) -> str:
        """The queue's name for metrics; `-` for no queue or one the estate does not have (so
        clients cannot grow the label set)."""
        url = params.get("QueueUrl")
        queue = self.actions.estate().by_url(str(url)) if url else None
        return queue.name if queue else "-"

    def base_url(self, request: web.Request) -> str:
        return self.public_url or f"{request.scheme}://{request.host}"

    async def handle(self, request: web.Request) -> web.Response:
        """One request in either protocol: JSON when it names an `X-Amz-Target`, else Query."""
        started = time.perf_counter()
        seen: dict[str, Any] = {}
        with self.metrics.in_flight.track_inprogress():
            response = await self.answer(request, seen)
        outcome = "ok" if response.status < 300 else str(seen.get("error", response.status))
        action = str(seen.get("action", "-"))
        queue = self.queue_label(seen.get("params") or {})
        self.metrics.observe(action, queue, outcome, time.perf_counter() - started)
        result = seen.get("result")
        if result is not None and queue != "-":
            self.metrics.count(queue, *_moved(action, result))
        return response

    async def answer(self, request: web.Request, seen: dict[str, Any]) -> web.Response:
        request_id = str(uuid.uuid4())
        json_protocol = "X-Amz-Target" in request.headers
        if not json_protocol and credential_service(request.query_string, request.headers) == "sns":
            return await self.handle_sns(request, request_id, seen)
        action = "(unknown)"
        try:
            body = await request.read()
            principal = self.authenticate(request, body)
            if json_protocol:
                target = request.headers["X-Amz-Target"]
                if not target.startswith(protocol.TARGET_PREFIX):
                    raise protocol.unknown_action(target)
                action = target[len(protocol.TARGET_PREFIX) :]
                params = protocol.json_params(body)
            else:
                form = query.parse_form(body, request.query_string)
                action = form.get("Action", "")
                if not action:
                    raise GatewayError("MissingAction", "The request must contain an Action.")
                params = query.to_params(form)
            if "QueueUrl" not in params and "queue" in request.match_info:
                # Query clients post to the queue's URL instead of naming it.
                params["QueueUrl"] = f"{self.base_url(request)}{request.path}"
            seen["action"], seen["params"] = action, params
            result = await self.run(request, principal, action, params)
            seen["result"] = result
            if json_protocol:
                return self.respond(200, protocol.json_body(result), request_id, json_protocol)
            return self.respond(
                200, query.xml_response(action, result, request_id), request_id, json_protocol
            )
        except GatewayError as exc:
            seen["error"] = exc.code
            return self.failure(exc, request_id, json_protocol)
        except SnsqError as exc:
            # NATS did not answer as it should (no leader, a permission the identity lacks):
            # the client may retry; the operator reads why in the log.
            log.warning("request %s (%s): %s", request_id, action, exc.one_line())
            error = GatewayError(
                "ServiceUnavailable",
                f"The gateway could not reach JetStream for request {request_id}; retry it.",
                status=503,
                sender=False,
            )
            return self.failure(error, request_id, json_protocol)
        except Exception:
            log.exception("request %s (%s) failed", request_id, action)
            error = GatewayError(
                "InternalFailure",
                f"The gateway failed to process request {request_id}.",
                status=500,
                sender=False,
            )
            return self.failure(error, request_id, json_protocol)

    async def handle_sns(
        self, request: web.Request, request_id: str, seen: dict[str, Any]
    ) -> web.Response:
        """One SNS request (Query/XML): signed for the `sns` service."""
        action = "(unknown)"
        try:
            body = await request.read()
            principal = self.authenticate(request, body)
            form = query.parse_form(body, request.query_string)
            action = seen["action"] = form.get("Action", "")
            plan = self.actions.estate().plan
            if plan is None:
                raise GatewayError(
                    "NotFound", "No plan is served: the gateway has no topics.", status=404
                )
            js = await self.link.jetstream(principal)
            answer = await sns.handle_sns(
                action, form, js=js, plan=plan, principal=principal, request_id=request_id
            )
            return self.xml(200, answer, request_id)
        except GatewayError as exc:
            seen["error"] = exc.code
            return self.xml(exc.status, sns.error_xml(exc, request_id), request_id)
        except Exception:
            log.exception("request %s (SNS %s) failed", request_id, action)
            error = GatewayError(
                "InternalError",
                f"The gateway failed to process request {request_id}.",
                status=500,
                sender=False,
            )
            return self.xml(error.status, sns.error_xml(error, request_id), request_id)

    @staticmethod
    def xml(status: int, body: bytes, request_id: str) -> web.Response:
        return web.Response(
            status=status,
            body=body,
            headers={"Content-Type": query.XML_CONTENT_TYPE, "x-amzn-RequestId": request_id},
        )

    def failure(self, error: GatewayError, request_id: str, json_protocol: bool) -> web.Response:
        if json_protocol:
            data, headers = protocol.json_error(error)
            return self.respond(error.status, data, request_id, json_protocol, headers)
        return self.respond(
            error.status, query.xml_error(error, request_id), request_id, json_protocol
        )

    def authenticate(self, request: web.Request, body: bytes) -> Principal:
        headers = {k.lower(): v for k, v in request.headers.items()}
        # SigV4 signs the request target as sent: still percent-encoded.
        return self.authenticator.authenticate(
            request.method,
            request.rel_url.raw_path,
            request.rel_url.raw_query_string,
            headers,
            body,
        )

    async def run(
        self, request: web.Request, principal: Principal, name: str, params: dict[str, Any]
    ) -> dict[str, Any]:
        action = self.table.get(name)
        if action is None:
            if name in protocol.CONTROL_PLANE:
                raise protocol.control_plane_error(name)
            raise protocol.unknown_action(name)
        nc = await self.link.client(principal)
        call = Call(nc, params, self.base_url(request), principal.access_key_id)
        return await action(call)

    @staticmethod
    def respond(
        status: int,
        body: bytes,
        request_id: str,
        json_protocol: bool,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        content_type = protocol.JSON_CONTENT_TYPE if json_protocol else query.XML_CONTENT_TYPE
        return web.Response(
            status=status,
            body=body,
            headers={
                "Content-Type": content_type,
                "x-amzn-RequestId": request_id,
                **(headers or {}),
            },
        )


_MOVES = {
    "SendMessage": "sent",
    "SendMessageBatch": "sent",
    "ReceiveMessage": "received",
    "DeleteMessage": "deleted",
    "DeleteMessageBatch": "deleted",
}


def _moved(action: str, result: dict[str, Any]) -> tuple[str, int]:
    """Which way messages moved in an answered request, and how many."""
    direction = _MOVES.get(action)
    if direction is None:
        return "-", 0
    if action == "ReceiveMessage":
        return direction, len(result.get("Messages", []))
    if action.endswith("Batch"):
        return direction, len(result.get("Successful", []))
    return direction, 1
