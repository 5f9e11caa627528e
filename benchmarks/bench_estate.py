"""The estate at scale: 10,000 queues, 1,000 topics, 10,000 subscriptions, every command.

Seeded into fauxqs (the SQS/SNS emulator of `bench_bridge`, ~100x faster than moto, so the
client side is what is measured), then every stage runs as the real CLI in its own process
against a real nats-server on a temporary store, exactly as a user runs it, and its result is
checked (a fast wrong answer must not pass):

    scan -o inventory.json                                         (every queue, topic, sub)
    plan --offline --inventory inventory.json --mapping cutover.yaml
    plan --inventory inventory.json --mapping cutover.yaml -o plan.json   (live read: creates)
    apply plan.json                                                (every object created)
    plan --inventory inventory.json --mapping cutover.yaml --detailed-exitcode   (exit 0)
    status --plan plan.json --json                                 (every route drained)
    verify --plan plan.json --sample 200 --json                    (no failure)
    verify --plan plan.json --json              (SNSQ2NATS_BENCH_VERIFY_ALL=1: minutes at 10k)

The mapping moves every queue's consumers to NATS, so the plan has 21,000 JetStream objects and
11,000 bridge routes (one sqs-to-nats per queue, one sns-to-nats per topic) for `status`.
Each stage's wall time and peak RSS (wait4, that process alone) are reported at the small size
(`SMALL`: a tenth) and the large one in the same run, and as time per estate object at both
sizes: `linearity` = per object at 1k / per object at 10k is ~1 for a linear stage (above 1:
the fixed cost of starting a process weighs more at 1k) and ~0.1 for a quadratic one.

nats-server's own cost is measured alongside: ms per stream create (300 probe streams, 8 at a
time) on the fresh server and again holding the applied estate. It grows with the streams the
server holds, which is why apply has no linearity target.

`SNSQ2NATS_BENCH_ESTATE=small` (or `large`) runs one size only.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.bench_bridge import fauxqs
from snsq2nats.demo.nats_server import NatsServer

LARGE = (10_000, 1_000, 10_000)  # queues, topics, subscriptions
SMALL = (1_000, 100, 1_000)
VERIFY_SAMPLE = 200  # canaries go through this many queues and topics (`verify --sample`)
# What a linear stage may drift per object between the sizes before it is called out: JSON and
# rich rendering are not perfectly linear, and a quadratic step shows as ~10.
RATIO_CEILING = 2.0
MAPPING = """\
version: 1
overrides:
  - match: "bench-q-*"
    cutover: {consumers: nats}
"""


@dataclass
class Stage:
    name: str
    seconds: float
    peak_rss_mb: float


def _seed(endpoint: str, size: tuple[int, int, int]) -> float:
    import boto3

    from snsq2nats.demo.estate import seed_synthetic

    queues, topics, subscriptions = size
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(key, "bench")
    session = boto3.Session(region_name="us-east-1")
    started = time.perf_counter()
    seed_synthetic(
        session.client("sqs", endpoint_url=endpoint),
        session.client("sns", endpoint_url=endpoint),
        queues=queues,
        topics=topics,
        subscriptions=subscriptions,
        workers=16,
    )
    return time.perf_counter() - started


def _run(
    name: str,
    args: list[str],
    env: dict[str, str],
    stdout: Path | None = None,
) -> tuple[Stage, str]:
    """One CLI command in its own process: wall time, that process's own peak RSS, stderr."""
    started = time.perf_counter()
    with open(stdout or os.devnull, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "snsq2nats", *args],
            env=env,
            stdout=out,
            stderr=subprocess.PIPE,
        )
        assert proc.stderr is not None
        err = proc.stderr.read().decode(errors="replace")
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise AssertionError(f"{name} exited {proc.returncode}: {err[-3000:]}")
    # ru_maxrss is in KiB on Linux.
    return Stage(name, seconds, usage.ru_maxrss / 1024.0), err


PROBE_STREAMS = 300


