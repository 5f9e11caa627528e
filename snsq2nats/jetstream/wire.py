"""Every use of nats-py's private internals, in one place.

The bridge writes batches of protocol lines itself (`bridge.replies`), which needs the client's
write queue, and it acknowledges messages without nats-py's `ack`, which needs the message's
"acknowledged" flag set so a later `ack()` on it still fails loudly. A plan records the cluster
the connection landed on, which only the server's INFO says (short of a system-account
request), and nats-py keeps INFO in a private attribute. All of these are private in nats-py 2.x
(pyproject bounds it `<3`); `tests/test_nats_py_contract.py` fails with the name and the
nats-py version if one of them changes, and fails if one is used outside this module. Without
the write queue the bridge falls back to the public `publish`, one message at a time; without
INFO the version comes from the public `connected_server_version` and the cluster is unknown.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg

# What `can_write_raw` needs on a client: `_send_command(cmd, priority=False)` queues bytes as
# `publish` does, `_flush_pending()` wakes the flusher; `_flush_queue` (optional) tells whether
# a flush is already due.
CLIENT_INTERNALS = ("_send_command", "_flush_pending")
# What `mark_acked` sets on a message: the flag `Msg.ack()` and `Msg.is_acked` read.
MSG_ACKED_FLAG = "_ackd"
# Where a client keeps the INFO the server it is connected to sent (a dict).
SERVER_INFO = "_server_info"


def can_write_raw(nc: Client) -> bool:
    """True when `write_raw` may be used: the internals exist and the client is connected
    (while disconnected, `publish` decides between buffering and raising)."""
    return all(getattr(nc, name, None) is not None for name in CLIENT_INTERNALS) and bool(
        nc.is_connected
    )


async def write_raw(nc: Client, data: bytes) -> None:
    """Queue `data` (whole protocol lines) the way nats-py's `publish` queues its own."""
    await nc._send_command(data)
    flush_queue = getattr(nc, "_flush_queue", None)
    if flush_queue is None or flush_queue.empty():
        await nc._flush_pending()


def mark_acked(msg: Msg) -> None:
    """Record that `msg` got its terminal acknowledgement some other way than `msg.ack()`."""
    setattr(msg, MSG_ACKED_FLAG, True)


def server_info(nc: Client) -> dict[str, Any]:
    """A copy of the INFO the connected server sent (empty when nats-py no longer keeps it);
    `version` is filled from the public API when INFO is missing."""
    info: dict[str, Any] = dict(getattr(nc, SERVER_INFO, None) or {})
    if not info.get("version"):
        version = _public_version(nc)
        if version:
            info["version"] = version
    return info


def _public_version(nc: Client) -> str | None:
    try:
        v = nc.connected_server_version
        version = f"{v.major}.{v.minor}.{v.patch}"
    except (AttributeError, TypeError, ValueError):
        return None  # not a nats-py client, or a version that is not semantic
    return None if version == "0.0.0" else version  # nats-py's "unknown": not connected
