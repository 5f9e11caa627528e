"""Network latency on loopback: a TCP proxy that adds a fixed delay to every byte it forwards.

moto and a local nats-server answer in about a millisecond; real AWS calls and a client in
another zone spend tens of milliseconds on the network. Without that delay a parallel scan or a
pipelined apply cannot differ from a serial one, so the benchmarks put this proxy in between and
state the delay they used. Chunks are stamped on arrival and released at stamp + delay, so
pipelined requests overlap as on a real link instead of queueing behind each other's delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator


async def _delayed_pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float
) -> None:
    """Forward bytes, each chunk `delay` after it arrived: latency without a bandwidth cap.

    Chunks are stamped on arrival and released at stamp + delay, so pipelined requests overlap
    as on a real link instead of queueing behind each other's delay.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def pump() -> None:
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(65536):
                queue.put_nowait((loop.time() + delay, chunk))
        queue.put_nowait((0.0, b""))

    async def deliver() -> None:
        with contextlib.suppress(ConnectionError):
            while True:
                due, chunk = await queue.get()
                if not chunk:
                    break
                if (wait := due - loop.time()) > 0:
                    await asyncio.sleep(wait)
                writer.write(chunk)
                await writer.drain()
        with contextlib.suppress(Exception):
            writer.close()

    await asyncio.gather(pump(), deliver())


@contextlib.contextmanager
def delayed_link(port: int, rtt: float, scheme: str = "nats") -> Iterator[str]:
    """A URL that reaches 127.0.0.1:`port` with `rtt` added to every round trip."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    bound: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.gather(
            _delayed_pipe(reader, up_writer, rtt / 2), _delayed_pipe(up_reader, writer, rtt / 2)
        )

    def serve() -> None:
        server = loop.run_until_complete(asyncio.start_server(handle, "127.0.0.1", 0))
        bound.append(server.sockets[0].getsockname()[1])
        ready.set()
        loop.run_forever()
        server.close()

    # Its own thread and loop, so the proxy's timing does not depend on the client's loop.
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield f"{scheme}://127.0.0.1:{bound[0]}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
