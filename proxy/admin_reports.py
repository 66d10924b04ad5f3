"""Named reports on the admin listener (`runtap report` asks them when the file is locked: its client is
analytics/commands/report_client.py).

DuckDB lets the serving process hold the capture file exclusively, so another process cannot read it
while `runtap serve` runs. The serving process itself can: `GET /reports/NAME` runs the named report on a
fresh cursor of the store's connection, on a worker thread (the event loop never waits on DuckDB).

Only named reports are served; there is no arbitrary SQL over HTTP. Parameters are parsed and
validated (analytics.reports.make_params) and reach DuckDB as typed variables, never as SQL text.

    GET /reports                  -> [{"name", "question", "columns"}]
    GET /reports/NAME?since=&until=&by=&limit=&format=json|csv
        json: one object per row; csv: header + rows. Headers X-Runtap-Columns / X-Runtap-Totals
        carry the column order and totalled columns (so an empty result still has its columns).
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from collections.abc import Callable

import duckdb
from aiohttp import web

from ..analytics.commands.report_client import COLUMNS_HEADER, TOTALS_HEADER
from ..analytics.formats import to_csv, to_json
from ..analytics.prices import PriceBook, load_price_book
from ..analytics.reports import (
    ReportError,
    ReportParams,
    ReportResult,
    make_params,
    prepare,
    report_specs,
    run_report,
)

GetConnection = Callable[[], duckdb.DuckDBPyConnection]

_PRICES = web.AppKey("runtap_report_prices", PriceBook)
_GET_CONN: web.AppKey[GetConnection] = web.AppKey("runtap_report_connection")


def _error(status: int, message: str, code: str) -> web.Response:
    body = json.dumps({"error": {"message": message, "type": "runtap_report_error", "code": code}})
    return web.Response(status=status, text=body, content_type="application/json")


def _run(get_connection: GetConnection, prices: PriceBook, name: str, params: ReportParams) -> ReportResult:
    # A cursor per request: its own session, so TEMP views and variables never leak between requests
    # and the writer thread's transactions are untouched.
    cursor = get_connection()
    try:
        prepare(cursor, prices)
        return run_report(cursor, name, params)
    finally:
        cursor.close()


async def list_reports(request: web.Request) -> web.Response:
    specs = [{"name": s.name, "question": s.question, "columns": [c for c, _ in s.columns]}
             for s in report_specs().values()]
    return web.json_response(specs)


async def get_report(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in report_specs():
        return _error(404, f"unknown report {name!r}; reports: {', '.join(report_specs())}", "unknown_report")
    q = request.query
    fmt = q.get("format", "json")
    if fmt not in ("json", "csv"):
        return _error(400, f"format must be json or csv, got {fmt!r}", "bad_parameter")
    try:
        params = make_params(since=q.get("since"), until=q.get("until"), by=q.get("by"), limit=q.get("limit"))
    except (ReportError, ValueError, OverflowError) as exc:  # make_params bounds them all; belt and braces
        return _error(400, str(exc), "bad_parameter")
    try:
        result = await asyncio.to_thread(_run, request.app[_GET_CONN], request.app[_PRICES], name, params)
    except ReportError as exc:
        return _error(400, str(exc), "bad_parameter")
    except Exception as exc:  # store closed or reopening, DuckDB error: the caller sees why
        return _error(503, f"report {name} failed: {type(exc).__name__}: {exc}", "store_unavailable")
    headers = {COLUMNS_HEADER: ",".join(urllib.parse.quote(c, safe="._-") for c in result.columns),
               TOTALS_HEADER: ",".join(sorted(result.totals))}
    if fmt == "csv":
        return web.Response(text=to_csv(result), content_type="text/csv", headers=headers)
    return web.Response(text=to_json(result), content_type="application/json", headers=headers)


def add_report_routes(app: web.Application, get_connection: GetConnection, *,
                      prices: PriceBook | None = None) -> None:
    """Serve GET /reports and GET /reports/NAME on `app` (the admin listener).

    `get_connection` returns a new DuckDB connection/cursor on the capture database; it is called on a
    worker thread for each request, and the cursor is closed after it. `prices` defaults to the built-in
    book extended by $RUNTAP_PRICES."""
    app[_PRICES] = prices if prices is not None else load_price_book()
    app[_GET_CONN] = get_connection
    app.router.add_get("/reports", list_reports)
    app.router.add_get("/reports/{name}", get_report)