def _create_cost(url: str, label: str) -> float:
    """nats-server's own cost: ms per file-stream create, `PROBE_STREAMS` of them 8 at a time,
    on the server as it is now (then removed). Compared empty vs. holding the estate, it shows
    how much of apply's time at 10,000 queues is the server's."""
    import asyncio

    from snsq2nats.jetstream.api import api
    from snsq2nats.jetstream.connect import NatsOptions, connect_nats

    async def go() -> float:
        nc = await connect_nats(NatsOptions(servers=[url]), name="bench probe")
        gate = asyncio.Semaphore(8)
        names = [f"zz_probe_{label}_{i:04d}" for i in range(PROBE_STREAMS)]

        async def one(subject: str, body: dict[str, Any] | None) -> None:
            async with gate:
                await api(nc, subject, body, 120.0)

        try:
            started = time.perf_counter()
            await asyncio.gather(
                *(
                    one(
                        f"$JS.API.STREAM.CREATE.{n}",
                        {"name": n, "subjects": [f"probe.{n}"], "retention": "workqueue"},
                    )
                    for n in names
                )
            )
            seconds = time.perf_counter() - started
            await asyncio.gather(*(one(f"$JS.API.STREAM.DELETE.{n}", None) for n in names))
        finally:
            await nc.close()
        return seconds * 1000 / PROBE_STREAMS

    return asyncio.run(go())


def _check(name: str, ok: bool, detail: Any) -> None:
    """A stage that ran but did the wrong thing must not pass for fast."""
    if not ok:
        raise AssertionError(f"{name}: {detail}")


@contextlib.contextmanager
def _nats() -> Iterator[NatsServer]:
    # Its own temporary store (removed on exit); the defaults hold 21,000 file streams.
    with NatsServer(name="bench-estate") as server:
        yield server


def measure(size: tuple[int, int, int]) -> tuple[list[Stage], tuple[float, float]]:
    queues, topics, _ = size
    objects = 2 * queues + topics  # a stream and a durable per queue, a stream per topic
    routes = queues + topics  # sqs-to-nats per queue, sns-to-nats per topic
    with (
        tempfile.TemporaryDirectory(prefix="bench-estate-") as tmp,
        fauxqs() as aws,
        _nats() as nats,
    ):
        work = Path(tmp)
        (work / "cutover.yaml").write_text(MAPPING)
        empty_cost = _create_cost(nats.url, "empty")
        seeded = _seed(aws.endpoint, size)
        print(f"  seeded {queues} queues in {seeded:.1f}s", file=sys.stderr)
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": aws.endpoint,
            "NATS_URL": nats.url,
            "NO_COLOR": "1",
            "COLUMNS": "120",
        }
        inv, plan = work / "inventory.json", work / "plan.json"
        mapping = ["--mapping", str(work / "cutover.yaml")]
        stages: list[Stage] = []

        def stage(name: str, args: list[str], stdout: Path | None = None) -> str:
            done, err = _run(name, args, env, stdout)
            print(
                f"  {queues:>6} queues  {name:<16} {done.seconds:7.2f}s {done.peak_rss_mb:7.0f} MB",
                file=sys.stderr,
            )
            stages.append(done)
            return err

        stage("scan", ["scan", "-o", str(inv)])
        doc = json.loads(inv.read_text())
        counts = (len(doc["queues"]), len(doc["topics"]), len(doc["subscriptions"]))
        _check("scan", counts == size, counts)
        del doc

        stage("plan offline", ["plan", "--offline", "--inventory", str(inv), *mapping])
        stage("plan live", ["plan", "--inventory", str(inv), *mapping, "-o", str(plan)])
        doc = json.loads(plan.read_text())
        actions = {c["action"] for c in doc["changes"]}
        _check("plan live", len(doc["changes"]) == objects and actions == {"create"}, actions)
        _check("plan live", len(doc["routes"]) == routes, len(doc["routes"]))
        del doc

        err = stage("apply", ["apply", str(plan)])
        _check("apply", f"Apply complete: {objects} created" in err, err[-500:])
        # Exit 0 with --detailed-exitcode: nothing left to do.
        stage("re-plan", ["plan", "--inventory", str(inv), *mapping, "--detailed-exitcode"])

        report = work / "status.json"
        stage("status", ["status", "--plan", str(plan), "--json"], report)
        doc = json.loads(report.read_text())
        _check("status", doc["drained"] and len(doc["routes"]) == routes, len(doc["routes"]))

        report = work / "verify.json"
        stage(
            "verify (sample)",
            ["verify", "--plan", str(plan), "--sample", str(VERIFY_SAMPLE), "--json"],
            report,
        )
        doc = json.loads(report.read_text())
        _check("verify", doc["ok"] and doc["counts"]["failed"] == 0, doc["counts"])
        checked = {r["resource"] for r in doc["results"]} - {"(verify)"}
        _check("verify", len(checked) >= VERIFY_SAMPLE, len(checked))

        if os.environ.get("SNSQ2NATS_BENCH_VERIFY_ALL") == "1":
            report = work / "verify-all.json"
            stage("verify (all)", ["verify", "--plan", str(plan), "--json"], report)
            doc = json.loads(report.read_text())
            _check("verify (all)", doc["ok"], doc["counts"])
            checked = {r["resource"] for r in doc["results"]} - {"(verify)"}
            _check("verify (all)", len(checked) >= queues + topics, len(checked))
        full_cost = _create_cost(nats.url, "full")
        print(
            f"  nats-server: {empty_cost:.1f} ms per stream create when empty, "
            f"{full_cost:.1f} ms holding {objects} objects",
            file=sys.stderr,
        )
        return stages, (empty_cost, full_cost)


