"""The estate at scale: 10,000 queues, 1,000 topics, 10,000 subscriptions, every command.

Seeded into fauxqs (the SQS/SNS emulator of `bench_bridge`, ~100x faster than moto, so the
client side is what is measured), then every stage runs as the real CLI in its own process
against a real nats-server on a temporary store, exactly as a user runs it:

    scan -o inventory.json
    plan --offline --inventory inventory.json -o offline.json
    plan --inventory inventory.json -s URL --mapping cutover.yaml -o plan.json     (live read)
    apply plan.json -s URL
    plan --inventory inventory.json -s URL --mapping cutover.yaml --detailed-exitcode (exit 0)
    status --plan plan.json                                        (one route per queue, topic)
    verify --plan plan.json --sample N                    (canaries through a sample, see README)

The mapping moves every queue's consumers to NATS, so the plan has 21,000 JetStream objects and
11,000 bridge routes (one sqs-to-nats per queue, one sns-to-nats per topic) for `status`.
Each stage's wall time and peak RSS (from wait4, per process) are reported, at the small size
(`SMALL`: a tenth) and the large one in the same run, as time per object at both sizes: linear
scaling shows as a ratio near 1 (`per_object_ratio`), a quadratic step as a ratio near 10.

`SNSQ2NATS_BENCH_ESTATE=small` runs only the small estate (a quick look).
"""

from __future__ import annotations

import contextlib
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
    exit_code: int


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


def _run(name: str, args: list[str], env: dict[str, str], ok: tuple[int, ...] = (0,)) -> Stage:
    """One CLI command in its own process: wall time and that process's own peak RSS."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "snsq2nats", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    if proc.returncode not in ok:
        tail = err.decode(errors="replace")[-3000:]
        raise AssertionError(f"{name} exited {proc.returncode}: {tail}")
    # ru_maxrss is in KiB on Linux.
    return Stage(name, seconds, usage.ru_maxrss / 1024.0, proc.returncode)


@contextlib.contextmanager
def _nats() -> Iterator[NatsServer]:
    # Its own temporary store (removed on exit); the defaults hold 21,000 file streams.
    with NatsServer(name="bench-estate") as server:
        yield server


def measure(size: tuple[int, int, int]) -> list[Stage]:
    queues = size[0]
    with (
        tempfile.TemporaryDirectory(prefix="bench-estate-") as tmp,
        fauxqs() as aws,
        _nats() as nats,
    ):
        work = Path(tmp)
        (work / "cutover.yaml").write_text(MAPPING)
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
        inv, plan = str(work / "inventory.json"), str(work / "plan.json")
        mapping = ["--mapping", str(work / "cutover.yaml")]
        stages = [
            _run("scan", ["scan", "-o", inv], env),
            _run("plan offline", ["plan", "--offline", "--inventory", inv, *mapping], env),
            _run("plan live", ["plan", "--inventory", inv, *mapping, "-o", plan], env),
            _run("apply", ["apply", plan], env),
            _run(
                "re-plan",
                ["plan", "--inventory", inv, *mapping, "--detailed-exitcode"],
                env,
            ),
            # Every route is drained on an idle estate: exit 0.
            _run("status", ["status", "--plan", plan], env),
            _run(
                "verify (sample)", ["verify", "--plan", plan, "--sample", str(VERIFY_SAMPLE)], env
            ),
        ]
        for stage in stages:
            print(
                f"  {queues:>6} queues  {stage.name:<16} {stage.seconds:7.2f}s "
                f"{stage.peak_rss_mb:7.0f} MB",
                file=sys.stderr,
            )
        return stages


def _objects(size: tuple[int, int, int]) -> int:
    return sum(size)


def run() -> list[dict[str, Any]]:
    only_small = os.environ.get("SNSQ2NATS_BENCH_ESTATE") == "small"
    sizes = [SMALL] if only_small else [SMALL, LARGE]
    measured = {size: measure(size) for size in sizes}
    rows: list[dict[str, Any]] = []
    for size, stages in measured.items():
        label = f"estate.{size[0] // 1000}k"
        for stage in stages:
            key = stage.name.replace(" ", "_").replace("(", "").replace(")", "")
            rows.append(
                {"name": f"{label}.{key}.wall", "value": round(stage.seconds, 2), "unit": "s"}
            )
            rows.append(
                {
                    "name": f"{label}.{key}.peak_rss",
                    "value": round(stage.peak_rss_mb),
                    "unit": "MB",
                }
            )
    if not only_small:
        small, large = measured[SMALL], measured[LARGE]
        for a, b in zip(small, large, strict=True):
            if a.name.startswith("verify"):
                continue  # a fixed sample: not per object
            per_small = a.seconds / _objects(SMALL)
            per_large = b.seconds / _objects(LARGE)
            key = a.name.replace(" ", "_")
            rows.append(
                {
                    "name": f"estate.{key}.ms_per_object_1k",
                    "value": round(per_small * 1000, 3),
                    "unit": "ms",
                }
            )
            rows.append(
                {
                    "name": f"estate.{key}.ms_per_object_10k",
                    "value": round(per_large * 1000, 3),
                    "unit": "ms",
                }
            )
            # Inverted so that the table's "value >= target" reads as "scales linearly".
            rows.append(
                {
                    "name": f"estate.{key}.linearity",
                    "value": round(per_small / per_large, 2),
                    "unit": "1k/10k",
                    "target": round(1 / RATIO_CEILING, 2),
                }
            )
    for row in rows:
        row.setdefault("target", None)
    return rows


if __name__ == "__main__":
    for row in run():
        print(row)
