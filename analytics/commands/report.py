"""`runtap report`: named cost and usage reports, as text or as one HTML page with charts."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

import duckdb

from ...settings.config import add_arguments
from ..formats import FORMATS, render
from ..html import write_html
from ..lake import LakeError, open_lake
from ..prices import PriceBook, PriceError, load_price_book
from ..reports import (
    DatabaseLocked,
    ReportError,
    ReportParams,
    ReportResult,
    make_params,
    open_db,
    report_source,
    report_specs,
    run_report,
)
from .common import admin_url, db_path, err
from .report_client import AdminUnavailable, fetch_report

HELP = "cost and usage reports from the capture DB, a Parquet lake or a live sidecar"

DESCRIPTION = """\
Print a named report (or --html: a page of charts) over the captured runs and responses.

Sources: --db FILE (default $RUNTAP_DB or ./runtap.duckdb), --lake 'DIR/**/*.parquet' (the union of
every sidecar's `runtap export`, de-duplicated; s3:// works too), or --url of a live sidecar's admin
listener. While `runtap serve` holds --db, DuckDB lets no other process open the file, so the report is
read from that sidecar's admin listener instead (--url, default http://$RUNTAP_ADMIN, 127.0.0.1:9464).
"""


def add_filter_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--since", metavar="WHEN", help="runs created at or after: 2024-06-01, "
                   "2024-06-01T12:00:00Z or an age such as 7d / 12h (UTC)")
    p.add_argument("--until", metavar="WHEN", help="runs created before (same forms as --since)")
    p.add_argument("--by", metavar="KEY", help="also group by metadata.KEY (a run metadata key such as "
                   "metadata.tenant), key_fingerprint (the API key's or principal's fingerprint) or "
                   "api_version (provider:version, e.g. azure:v1, openai:v2)")
    p.add_argument("--format", choices=FORMATS, default="table",
                   help="table (aligned, totals row; default), csv, json (array of row objects) or markdown")
    add_arguments(p, ["prices"])


def add_parser(sub: Any) -> None:
    names = ", ".join(report_specs())
    p = sub.add_parser("report", help=HELP, description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog=f"reports: {names}\n\nexamples:\n"
                              "  runtap report cost --since 7d\n"
                              "  runtap report top-assistants --by metadata.tenant --format markdown\n"
                              "  runtap report cost --lake 'lake/**/*.parquet' --format json\n"
                              "  runtap report --html report.html\n"
                              "  runtap report cost --sql > cost.sql   # the query, for the DuckDB CLI")
    p.add_argument("name", nargs="?", metavar="NAME", help=f"report to run: {names}")
    src = p.add_mutually_exclusive_group()
    add_arguments(src, ["db"])
    src.add_argument("--lake", metavar="GLOB", help="Parquet files written by `runtap export`, e.g. "
                     "'lake/**/*.parquet' or 's3://bucket/lake/**/*.parquet'")
    src.add_argument("--url", metavar="URL", help="admin listener of a live sidecar, e.g. "
                     "http://127.0.0.1:9464 [default when --db is locked: http://$RUNTAP_ADMIN]")
    add_filter_arguments(p)
    p.add_argument("--limit", type=int, metavar="N", help="rows of top-threads / top-assistants (default 20)")
    p.add_argument("--html", metavar="FILE", help="write one self-contained HTML page with charts instead")
    p.add_argument("--list", action="store_true", help="list the reports and what each answers")
    p.add_argument("--sql", action="store_true", help="print the report's SQL (for the DuckDB CLI, after "
                   "`runtap sql --setup`) instead of running it")
    p.set_defaults(run=run)


def local_fetch(conn: duckdb.DuckDBPyConnection) -> Callable[[str, ReportParams], ReportResult]:
    return lambda name, params: run_report(conn, name, params)


def remote_fetch(url: str) -> Callable[[str, ReportParams], ReportResult]:
    return lambda name, params: fetch_report(url, name, params)


def _emit(args: argparse.Namespace, fetch: Callable[[str, ReportParams], ReportResult],
          params: ReportParams, source: str) -> int:
    if args.html:
        write_html(args.html, fetch, params, source=source)
        print(f"wrote {args.html}", file=sys.stderr)
    else:
        sys.stdout.write(render(fetch(args.name, params), args.format))
    return 0


def _print_list() -> int:
    for spec in report_specs().values():
        print(f"{spec.name:16} {spec.question}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.list:
        return _print_list()
    if not args.html and not args.name:
        err("error: name a report (runtap report --list shows them) or pass --html FILE")
        return 2
    try:
        if args.sql:
            sys.stdout.write(report_source(args.name or ""))
            return 0
        if args.name and args.name not in report_specs():
            raise ReportError(f"unknown report {args.name!r}; reports: {', '.join(report_specs())}")
        params = make_params(since=args.since, until=args.until, by=args.by, limit=args.limit)
        if args.url:
            return _emit(args, remote_fetch(args.url), params, args.url)
        prices = load_price_book(args.prices)
        return _run_local(args, params, prices)
    except (ReportError, PriceError) as exc:
        err(f"error: {exc}")
        return 2
    except (AdminUnavailable, LakeError, FileNotFoundError, duckdb.Error) as exc:
        err(f"error: {exc}")
        return 1


def _run_local(args: argparse.Namespace, params: ReportParams, prices: PriceBook) -> int:
    if args.lake:
        conn = open_lake(args.lake, prices)
        source = args.lake
    else:
        db = db_path(args)
        try:
            conn = open_db(db, prices)
        except DatabaseLocked as exc:
            url = admin_url()
            err(f"{db} is held by a running `runtap serve` ({exc.detail}); DuckDB lets no other process "
                f"open it, not even read-only. Reading the report from that sidecar's admin listener at "
                f"{url} instead (--url to choose another).")
            if args.prices:
                err("note: --prices does not apply to a live sidecar; it prices with its own RUNTAP_PRICES.")
            try:
                return _emit(args, remote_fetch(url), params, f"{db} via {url}")
            except AdminUnavailable as unavailable:
                raise AdminUnavailable(f"{unavailable}. Pass --url http://HOST:PORT (the sidecar's --admin "
                                       "address), or stop the sidecar to read the file directly.") from None
        source = db
    try:
        return _emit(args, local_fetch(conn), params, source)
    finally:
        conn.close()
