"""A small HTTP/1.1 client for the lean SQS transport: POSTs to one endpoint, kept-alive.

With signing done directly (`aws.sigv4`), most of an idle bridge's CPU per empty long poll was
aiohttp's client machinery: a request object, header multidicts, a payload writer task, a
response object with its stream, and a read timer rescheduled on every chunk. The lean
transport needs little of that: every request is a POST of a small body, already signed, to
the same endpoint, and every reply is read whole. So here a request is one write of bytes
built from a prefix fixed per client, and the reply is parsed as it arrives by the
connection's protocol, which hands the status, headers and body over in one step.

Kept from the aiohttp session it replaces:
- a pool of kept-alive connections, at most `limit` open (a long poll holds one for its wait),
  a request waiting for one no longer than the connect timeout;
- the connect timeout (pool wait and TCP/TLS connect) and the read timeout, the longest
  silence allowed while a reply is due (aiohttp's `sock_read`);
- TLS with the default context for `https` endpoints;
- bodies by `Content-Length`, chunked, or up to the close of the connection.

Failures are `TransportError` (`ConnectTimeout`, `ReadTimeout`): `aws.lean` turns them into
botocore's exceptions after its retries, as it did aiohttp's.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from urllib.parse import urlsplit

import botocore.auth


class TransportError(Exception):
    """The endpoint could not be reached, or the connection failed before a whole reply."""


class ConnectTimeout(TransportError, TimeoutError):
    """No connection within the connect timeout."""


class ReadTimeout(TransportError, TimeoutError):
    """The reply stopped arriving for longer than the read timeout."""


Reply = tuple[int, dict[str, str], bytes]

_NO_BODY = frozenset({204, 304})


class _Connection(asyncio.Protocol):
    """One kept-alive connection; reads one reply at a time into a future."""

    def __init__(self, loop: asyncio.AbstractEventLoop, read_timeout: float) -> None:
        self._loop = loop
        self._read_timeout = read_timeout
        self.transport: asyncio.Transport | None = None
        self.reusable = False
        self._buffer = bytearray()
        self._reply: asyncio.Future[Reply] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._last_read = 0.0
        # The reply being read: headers parsed yet, status, headers, what the body is.
        self._status = 0
        self._headers: dict[str, str] | None = None
        self._length = -1  # -1: chunked or to the close
        self._chunked = False
        self._body = bytearray()

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.reusable = True

    def connection_lost(self, exc: BaseException | None) -> None:
        self.reusable = False
        self.transport = None
        if self._reply is not None and not self._reply.done():
            if self._headers is not None and self._length < 0 and not self._chunked:
                self._finish()  # a body that runs to the close has ended
            else:
                self._fail(TransportError(f"connection closed before a whole reply ({exc})"))

    def eof_received(self) -> bool:
        self.reusable = False
        return False  # close

    def data_received(self, data: bytes) -> None:
        if self._reply is None or self._reply.done():
            # Bytes nobody asked for: the connection cannot be trusted with another request.
            self.reusable = False
            if self.transport is not None:
                self.transport.close()
            return
        self._last_read = self._loop.time()
        self._buffer += data
        try:
            self._parse()
        except ValueError as exc:
            self._fail(TransportError(f"unreadable reply: {exc}"))
            self.close()

    # -- one request

    def request(self, data: bytes) -> asyncio.Future[Reply]:
        assert self.transport is not None
        self._reply = self._loop.create_future()
        self._buffer.clear()
        self._headers = None
        self._body = bytearray()
        self._chunked = False
        self._length = -1
        self._last_read = self._loop.time()
        # One timer per request, moved on only when it fires (not on every read).
        self._timer = self._loop.call_at(self._last_read + self._read_timeout, self._check_read)
        self.transport.write(data)
        return self._reply

    def _check_read(self) -> None:
        self._timer = None
        if self._reply is None or self._reply.done():
            return
        due = self._last_read + self._read_timeout
        if self._loop.time() < due:
            self._timer = self._loop.call_at(due, self._check_read)
            return
        self._fail(ReadTimeout(f"no reply data for {self._read_timeout:g}s"))
        self.close()

    def _parse(self) -> None:
        if self._headers is None:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self._buffer[:end]).decode("latin-1").split("\r\n")
            del self._buffer[: end + 4]
            version, _, rest = head[0].partition(" ")
            if not version.startswith("HTTP/1."):
                raise ValueError(f"not an HTTP/1 status line: {head[0][:80]!r}")
            status = int(rest[:3])
            if 100 <= status < 200:  # an interim reply: the real one follows
                self._parse()
                return
            headers: dict[str, str] = {}
            for line in head[1:]:
                name, sep, value = line.partition(":")
                if not sep:
                    raise ValueError(f"not a header line: {line[:80]!r}")
                headers[name.strip().lower()] = value.strip()
            self._status = status
            self._headers = headers
            if headers.get("connection", "").lower() == "close" or version == "HTTP/1.0":
                self.reusable = False
            if "chunked" in headers.get("transfer-encoding", "").lower():
                self._chunked = True
            elif status in _NO_BODY:
                self._length = 0
            elif "content-length" in headers:
                self._length = int(headers["content-length"])
            else:
                self.reusable = False  # the body runs to the close
        if self._chunked:
            self._parse_chunks()
        elif self._length >= 0 and len(self._buffer) >= self._length:
            if len(self._buffer) > self._length:
                self.reusable = False
            self._body = self._buffer[: self._length]
            self._finish()
        elif self._length < 0:
            self._body += self._buffer
            self._buffer.clear()

    def _parse_chunks(self) -> None:
        while True:
            line_end = self._buffer.find(b"\r\n")
            if line_end < 0:
                return
            size = int(bytes(self._buffer[:line_end]).split(b";", 1)[0], 16)
            if size == 0:
                # The last chunk, then trailers up to an empty line.
                end = self._buffer.find(b"\r\n\r\n", line_end)
                if end < 0:
                    return
                if len(self._buffer) > end + 4:
                    self.reusable = False
                self._finish()
                return
            start = line_end + 2
            if len(self._buffer) < start + size + 2:
                return
            self._body += self._buffer[start : start + size]
            del self._buffer[: start + size + 2]

    def _finish(self) -> None:
        self._stop_timer()
        assert self._reply is not None and self._headers is not None
        if not self._reply.done():
            self._reply.set_result((self._status, self._headers, bytes(self._body)))
        self._buffer.clear()
        self._body = bytearray()

    def _fail(self, exc: Exception) -> None:
        self._stop_timer()
        self.reusable = False
        if self._reply is not None and not self._reply.done():
            self._reply.set_exception(exc)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self) -> None:
        self.reusable = False
        self._stop_timer()
        if self.transport is not None:
            self.transport.abort()


class HttpPool:
    """Kept-alive connections to one endpoint; `post` sends a signed request, reads the reply."""

    def __init__(
        self,
        url: str,
        *,
        limit: int,
        connect_timeout: float,
        read_timeout: float,
        user_agent: str,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) endpoint: {url}")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl: ssl.SSLContext | None = (
            ssl.create_default_context() if parts.scheme == "https" else None
        )
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        # The Host header as signed (botocore's: the port only when not the default).
        host = botocore.auth._host_from_url(url)  # type: ignore[attr-defined]
        self._prefix = (
            f"POST {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {user_agent}\r\n"
        ).encode("latin-1")
        self._limit = limit
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._idle: deque[_Connection] = deque()
        self._busy: set[_Connection] = set()
        self._opening = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._closed = False

    async def post(self, headers: dict[str, str], body: bytes) -> Reply:
        """One request and its whole reply (status, headers with lower-case names, body)."""
        connection = await self._acquire()
        try:
            data = b"".join(
                (
                    self._prefix,
                    "".join(f"{name}: {value}\r\n" for name, value in headers.items()).encode(
                        "latin-1"
                    ),
                    b"Content-Length: %d\r\n\r\n" % len(body),
                    body,
                )
            )
            reply = await connection.request(data)
        except BaseException:
            # Cancelled or failed mid-request: what the connection holds is unknown.
            connection.close()
            self._release(connection)
            raise
        self._release(connection)
        return reply

    async def _acquire(self) -> _Connection:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._connect_timeout
        while True:
            if self._closed:
                raise TransportError("the connection pool is closed")
            while self._idle:
                connection = self._idle.pop()  # the most recently used: likeliest alive
                if connection.reusable and connection.transport is not None:
                    self._busy.add(connection)
                    return connection
                connection.close()
            if len(self._busy) + self._opening < self._limit:
                return await self._open(deadline)
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
            try:
                async with asyncio.timeout_at(deadline):
                    await waiter
            except BaseException as exc:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
                if waiter.done() and not waiter.cancelled():
                    self._wake_next()  # woken for a slot it will not take: pass it on
                if isinstance(exc, TimeoutError):
                    raise ConnectTimeout(
                        f"no free connection within {self._connect_timeout:g}s"
                    ) from None
                raise

    async def _open(self, deadline: float) -> _Connection:
        loop = asyncio.get_running_loop()
        self._opening += 1
        try:
            async with asyncio.timeout_at(deadline):
                _, connection = await loop.create_connection(
                    lambda: _Connection(loop, self._read_timeout),
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._ssl else None,
                )
        except TimeoutError:
            raise ConnectTimeout(
                f"cannot connect to {self._host}:{self._port} within {self._connect_timeout:g}s"
            ) from None
        except OSError as exc:
            raise TransportError(f"cannot connect to {self._host}:{self._port}: {exc}") from exc
        finally:
            self._opening -= 1
        self._busy.add(connection)
        return connection

    def _release(self, connection: _Connection) -> None:
        self._busy.discard(connection)
        if connection.reusable and connection.transport is not None and not self._closed:
            self._idle.append(connection)
        else:
            connection.close()
        self._wake_next()

    def _wake_next(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def close(self) -> None:
        self._closed = True
        for connection in [*self._idle, *self._busy]:
            connection.close()
        self._idle.clear()
        self._busy.clear()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        # Let the transports' close callbacks run before the loop may end.
        await asyncio.sleep(0)
