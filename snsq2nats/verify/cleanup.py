"""After the checks: delete every canary this run left in a stream, and prove none is left."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from snsq2nats.errors import SnsqError
from snsq2nats.jetstream.api import (
    ERR_NO_MESSAGE,
    ERR_STREAM_NOT_FOUND,
    JetStreamApiError,
    api,
)
from snsq2nats.jetstream.operations import MSG_DELETE, MSG_GET
from snsq2nats.plan.headers import CANARY_HEADER
from snsq2nats.verify.canary import Canary, CanaryRun, CheckResult


async def _delete(run: CanaryRun, stream: str, seq: int) -> bool:
    try:
        await api(
            run.conn(stream),
            MSG_DELETE.subject(stream=stream),
            {"seq": seq, "no_erase": True},
            run.timeout,
        )
    except JetStreamApiError as exc:
        if exc.err_code == ERR_NO_MESSAGE:
            return False  # already gone (acked from a work queue, or removed by limits)
        raise
    return True


async def _sweep(run: CanaryRun, stream: str, subjects: set[str], start: int) -> tuple[int, int]:
    """Delete every canary of this run on `subjects` from `start` on: (found, failed)."""
    found = failed = 0
    for subject in sorted(subjects):
        seq = start
        while True:
            try:
                resp = await api(
                    run.conn(stream),
                    MSG_GET.subject(stream=stream),
                    {"seq": seq, "next_by_subj": subject},
                    run.timeout,
                )
            except JetStreamApiError as exc:
                if exc.err_code in (ERR_NO_MESSAGE, ERR_STREAM_NOT_FOUND):
                    break
                raise
            message = resp.get("message") or {}
            seq = int(message.get("seq") or 0)
            if seq <= 0:
                break
            raw = base64.b64decode(message.get("hdrs") or "")
            if f"{CANARY_HEADER}: {run.run_id}".encode() in raw:
                found += 1
                try:
                    await _delete(run, stream, seq)
                except JetStreamApiError:
                    failed += 1
            seq += 1
    return found, failed


async def cleanup(run: CanaryRun, *, concurrency: int = 32) -> CheckResult:
    from snsq2nats.jetstream.state import stream_infos

    check = "no canary left behind"
    gate = asyncio.Semaphore(max(1, concurrency))

    async def delete(canary: Canary) -> None:
        assert canary.stream is not None and canary.seq is not None
        async with gate:
            await _delete(run, canary.stream, canary.seq)

    async def sweep(stream: str, subjects: set[str]) -> tuple[int, int]:
        start = run.before.get(stream, {}).get("last_seq")
        if start is None:
            start = 0  # created during the run: look at all of it
        async with gate:
            return await _sweep(run, stream, subjects, start + 1)

    try:
        await asyncio.gather(*(delete(c) for c in run.topic_canaries))
        swept = await asyncio.gather(
            *(sweep(stream, subjects) for stream, subjects in sorted(run.touched.items()))
        )
        strays = sum(found for found, _ in swept)
        failures = sum(failed for _, failed in swept)
        # One paged listing (per NATS account) for the state after, as for the state before.
        after_infos: dict[str, dict[str, Any]] = {}
        for nc in run.connections:
            after_infos.update(await stream_infos(nc, timeout=run.timeout))
        changed: list[str] = []
        for stream, before in sorted(run.before.items()):
            state = after_infos.get(stream)
            after = int(((state or {}).get("state") or {}).get("messages") or 0)
            if after != before["messages"]:
                changed.append(f"{stream} {before['messages']}→{after}")
    except SnsqError as exc:
        return CheckResult("(verify)", check, "failed", f"cleanup failed: {exc.what}")
    if failures:
        return CheckResult(
            "(verify)", check, "failed", f"{failures} canary message(s) could not be deleted"
        )
    detail = f"{len(run.touched)} stream(s) checked"
    if strays:
        detail += f"; removed {strays} canary message(s) that were not consumed"
    if changed:
        # Not ours (our canaries are all gone): real traffic moved during the run.
        detail += "; message counts changed by other traffic: " + ", ".join(changed)
    else:
        detail += f"; message counts as before in {len(run.before)} stream(s)"
    return CheckResult("(verify)", check, "ok", detail)