def _objects(size: tuple[int, int, int]) -> int:
    return sum(size)


def _key(name: str) -> str:
    return name.replace(" ", "_").replace("(", "").replace(")", "")


def _row(name: str, value: float, unit: str, target: float | None = None) -> dict[str, Any]:
    return {"name": name, "value": value, "unit": unit, "target": target}


def run() -> list[dict[str, Any]]:
    only = os.environ.get("SNSQ2NATS_BENCH_ESTATE")
    sizes = [SMALL] if only == "small" else [LARGE] if only == "large" else [SMALL, LARGE]
    measured = {size: measure(size) for size in sizes}
    rows: list[dict[str, Any]] = []
    for size, (stages, (empty, full)) in measured.items():
        label = f"estate.{size[0] // 1000}k"
        for stage in stages:
            rows.append(_row(f"{label}.{_key(stage.name)}.wall", round(stage.seconds, 2), "s"))
            rows.append(
                _row(f"{label}.{_key(stage.name)}.peak_rss", round(stage.peak_rss_mb), "MB")
            )
        rows.append(_row(f"{label}.server_create_empty", round(empty, 1), "ms/stream"))
        rows.append(_row(f"{label}.server_create_full", round(full, 1), "ms/stream"))
    if len(sizes) == 2:
        (small, (_, s_full)), (large, (_, l_full)) = measured[SMALL], measured[LARGE]
        for a, b in zip(small, large, strict=True):
            if a.name == "verify (sample)":
                continue  # the same sample at both sizes: not per object
            per_small = a.seconds * 1000 / _objects(SMALL)
            per_large = b.seconds * 1000 / _objects(LARGE)
            key = _key(a.name)
            rows.append(_row(f"estate.{key}.ms_per_object_1k", round(per_small, 3), "ms"))
            rows.append(_row(f"estate.{key}.ms_per_object_10k", round(per_large, 3), "ms"))
            # per object at 1k / per object at 10k: 1 is linear, 0.1 quadratic; above 1 the
            # fixed cost of starting a process weighs more at 1k. apply has no target: what
            # grows there is nats-server's own cost per create (the server_create rows).
            target = None if a.name == "apply" else round(1 / RATIO_CEILING, 2)
            rows.append(
                _row(f"estate.{key}.linearity", round(per_small / per_large, 2), "x", target)
            )
        rows.append(_row("estate.server_create_growth_10k_vs_1k", round(l_full / s_full, 2), "x"))
    return rows


if __name__ == "__main__":
    for row in run():
        print(row)
