"""KV buckets opened through their declared use (`operations.BucketUse`).

`open_kv` hands back nats-py's KeyValue behind a thin guard: each call first checks that the
use declares it (`KvOp`), so a component cannot start, say, reading keys of a bucket without
its declaration, and so without the grant `auth` derives from that same declaration.

A call the server refuses fails at once with the refused subject (PermissionDeniedError), as
`jetstream.api` requests do, instead of nats-py's timeout: a fleet member retrying a refused
lease would otherwise spend whole request timeouts, its heartbeat stalled, and look dead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, TypeVar

from snsq2nats.errors import BucketMissing, PermissionDeniedError
from snsq2nats.jetstream.operations import BucketUse, KvOp
from snsq2nats.jetstream.permissions import denials_of, refused

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.js.kv import KeyValue

T = TypeVar("T")


class Kv:
    """A bucket as one role may use it."""

    def __init__(self, kv: KeyValue, use: BucketUse, nc: Client | None = None) -> None:
        self._kv = kv
        self.use = use
        self._nc = nc

    async def _refusable(self, call: Awaitable[T]) -> T:
        """`call`, failing as soon as the server refuses a subject of this bucket."""
        denials = denials_of(self._nc) if self._nc is not None else None
        if denials is None:
            return await call
        task = asyncio.ensure_future(call)
        needles = (f"kv_{self.bucket}".lower(), f"$kv.{self.bucket}.".lower())
        try:
            while True:
                refusal = asyncio.ensure_future(denials.next())
                done, _ = await asyncio.wait({task, refusal}, return_when=asyncio.FIRST_COMPLETED)
                refusal.cancel()
                if task in done:
                    return task.result()
                newest = denials.messages[-1] if denials.messages else ""
                if any(n in newest.lower() for n in needles):
                    raise PermissionDeniedError(
                        f"permission denied: {denials.identity} may not {refused(newest)}",
                        where=f"KV bucket {self.bucket}",
                        hint="regenerate the identities with `snsq2nats auth` (they grant what "
                        "each component declares) and load them into the server",
                    )
        finally:
            if not task.done():
                task.cancel()

    @property
    def bucket(self) -> str:
        return self.use.bucket

    async def get(self, key: str) -> KeyValue.Entry:
        self.use.require(KvOp.GET)
        return await self._refusable(self._kv.get(key))

    async def put(self, key: str, value: bytes) -> int:
        self.use.require(KvOp.PUT)
        return await self._refusable(self._kv.put(key, value))

    async def create(self, key: str, value: bytes) -> int:
        # A key deleted before is read first (its tombstone's revision is the CAS base).
        self.use.require(KvOp.PUT)
        self.use.require(KvOp.GET)
        return await self._refusable(self._kv.create(key, value))

    async def update(self, key: str, value: bytes, last: int) -> int:
        self.use.require(KvOp.PUT)
        return await self._refusable(self._kv.update(key, value, last=last))

    async def delete(self, key: str, last: int | None = None) -> bool:
        self.use.require(KvOp.PUT)
        return await self._refusable(self._kv.delete(key, last=last))

    async def watch(self, keys: str, **options: Any) -> KeyValue.KeyWatcher:
        self.use.require(KvOp.WATCH)
        return await self._refusable(self._kv.watch(keys, **options))

    async def history(self, key: str) -> list[KeyValue.Entry]:
        self.use.require(KvOp.WATCH)
        return await self._refusable(self._kv.history(key))


async def open_kv(nc: Client, use: BucketUse, where: str | None = None) -> Kv:
    """The bucket as `use` declares it; BucketMissing (saying to run `apply`) when it does not
    exist. `where`: the server or route to name in that error."""
    from nats.js.errors import BucketNotFoundError, NotFoundError

    use.require(KvOp.OPEN)
    try:
        return Kv(await nc.jetstream().key_value(use.bucket), use, nc)
    except (BucketNotFoundError, NotFoundError):
        raise BucketMissing(use.bucket, where=where) from None
