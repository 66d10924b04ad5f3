"""How long does `runtap report cost` take at 1M runs? Generates the runs (with one step and four status
events each, as analytics.synth does for the tests), then times the cost report cold (new process-like
connection: open, install price book and views, run) and warm, every other report once, and the same
through an exported Parquet lake.

    python -m bench.report_cost_1m [--runs 1000000] [--days 30] [--keep DIR] [--no-lake]
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import duckdb
from runtap.analytics.lake import export, open_lake
from runtap.analytics.prices import load_price_book
from runtap.analytics.reports import open_db, report_specs, run_report
from runtap.analytics.synth import create_db, generate

T = TypeVar("T")


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.report_cost_1m", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=1_000_000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--keep", metavar="DIR", help="write the database and lake here and keep them")
    ap.add_argument("--no-lake", action="store_true", help="skip the export + lake timing")
    args = ap.parse_args(argv)
    workdir = Path(args.keep or tempfile.mkdtemp(prefix="runtap-bench-report-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        return _bench(args, workdir)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


def _bench(args: argparse.Namespace, workdir: Path) -> int:
    db = str(workdir / "bench.duckdb")
    if os.path.exists(db):
        os.remove(db)
    prices = load_price_book(environ={})
    print(f"# cost report at {args.runs:,} runs ({platform.machine()}, {os.cpu_count()} cores, "
          f"duckdb {duckdb.__version__})")

    create_db(db)
    conn = duckdb.connect(db)
    _, gen_s = timed(lambda: generate(conn, args.runs, days=args.days))
    conn.close()
    size_mb = os.path.getsize(db) / 1e6
    print(f"generate: {gen_s:.1f}s ({args.runs:,} runs + {args.runs:,} steps + {4 * args.runs:,} events; "
          f"file {size_mb:.0f} MB)")

    def cold() -> int:
        c = open_db(db, prices)
        try:
            return len(run_report(c, "cost").rows)
        finally:
            c.close()

    rows, cold_s = timed(cold)
    print(f"cost, cold (open + views + query): {cold_s:.2f}s, {rows:,} rows")
    reader = open_db(db, prices)
    warm = [timed(lambda: run_report(reader, "cost"))[1] for _ in range(3)]
    print(f"cost, warm: best {min(warm):.2f}s of 3")
    for name in report_specs():
        if name != "cost":
            print(f"{name}: {timed(functools.partial(run_report, reader, name))[1]:.2f}s")
    reader.close()

    if not args.no_lake:
        lake = str(workdir / "lake")
        result, exp_s = timed(lambda: export(db, lake, instance="bench"))
        print(f"export: {exp_s:.1f}s ({result.total:,} rows); re-export: "
              f"{timed(lambda: export(db, lake, instance='bench'))[1]:.1f}s")

        def lake_cost() -> int:
            c = open_lake(f"{lake}/**/*.parquet", prices)
            try:
                return len(run_report(c, "cost").rows)
            finally:
                c.close()

        _, lake_s = timed(lake_cost)
        print(f"cost over the lake, cold: {lake_s:.2f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
