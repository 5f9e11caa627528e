"""The nats-py internals `snsq2nats.jetstream.wire` relies on, checked against the installed
nats-py, so an upgrade that changes one fails here, by name, rather than somewhere in a relay.
And the public-API fallback (a client without those internals) still relays correctly."""

from __future__ import annotations

import asyncio
import importlib.metadata
import inspect
import re
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import MsgAlreadyAckdError

from snsq2nats.bridge.replies import Replies, check_pub_ack
from snsq2nats.jetstream import wire
from tests.fixtures.bridge import PublicApiOnly
from tests.fixtures.wait import until

NATS_PY = importlib.metadata.version("nats-py")


def broken(what: str) -> str:
    return (
        f"nats-py {NATS_PY}: {what}. snsq2nats.jetstream.wire relies on it; adapt wire.py to this "
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
    """`wire.server_info` reads nats-py's private INFO (the only place a server's cluster name
    is known without a system-account request)."""
    info = getattr(nc, wire.SERVER_INFO, None)
    assert isinstance(info, dict), broken(f"Client.{wire.SERVER_INFO} is no longer the INFO dict")
    assert info.get("version") and "server_id" in info, broken(
        f"Client.{wire.SERVER_INFO} lacks the INFO fields (has {sorted(info)})"
    )
    assert wire.server_info(nc) == info and wire.server_info(nc) is not info


async def test_without_the_info_the_version_comes_from_the_public_api(nc: Any) -> None:
    class InfoGone:
        connected_server_version = nc.connected_server_version

    assert wire.server_info(InfoGone()) == {"version": nc._server_info["version"].split("-")[0]}
    assert wire.server_info(Client()) == {}, "a client that is not connected knows no version"


def test_no_module_but_wire_touches_the_private_names() -> None:
    """The fence: a private nats-py name written anywhere else in the package fails here."""
    package = Path(wire.__file__).parent.parent
    names = [*wire.CLIENT_INTERNALS, "_flush_queue", wire.MSG_ACKED_FLAG, wire.SERVER_INFO]
    names.append("_server_version")
    used = {
        f"{path.relative_to(package)}: {name}"
        for path in package.rglob("*.py")
        if path != Path(wire.__file__)
        for name in names
        if re.search(rf"\b{name}\b", path.read_text(encoding="utf-8"))
    }
    assert used == set()
