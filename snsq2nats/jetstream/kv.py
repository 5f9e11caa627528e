"""KV buckets opened through their declared use (`operations.BucketUse`).

`open_kv` hands back nats-py's KeyValue behind a thin guard: each call first checks that the
use declares it (`KvOp`), so a component cannot start, say, reading keys of a bucket without
its declaration, and so without the grant `auth` derives from that same declaration.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from snsq2nats.jetstream.operations import BucketUse, KvOp

if TYPE_CHECKING:
    from nats.js.kv import KeyValue


class Kv:
    """A bucket as one role may use it."""

    def __init__(self, kv: KeyValue, use: BucketUse) -> None:
        self._kv = kv
        self.use = use

    @property
    def bucket(self) -> str:
        return self.use.bucket

    async def get(self, key: str) -> Any:
        self.use.require(KvOp.GET)
        return await self._kv.get(key)

    async def put(self, key: str, value: bytes) -> int:
        self.use.require(KvOp.PUT)
        return await self._kv.put(key, value)

    async def create(self, key: str, value: bytes) -> int:
        # A key deleted before is read first (its tombstone's revision is the CAS base).
        self.use.require(KvOp.PUT)
        self.use.require(KvOp.GET)
        return await self._kv.create(key, value)

    async def update(self, key: str, value: bytes, last: int) -> int:
        self.use.require(KvOp.PUT)
        return await self._kv.update(key, value, last=last)

    async def delete(self, key: str, last: int | None = None) -> bool:
        self.use.require(KvOp.PUT)
        return await self._kv.delete(key, last=last)

    async def watch(self, keys: str, **options: Any) -> Any:
        self.use.require(KvOp.WATCH)
        return await self._kv.watch(keys, **options)

    async def history(self, key: str) -> list[Any]:
        self.use.require(KvOp.WATCH)
        return await self._kv.history(key)


async def open_kv(nc: Any, use: BucketUse) -> Kv:
    """The bucket as `use` declares it; raises nats-py's BucketNotFoundError/NotFoundError
    when it does not exist (callers say which command creates it)."""
    use.require(KvOp.OPEN)
    return Kv(await nc.jetstream().key_value(use.bucket), use)
