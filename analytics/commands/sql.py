"""`runtap sql`: ad-hoc SQL over the capture tables and the report views."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import duckdb

from ...settings.config import add_arguments
from ..formats import render
from ..lake import LakeError, open_lake
from ..prices import PriceError, load_price_book
from ..reports import (
    DatabaseLocked,
    ReportError,
    make_params,
    open_db,
    run_sql,
    setup_script,
)
from .common import db_path, err
from .report import add_filter_arguments

HELP = "run ad-hoc SQL against the capture tables and the report views"

DESCRIPTION = """\
Run one SQL query (or several statements; the last one's rows are printed) on a read-only connection
with the report views installed: scoped_runs, run_costs, step_costs, run_prices, price_periods,
run_timings, tool_turnarounds, run_budgets, priced_models; for the Responses API scoped_responses,
response_costs, response_timings, response_tool_turnarounds, response_budgets; agent_costs over both
(columns: docs/reports.md).
--since/--until/--by set the same variables the views read.

Arbitrary SQL is never served over HTTP: next to a live `runtap serve` that holds --db, use
`runtap report` (it reads named reports from the admin listener), or query an exported lake.
`runtap sql --setup` prints the SQL that creates the price book and the views, for the DuckDB CLI
(`runtap report NAME --sql` prints a report's query):
  runtap sql --setup > setup.sql && runtap report cost --sql > cost.sql
  duckdb -readonly runtap.duckdb -c '.read setup.sql' -c '.read cost.sql'
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser("sql", help=HELP, description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n"
                              "  runtap sql \"SELECT model, sum(total_usd) FROM run_costs GROUP BY ALL\"\n"
                              "  runtap sql --lake 'lake/**/*.parquet' \"SELECT count(*) FROM runs\"\n"
                              "  echo 'SELECT * FROM priced_models' | runtap sql - --format csv")
    p.add_argument("query", nargs="?", metavar="SQL", help="the query; '-' reads it from stdin")
    src = p.add_mutually_exclusive_group()
    add_arguments(src, ["db"])
    src.add_argument("--lake", metavar="GLOB", help="Parquet files written by `runtap export`")
    add_filter_arguments(p)
    p.add_argument("--setup", action="store_true",
                   help="print the SQL that creates the price book and the views, and exit")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        prices = load_price_book(args.prices)
        if args.setup:
            sys.stdout.write(setup_script(prices))
            return 0
        query = sys.stdin.read() if args.query == "-" else args.query
        if not query or not query.strip():
            err("error: give a query (or '-' to read it from stdin)")
            return 2
        params = make_params(since=args.since, until=args.until, by=args.by)
        if args.lake:
            conn = open_lake(args.lake, prices)
        else:
            db = db_path(args)
            try:
                conn = open_db(db, prices)
            except DatabaseLocked as exc:
                err(f"error: {db} is held by a running `runtap serve` ({exc.detail}); DuckDB lets no other "
                    "process open it. Arbitrary SQL is not served over HTTP (by design): use `runtap report "
                    "NAME` (served by the sidecar's admin listener), query an exported lake with "
                    "`runtap sql --lake`, or stop the sidecar.")
                return 1
        try:
            sys.stdout.write(render(run_sql(conn, query, params), args.format))
        finally:
            conn.close()
    except (ReportError, PriceError) as exc:
        err(f"error: {exc}")
        return 2
    except (LakeError, FileNotFoundError, duckdb.Error) as exc:
        err(f"error: {exc}")
        return 1
    return 0
