"""`bridge --workers N`: N local bridge processes, each a member of the same fleet.

One process runs on one core (asyncio and the GIL), so on a large host the useful number is
one per core. The parent only supervises: it starts the workers as copies of its own command
line, forwards SIGINT and SIGTERM to them (each drains and leaves the fleet as a lone bridge
would), and exits non-zero if any worker failed. A worker that fails stops the others: the
parent's supervisor (systemd, Kubernetes) restarts the whole group, and meanwhile the members
on other hosts take the routes over. Worker `i` (0-based) serves its metrics on
`--metrics-port` + i.

Workers get their own session (a terminal's Ctrl-C reaches only the parent, which forwards it
once) and stop by themselves should the parent die without telling them, kill -9 included:
on Linux the kernel sends them SIGTERM when it dies (`PR_SET_PDEATHSIG`), and everywhere each
worker also watches its parent's pid. Either way a worker drains as on any stop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from snsq2nats.bridge.worker_status import WorkerStatus

log = logging.getLogger(__name__)

WORKER_ENV = "SNSQ2NATS_BRIDGE_WORKER"
"""Set in a worker's environment to its index; a worker never starts workers of its own."""
PARENT_ENV = "SNSQ2NATS_BRIDGE_PARENT"
"""The pid of the process that started the worker: a parent gone before the worker looked."""
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def worker_index() -> int | None:
    value = os.environ.get(WORKER_ENV, "")
    return int(value) if value.isdigit() else None


def worker_metrics_port(base: int | None, index: int | None) -> int | None:
    """Worker i's metrics port: the base plus i (0, any free port, stays 0)."""
    if base is None or not base or index is None:
        return base
    return base + index


def run_workers(count: int, argv: list[str], monitor: WorkerStatus | None = None) -> int:
    """Run `count` copies of `snsq2nats <argv>` until they all exit; the exit code for all.
    With `monitor` (on a terminal) the workers report to it, which shows one view of them."""
    env = dict(os.environ)
    env["TTY_COMPATIBLE"] = "0"  # one terminal cannot hold N live tables: plain lines
    env[PARENT_ENV] = str(os.getpid())
    procs: list[subprocess.Popen[bytes]] = []
    stopping = False

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for index in range(count):
            options = monitor.spawn_options(index) if monitor is not None else {}
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "snsq2nats", *argv],
                    env={**env, WORKER_ENV: str(index), **options.pop("env", {})},
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    **options,
                )
            )
            if monitor is not None:
                monitor.started(index, procs[-1])
        log.info("started %d bridge workers: pids %s", count, " ".join(str(p.pid) for p in procs))
        failed = False
        running = {proc.pid: (index, proc) for index, proc in enumerate(procs)}
        while running:
            pid, status = os.waitpid(-1, 0)
            if pid not in running:
                continue
            index, proc = running.pop(pid)
            proc.returncode = os.waitstatus_to_exitcode(status)
            if proc.returncode != 0:
                failed = True
                log.error("bridge worker %d (pid %d) exited with %d", index, pid, proc.returncode)
                if not stopping:
                    stopping = True
                    log.error("stopping the other workers")
                    for _, other in running.values():
                        other.send_signal(signal.SIGTERM)
        return 1 if failed else 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for proc in procs:
            if proc.returncode is None and proc.poll() is None:
                proc.kill()
        if monitor is not None:
            monitor.close()


def die_with_parent(sig: int = signal.SIGTERM) -> bool:
    """Have Linux send this process `sig` when its parent dies; False where it cannot."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0) == 0:
            return True
        reason = os.strerror(ctypes.get_errno())
    except (OSError, AttributeError) as exc:
        reason = str(exc)
    log.warning("cannot ask to be stopped with the parent (%s): watching its pid", reason)
    return False


async def stop_with_parent(stop: asyncio.Event, interval: float = 1.0) -> None:
    """A worker's guard: set `stop` once the parent that started it is gone.

    The kernel's SIGTERM (`die_with_parent`) reaches the bridge's own signal handling; the
    pid watch covers other systems, and a parent that died before the worker asked."""
    die_with_parent()
    recorded = os.environ.get(PARENT_ENV, "")
    parent = int(recorded) if recorded.isdigit() else os.getppid()
    while not stop.is_set():
        if os.getppid() != parent:
            log.warning("the parent of this bridge worker is gone: stopping")
            stop.set()
            return
        await asyncio.sleep(interval)
