"""Reading JetStream's state: every list goes through one paginated reader.

Real estates have thousands of streams: a LIST answers at most one page (256 infos, 1024
names), so every reader here walks the pages until the server's `total` is reached.
nats-py is never imported here, so this stays cheap to import.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from snsq2nats.jetstream import wire
from snsq2nats.jetstream.api import ERR_STREAM_NOT_FOUND, JetStreamApiError, api
from snsq2nats.jetstream.operations import (
    CONSUMER_DELETE,
    CONSUMER_LIST,
    STREAM_INFO,
    STREAM_LIST,
    STREAM_NAMES,
    BucketUse,
    KvOp,
    bucket_stream,
)
from snsq2nats.jetstream.spec import LiveState, LiveStream, ServerInfo

if TYPE_CHECKING:
    from nats.aio.client import Client

_LIST_CONCURRENCY = 16


async def stream_names(nc: Client, *, timeout: float = 5.0) -> set[str]:
    """Every stream's name, all pages."""
    names = await paginate(nc, STREAM_NAMES.subject(), "streams", timeout)
    return {str(n) for n in names if isinstance(n, str)}


def server_info(nc: Client) -> ServerInfo:
    """What we know about the server the connection landed on, with no secrets in the URL."""
    info = wire.server_info(nc)
    version = info.get("version")
    url: str | None = None
    parsed = getattr(nc, "connected_url", None)
    if parsed is not None and getattr(parsed, "hostname", None):
        # Rebuilt from parts so user:password@ in the URL never reaches a plan file.
        port = f":{parsed.port}" if parsed.port else ""
        url = f"{parsed.scheme}://{parsed.hostname}{port}"
    cluster = info.get("cluster")
    return ServerInfo(
        reachable=True,
        url=url,
        version=str(version) if version else None,
        cluster=str(cluster) if cluster else None,
    )


# --- reading ----------------------------------------------------------------------------------


async def paginate(nc: Client, subject: str, key: str, timeout: float = 5.0) -> list[Any]:
    """All items of a paged LIST or NAMES API (pages of `limit`: 256 infos or 1024 names on
    current servers). nats-py's `streams_info()` reads only the first page: never use it."""
    items: list[Any] = []
    offset = 0
    while True:
        page = await api(nc, subject, {"offset": offset}, timeout)
        batch = page.get(key) or []
        items.extend(batch)
        total = int(page.get("total") or 0)
        offset += len(batch)
        # An empty page ends the loop even if `total` says otherwise: objects deleted while we
        # page would otherwise have us ask forever.
        if not batch or offset >= total:
            return items


async def _stream_consumers(
    nc: Client,
    name: str,
    timeout: float,
    gate: asyncio.Semaphore,
    advance: Callable[[int, int | None], None],
) -> dict[str, dict[str, Any]] | None:
    """A stream's consumer configs by name, or None when the stream vanished meanwhile."""
    async with gate:
        infos = await consumer_infos(nc, name, timeout=timeout)
    advance(1, None)
    if infos is None:
        return None
    return {n: dict(info.get("config") or {}) for n, info in infos.items()}


async def stream_infos(nc: Client, *, timeout: float = 5.0) -> dict[str, dict[str, Any]]:
    """Every stream's info (`config`, `state`, …) by name, all pages: one request per 256
    streams where asking each stream's INFO is one per stream."""
    infos = await paginate(nc, STREAM_LIST.subject(), "streams", timeout)
    by_name: dict[str, dict[str, Any]] = {}
    for info in infos:
        if not isinstance(info, dict):
            continue
        name = (info.get("config") or {}).get("name")
        if name:
            by_name[str(name)] = info
    return by_name


async def consumer_infos(
    nc: Client, stream: str, *, timeout: float = 5.0
) -> dict[str, dict[str, Any]] | None:
    """Every consumer's info (`config`, `num_pending`, …) on `stream` by name, all pages; None
    when the stream does not exist."""
    try:
        infos = await paginate(nc, CONSUMER_LIST.subject(stream=stream), "consumers", timeout)
    except JetStreamApiError as exc:
        if exc.err_code == ERR_STREAM_NOT_FOUND:
            return None
        raise
    by_name: dict[str, dict[str, Any]] = {}
    for info in infos:
        if not isinstance(info, dict):
            continue
        config = info.get("config") or {}
        name = info.get("name") or config.get("durable_name") or config.get("name")
        if name:
            by_name[str(name)] = info
    return by_name


