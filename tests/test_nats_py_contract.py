"""The nats-py internals `snsq2nats.bridge.wire` relies on, checked against the installed
nats-py, so an upgrade that changes one fails here, by name, rather than somewhere in a relay.
And the public-API fallback (a client without those internals) still relays correctly."""

from __future__ import annotations

import asyncio
import importlib.metadata
import inspect
from typing import Any

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import MsgAlreadyAckdError

from snsq2nats.bridge import wire
from snsq2nats.bridge.replies import Replies, check_pub_ack
from tests.fixtures.bridge import PublicApiOnly
from tests.fixtures.wait import until

NATS_PY = importlib.metadata.version("nats-py")


def broken(what: str) -> str:
    return (
        f"nats-py {NATS_PY}: {what}. snsq2nats.bridge.wire relies on it; adapt wire.py to this "
        "nats-py or keep nats-py at a version that has it"
    )


@pytest.mark.parametrize("name", wire.CLIENT_INTERNALS)
def test_client_internals_exist_as_coroutines(name: str) -> None:
    method = getattr(Client, name, None)
    assert method is not None, broken(f"Client.{name} no longer exists")
    assert inspect.iscoroutinefunction(method), broken(f"Client.{name} is no longer async")


def test_send_command_takes_bytes_and_a_priority_flag() -> None:
    params = list(inspect.signature(Client._send_command).parameters)
    assert params[:3] == ["self", "cmd", "priority"], broken(
        f"Client._send_command(self, cmd, priority=False) is now {params}"
    )


def test_flush_pending_needs_no_argument() -> None:
    params = inspect.signature(Client._flush_pending).parameters.values()
    required = [p.name for p in params if p.default is p.empty and p.name != "self"]
    assert required == [], broken(f"Client._flush_pending now requires {required}")


def test_message_acked_flag() -> None:
    fields = getattr(Msg, "__dataclass_fields__", {})
    assert wire.MSG_ACKED_FLAG in fields, broken(f"Msg.{wire.MSG_ACKED_FLAG} no longer exists")
    msg = Msg(_client=None, subject="s", reply="r")  # type: ignore[arg-type]
    assert not msg.is_acked
    wire.mark_acked(msg)
    assert msg.is_acked, broken(f"Msg.is_acked no longer reads Msg.{wire.MSG_ACKED_FLAG}")


async def test_a_marked_message_refuses_a_second_ack(nc: Any, js: Any) -> None:
    await js.add_stream(name="MARKED", subjects=["marked"])
    await js.publish("marked", b"x")
    sub = await js.pull_subscribe("marked", durable="workers", stream="MARKED")
    (msg,) = await sub.fetch(1, timeout=5)
    wire.mark_acked(msg)
    with pytest.raises(MsgAlreadyAckdError):
        await msg.ack()


async def test_write_raw_puts_protocol_lines_on_the_wire(nc: Any) -> None:
    assert wire.can_write_raw(nc), broken("a connected client lacks the write internals")
    assert hasattr(nc, "_flush_queue"), broken("Client._flush_queue no longer exists")
    got: list[Any] = []

    async def keep(msg: Any) -> None:
        got.append(msg)

    sub = await nc.subscribe("raw.>", cb=keep)
    await nc.flush()
    await wire.write_raw(nc, b"PUB raw.a 2\r\nhi\r\nPUB raw.b 0\r\n\r\n")
    await until(lambda: len(got) == 2, timeout=10, what="the raw lines delivered")
    await sub.unsubscribe()
    assert [(m.subject, m.data) for m in got] == [("raw.a", b"hi"), ("raw.b", b"")]


async def test_publish_fallback_relays_every_message_once(nc: Any, js: Any) -> None:
    """Without the internals, pipelined publishes go through `publish` one by one and still
    get their PubAcks; the dedup id still deduplicates."""
    await js.add_stream(name="FALLBACK", subjects=["fallback.>"], duplicate_window=60)
    client = PublicApiOnly(nc)
    assert not wire.can_write_raw(client)  # type: ignore[arg-type]
    replies = Replies(client)  # type: ignore[arg-type]
    try:
        requests = [
            (f"fallback.{i % 3}", f"m{i}".encode(), {"Nats-Msg-Id": f"id-{i}"}) for i in range(20)
        ]
        requests.append(("fallback.0", b"m0 again", {"Nats-Msg-Id": "id-0"}))
        futures = await replies.send_many(requests)
        assert all(isinstance(f, asyncio.Future) for f in futures)
        answers = await replies.gather([f for f in futures if isinstance(f, asyncio.Future)], 10)
    finally:
        await replies.close()
    for answer in answers:
        assert not isinstance(answer, BaseException), answer
        check_pub_ack(answer)
    info = await js.stream_info("FALLBACK")
    assert info.state.messages == 20


async def test_server_info_attribute_holds_the_servers_info(nc: Any) -> None:
    """`snsq2nats.jetstream.state.server_info` reads nats-py's private `_server_info` (the only
    place a server's cluster name is known without a system-account request)."""
    info = getattr(nc, "_server_info", None)
    assert isinstance(info, dict), broken("Client._server_info is no longer the INFO dict")
    assert info.get("version") and "server_id" in info, broken(
        f"Client._server_info lacks the INFO fields (has {sorted(info)})"
    )
