"""A TCP proxy that adds a fixed delay to every request, modelling the AWS round trip.

moto on loopback answers in about a millisecond of CPU; real SQS/SNS calls spend tens of
milliseconds on the network. Without that delay a parallel scan cannot differ from a serial
one, so the benchmark puts this proxy between boto3 and moto and states the delay it used.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    try:
        while chunk := await reader.read(65536):
            if delay:
                await asyncio.sleep(delay)
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


@contextlib.contextmanager
def latency_proxy(target_host: str, target_port: int, delay: float) -> Iterator[str]:
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    address: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(target_host, target_port)
        await asyncio.gather(_pipe(reader, up_writer, delay), _pipe(up_reader, writer, 0.0))

    def serve() -> None:
        server = loop.run_until_complete(asyncio.start_server(handle, "127.0.0.1", 0))
        address.append(server.sockets[0].getsockname()[1])
        ready.set()
        loop.run_forever()
        server.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield f"http://127.0.0.1:{address[0]}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