async def read_live(
    nc: Client,
    *,
    timeout: float = 5.0,
    on_progress: Callable[[int, int | None], None] | None = None,
) -> LiveState:
    """Every stream (config, message count, bytes) and its consumers' configs.

    `on_progress(n, total)`: once the streams are listed (total: one step per stream), then as
    each stream's consumers are read (one request per stream: the long part on a big server).
    """
    advance = on_progress or (lambda n, total: None)
    infos = await stream_infos(nc, timeout=timeout)
    advance(0, len(infos))
    streams: dict[str, LiveStream] = {}
    for name, info in infos.items():
        config = dict(info.get("config") or {})
        state = info.get("state") or {}
        streams[str(name)] = LiveStream(
            config=config,
            messages=int(state.get("messages") or 0),
            bytes=int(state.get("bytes") or 0),
        )
    gate = asyncio.Semaphore(_LIST_CONCURRENCY)
    names = sorted(streams)
    results = await asyncio.gather(
        *(_stream_consumers(nc, n, timeout, gate, advance) for n in names)
    )
    for name, consumers in zip(names, results, strict=True):
        if consumers is None:
            del streams[name]
        else:
            streams[name].consumers = consumers
    return LiveState(streams=streams, server=server_info(nc))


@dataclass(frozen=True)
class KvValue:
    value: bytes
    revision: int
    written: float
    """When the server stored it, in epoch seconds."""


async def read_bucket(
    nc: Client, bucket: str | BucketUse, keys: str = ">"
) -> dict[str, KvValue] | None:
    """A KV bucket's current values under `keys`, or None without the bucket. Pass the
    bucket's declared use (`plan.buckets`): it must declare `KvOp.READ`.

    An empty answer is checked against the stream's own count of those keys and read again
    when they exist: a consumer created under load has been seen to report nothing pending.
    """
    if isinstance(bucket, BucketUse):
        bucket.require(KvOp.READ)
        bucket = bucket.bucket
    for _ in range(3):
        values = await _read_bucket_once(nc, bucket, keys)
        if values:
            return values
        if values is None or not await _has_subjects(
            nc, bucket_stream(bucket), f"$KV.{bucket}.{keys}"
        ):
            return values
    return values


async def _has_subjects(nc: Client, stream: str, subjects: str) -> bool:
    info = await api(nc, STREAM_INFO.subject(stream=stream), {"subjects_filter": subjects}, 5.0)
    state = info.get("state") or {}
    return bool(state.get("num_subjects") or state.get("subjects"))


async def _read_bucket_once(nc: Client, bucket: str, keys: str) -> dict[str, KvValue] | None:
    """One pull consumer delivering the last message per key: it says up front how many there
    are, so the read knows when it has them all (a KV watch's "initial values done" marker can
    arrive before the values themselves).
    """
    from nats.errors import TimeoutError as NatsTimeout
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
    from nats.js.errors import NotFoundError

    stream = bucket_stream(bucket)
    prefix = f"$KV.{bucket}."
    js = nc.jetstream()
    try:
        sub = await js.pull_subscribe(
            prefix + keys,
            stream=stream,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
                ack_policy=AckPolicy.NONE,
                inactive_threshold=30.0,
                mem_storage=True,
            ),
        )
    except NotFoundError:
        # The stream or the new consumer: only a missing stream means "no bucket".
        try:
            await api(nc, STREAM_INFO.subject(stream=stream), None, 5.0)
        except JetStreamApiError as err:
            if err.err_code == ERR_STREAM_NOT_FOUND:
                return None
        raise
    values: dict[str, KvValue] = {}
    try:
        left = (await sub.consumer_info()).num_pending or 0
        while left > 0:
            try:
                msgs = await sub.fetch(min(left, 256), timeout=5.0)
            except (TimeoutError, NatsTimeout):
                continue
            for msg in msgs:
                left = msg.metadata.num_pending
                operation = (msg.headers or {}).get("KV-Operation")
                key = msg.subject[len(prefix) :]
                if operation in ("DEL", "PURGE") or not msg.data:
                    values.pop(key, None)
                    continue
                values[key] = KvValue(
                    msg.data, msg.metadata.sequence.stream, msg.metadata.timestamp.timestamp()
                )
    finally:
        # Deleted, not left to expire: a stray consumer on the bucket would show in every read
        # of the live state for its inactive threshold.
        try:
            name = (await sub.consumer_info()).name
            await sub.unsubscribe()
            await api(nc, CONSUMER_DELETE.subject(stream=stream, consumer=name), None, 5.0)
        except Exception:
            await sub.unsubscribe()
    return values
