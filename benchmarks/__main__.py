"""Run every benchmark and print one table; `--only NAME` runs a subset, `--json` for scripts."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from typing import Any

SUITES = [
    "bench_filterpolicy",
    "bench_scan",
    "bench_scan_accounts",
    "bench_plan",
    "bench_apply",
    "bench_bridge",
    "bench_sqs_transport",
    "bench_routes",
    "bench_fifo",
    "bench_fleet",
    "bench_estate",
    "bench_gateway",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--only", action="append", choices=SUITES)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rows: list[dict[str, Any]] = []
    for suite in args.only or SUITES:
        started = time.perf_counter()
        print(f"running {suite} …", file=sys.stderr, flush=True)
        module = importlib.import_module(f"benchmarks.{suite}")
        rows.extend(module.run())
        print(f"{suite} done in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"| {'benchmark':<48} | {'value':>12} | {'unit':<10} | {'target':>8} | ok |")
        print(f"|{'-' * 50}|{'-' * 14}|{'-' * 12}|{'-' * 10}|----|")
        for row in rows:
            target = row.get("target")
            ok = "" if target is None else ("yes" if row["value"] >= target else "NO")
            shown = "" if target is None else str(target)
            print(
                f"| {row['name']:<48} | {row['value']:>12} | {row['unit']:<10} | "
                f"{shown:>8} | {ok:<2} |"
            )
    missed = [r for r in rows if r.get("target") is not None and r["value"] < r["target"]]
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
