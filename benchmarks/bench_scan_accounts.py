"""A several-account scan: 20 accounts × 3 regions × 200 queues (12,000 queues), parallel vs serial.

Every account is reached as `scan --assume-role … --account …` reaches it: STS AssumeRole from
the base credentials, then that account's clients per region. moto runs in its own process and
is seeded directly; both scans read it through the latency proxy (`benchmarks.latency`, the
scanner benchmark's), so every call, AssumeRole included, pays the modelled AWS round trip. The
serial scan is the one-call-at-a-time baseline (concurrency 1: one account, one region, one
describe at a time). Target: the parallel scan >= 3x faster.

At full size the serial scan alone makes some 25,000 calls at 20 ms each, so this suite runs for
a quarter of an hour or more; `SNSQ2NATS_BENCH_ACCOUNTS=small` runs 4 accounts × 3 regions × 50
queues instead, to try a change quickly.
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from benchmarks.estate import AWS_ROUND_TRIP, moto_process
from benchmarks.latency import delayed_link
from snsq2nats.aws.accounts import account_clients, account_sources
from snsq2nats.aws.clients import DEFAULT_CONCURRENCY
from snsq2nats.aws.scan import scan_accounts
from snsq2nats.inventory import Inventory

ACCOUNTS, QUEUES_PER_REGION = 20, 200
SMALL = (4, 50)
REGIONS = ("us-east-1", "eu-west-1", "ap-southeast-2")
ROLE = "arn:aws:iam::{account}:role/snsq2nats-scan"
# Below the one-account scan's 5x: moto answers on the same cores as the scan, and 12,000 queues
# of describes make the parallel scan CPU-bound there well before 16 calls are in flight (3.5x
# measured at 4 accounts on a loaded two-core machine).
TARGET_SPEEDUP = 3.0
SEED_THREADS = 8


def account_ids(count: int) -> list[str]:
    return [str(100000000001 + n) for n in range(count)]


def _seed(
    endpoint: str, base: Any, accounts: list[str], regions: tuple[str, ...], queues: int
) -> None:
    """`queues` queues in every account × region, each account's created with its own role."""
    import boto3

    def one(account: str) -> None:
        sts = base.client("sts", region_name=regions[0], endpoint_url=endpoint)
        creds = sts.assume_role(RoleArn=ROLE.format(account=account), RoleSessionName="seed")[
            "Credentials"
        ]
        session = boto3.Session(
            aws_access_key_id=creds["AccessKeyId"],
            aws_secret_access_key=creds["SecretAccessKey"],
            aws_session_token=creds["SessionToken"],
        )
        for region in regions:
            sqs = session.client("sqs", region_name=region, endpoint_url=endpoint)
            for n in range(queues):
                sqs.create_queue(QueueName=f"q{n:04d}")

    with ThreadPoolExecutor(max_workers=SEED_THREADS) as pool:
        list(pool.map(one, accounts))


def _timed_scan(
    base: Any, endpoint: str, accounts: list[str], regions: tuple[str, ...], concurrency: int
) -> tuple[float, Inventory]:
    sources = account_sources((), ROLE, accounts)
    targets = [account_clients(s, regions, endpoint, concurrency, base=base) for s in sources]
    started = time.perf_counter()
    inventory = scan_accounts(targets, concurrency=concurrency)
    return time.perf_counter() - started, inventory


def run(
    accounts: int | None = None, regions: tuple[str, ...] = REGIONS, queues: int | None = None
) -> list[dict[str, Any]]:
    import os

    import boto3

    small = os.environ.get("SNSQ2NATS_BENCH_ACCOUNTS") == "small"
    accounts = accounts or (SMALL[0] if small else ACCOUNTS)
    queues = queues or (SMALL[1] if small else QUEUES_PER_REGION)

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    ids = account_ids(accounts)
    with moto_process() as (host, port):
        direct = f"http://{host}:{port}"
        base = boto3.Session(region_name=regions[0])
        started = time.perf_counter()
        _seed(direct, base, ids, regions, queues)
        print(
            f"  seeded {accounts} accounts × {len(regions)} regions × {queues} queues in "
            f"{time.perf_counter() - started:.1f}s",
            file=sys.stderr,
        )
        with delayed_link(port, AWS_ROUND_TRIP, scheme="http") as proxied:
            parallel, inventory = _timed_scan(base, proxied, ids, regions, DEFAULT_CONCURRENCY)
            serial, baseline = _timed_scan(base, proxied, ids, regions, 1)
    expected = accounts * len(regions) * queues
    found = {(q.account, q.region, q.name) for q in inventory.queues}
    if len(found) != expected or inventory.accounts != sorted(ids):
        raise AssertionError(f"scan incomplete: {len(found)} of {expected} queues")
    if found != {(q.account, q.region, q.name) for q in baseline.queues}:
        raise AssertionError("the serial scan read a different estate")
    return [
        {
            "name": "scan_accounts.modelled_round_trip",
            "value": round(AWS_ROUND_TRIP * 1000),
            "unit": "ms",
            "target": None,
        },
        {"name": "scan_accounts.queues", "value": expected, "unit": "queues", "target": None},
        {
            "name": "scan_accounts.parallel_wall",
            "value": round(parallel, 2),
            "unit": "s",
            "target": None,
        },
        {
            "name": "scan_accounts.serial_wall",
            "value": round(serial, 2),
            "unit": "s",
            "target": None,
        },
        {
            "name": "scan_accounts.speedup_vs_serial",
            "value": round(serial / parallel, 2),
            "unit": "x",
            "target": TARGET_SPEEDUP,
        },
    ]
