"""Where an idle bridge's CPU goes: N idle `sqs-to-nats` routes on fauxqs (bench_routes'
estate, process and request-counting proxy, as bench_sqs_transport's idle rows), a real
`snsq2nats bridge` process profiled by cProfile on CPU time (not wall) over the idle window
only, switched on and off by signals once every route is up and the process has settled.

    python -m benchmarks.profile_idle --routes 1000 --out idle.prof [--transport botocore]
    python -m benchmarks.profile_idle --routes 1000 --no-profile   # the plain figure

Prints CPU per empty poll (process CPU / SQS requests in the window) and the top of the
profile by own time; the profiler itself costs about twice the CPU it measures, so read the
profile for shares, the --no-profile run for the figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import pstats
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Run as the bridge's interpreter: `python profile_idle.py --child OUT snsq2nats-args…`.
_CHILD = "--child"


def _child(out: str, args: list[str]) -> None:
    import cProfile

    profile = cProfile.Profile(time.process_time)

    def stop(*_: Any) -> None:
        profile.disable()
        profile.dump_stats(out)

    signal.signal(signal.SIGUSR1, lambda *_: profile.enable())
    signal.signal(signal.SIGUSR2, stop)
    from snsq2nats.cli import main

    sys.argv = ["snsq2nats", *args]
    main()


@contextlib.contextmanager
def _profiled_bridge(out: str) -> Iterator[None]:
    """bench_routes' bridge command, `-m snsq2nats` replaced by this module's child mode."""
    from benchmarks import bench_routes

    real = bench_routes.subprocess.Popen

    def popen(command: list[str], *args: Any, **kwargs: Any) -> Any:
        if command[1:3] == ["-m", "snsq2nats"]:
            command = [command[0], __file__, _CHILD, out, *command[3:]]
        return real(command, *args, **kwargs)

    bench_routes.subprocess.Popen = popen  # type: ignore[assignment]
    try:
        yield
    finally:
        bench_routes.subprocess.Popen = real  # type: ignore[misc]


async def measure(routes: int, window: float, out: str | None) -> None:
    from benchmarks import bench_routes
    from benchmarks.bench_bridge import fauxqs
    from benchmarks.bench_sqs_transport import _allow_open_files, _proc_cpu
    from snsq2nats.demo.nats_server import NatsServer

    _allow_open_files(routes * 2 + 500)
    with (
        tempfile.TemporaryDirectory(prefix="profile-idle-") as tmp,
        fauxqs() as endpoint,
        NatsServer(name="profile-idle") as server,
        bench_routes.CountingProxy(int(endpoint.endpoint.rsplit(":", 1)[1])) as proxy,
        _profiled_bridge(out) if out else contextlib.nullcontext(),
    ):
        estate = await bench_routes.make_estate(routes, endpoint.endpoint, server.url, Path(tmp))
        log = Path(tmp) / "bridge.log"
        with bench_routes.bridge_process(estate.plan_file, proxy.url, server.url, log) as bridge:
            await asyncio.to_thread(bench_routes.wait_ready, bridge, routes)
            pid = bridge.proc.pid
            if out:
                os.kill(pid, signal.SIGUSR1)
            cpu0, requests0, started = _proc_cpu(pid), proxy.requests, time.monotonic()
            await asyncio.sleep(window)
            bridge.check_alive()
            cpu, requests = _proc_cpu(pid) - cpu0, proxy.requests - requests0
            elapsed = time.monotonic() - started
            if out:
                os.kill(pid, signal.SIGUSR2)
                while not Path(out).exists():
                    await asyncio.sleep(0.1)
    if not requests:
        raise SystemExit("no SQS request counted")
    print(
        f"{routes} idle routes: {cpu / requests * 1000:.3f} ms CPU per request, "
        f"{100 * cpu / elapsed:.1f}% of a core, "
        f"{requests * 3600 / elapsed / routes:.0f} req/h/route" + (" (profiled)" if out else "")
    )


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == _CHILD:
        _child(sys.argv[2], sys.argv[3:])
        return
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_idle")
    parser.add_argument("--routes", type=int, default=1000)
    parser.add_argument("--window", type=float, default=40.0)
    parser.add_argument("--transport", choices=("lean", "botocore"), default="lean")
    parser.add_argument("--out", default="idle.prof")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    os.environ["SNSQ2NATS_SQS_TRANSPORT"] = args.transport
    out = None if args.no_profile else os.path.abspath(args.out)
    if out:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(out)
    asyncio.run(measure(args.routes, args.window, out))
    if out:
        stats = pstats.Stats(out)
        stats.sort_stats("tottime").print_stats(args.top)
        stats.sort_stats("cumulative").print_stats(args.top)


if __name__ == "__main__":
    main()
