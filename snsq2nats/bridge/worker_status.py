"""`bridge --workers N` on a terminal: one live view for the whole group.

Each worker reports its routes' counters to the parent over a pipe of its own (one JSON line a
second); the parent merges them into one context and shows that with the bridge's own view, and
relays each worker's log lines through its console, so they scroll above the table instead of
tearing it. Without a terminal none of this runs: every worker prints its own plain lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import subprocess
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import IO, TYPE_CHECKING, Any

from snsq2nats.bridge.context import BridgeContext, RouteMetrics
from snsq2nats.plan.model import Plan

if TYPE_CHECKING:
    from snsq2nats.bridge.session import View

log = logging.getLogger(__name__)

STATUS_FD_ENV = "SNSQ2NATS_BRIDGE_STATUS_FD"
"""Set in a worker's environment to the pipe it reports its routes' counters on."""

REPORT_EVERY = 1.0

# Per-process values that mean nothing in another process (a monotonic clock reading).
_LOCAL_FIELDS = {"started"}
_FIELDS = {f.name for f in dataclasses.fields(RouteMetrics)} - _LOCAL_FIELDS


def snapshot(ctx: BridgeContext) -> bytes:
    """One status line: every route's counters."""
    routes = [
        {k: v for k, v in dataclasses.asdict(m).items() if k in _FIELDS}
        for m in ctx.metrics.values()
    ]
    return (json.dumps({"routes": routes}) + "\n").encode()


def parse_snapshot(line: bytes) -> dict[str, RouteMetrics]:
    """The routes of one status line; an unreadable line is skipped by the caller."""
    routes = json.loads(line)["routes"]
    return {
        r["route"]: RouteMetrics(**{k: v for k, v in r.items() if k in _FIELDS}) for r in routes
    }


class StatusReporter:
    """A worker's view (`bridge.session.View`): its counters to the parent, every second."""

    def __init__(self, fd: int, every: float = REPORT_EVERY) -> None:
        self.fd = fd
        self.every = every

    async def show(self, ctx: BridgeContext) -> None:
        while self._write(ctx) and not ctx.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ctx.stopping.wait(), timeout=self.every)

    def final(self, ctx: BridgeContext) -> None:
        self._write(ctx)
        with contextlib.suppress(OSError):
            os.close(self.fd)

    def _write(self, ctx: BridgeContext) -> bool:
        try:
            os.write(self.fd, snapshot(ctx))
        except OSError:
            # The parent is gone or stopped reading: the worker's own logs still say what it
            # does, and it stops with its parent anyway.
            return False
        return True


def reporter_from_env(environ: dict[str, str] | None = None) -> StatusReporter | None:
    value = (os.environ if environ is None else environ).get(STATUS_FD_ENV, "")
    return StatusReporter(int(value)) if value.isdigit() else None


class WorkerStatus:
    """The parent's side: one status pipe and the log output of each worker, read by threads,
    merged into one context that `view` shows until `close`."""

    def __init__(self, count: int, plan: Plan, view: View, on_log: Callable[[str], None]) -> None:
        self.plan = plan
        self.view = view
        self.on_log = on_log
        self._pipes = [os.pipe() for _ in range(count)]
        self._routes: dict[int, dict[str, RouteMetrics]] = {}
        self._lock = threading.Lock()
        self._readers: list[threading.Thread] = []
        self._done = threading.Event()
        self._shown = threading.Thread(target=self._show, name="workers-view", daemon=True)
        self._shown.start()

    def spawn_options(self, index: int) -> dict[str, Any]:
        """What worker `index` is started with: its status pipe, and its logs to the parent."""
        write = self._pipes[index][1]
        return {"env": {STATUS_FD_ENV: str(write)}, "pass_fds": (write,), "stderr": subprocess.PIPE}

    def started(self, index: int, proc: subprocess.Popen[bytes]) -> None:
        read, write = self._pipes[index]
        os.close(write)  # the worker holds it now: its exit closes the pipe
        status = os.fdopen(read, "rb")
        self._read(f"worker-{index}-status", lambda: self._statuses(index, status))
        if proc.stderr is not None:
            logs = proc.stderr
            self._read(f"worker-{index}-logs", lambda: self._logs(index, logs))

    def merged(self) -> dict[str, RouteMetrics]:
        """Every route of the group; one whose lease moved is shown from the worker running it,
        with what every worker relayed on it (a worker that took it over counts from 0)."""
        merged: dict[str, RouteMetrics] = {}
        totals: dict[str, tuple[int, int, int]] = {}
        with self._lock:
            for index in sorted(self._routes):
                for name, m in self._routes[index].items():
                    held = merged.get(name)
                    if held is None or (m.status == "running" and held.status != "running"):
                        merged[name] = m
                    messages, size, errors = totals.get(name, (0, 0, 0))
                    totals[name] = (messages + m.messages, size + m.bytes, errors + m.errors)
        return {
            name: replace(
                m, messages=totals[name][0], bytes=totals[name][1], errors=totals[name][2]
            )
            for name, m in merged.items()
        }

    def close(self) -> None:
        """Once every worker has exited: read what they said last, show the outcome."""
        for reader in self._readers:
            reader.join(timeout=5)
        self._done.set()
        self._shown.join(timeout=10)

    def _read(self, name: str, target: Callable[[], None]) -> None:
        reader = threading.Thread(target=target, name=name, daemon=True)
        reader.start()
        self._readers.append(reader)

    def _statuses(self, index: int, pipe: IO[bytes]) -> None:
        with pipe:
            for line in pipe:
                try:
                    routes = parse_snapshot(line)
                except (ValueError, KeyError, TypeError):
                    continue
                with self._lock:
                    self._routes[index] = routes

    def _logs(self, index: int, pipe: IO[bytes]) -> None:
        with pipe:
            for line in pipe:
                self.on_log(f"worker {index}: " + line.decode("utf-8", "replace").rstrip("\n"))

    def _show(self) -> None:
        asyncio.run(self._follow())

    async def _follow(self) -> None:
        ctx = BridgeContext(plan=self.plan, nc=None, sqs=None, sns=None)  # type: ignore[arg-type]
        shown = asyncio.create_task(self.view.show(ctx))
        while not self._done.is_set():
            ctx.metrics = self.merged()
            await asyncio.sleep(REPORT_EVERY / 2)
        ctx.metrics = self.merged()
        ctx.stopping.set()
        await shown
        self.view.final(ctx)
